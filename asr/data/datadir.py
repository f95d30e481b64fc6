"""Kaldi-style data directories: ``wav.scp``, ``text``, ``utt2spk`` and ``spk2utt``.

A data directory is four plain-text files keyed by utterance id, one line per key, sorted
in C-locale (byte) order, which for UTF-8 text is Python's ``str`` order::

    wav.scp   <utterance-id> <path to a WAV file>
    text      <utterance-id> <word> <word> ...
    utt2spk   <utterance-id> <speaker-id>
    spk2utt   <speaker-id> <utterance-id> <utterance-id> ...   (derived from utt2spk)

:meth:`DataDir.load` checks what Kaldi's ``utils/validate_data_dir.sh`` checks and stops at
the first problem with one :class:`~asr.errors.DataError` naming the file and 1-based line,
e.g. ``data/train/text:12: empty transcript for utterance 'u1'; expected at least one word``.
As in Kaldi, ``utt2spk`` must also be sorted by speaker (make each speaker id a prefix of
its utterance ids), and relative paths in ``wav.scp`` are taken from the working directory.

>>> data = DataDir.load("data/yesno/train")        # doctest: +SKIP
>>> data.check_vocabulary({"YES", "NO"})           # doctest: +SKIP
>>> data.subset(data.utts[:5]).save("data/yesno/train_5")   # doctest: +SKIP
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Iterable

from asr.errors import DataError
from asr.fileio import atomic_dir, read_lines

__all__ = ["DataDir", "copy_id", "copy_source", "fix_data_dir"]

WAV_SCP, TEXT, UTT2SPK, SPK2UTT = "wav.scp", "text", "utt2spk", "spk2utt"

Row = tuple[int, str, str]  # (1-based line number, key, rest of the line: "" when absent)


def _read_rows(path: Path, what: str) -> list[Row]:
    """Split each line of ``path`` into key and rest; ``what`` describes a line for errors."""
    if not path.is_file():
        raise DataError(path, f"missing; a data directory needs {WAV_SCP}, {TEXT} and {UTT2SPK}")
    lines = read_lines(path)
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = line.split(maxsplit=1)
        if not fields:
            raise DataError(path, f"empty line; expected '{what}'", number)
        rows.append((number, fields[0], fields[1].strip() if len(fields) > 1 else ""))
    if not rows:
        raise DataError(path, f"empty; expected one line '{what}' per entry")
    return rows


def _check_unique(path: Path, rows: list[Row]) -> None:
    first: dict[str, int] = {}
    for number, key, _ in rows:
        if key in first:
            raise DataError(path, f"duplicate id '{key}' (first on line {first[key]}); "
                                  "expected each id once", number)
        first[key] = number


def _check_sorted(path: Path, rows: list[Row]) -> None:
    for (_, previous, _), (number, key, _) in zip(rows, rows[1:]):
        if key < previous:
            raise DataError(path, f"not sorted: '{key}' comes after '{previous}'; expected ids "
                                  "in C-locale order (as `LC_ALL=C sort` gives)", number)


def _check_ids(path: Path, rows: list[Row], reference: dict[str, int], reference_path: Path) -> None:
    """Every key of ``rows`` is in ``reference`` (id -> line) and every reference id in rows."""
    keys = {key for _, key, _ in rows}
    for number, key, _ in rows:
        if key not in reference:
            raise DataError(path, f"utterance '{key}' is not in {reference_path.name}; "
                                  f"expected the same utterances as {reference_path.name}", number)
    for key, number in reference.items():
        if key not in keys:
            raise DataError(reference_path, f"utterance '{key}' has no line in {path.name}; "
                                            f"expected the same utterances as {path.name}", number)


def _check_speaker_order(path: Path, utt2spk: Iterable[tuple[int | None, str, str]]) -> None:
    previous = None
    for number, utt, spk in utt2spk:
        if previous is not None and spk < previous[1]:
            raise DataError(path, f"speaker '{spk}' of utterance '{utt}' sorts before speaker "
                                  f"'{previous[1]}' of the utterance before it; expected "
                                  "utterances sorted by speaker too (make each speaker id a "
                                  "prefix of its utterance ids)", number)
        previous = (utt, spk)


def _wav_path(path: Path, number: int, rest: str) -> Path:
    if not rest:
        raise DataError(path, "no audio path; expected '<utterance-id> <path>'", number)
    if rest.endswith("|"):
        raise DataError(path, "commands in wav.scp are not supported; expected a file path", number)
    return Path(os.path.abspath(rest))


def _speaker(path: Path, number: int, rest: str) -> str:
    if len(rest.split()) != 1:
        raise DataError(path, f"expected '<utterance-id> <speaker-id>', found "
                              f"{len(rest.split()) + 1} fields", number)
    return rest


@dataclass
class DataDir:
    """One data directory in memory.

    Attributes
    ----------
    wavs : dict[str, Path]
        Utterance id -> absolute path of its audio (``wav.scp``).
    text : dict[str, list[str]]
        Utterance id -> its words (``text``).
    utt2spk : dict[str, str]
        Utterance id -> speaker id (``utt2spk``).
    path : Path or None
        Where it was loaded from or last saved to; errors name files under it.
    """

    wavs: dict[str, Path]
    text: dict[str, list[str]]
    utt2spk: dict[str, str]
    path: Path | None = field(default=None, compare=False)

    def __post_init__(self):
        self.wavs = {utt: Path(os.path.abspath(wav)) for utt, wav in self.wavs.items()}

    @property
    def utts(self) -> list[str]:
        """Utterance ids in sorted order."""
        return sorted(self.wavs)

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        """Speaker id -> its utterance ids, both sorted."""
        result: dict[str, list[str]] = {}
        for utt in self.utts:
            result.setdefault(self.utt2spk[utt], []).append(utt)
        return dict(sorted(result.items()))

    def __len__(self) -> int:
        return len(self.wavs)

    def _file(self, name: str) -> Path:
        return self.path / name if self.path is not None else Path(name)

    @classmethod
    def load(cls, path: str | Path) -> "DataDir":
        """Read and validate the data directory at ``path``.

        Raises
        ------
        DataError
            At the first problem, naming the file and line: a missing file, an unsorted or
            repeated id, ids that differ between files, an empty transcript, a missing
            audio file, or a ``spk2utt`` that disagrees with ``utt2spk``.
        """
        path = Path(path)
        if not path.is_dir():
            raise DataError(path, f"not a data directory; expected a folder holding {WAV_SCP}, "
                                  f"{TEXT} and {UTT2SPK}")
        files = {name: path / name for name in (WAV_SCP, TEXT, UTT2SPK)}
        rows = {WAV_SCP: _read_rows(files[WAV_SCP], "<utterance-id> <path>"),
                TEXT: _read_rows(files[TEXT], "<utterance-id> <word> ..."),
                UTT2SPK: _read_rows(files[UTT2SPK], "<utterance-id> <speaker-id>")}
        for name, table in rows.items():
            _check_unique(files[name], table)
            _check_sorted(files[name], table)
        wav_lines = {key: number for number, key, _ in rows[WAV_SCP]}
        for name in (TEXT, UTT2SPK):
            _check_ids(files[name], rows[name], wav_lines, files[WAV_SCP])
        for number, key, rest in rows[TEXT]:
            if not rest:
                raise DataError(files[TEXT], f"empty transcript for utterance '{key}'; expected "
                                             "at least one word", number)
        utt2spk = {key: _speaker(files[UTT2SPK], number, rest) for number, key, rest in rows[UTT2SPK]}
        _check_speaker_order(files[UTT2SPK], ((n, k, utt2spk[k]) for n, k, _ in rows[UTT2SPK]))
        wavs = {}
        for number, key, rest in rows[WAV_SCP]:
            wavs[key] = _wav_path(files[WAV_SCP], number, rest)
            if not wavs[key].is_file():
                raise DataError(files[WAV_SCP], f"audio file '{rest}' of utterance '{key}' does "
                                                "not exist", number)
        data = cls(wavs=wavs, text={key: rest.split() for _, key, rest in rows[TEXT]},
                   utt2spk=utt2spk, path=path)
        if (path / SPK2UTT).exists():
            data._check_spk2utt(path / SPK2UTT)
        return data

    def _check_spk2utt(self, path: Path) -> None:
        rows = _read_rows(path, "<speaker-id> <utterance-id> ...")
        _check_unique(path, rows)
        _check_sorted(path, rows)
        expected = self.spk2utt
        for number, spk, rest in rows:
            if spk not in expected:
                raise DataError(path, f"speaker '{spk}' is not in {UTT2SPK}; expected the "
                                      f"speakers of {UTT2SPK}", number)
            if rest.split() != expected[spk]:
                raise DataError(path, f"the utterances of speaker '{spk}' differ from {UTT2SPK}; "
                                      f"expected its {len(expected[spk])} utterances in sorted "
                                      "order", number)
        listed = {spk for _, spk, _ in rows}
        for spk in expected:
            if spk not in listed:
                raise DataError(path, f"speaker '{spk}' of {UTT2SPK} is missing")

    def validate(self) -> None:
        """Check the in-memory contents as :meth:`load` checks files (without line numbers)."""
        for name, table in ((TEXT, self.text), (UTT2SPK, self.utt2spk)):
            extra, missing = sorted(set(table) - set(self.wavs)), sorted(set(self.wavs) - set(table))
            if extra:
                raise DataError(self._file(name), f"utterance '{extra[0]}' is not in {WAV_SCP}; "
                                                  f"expected the same utterances as {WAV_SCP}")
            if missing:
                raise DataError(self._file(WAV_SCP), f"utterance '{missing[0]}' has no line "
                                                     f"in {name}; expected the same utterances "
                                                     f"as {name}")
        for utt in self.utts:
            words, spk = self.text[utt], self.utt2spk[utt]
            tokens = [(utt, "utterance id"), (spk, "speaker id"), *((w, "word") for w in words)]
            for token, what in tokens:
                if not token or token.split() != [token]:
                    raise DataError(self._file(TEXT), f"{what} {token!r} of utterance '{utt}' is "
                                                      "empty or holds whitespace")
            if not words:
                raise DataError(self._file(TEXT), f"empty transcript for utterance '{utt}'; "
                                                  "expected at least one word")
        _check_speaker_order(self._file(UTT2SPK), ((None, u, self.utt2spk[u]) for u in self.utts))

    def save(self, path: str | Path) -> None:
        """Write the four files into ``path``, replacing that directory atomically.

        Anything else in an existing directory at ``path`` goes with it. Afterwards
        ``self.path`` is ``path``.
        """
        path = Path(path)
        self.validate()
        utts = self.utts
        tables = {WAV_SCP: [(u, str(self.wavs[u])) for u in utts],
                  TEXT: [(u, " ".join(self.text[u])) for u in utts],
                  UTT2SPK: [(u, self.utt2spk[u]) for u in utts],
                  SPK2UTT: [(s, " ".join(us)) for s, us in self.spk2utt.items()]}
        with atomic_dir(path) as tmp:
            for name, rows in tables.items():
                (tmp / name).write_text("".join(f"{key} {rest}\n" for key, rest in rows),
                                        encoding="utf-8")
        self.path = path

    @classmethod
    def combine(cls, parts: Iterable["DataDir"]) -> "DataDir":
        """One data directory holding the utterances of all ``parts`` (ids must not clash)."""
        wavs, text, utt2spk = {}, {}, {}
        for part in parts:
            clash = set(part.wavs) & set(wavs)
            if clash:
                raise DataError(part.path, f"utterance '{min(clash)}' is in two data "
                                "directories being combined")
            wavs.update(part.wavs)
            text.update(part.text)
            utt2spk.update(part.utt2spk)
        return cls(wavs=wavs, text=text, utt2spk=utt2spk)

    def subset(self, utts: Iterable[str]) -> "DataDir":
        """A new, unsaved data directory holding only ``utts``."""
        utts = sorted(set(utts))
        for utt in utts:
            if utt not in self.wavs:
                raise DataError(self.path, f"utterance '{utt}' is not in this data directory")
        return DataDir(wavs={u: self.wavs[u] for u in utts}, text={u: self.text[u] for u in utts},
                       utt2spk={u: self.utt2spk[u] for u in utts})

    def check_vocabulary(self, words: Collection[str]) -> None:
        """Raise a DataError naming ``text`` and the line of the first word not in ``words``.

        Line numbers are those of the ``text`` file as loaded or saved (sorted order).
        """
        for number, utt in enumerate(self.utts, start=1):
            for word in self.text[utt]:
                if word not in words:
                    known = sorted(words)
                    shown = ", ".join(known[:12]) + (f", ... ({len(known)} words)"
                                                     if len(known) > 12 else "")
                    raise DataError(self._file(TEXT), f"word '{word}' of utterance '{utt}' is not "
                                                      f"in the vocabulary; expected one of: {shown}",
                                    number)


def copy_id(prefix: str, key: str) -> str:
    """The id of an augmented copy of utterance (or speaker) ``key``: ``prefix-key``.

    Kaldi's convention (``sp0.9-utt1``): a copy's utterances stay sorted by speaker.
    """
    if not prefix or "-" in prefix or prefix.split() != [prefix]:
        raise ValueError(f"a copy prefix must be one token without '-', got {prefix!r}")
    return f"{prefix}-{key}"


def copy_source(utt: str) -> str:
    """The utterance an augmented copy was made from: ``copy_source("sp0.9-u") == "u"``."""
    prefix, sep, rest = utt.partition("-")
    if not sep or not rest:
        raise ValueError(f"{utt!r} is not the id of an augmented copy (prefix-utterance)")
    return rest


def fix_data_dir(path: str | Path) -> int:
    """Drop the utterances Kaldi's ``utils/fix_data_dir.sh`` would drop, and rewrite the files.

    An utterance goes when it is missing from any of ``wav.scp``, ``text`` and ``utt2spk``,
    has an empty transcript, or its audio file does not exist; the files are re-sorted and
    ``spk2utt`` is regenerated. Repeated ids and malformed lines are still errors.

    Returns
    -------
    int
        The number of utterances dropped.
    """
    path = Path(path)
    rows = {name: _read_rows(path / name, "<utterance-id> ...")
            for name in (WAV_SCP, TEXT, UTT2SPK)}
    for name, table in rows.items():
        _check_unique(path / name, table)
    wavs = {k: _wav_path(path / WAV_SCP, n, rest) for n, k, rest in rows[WAV_SCP]}
    text = {k: rest.split() for _, k, rest in rows[TEXT]}
    utt2spk = {k: _speaker(path / UTT2SPK, n, rest) for n, k, rest in rows[UTT2SPK]}
    every = set(wavs) | set(text) | set(utt2spk)
    keep = {u for u in set(wavs) & set(text) & set(utt2spk) if text[u] and wavs[u].is_file()}
    if not keep:
        raise DataError(path, f"no utterance survives: all {len(every)} lack a line in some "
                              "file, a transcript or their audio")
    DataDir(wavs=wavs, text=text, utt2spk=utt2spk, path=path).subset(keep).save(path)
    return len(every) - len(keep)
