"""Sufficient statistics of diagonal GMMs: they accumulate in batches and merge across jobs."""
from __future__ import annotations

import numba
import numpy as np

from asr.gmm.diag_gmm import DiagGmm


class GmmStats:
    """Zeroth, first and second order statistics of every Gaussian.

    occ : (G,) float64; first, second : (G, D) float64; log_likelihood: weighted total.
    """

    def __init__(self, num_gauss: int, dim: int):
        self.occ = np.zeros(num_gauss)
        self.first = np.zeros((num_gauss, dim))
        self.second = np.zeros((num_gauss, dim))
        self.log_likelihood = 0.0
        self.frames = 0.0

    def accumulate(self, gmm: DiagGmm, feats: np.ndarray, frames: np.ndarray,
                   pdfs: np.ndarray, weights: np.ndarray) -> None:
        """Add weighted frames, given as (frame, pdf, weight) triples.

        feats : (T, D) all frames; frames, pdfs : (K,) int; weights : (K,) occupation of
        ``pdfs[k]`` at frame ``frames[k]`` (a posterior, or 1 from an alignment).
        """
        x = np.asarray(feats, dtype=np.float64)[frames]
        rows, occ, first, second, ll = gaussian_statistics(gmm, x, pdfs, weights)
        self.occ[rows] += occ
        self.first[rows] += first
        self.second[rows] += second
        self.log_likelihood += ll
        self.frames += float(np.sum(weights))

    def merge(self, other: "GmmStats") -> "GmmStats":
        self.occ += other.occ
        self.first += other.first
        self.second += other.second
        self.log_likelihood += other.log_likelihood
        self.frames += other.frames
        return self


def gaussian_statistics(gmm: DiagGmm, feats: np.ndarray, pdfs: np.ndarray,
                        weights: np.ndarray, stats_feats: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Statistics of weighted rows, each shared among its pdf's Gaussians by posterior.

    feats : (K, D) one frame per row; pdfs, weights : (K,) the pdf each row belongs to and
    its occupation (a posterior, or 1 from an alignment). stats_feats : (K, D') features
    whose statistics are gathered (default ``feats``): posteriors on one set, statistics of
    another (the SAT alignment model, Kaldi's ``gmm-acc-stats-twofeats``).

    Returns the Gaussians touched (G',), their occ (G',), first and second (G', D'),
    and the weighted log-likelihood of ``feats`` (a float). All rows at once: no loop over
    pdfs or utterances.
    """
    x = np.asarray(feats, dtype=np.float64)
    y = x if stats_feats is None else np.ascontiguousarray(stats_feats, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    rows, gauss, post, loglik = gmm.component_posteriors(x, pdfs)
    post *= w[rows]
    touched = np.zeros(gmm.num_gauss, dtype=bool)
    touched[gauss] = True
    used = np.flatnonzero(touched)
    local = np.cumsum(touched) - 1           # Gaussian -> its index among ``used``
    occ, first, second = _pair_statistics(y, rows, local[gauss], post, len(used))
    return used, occ, first, second, float(w @ loglik)


@numba.njit(cache=True)
def _pair_statistics(y, rows, local, post, num_gauss):
    """Occupancy (G',), first and second order sums (G', D) of ``y`` (K, D) over (row,
    Gaussian) pairs (P,), each weighing ``post``; pairs are added in their order."""
    dim = y.shape[1]
    occ = np.zeros(num_gauss)
    first = np.zeros((num_gauss, dim))
    second = np.zeros((num_gauss, dim))
    for p in range(len(rows)):
        g, w, yr = local[p], post[p], y[rows[p]]
        occ[g] += w
        for d in range(dim):
            v = w * yr[d]
            first[g, d] += v
            second[g, d] += v * yr[d]
    return occ, first, second
