"""Perplexity and OOV rate of a model on a text, in SRILM's convention (``ngram -ppl``).

Every sentence is scored as ``<s> w1 ... wk </s>``: each word and ``</s>`` count, ``<s>``
does not. A word outside the model's vocabulary is an OOV: it is not scored, it is counted
and reported, and it stays in the history of the words after it (as ``<unk>`` where the
model has that word, else as a word that matches no n-gram). ``<unk>`` itself in the text is
an OOV too, unless ``unk=True`` asks for an open-vocabulary score (SRILM's ``-unk``), where
every OOV is scored as ``<unk>``. A word the model gives probability 0 is a "zeroprob",
likewise excluded and counted.

    ppl  = 10 ** (-logprob / (words - oovs - zeroprobs + sentences))
    ppl1 = 10 ** (-logprob / (words - oovs - zeroprobs))             (without </s>)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from asr.lm.model import LOG10_ZERO, SENTENCE_END, SENTENCE_START, NgramLM, windows
from asr.lm.text import as_sentences

__all__ = ["Perplexity", "perplexity"]


@dataclass
class Perplexity:
    """What ``ngram -ppl`` reports for one text.

    Attributes
    ----------
    sentences : int
    words : int
        Word tokens of the text (``</s>`` not included), OOVs included.
    oovs : int
    zero_probs : int
    log10_prob : float
        Sum of log10 probabilities of the scored words and every ``</s>``.
    """

    sentences: int
    words: int
    oovs: int
    zero_probs: int
    log10_prob: float

    @property
    def scored(self) -> int:
        """Tokens in the perplexity: in-vocabulary words with non-zero probability, and </s>."""
        return self.words - self.oovs - self.zero_probs + self.sentences

    @property
    def perplexity(self) -> float:
        return float(10.0 ** (-self.log10_prob / self.scored))

    @property
    def ppl1(self) -> float:
        n = self.scored - self.sentences
        return float(10.0 ** (-self.log10_prob / n)) if n > 0 else float("nan")

    @property
    def oov_rate(self) -> float:
        return self.oovs / self.words if self.words else 0.0

    def summary(self) -> str:
        return (f"{self.sentences} sentences, {self.words} words, {self.oovs} OOVs "
                f"({self.oov_rate:.2%}), {self.zero_probs} zeroprobs, "
                f"logprob= {self.log10_prob:.2f} ppl= {self.perplexity:.2f} "
                f"ppl1= {self.ppl1:.2f}")


def perplexity(lm: NgramLM, text: str | Path | Iterable[str | list[str]], unk: bool = False,
               unk_word: str = "<unk>") -> Perplexity:
    """Score a text (a file, or an iterable of sentences) with ``lm``; see the module."""
    ids = lm.word_ids
    unk_id = ids.get(unk_word, -1)
    start, end = ids[SENTENCE_START], ids[SENTENCE_END]
    rows, oov_flags = [], []
    num_sentences = num_words = 0
    for sentence in as_sentences(text):
        num_sentences += 1
        num_words += len(sentence)
        word_ids = np.array([ids.get(w, -1) for w in sentence], dtype=np.int64)
        if unk and unk_id >= 0:
            oov = np.zeros(len(sentence), dtype=bool)
        else:
            oov = (word_ids < 0) | (word_ids == unk_id)
        context = np.where(word_ids < 0, unk_id, word_ids)
        rows.append(windows(np.concatenate([[start], context, [end]]), lm.order))
        oov_flags.append(np.concatenate([oov, [False]]))
    if not rows:
        return Perplexity(0, 0, 0, 0, 0.0)
    scores = lm.score(np.concatenate(rows))
    oov = np.concatenate(oov_flags)
    zero = ~oov & (scores <= LOG10_ZERO)
    counted = ~oov & ~zero
    return Perplexity(num_sentences, num_words, int(oov.sum()), int(zero.sum()),
                      float(scores[counted].sum()))
