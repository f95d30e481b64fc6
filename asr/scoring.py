"""Scoring: word error rate, Kaldi-style ``%WER`` lines and per-utterance details.

Transcripts are Kaldi ``text`` files, one utterance a line: the utterance id, then its
words. A hypothesis line may hold the id alone (the decoder output nothing).

>>> refs = {"u1": ["a", "b", "c", "d"]}
>>> hyps = {"u1": ["a", "x", "c", "d", "e"]}
>>> compute_wer(refs, hyps, "exp/mono/decode_test").line()
'%WER 50.00 [ 2 / 4, 1 ins, 0 del, 1 sub ] exp/mono/decode_test'

Word alignment and error counts come from jiwer; utterances with an empty side are
counted here (every reference word a deletion, or every hypothesis word an insertion).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple

import jiwer

from asr.errors import DataError
from asr.fileio import write_text

log = logging.getLogger(__name__)

GAP = "***"
"""Placeholder in an aligned transcript where the other side has a word (Kaldi's ``***``).

As in Kaldi, a real word spelled ``***`` cannot be told from a gap in the details."""

_EXPECTED = "expected '<utterance-id> [word ...]'"


# --------------------------------------------------------------------------- text files

def read_text(path: str | Path, allow_empty: bool = True) -> dict[str, list[str]]:
    """Read a Kaldi ``text`` file.

    Parameters
    ----------
    path
        File with one utterance a line: ``<utterance-id> word1 word2 ...``.
    allow_empty
        Whether an utterance id alone on its line (no words) is accepted, as in a
        hypothesis file where the decoder output nothing.

    Returns
    -------
    dict
        Utterance id -> list of words, in file order.

    Raises
    ------
    DataError
        The file is unreadable, or a line is blank, starts with whitespace, is not
        UTF-8, has no words where ``allow_empty`` is false, or repeats an utterance id;
        the error names the file and line.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise DataError(path, f"cannot read transcript: {err.strerror or err}") from err
    texts: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    for number, line_bytes in enumerate(raw.splitlines(), start=1):
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(path, f"not valid UTF-8 ({err.reason}); {_EXPECTED}", number) from err
        if not line.strip():
            raise DataError(path, f"blank line; {_EXPECTED}", number)
        if line[0].isspace():
            raise DataError(path, f"line starts with whitespace; {_EXPECTED}", number)
        utt, *words = line.split()
        if not words and not allow_empty:
            raise DataError(path, f"empty transcript for utterance {utt!r}", number)
        if utt in texts:
            raise DataError(path, f"duplicate utterance id {utt!r} (first on line {first_line[utt]})",
                            number)
        texts[utt] = words
        first_line[utt] = number
    return texts


def write_text_file(path: str | Path, texts: dict[str, list[str]]) -> None:
    """Write ``texts`` (utterance id -> words) as a Kaldi ``text`` file, sorted by id, atomically.

    Raises
    ------
    DataError
        An utterance id or word is empty or contains whitespace, so the file could not
        be read back.
    """
    lines = []
    for utt in sorted(texts):
        for token in (utt, *texts[utt]):
            if token.split() != [token]:
                raise DataError(path, f"utterance {utt!r}: token {token!r} is empty or contains "
                                      "whitespace; expected whitespace-free ids and words")
        lines.append(" ".join((utt, *texts[utt])) + "\n")
    write_text(path, "".join(lines))


# --------------------------------------------------------------------------- alignment

class UtteranceErrors(NamedTuple):
    """One utterance's alignment and error counts (a row of Kaldi's ``per_utt`` file).

    ``ref`` and ``hyp`` are aligned word lists of equal length; :data:`GAP` fills the
    position of an inserted word in ``ref`` and of a deleted word in ``hyp``.
    """

    utt: str
    ref: list[str]
    hyp: list[str]
    ins: int
    dels: int
    subs: int

    @property
    def ops(self) -> list[str]:
        """Edit per aligned position: ``C`` correct, ``S`` substitution, ``I`` insertion, ``D`` deletion."""
        return ["I" if r == GAP else "D" if h == GAP else "C" if r == h else "S"
                for r, h in zip(self.ref, self.hyp)]

    @property
    def correct(self) -> int:
        """Number of reference words recognised correctly."""
        return len(self.ref) - self.ins - self.dels - self.subs

    @property
    def errors(self) -> int:
        """Insertions + deletions + substitutions."""
        return self.ins + self.dels + self.subs


def _edits(ref: list[str], hyp: list[str], chunks) -> UtteranceErrors:
    """Aligned words and counts from jiwer's alignment chunks of one utterance (utt left blank)."""
    aligned_ref: list[str] = []
    aligned_hyp: list[str] = []
    counts = {"insert": 0, "delete": 0, "substitute": 0, "equal": 0}
    for chunk in chunks:
        r = ref[chunk.ref_start_idx:chunk.ref_end_idx]
        h = hyp[chunk.hyp_start_idx:chunk.hyp_end_idx]
        if chunk.type == "insert":
            r = [GAP] * len(h)
        elif chunk.type == "delete":
            h = [GAP] * len(r)
        counts[chunk.type] += len(r)
        aligned_ref += r
        aligned_hyp += h
    return UtteranceErrors("", aligned_ref, aligned_hyp,
                           counts["insert"], counts["delete"], counts["substitute"])


def per_utterance(refs: dict[str, list[str]], hyps: dict[str, list[str]]) -> list[UtteranceErrors]:
    """Align every reference utterance with its hypothesis.

    Parameters
    ----------
    refs, hyps
        Utterance id -> words. A reference utterance missing from ``hyps`` is scored
        as an empty hypothesis (all deletions) and logged as a warning.

    Returns
    -------
    list of UtteranceErrors
        One per reference utterance, sorted by utterance id.

    Raises
    ------
    DataError
        ``hyps`` holds an utterance id that ``refs`` lacks.
    """
    unknown = sorted(set(hyps) - set(refs))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise DataError(None, f"{len(unknown)} hypothesis utterance(s) not in the reference: {shown}")
    missing = sorted(set(refs) - set(hyps))
    if missing:
        log.warning("%d of %d reference utterances have no hypothesis; scoring them as deletions "
                    "(first: %r)", len(missing), len(refs), missing[0])

    utts = sorted(refs)
    pairs = {utt: (list(refs[utt]), list(hyps.get(utt, []))) for utt in utts}
    # jiwer sees opaque tokens, so words are compared exactly as given (whitespace and all);
    # utterances with an empty side never reach it.
    vocab: dict[str, str] = {}

    def tokens(words: list[str]) -> str:
        return " ".join(vocab.setdefault(w, f"w{len(vocab)}") for w in words)

    both = [utt for utt in utts if pairs[utt][0] and pairs[utt][1]]
    aligned = {}
    if both:
        output = jiwer.process_words([tokens(pairs[u][0]) for u in both],
                                     [tokens(pairs[u][1]) for u in both])
        for utt, chunks in zip(both, output.alignments):
            aligned[utt] = _edits(*pairs[utt], chunks)

    result = []
    for utt in utts:
        ref, hyp = pairs[utt]
        if utt in aligned:
            result.append(aligned[utt]._replace(utt=utt))
        else:  # one side (or both) empty
            result.append(UtteranceErrors(utt, ref + [GAP] * len(hyp), [GAP] * len(ref) + hyp,
                                          len(hyp), len(ref), 0))
    return result


def write_details(path: str | Path, utterances: Iterable[UtteranceErrors]) -> None:
    """Write Kaldi's ``per_utt`` details file atomically.

    Four lines per utterance, columns padded to line up::

        u1 ref   a  b  c  d  ***
        u1 hyp   a  x  c  d  e
        u1 op    C  S  C  C  I
        u1 #csid 3 1 1 0

    ``#csid`` counts correct words, substitutions, insertions and deletions.
    """
    lines = []
    for u in utterances:
        columns = list(zip(u.ref, u.hyp, u.ops))
        widths = [max(len(word) for word in column) for column in columns]
        for label, row in (("ref", 0), ("hyp", 1), ("op", 2)):
            cells = "  ".join(column[row].ljust(width) for column, width in zip(columns, widths))
            lines.append(f"{u.utt} {label:<5} {cells}".rstrip())
        lines.append(f"{u.utt} #csid {u.correct} {u.subs} {u.ins} {u.dels}")
    write_text(path, "".join(line + "\n" for line in lines))


# --------------------------------------------------------------------------- error rates

@dataclass(frozen=True)
class WerResult:
    """Word error counts of one decode, and their Kaldi-style summary line.

    Attributes
    ----------
    errors : int
        ``ins + dels + subs``.
    words : int
        Number of reference words.
    ins, dels, subs : int
        Insertions, deletions and substitutions.
    sentences : int
        Number of reference utterances.
    sentence_errors : int
        Utterances with at least one error.
    name : str
        What was scored, e.g. ``exp/mono/decode_test``; ends the ``%WER`` line.
    """

    errors: int
    words: int
    ins: int
    dels: int
    subs: int
    sentences: int
    sentence_errors: int
    name: str = ""

    @classmethod
    def from_utterances(cls, utterances: Iterable[UtteranceErrors], name: str = "") -> "WerResult":
        """Sum per-utterance counts (see :func:`per_utterance`)."""
        utterances = list(utterances)
        ins = sum(u.ins for u in utterances)
        dels = sum(u.dels for u in utterances)
        subs = sum(u.subs for u in utterances)
        words = sum(len(u.ref) - u.ins for u in utterances)
        return cls(errors=ins + dels + subs, words=words, ins=ins, dels=dels, subs=subs,
                   sentences=len(utterances),
                   sentence_errors=sum(1 for u in utterances if u.errors), name=name)

    @staticmethod
    def _percent(count: int, total: int) -> float:
        if total:
            return 100.0 * count / total
        return 0.0 if count == 0 else math.inf

    @property
    def wer(self) -> float:
        """Word error rate in percent; 0 with no reference words and no errors, inf with errors."""
        return self._percent(self.errors, self.words)

    @property
    def ser(self) -> float:
        """Sentence error rate in percent."""
        return self._percent(self.sentence_errors, self.sentences)

    def line(self) -> str:
        """Kaldi's summary line: ``%WER 1.23 [ 12 / 974, 3 ins, 4 del, 5 sub ] exp/mono/decode_test``."""
        text = (f"%WER {self.wer:.2f} [ {self.errors} / {self.words}, "
                f"{self.ins} ins, {self.dels} del, {self.subs} sub ]")
        return f"{text} {self.name}" if self.name else text

    def ser_line(self) -> str:
        """Kaldi's sentence error line: ``%SER 25.00 [ 1 / 4 ]`` (plus the name, if any)."""
        text = f"%SER {self.ser:.2f} [ {self.sentence_errors} / {self.sentences} ]"
        return f"{text} {self.name}" if self.name else text

    def to_dict(self) -> dict[str, float | int]:
        """``{"wer", "errors", "words", "ins", "del", "sub"}``, as stored in ``results.json``."""
        return {"wer": self.wer, "errors": self.errors, "words": self.words,
                "ins": self.ins, "del": self.dels, "sub": self.subs}


def compute_wer(refs: dict[str, list[str]], hyps: dict[str, list[str]], name: str = "") -> WerResult:
    """Word error rate of ``hyps`` against ``refs`` (utterance id -> words).

    A reference utterance missing from ``hyps`` counts as all deletions (with a logged
    warning); a hypothesis id missing from ``refs`` raises :class:`DataError`.
    """
    return WerResult.from_utterances(per_utterance(refs, hyps), name)


def score_files(ref_path: str | Path, hyp_path: str | Path, name: str = "",
                details_path: str | Path | None = None) -> WerResult:
    """Score a hypothesis ``text`` file against a reference one (the ``asr score`` command).

    Parameters
    ----------
    ref_path, hyp_path
        Kaldi ``text`` files; hypothesis lines may hold an utterance id alone.
    name
        Ends the ``%WER`` line, conventionally the decode directory.
    details_path
        Where to write the ``per_utt`` details file, if wanted.
    """
    refs = read_text(ref_path)
    hyps = read_text(hyp_path)
    try:
        utterances = per_utterance(refs, hyps)
    except DataError as err:
        raise DataError(hyp_path, f"{err.message} ({ref_path})") from err
    if details_path is not None:
        write_details(details_path, utterances)
    return WerResult.from_utterances(utterances, name)
