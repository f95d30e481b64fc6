"""Sufficient statistics of diagonal GMMs: they accumulate in batches and merge across jobs."""
from __future__ import annotations

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
    from scipy.sparse import csr_matrix

    x = np.asarray(feats, dtype=np.float64)
    y = x if stats_feats is None else np.asarray(stats_feats, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    rows, gauss, post, loglik = gmm.component_posteriors(x, pdfs)
    post *= w[rows]
    used, local = np.unique(gauss, return_inverse=True)
    share = csr_matrix((post, (local, rows)), shape=(len(used), len(x)))
    occ = np.asarray(share.sum(axis=1)).ravel()
    return used, occ, share @ y, share @ (y * y), float(w @ loglik)
