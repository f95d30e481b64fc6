"""Grammars: which word may follow which, with log probabilities.

A ``Grammar`` over W words is a bigram table: ``log_probs[h, v]`` is the log probability of
next word ``v`` after history ``h``. Row 0 is the sentence start ``<s>``, row ``i+1`` word
``i``; column ``i`` is word ``i`` and column W is the sentence end ``</s>``.

- ``word_loop``: any sequence of words, each equally likely (Kaldi's unigram word loop);
- ``single_word``: exactly one word (isolated-word recognition);
- ``read_arpa``: an ARPA n-gram file; unigrams and bigrams with back-off are applied exactly,
  higher orders are refused.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr.errors import DataError

NEG_INF = -np.inf


@dataclass
class Grammar:
    words: list[str]
    log_probs: np.ndarray   # (W + 1, W + 1)

    @property
    def num_words(self) -> int:
        return len(self.words)


def word_loop(words: list[str]) -> Grammar:
    """Any non-empty word sequence; every next word has probability 1/W, ending costs nothing."""
    w = len(words)
    table = np.full((w + 1, w + 1), -math.log(w))
    table[0, w] = NEG_INF
    table[1:, w] = 0.0
    return Grammar(list(words), table)


def single_word(words: list[str]) -> Grammar:
    """Exactly one word, each equally likely."""
    w = len(words)
    table = np.full((w + 1, w + 1), NEG_INF)
    table[0, :w] = -math.log(w)
    table[1:, w] = 0.0
    return Grammar(list(words), table)


def read_arpa(path: str | Path, words: list[str]) -> Grammar:
    """Read an ARPA unigram/bigram model into a bigram table over ``words``.

    Words of the lexicon missing from the model get the ``<unk>`` probability if present
    (else they cannot be recognised). Errors name the file and line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # only \n ends a line
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read ARPA file: {exc}") from None
    counts: dict[int, int] = {}
    grams: dict[int, dict[tuple[str, ...], tuple[float, float]]] = {}
    section = None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line == "\\data\\":
            section = "data"
            continue
        if line == "\\end\\":
            section = "end"
            break
        header = re.fullmatch(r"\\(\d+)-grams:", line)
        if header:
            section = int(header.group(1))
            if section not in counts:
                raise DataError(path, f"{section}-grams section not announced in \\data\\", number)
            if section > 2:
                raise DataError(path, f"only unigram and bigram models are supported, found "
                                f"{section}-grams", number)
            grams[section] = {}
            continue
        if section == "data":
            m = re.fullmatch(r"ngram\s+(\d+)\s*=\s*(\d+)", line)
            if not m:
                raise DataError(path, f"expected 'ngram N=COUNT' in \\data\\, got {line!r}", number)
            counts[int(m.group(1))] = int(m.group(2))
            continue
        if not isinstance(section, int):
            raise DataError(path, f"unexpected line outside any section: {line!r}", number)
        parts = line.split()
        if len(parts) not in (section + 1, section + 2):
            raise DataError(path, f"expected log10 prob, {section} word(s) and an optional "
                            f"back-off weight, got {line!r}", number)
        try:
            prob = float(parts[0])
            backoff = float(parts[section + 1]) if len(parts) == section + 2 else 0.0
        except ValueError:
            raise DataError(path, f"not a number in {line!r}", number) from None
        if not (math.isfinite(prob) or prob == -math.inf) or not math.isfinite(backoff):
            raise DataError(path, f"probabilities must be finite log10 values: {line!r}", number)
        grams[section][tuple(parts[1:section + 1])] = (prob, backoff)
    if section != "end":
        raise DataError(path, "missing \\end\\ marker")
    if 1 not in grams:
        raise DataError(path, "no \\1-grams: section")
    for order, n in counts.items():
        if order <= 2 and len(grams.get(order, {})) != n:
            raise DataError(path, f"\\data\\ announces {n} {order}-grams, found "
                            f"{len(grams.get(order, {}))}")
    ln10 = math.log(10.0)
    uni = grams[1]
    bi = grams.get(2, {})

    def unigram(word: str) -> float:
        entry = uni.get((word,)) or uni.get(("<unk>",))
        return NEG_INF if entry is None else entry[0] * ln10

    history = ["<s>"] + list(words)
    nexts = list(words) + ["</s>"]
    table = np.full((len(history), len(nexts)), NEG_INF)
    for i, h in enumerate(history):
        backoff = uni.get((h,), (0.0, 0.0))[1] * ln10
        for j, v in enumerate(nexts):
            if v == "<s>":
                continue
            if (h, v) in bi:
                table[i, j] = bi[(h, v)][0] * ln10
            else:
                table[i, j] = backoff + unigram(v)
    return Grammar(list(words), table)
