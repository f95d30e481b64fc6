"""ARPA back-off n-gram files of any order: reading with line-numbered errors, atomic writing.

The format (as SRILM, KenLM and Kaldi write it)::

    \\data\\
    ngram 1=<count>
    ngram 2=<count>

    \\1-grams:
    <log10 p>  <w1>  [<log10 back-off weight>]
    \\2-grams:
    <log10 p>  <w1> <w2>  [<log10 back-off weight>]
    \\end\\

Text before ``\\data\\`` is a comment; fields are separated by any white space. The reader
checks what the model needs to be sound and says where it is not: the header's counts
against each section, sections in order 1..N, numbers (a log10 probability is ≤ 0; -inf is
read as -99), every word of an n-gram among the unigrams, ``<s>`` only first and ``</s>``
only last, no duplicate n-gram, and the history (prefix) of every n-gram present one order
below. ``<s>`` and ``</s>`` must be unigrams; ``<unk>`` is an ordinary word.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from asr.errors import DataError
from asr.fileio import atomic_file
from asr.lm.model import LOG10_ZERO, SENTENCE_END, SENTENCE_START, NgramLM

__all__ = ["read_arpa", "write_arpa"]

_COUNT = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)")
_SECTION = re.compile(r"\\(\d+)-grams:")


def _number(text: str, path: Path, number: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(path, f"expected a {what}, got {text!r}", number) from None
    if math.isnan(value) or value == math.inf:
        raise DataError(path, f"expected a {what}, got {text!r}", number)
    return value


class _Reader:
    """The state of one read: the header, the sections read so far, the current one."""

    def __init__(self, path: Path):
        self.path = path
        self.announced: dict[int, int] = {}
        self.vocab: list[str] = []
        self.ids: dict[str, int] = {}
        self.keys: list[np.ndarray] = []
        self.log_probs: list[np.ndarray] = []
        self.backoffs: list[np.ndarray] = []
        self.previous: dict[tuple[int, ...], int] = {}     # order n-1: ids -> key
        self.order = 0                                     # section being read
        self.header_line = 0
        self._reset()

    def _reset(self) -> None:
        self.entries: dict[tuple[int, ...], int] = {}      # ids -> row in the lists below
        self.prefix_keys: list[int] = []
        self.words: list[int] = []
        self.probs: list[float] = []
        self.bows: list[float] = []

    def header(self, line: str, number: int) -> None:
        m = _COUNT.fullmatch(line)
        if not m:
            raise DataError(self.path, f"expected 'ngram N=COUNT' in the \\data\\ header, got "
                            f"{line!r}", number)
        order, count = int(m.group(1)), int(m.group(2))
        if order < 1:
            raise DataError(self.path, f"n-gram orders count from 1, got {line!r}", number)
        if order in self.announced:
            raise DataError(self.path, f"order {order} announced twice in the \\data\\ header",
                            number)
        self.announced[order] = count

    def start_section(self, order: int, number: int) -> None:
        if not self.announced:
            raise DataError(self.path, "no 'ngram N=COUNT' lines in the \\data\\ header",
                            number)
        if self.order == 0 and sorted(self.announced) != list(range(1, len(self.announced) + 1)):
            raise DataError(self.path, f"the \\data\\ header announces orders "
                            f"{sorted(self.announced)}; expected 1..N without gaps", number)
        if self.order:
            self.finish_section(number)
        expected = self.order + 1
        if order != expected:
            raise DataError(self.path, f"expected the \\{expected}-grams: section, got "
                            f"\\{order}-grams:", number)
        if order not in self.announced:
            raise DataError(self.path, f"\\{order}-grams: section not announced in the "
                            "\\data\\ header", number)
        self.order, self.header_line = order, number

    def entry(self, line: str, number: int) -> None:
        n = self.order
        parts = line.split()
        if len(parts) not in (n + 1, n + 2):
            raise DataError(self.path, f"expected a log10 probability, {n} word(s) and an "
                            f"optional back-off weight, got {line!r}", number)
        prob = _number(parts[0], self.path, number, "log10 probability")
        if prob > 0:
            raise DataError(self.path, f"a log10 probability is at most 0, got {parts[0]}",
                            number)
        prob = max(prob, LOG10_ZERO)
        bow = 0.0
        if len(parts) == n + 2:
            bow = _number(parts[-1], self.path, number, "log10 back-off weight")
            if bow == -math.inf:
                raise DataError(self.path, f"expected a finite back-off weight, got "
                                f"{parts[-1]!r}", number)
            if n == len(self.announced) and bow != 0:
                raise DataError(self.path, f"a highest-order ({n}-gram) entry has a back-off "
                                f"weight: {line!r}", number)
        words = parts[1:n + 1]
        if n == 1:
            word = words[0]
            if word in self.ids:
                raise DataError(self.path, f"duplicate unigram {word!r}", number)
            self.ids[word] = len(self.vocab)
            self.vocab.append(word)
            ids: tuple[int, ...] = (self.ids[word],)
            prefix_key = 0
        else:
            try:
                ids = tuple(self.ids[w] for w in words)
            except KeyError as exc:
                raise DataError(self.path, f"n-gram {' '.join(words)!r} has word {exc.args[0]!r}"
                                ", which is not among the unigrams", number) from None
            if SENTENCE_START in words[1:] or SENTENCE_END in words[:-1]:
                raise DataError(self.path, f"n-gram {' '.join(words)!r}: {SENTENCE_START} may "
                                f"only come first and {SENTENCE_END} only last", number)
            prefix_key = self.previous.get(ids[:-1])
            if prefix_key is None:
                raise DataError(self.path, f"n-gram {' '.join(words)!r}: its history "
                                f"{' '.join(words[:-1])!r} is not a {n - 1}-gram of the model",
                                number)
            if ids in self.entries:
                raise DataError(self.path, f"duplicate {n}-gram {' '.join(words)!r}", number)
        self.entries[ids] = len(self.probs)
        self.prefix_keys.append(prefix_key)
        self.words.append(ids[-1])
        self.probs.append(prob)
        self.bows.append(bow)

    def finish_section(self, number: int) -> None:
        n = self.order
        found, expected = len(self.probs), self.announced[n]
        if found != expected:
            raise DataError(self.path, f"the \\data\\ header announces {expected} {n}-grams, "
                            f"the section starting at line {self.header_line} has {found}",
                            number)
        if n == 1:
            for marker in (SENTENCE_START, SENTENCE_END):
                if marker not in self.ids:
                    raise DataError(self.path, f"no unigram {marker}: the model needs both "
                                    f"{SENTENCE_START} and {SENTENCE_END}", number)
        v = len(self.vocab)
        words = np.array(self.words, dtype=np.int64)
        if n == 1:
            keys = words
        else:
            context = np.searchsorted(self.keys[-1], np.array(self.prefix_keys, dtype=np.int64))
            keys = context * v + words
        order = np.argsort(keys, kind="stable")
        self.keys.append(keys[order])
        self.log_probs.append(np.array(self.probs)[order])
        self.backoffs.append(np.array(self.bows)[order])
        rows = np.array(list(self.entries.values()), dtype=np.int64)
        key_list = keys[rows].tolist()
        self.previous = dict(zip(self.entries.keys(), key_list))
        self._reset()

    def result(self) -> NgramLM:
        return NgramLM(self.vocab, self.keys, self.log_probs, self.backoffs)


def read_arpa(path: str | Path) -> NgramLM:
    """Read an ARPA file of any order; errors name the file and line (see module)."""
    path = Path(path)
    reader = _Reader(path)
    state = "comment"
    number = 0
    try:
        with open(path, encoding="utf-8") as f:
            for number, raw in enumerate(f, start=1):
                line = raw.strip()
                if state == "comment":
                    if line == "\\data\\":
                        state = "header"
                    continue
                if not line:
                    continue
                if line == "\\end\\":
                    if reader.order == 0:
                        raise DataError(path, "\\end\\ before any n-gram section", number)
                    reader.finish_section(number)
                    if reader.order != len(reader.announced):
                        raise DataError(path, f"\\end\\ after the \\{reader.order}-grams: "
                                        f"section; the header announces order "
                                        f"{len(reader.announced)}", number)
                    return reader.result()
                section = _SECTION.fullmatch(line)
                if section:
                    reader.start_section(int(section.group(1)), number)
                    state = "section"
                elif state == "header":
                    reader.header(line, number)
                else:
                    reader.entry(line, number)
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise DataError(path, f"cannot read ARPA file: {exc.strerror or exc}") from None
    if state == "comment":
        raise DataError(path, "no \\data\\ line: not an ARPA file", number or None)
    raise DataError(path, "missing \\end\\ (the file ends early)", number)


def write_arpa(lm: NgramLM, path: str | Path, digits: int = 7) -> None:
    """Write ``lm`` to ``path`` atomically, numbers to ``digits`` significant digits.

    N-grams come in key order (by word id, history first); a back-off weight is written
    wherever it is not 0 (and never at the highest order).
    """
    fmt = f"{{:.{digits}g}}"
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.write("\\data\\\n")
        for n, count in enumerate(lm.counts, start=1):
            out.write(f"ngram {n}={count}\n")
        strings = list(lm.vocab)
        for n in range(1, lm.order + 1):
            out.write(f"\n\\{n}-grams:\n")
            if n > 1:
                ctx = lm.contexts(n).tolist()
                words = lm.last_words(n).tolist()
                strings = [f"{strings[c]} {lm.vocab[w]}" for c, w in zip(ctx, words)]
            probs = [fmt.format(x) for x in lm.log_probs[n - 1].tolist()]
            if n < lm.order:
                bows = lm.backoffs[n - 1].tolist()
                lines = [f"{p}\t{s}\t{fmt.format(b)}\n" if b != 0 else f"{p}\t{s}\n"
                         for p, s, b in zip(probs, strings, bows)]
            else:
                lines = [f"{p}\t{s}\n" for p, s in zip(probs, strings)]
            out.writelines(lines)
        out.write("\n\\end\\\n")
