"""Sufficient statistics of diagonal GMMs: they accumulate per utterance and merge across jobs."""
from __future__ import annotations

import numpy as np

from asr.gmm.diag_gmm import DiagGmm


class GmmStats:
    """Zeroth, first and second order statistics of every Gaussian.

    occ : (G,) float64; first, second : (G, D) float64.
    """

    def __init__(self, num_gauss: int, dim: int):
        self.occ = np.zeros(num_gauss)
        self.first = np.zeros((num_gauss, dim))
        self.second = np.zeros((num_gauss, dim))
        self.log_likelihood = 0.0
        self.frames = 0

    def accumulate(self, gmm: DiagGmm, feats: np.ndarray, pdfs: np.ndarray,
                   weights: np.ndarray) -> None:
        """Add one utterance.

        feats : (T, D); pdfs : (K,) distinct pdf ids; weights : (T, K) occupation of each
        of those pdfs per frame (posteriors, or one-hot from an alignment).
        """
        pdfs = np.asarray(pdfs)
        sizes = gmm.offsets[pdfs + 1] - gmm.offsets[pdfs]
        gauss = np.concatenate([np.arange(gmm.offsets[p], gmm.offsets[p + 1]) for p in pdfs])
        ll = gmm.gaussian_log_likelihoods(feats, gauss).astype(np.float64)     # (T, G')
        block_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        peak = np.maximum.reduceat(ll, block_start, axis=1)
        expd = np.exp(ll - np.repeat(peak, sizes, axis=1))
        norm = np.add.reduceat(expd, block_start, axis=1)
        post = expd / np.repeat(norm, sizes, axis=1) * np.repeat(weights, sizes, axis=1)
        x = np.asarray(feats, dtype=np.float64)
        self.occ[gauss] += post.sum(axis=0)
        self.first[gauss] += post.T @ x
        self.second[gauss] += post.T @ (x * x)
        self.log_likelihood += float((weights * (peak + np.log(norm))).sum())
        self.frames += len(feats)

    def merge(self, other: "GmmStats") -> "GmmStats":
        self.occ += other.occ
        self.first += other.first
        self.second += other.second
        self.log_likelihood += other.log_likelihood
        self.frames += other.frames
        return self
