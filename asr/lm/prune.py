"""Relative-entropy pruning of a back-off model (Stolcke 1998; SRILM's ``-prune``).

An n-gram (h, w) of order n ≥ 2 is removed when backing off to p(w | h[1:]) instead raises
the model's perplexity by less than ``threshold`` (relative; 1e-8 is a light pruning, 1e-7
SRILM's usual one). With P(h) the model's probability of the history, p = p(w | h),
q = p(w | h[1:]), S_p and S_q the sums of p(· | h) and p(· | h[1:]) over the words seen
after h, and the back-off weight before and after the removal
α = (1 - S_p) / (1 - S_q), α' = (1 - S_p + p) / (1 - S_q + q), the change in entropy is

    ΔH = -P(h) · [ p · (ln q + ln α' - ln p) + (1 - S_p) · (ln α' - ln α) ]

and the n-gram goes when exp(ΔH) - 1 < threshold. Each n-gram is judged against the model
as it stands; orders are pruned from the highest down, and an n-gram that is the history of
a kept higher-order n-gram is kept (the ARPA prefix rule). Unigrams are never pruned.
Afterwards every back-off weight is recomputed, so each history's distribution sums to 1.
"""
from __future__ import annotations

import numpy as np

from asr.lm.model import SENTENCE_START, NgramLM

__all__ = ["prune_relative_entropy"]


def history_log_probs(lm: NgramLM) -> list[np.ndarray]:
    """log10 P(n-gram as a word sequence) of every n-gram, ``<s>`` counting as certain.

    Returns
    -------
    list of (count_n,) float64, one per order.
    """
    uni = lm.log_probs[0].copy()
    uni[lm.word_ids[SENTENCE_START]] = 0.0
    out = [uni]
    for n in range(2, lm.order + 1):
        out.append(lm.log_probs[n - 1] + out[n - 2][lm.contexts(n)])
    return out


def prune_relative_entropy(lm: NgramLM, threshold: float) -> NgramLM:
    """Prune ``lm`` in place (see module) and return it."""
    if threshold <= 0:
        return lm
    v = lm.vocab_size
    limit = np.log1p(threshold)
    for n in range(lm.order, 1, -1):
        ctx = lm.contexts(n)
        p = 10.0 ** lm.log_probs[n - 1]
        q = 10.0 ** lm.score(lm.ngram_ids(n)[:, 1:])
        size = len(lm.keys[n - 2])
        rest_p = np.clip(1.0 - np.bincount(ctx, weights=p, minlength=size), 1e-300, None)[ctx]
        rest_q = np.clip(1.0 - np.bincount(ctx, weights=q, minlength=size), 1e-300, None)[ctx]
        log_alpha = np.log(rest_p) - np.log(rest_q)
        log_alpha_new = np.log(rest_p + p) - np.log(rest_q + q)
        p_hist = 10.0 ** history_log_probs(lm)[n - 2][ctx]
        delta = -p_hist * (p * (np.log(q) + log_alpha_new - np.log(p))
                           + rest_p * (log_alpha_new - log_alpha))
        keep = delta >= limit
        if n < lm.order:
            keep[np.unique(lm.contexts(n + 1))] = True
        if keep.all():
            continue
        new_index = np.cumsum(keep) - 1
        lm.keys[n - 1] = lm.keys[n - 1][keep]
        lm.log_probs[n - 1] = lm.log_probs[n - 1][keep]
        lm.backoffs[n - 1] = lm.backoffs[n - 1][keep]
        if n < lm.order:
            above = lm.keys[n]
            lm.keys[n] = new_index[above // v] * v + above % v
    lm.renormalize()
    return lm
