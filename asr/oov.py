"""Out-of-vocabulary words in transcripts: counted, reported, mapped to ``<UNK>``, or refused.

A transcript word the lexicon lacks is never dropped or replaced silently. Either it is an
error naming the ``text`` file and line (``unk_word=None``), or it becomes ``<UNK>`` (which
the lexicon pronounces as spoken noise) and the mapping is reported: every OOV word with its
count is written to a report file, most frequent first, and a summary is logged.

Report file, one line per OOV word type::

    <word> <count>

>>> train, report = map_oov(train, lexicon.words, "exp/lang/oov_train.txt")   # doctest: +SKIP
>>> report.summary()                                                          # doctest: +SKIP
'data/train/text: 14 of 5210 words (0.27%) are out of vocabulary, 9 word types, mapped to <UNK>'
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

from asr.data.datadir import TEXT, DataDir
from asr.errors import DataError
from asr.fileio import write_text

__all__ = ["OovReport", "count_oov", "map_oov"]

log = logging.getLogger(__name__)


@dataclass
class OovReport:
    """The OOV words of one data directory.

    Attributes
    ----------
    counts : Counter
        OOV word -> number of its occurrences in the transcripts.
    num_words : int
        Word tokens in the transcripts, OOV or not.
    source : str
        The transcripts counted (their ``text`` file where known).
    unk_word : str or None
        What the OOV words were mapped to, if they were.
    """

    counts: Counter
    num_words: int
    source: str
    unk_word: str | None = None

    @property
    def num_oov(self) -> int:
        return sum(self.counts.values())

    @property
    def rate(self) -> float:
        """The fraction of word tokens that are OOV."""
        return self.num_oov / self.num_words if self.num_words else 0.0

    def summary(self) -> str:
        mapped = f", mapped to {self.unk_word}" if self.unk_word and self.counts else ""
        return (f"{self.source}: {self.num_oov} of {self.num_words} words ({100 * self.rate:.2f}%) "
                f"are out of vocabulary, {len(self.counts)} word types{mapped}")

    def lines(self) -> list[str]:
        """``<word> <count>`` lines, most frequent first, ties in word order."""
        return [f"{w} {n}" for w, n in sorted(self.counts.items(), key=lambda x: (-x[1], x[0]))]

    def write(self, path: str | Path) -> None:
        """Write the report file (atomically; empty when there is no OOV word)."""
        write_text(path, "".join(line + "\n" for line in self.lines()))


def _source(data: DataDir) -> str:
    return str(data.path / TEXT) if data.path is not None else TEXT


def count_oov(data: DataDir, vocabulary: Collection[str]) -> OovReport:
    """Count the words of ``data``'s transcripts that are not in ``vocabulary``."""
    vocabulary = set(vocabulary)
    counts: Counter = Counter()
    total = 0
    for utt in data.utts:
        words = data.text[utt]
        total += len(words)
        counts.update(w for w in words if w not in vocabulary)
    return OovReport(counts, total, _source(data))


def map_oov(data: DataDir, vocabulary: Collection[str], report_path: str | Path | None,
            unk_word: str | None = "<UNK>") -> tuple[DataDir, OovReport]:
    """Replace the OOV words of ``data``'s transcripts by ``unk_word`` and report them.

    Parameters
    ----------
    data : DataDir
    vocabulary : collection of str
        The lexicon's words; must hold ``unk_word`` when there are OOV words to map.
    report_path : str or Path or None
        Where the ``<word> <count>`` report is written (always, even when empty); None
        writes no file but still logs the summary.
    unk_word : str or None
        None refuses OOV words instead of mapping them.

    Returns
    -------
    data : DataDir
        A new, unsaved data directory with the same audio and speakers (``data`` itself
        when nothing was mapped).
    report : OovReport

    Raises
    ------
    DataError
        With ``unk_word=None``, naming the ``text`` file and line of the first OOV word;
        also when ``unk_word`` is not in ``vocabulary`` but is needed.
    """
    vocabulary = set(vocabulary)
    if unk_word is None:
        data.check_vocabulary(vocabulary)
    report = count_oov(data, vocabulary)
    report.unk_word = unk_word
    if report_path is not None:
        report.write(report_path)
    where = f"; counts in {report_path}" if report_path is not None and report.counts else ""
    (log.warning if report.counts else log.info)("%s%s", report.summary(), where)
    if not report.counts:
        return data, report
    if unk_word not in vocabulary:
        raise DataError(None, f"cannot map {report.num_oov} out-of-vocabulary words of "
                              f"{report.source} to {unk_word!r}: the lexicon has no such word")
    text = {utt: [w if w in vocabulary else unk_word for w in words]
            for utt, words in data.text.items()}
    return DataDir(wavs=dict(data.wavs), text=text, utt2spk=dict(data.utt2spk)), report
