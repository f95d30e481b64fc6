"""The in-memory back-off n-gram model: one sorted key array per order, probabilities beside it.

Glossary of ids (all count from 0):

- **word id** ``w``: index into ``NgramLM.vocab``; also the index of the word's unigram (every
  vocabulary word has one).
- **n-gram index** at order n: position of the n-gram in ``keys[n - 1]``, and so in
  ``log_probs[n - 1]`` and ``backoffs[n - 1]``.
- **key** of an order-n n-gram ``(h, w)``: ``context * V + w``, where ``context`` is the
  n-gram index of its history ``h`` at order n - 1 (0 for unigrams) and V the vocabulary
  size. Keys are sorted, so an n-gram is found by one binary search per order (a trie in
  arrays), and they never overflow int64 whatever the order.

Every n-gram's history is itself an n-gram of the model (the ARPA prefix rule), so every
history that has continuations has a back-off weight. Probabilities and weights are log10,
as in ARPA files.

    p(w | h) = p*(w | h)                       if (h, w) is in the model
             = bow(h) · p(w | h[1:])           otherwise (bow(h) = 1 if h is not)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["NgramLM", "SENTENCE_START", "SENTENCE_END", "LOG10_ZERO"]

SENTENCE_START, SENTENCE_END = "<s>", "</s>"
LOG10_ZERO = -99.0       # what ARPA files write for probability 0 (the unigram of <s>)


@dataclass
class NgramLM:
    """A back-off n-gram language model.

    Attributes
    ----------
    vocab : list of str
        word id -> word; includes ``<s>`` and ``</s>`` (and ``<unk>`` if the model has it).
    keys : list of ndarray
        ``keys[n - 1]``: (count_n,) int64, sorted keys of the order-n n-grams (see glossary).
    log_probs : list of ndarray
        ``log_probs[n - 1]``: (count_n,) float64, log10 p(w | h) of each n-gram.
    backoffs : list of ndarray
        ``backoffs[n - 1]``: (count_n,) float64, log10 back-off weight of each n-gram as a
        history (0 where it has none, and at the highest order).
    """

    vocab: list[str]
    keys: list[np.ndarray]
    log_probs: list[np.ndarray]
    backoffs: list[np.ndarray]
    _ids: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def order(self) -> int:
        return len(self.keys)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def counts(self) -> list[int]:
        """Number of n-grams of each order, unigrams first."""
        return [len(k) for k in self.keys]

    @property
    def word_ids(self) -> dict[str, int]:
        if self._ids is None:
            self._ids = {w: i for i, w in enumerate(self.vocab)}
        return self._ids

    def contexts(self, n: int) -> np.ndarray:
        """(count_n,) int64: n-gram index of each order-n n-gram's history at order n - 1."""
        return self.keys[n - 1] // self.vocab_size

    def last_words(self, n: int) -> np.ndarray:
        """(count_n,) int64: word id of the last word of each order-n n-gram."""
        return self.keys[n - 1] % self.vocab_size

    def ngram_ids(self, n: int) -> np.ndarray:
        """(count_n, n) int64: the word ids of every order-n n-gram, in key order."""
        ids = self.last_words(n)[:, None]
        index = self.contexts(n)
        for m in range(n - 1, 0, -1):
            ids = np.concatenate([self.last_words(m)[index][:, None], ids], axis=1)
            index = self.contexts(m)[index]
        return ids

    # ------------------------------------------------------------------ lookup and scoring

    def find(self, ids: np.ndarray) -> np.ndarray:
        """Indices of n-grams in the model, -1 where absent.

        Parameters
        ----------
        ids : (M, n) int array of word ids; a negative id matches nothing.

        Returns
        -------
        (M,) int64: the n-gram index of each row at order n, or -1.
        """
        ids = np.asarray(ids, dtype=np.int64)
        n = ids.shape[1]
        if n > self.order:
            return np.full(len(ids), -1, dtype=np.int64)
        index = np.where((ids[:, 0] >= 0) & (ids[:, 0] < self.vocab_size), ids[:, 0], -1)
        for m in range(2, n + 1):
            keys = self.keys[m - 1]
            word = ids[:, m - 1]
            ok = (index >= 0) & (word >= 0)
            key = np.where(ok, index * self.vocab_size + word, 0)
            if len(keys) == 0:
                return np.full(len(ids), -1, dtype=np.int64)
            pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
            index = np.where(ok & (keys[pos] == key), pos, -1)
        return index

    def score(self, ids: np.ndarray) -> np.ndarray:
        """log10 p(last word | the words before it), with back-off, for each row.

        Parameters
        ----------
        ids : (M, k) int array: each row a history followed by the predicted word. Pad short
            histories on the left with -1 (an id that matches nothing: no cost, no context).
            Only the last ``order`` columns are used.

        Returns
        -------
        (M,) float64 log10 probabilities; ``LOG10_ZERO`` or lower where the word itself is
        not in the vocabulary (a negative id).
        """
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape[1] > self.order:
            ids = ids[:, -self.order:]
        k = ids.shape[1]
        total = np.zeros(len(ids))
        done = np.zeros(len(ids), dtype=bool)
        for n in range(k, 0, -1):
            index = self.find(ids[:, k - n:])
            hit = ~done & (index >= 0)
            total[hit] += self.log_probs[n - 1][index[hit]]
            done |= hit
            if n > 1:
                hist = self.find(ids[:, k - n:k - 1])
                back = ~done & (hist >= 0)
                total[back] += self.backoffs[n - 2][hist[back]]
        total[~done] = LOG10_ZERO
        return total

    def log_prob(self, word: str, history: tuple[str, ...] | list[str] = ()) -> float:
        """log10 p(word | history) with back-off; ``history`` oldest word first.

        Words outside the vocabulary in the history match nothing; an unknown ``word`` has
        probability 0 (``LOG10_ZERO``).
        """
        ids = [self.word_ids.get(w, -1) for w in (*history, word)]
        return float(self.score(np.array([ids]))[0])

    def sentence_log_prob(self, words: list[str]) -> float:
        """log10 probability of ``<s> words </s>``, every word and ``</s>`` scored.

        A word outside the vocabulary scores ``LOG10_ZERO``; :func:`asr.lm.perplexity`
        excludes such words instead, as SRILM does.
        """
        ids = [self.word_ids[SENTENCE_START]] + [self.word_ids.get(w, -1) for w in words] \
            + [self.word_ids[SENTENCE_END]]
        return float(self.score(windows(np.array(ids), self.order)).sum())

    # ------------------------------------------------------------------ normalisation

    def history_sums(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """For every order-(n-1) history: the mass of its order-n continuations, twice.

        Returns
        -------
        (count_{n-1},) float64 sum of p(w | h) over the words w with (h, w) at order n, and
        (count_{n-1},) float64 sum of p(w | h[1:]) (backed off) over the same words.
        """
        ctx = self.contexts(n)
        ids = self.ngram_ids(n)
        lower = self.score(ids[:, 1:])
        size = len(self.keys[n - 2])
        seen = np.bincount(ctx, weights=10.0 ** self.log_probs[n - 1], minlength=size)
        below = np.bincount(ctx, weights=10.0 ** lower, minlength=size)
        return seen, below

    def renormalize(self) -> None:
        """Recompute every back-off weight so that each history's distribution sums to 1.

        bow(h) = (1 - Σ p(w | h)) / (1 - Σ p(w | h[1:])), sums over the words seen after h;
        done from the lowest order up, since p(w | h[1:]) uses the weights below.
        """
        for n in range(2, self.order + 1):
            seen, below = self.history_sums(n)
            has = np.bincount(self.contexts(n), minlength=len(seen)) > 0
            num = np.clip(1.0 - seen, 1e-300, None)
            den = np.clip(1.0 - below, 1e-300, None)
            bows = np.zeros(len(seen))
            bows[has] = np.log10(num[has]) - np.log10(den[has])
            self.backoffs[n - 2] = bows
        self.backoffs[self.order - 1] = np.zeros(len(self.keys[-1]))


def windows(ids: np.ndarray, order: int) -> np.ndarray:
    """The n-gram windows that score one sentence.

    Parameters
    ----------
    ids : (T,) word ids of ``<s> w1 ... wk </s>``.

    Returns
    -------
    (T - 1, order) int64: row t holds the ``order - 1`` ids before ``ids[t + 1]`` and then
    ``ids[t + 1]``, padded on the left with -1.
    """
    ids = np.asarray(ids, dtype=np.int64)
    padded = np.concatenate([np.full(order - 1, -1, dtype=np.int64), ids])
    t = len(ids) - 1
    cols = np.arange(order)[None, :] + np.arange(1, t + 1)[:, None]
    return padded[cols]
