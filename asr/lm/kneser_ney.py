"""Interpolated modified Kneser-Ney estimation (Chen & Goodman 1998), as SRILM and KenLM do it.

Counts (:func:`count_ngrams`), for a model of order N over sentences ``<s> w1 ... wk </s>``:

- the highest order keeps raw counts c(h w);
- a lower order n < N uses continuation counts N1+(• h w), the number of distinct words
  seen before ``h w``, except n-grams starting with ``<s>`` (nothing precedes them), which
  keep their raw counts.

Discounts, per order, from the count-of-counts n1..n4 of those counts:
Y = n1 / (n1 + 2 n2), D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3. Where a
count-of-count is 0 or a discount falls outside (0, k), as on tiny corpora, the order falls
back to (0.5, 1.0, 1.5) (KenLM's ``--discount_fallback``) with a warning.

Probabilities, with a(h w) the count above and D(a) its discount::

    p(w | h) = (a(h w) - D(a(h w))) / a(h •)  +  γ(h) · p(w | h[1:])
    γ(h)     = (D1 N1(h •) + D2 N2(h •) + D3+ N3+(h •)) / a(h •)

where N_k(h •) counts the words seen after h with a = k. The unigram interpolates with the
uniform distribution over the vocabulary without ``<s>`` (so ``<unk>`` and words of a given
vocabulary that never occur get the uniform share). As an ARPA model, bow(h) = γ(h); ``<s>``
has probability 0 (log10 -99). Words outside the vocabulary become ``<unk>`` before counting.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from asr.lm.model import LOG10_ZERO, SENTENCE_END, SENTENCE_START, NgramLM
from asr.lm.text import as_sentences

__all__ = ["NgramCounts", "count_ngrams", "estimate_kneser_ney", "train_kneser_ney",
           "select_vocabulary", "FALLBACK_DISCOUNTS"]

log = logging.getLogger(__name__)

FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


def select_vocabulary(sentences: list[list[str]], vocab: int | Iterable[str] | None = None,
                      unk: str = "<unk>") -> list[str]:
    """The model's vocabulary, sorted, with ``<s>``, ``</s>`` and ``unk``.

    Parameters
    ----------
    vocab : None (every word of the text), an int (the most frequent words of the text,
        ties broken by the words' alphabetical order), or the words themselves.
    """
    if vocab is None or isinstance(vocab, (int, np.integer)):
        counts: dict[str, int] = {}
        for words in sentences:
            for w in words:
                counts[w] = counts.get(w, 0) + 1
        counts.pop(unk, None)
        words = sorted(counts, key=lambda w: (-counts[w], w))
        if vocab is not None:
            if vocab < 1:
                raise ValueError(f"vocabulary size must be at least 1, got {vocab}")
            words = words[:int(vocab)]
    else:
        words = list(vocab)
    return sorted(set(words) | {SENTENCE_START, SENTENCE_END, unk})


@dataclass
class NgramCounts:
    """N-gram counts of a text and their Kneser-Ney versions; keys as in :class:`NgramLM`.

    Attributes
    ----------
    vocab : list of str
    keys : list of ndarray
        ``keys[n - 1]``: (count_n,) int64 sorted keys of the order-n n-grams seen (unigrams:
        every vocabulary word, seen or not).
    counts : list of ndarray
        ``counts[n - 1]``: (count_n,) int64 raw counts.
    adjusted : list of ndarray
        ``adjusted[n - 1]``: (count_n,) int64 the counts Kneser-Ney discounts (see module).
    suffixes : list of ndarray
        ``suffixes[n - 1]``: (count_n,) int64 n-gram index at order n - 1 of each order-n
        n-gram's suffix ``h[1:] w`` (empty for unigrams).
    """

    vocab: list[str]
    keys: list[np.ndarray]
    counts: list[np.ndarray]
    adjusted: list[np.ndarray]
    suffixes: list[np.ndarray]

    @property
    def order(self) -> int:
        return len(self.keys)

    def count_of_counts(self, n: int) -> np.ndarray:
        """(4,) int64: how many order-n n-grams have adjusted count 1, 2, 3 and 4."""
        a = self._discounted(n)
        return np.array([np.count_nonzero(a == k) for k in (1, 2, 3, 4)], dtype=np.int64)

    def _discounted(self, n: int) -> np.ndarray:
        a = self.adjusted[n - 1]
        if n == 1:                     # <s> is never predicted
            a = np.delete(a, self.vocab.index(SENTENCE_START))
        return a

    def discounts(self, n: int) -> tuple[float, float, float]:
        """(D1, D2, D3+) of order n from its count-of-counts, or the fallback."""
        n1, n2, n3, n4 = (float(x) for x in self.count_of_counts(n))
        if min(n1, n2, n3, n4) > 0:
            y = n1 / (n1 + 2 * n2)
            d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
            if all(0 < dk < k for k, dk in enumerate(d, start=1)):
                return d
        log.warning("order %d: count-of-counts %s give no valid modified Kneser-Ney "
                    "discounts; using %s", n, [int(n1), int(n2), int(n3), int(n4)],
                    FALLBACK_DISCOUNTS)
        return FALLBACK_DISCOUNTS


def count_ngrams(text: str | Path | Iterable[str | list[str]], order: int,
                 vocab: int | Iterable[str] | None = None, unk: str = "<unk>") -> NgramCounts:
    """Count the n-grams of orders 1..``order`` of ``<s> sentence </s>`` over a text.

    Parameters
    ----------
    text : a file (one sentence a line) or an iterable of sentences (strings or word lists).
    vocab : see :func:`select_vocabulary`; other words count as ``unk``.
    """
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    sentences = as_sentences(text)
    words = select_vocabulary(sentences, vocab, unk)
    ids = {w: i for i, w in enumerate(words)}
    v = len(words)
    start, end, unk_id = ids[SENTENCE_START], ids[SENTENCE_END], ids[unk]
    flat = [start]
    for sentence in sentences:
        flat.extend(ids.get(w, unk_id) for w in sentence)
        flat.append(end)
        flat.append(start)
    tokens = np.array(flat[:-1], dtype=np.int64)
    # Sentence number of each token: a window is valid when it stays inside one sentence.
    sentence = np.cumsum(tokens == start) - 1

    keys = [np.arange(v, dtype=np.int64)]
    counts = [np.bincount(tokens, minlength=v).astype(np.int64)]
    suffixes = [np.zeros(0, dtype=np.int64)]
    index = tokens.copy()                         # n-gram index of the window at each position
    for n in range(2, order + 1):
        t = len(tokens) - n + 1
        pos = np.flatnonzero((index[:t] >= 0) & (sentence[:t] == sentence[n - 1:n - 1 + t]))
        key = index[pos] * v + tokens[pos + n - 1]
        uniq, first, inverse, count = np.unique(key, return_index=True, return_inverse=True,
                                                return_counts=True)
        keys.append(uniq)
        counts.append(count.astype(np.int64))
        suffixes.append(index[pos[first] + 1])
        index = np.full(len(tokens), -1, dtype=np.int64)
        index[pos] = inverse.reshape(-1)
    adjusted = []
    for n in range(1, order + 1):
        if n == order:
            adjusted.append(counts[n - 1].copy())
            continue
        cont = np.bincount(suffixes[n], minlength=len(keys[n - 1])).astype(np.int64)
        first_word = _first_words(keys, n, v)
        cont[first_word == start] = counts[n - 1][first_word == start]
        adjusted.append(cont)
    return NgramCounts(words, keys, counts, adjusted, suffixes)


def _first_words(keys: list[np.ndarray], n: int, v: int) -> np.ndarray:
    index = keys[n - 1]
    for m in range(n, 1, -1):
        index = keys[m - 2][index // v]
    return index % v


def estimate_kneser_ney(counts: NgramCounts,
                        discounts: Sequence[Sequence[float]] | None = None) -> NgramLM:
    """The interpolated modified Kneser-Ney model of ``counts``, as a back-off model.

    Parameters
    ----------
    discounts : optional (D1, D2, D3+) for each order, unigrams first; estimated from the
        count-of-counts when None.
    """
    v = len(counts.vocab)
    start = counts.vocab.index(SENTENCE_START)
    log_probs, backoffs = [], []
    probs_below = None
    for n in range(1, counts.order + 1):
        d1, d2, d3 = discounts[n - 1] if discounts is not None else counts.discounts(n)
        a = counts.adjusted[n - 1].astype(np.float64)
        if n == 1:
            a[start] = 0.0
        table = np.array([0.0, d1, d2, d3])
        disc = table[np.minimum(counts.adjusted[n - 1], 3)]
        if n == 1:
            disc[start] = 0.0
            total = a.sum()
            gamma = disc.sum() / total
            probs = (a - disc) / total + gamma / (v - 1)
            probs[start] = 0.0
        else:
            ctx = counts.keys[n - 1] // v
            size = len(counts.keys[n - 2])
            total = np.bincount(ctx, weights=a, minlength=size)
            mass = np.bincount(ctx, weights=disc, minlength=size)
            has = total > 0
            gamma = np.zeros(size)
            gamma[has] = mass[has] / total[has]
            probs = (a - disc) / total[ctx] + gamma[ctx] * probs_below[counts.suffixes[n - 1]]
            bows = np.zeros(size)
            bows[has] = np.log10(gamma[has])
            backoffs[n - 2] = bows
        with np.errstate(divide="ignore"):
            lp = np.log10(probs)
        lp[probs <= 0] = LOG10_ZERO
        log_probs.append(lp)
        backoffs.append(np.zeros(len(lp)))
        probs_below = probs
    return NgramLM(list(counts.vocab), [k.copy() for k in counts.keys], log_probs, backoffs)


def train_kneser_ney(text: str | Path | Iterable[str | list[str]], order: int = 3,
                     vocab: int | Iterable[str] | None = None, unk: str = "<unk>",
                     prune: float = 0.0,
                     discounts: Sequence[Sequence[float]] | None = None) -> NgramLM:
    """Train an interpolated modified Kneser-Ney model of ``order`` on a text.

    Parameters
    ----------
    text : a file (one sentence a line) or an iterable of sentences.
    order : 1 to 4 (higher orders work too, more slowly).
    vocab : None (every word of the text), an int (that many most frequent words; the rest
        become ``unk``) or a list of words.
    prune : relative-entropy pruning threshold (see :func:`asr.lm.prune_relative_entropy`);
        0 keeps every n-gram.
    discounts : optional (D1, D2, D3+) per order, overriding the estimates.
    """
    from asr.lm.prune import prune_relative_entropy

    lm = estimate_kneser_ney(count_ngrams(text, order, vocab, unk), discounts)
    if prune > 0:
        prune_relative_entropy(lm, prune)
    return lm
