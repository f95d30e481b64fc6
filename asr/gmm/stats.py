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
        Work is grouped by pdf: one small matrix product per pdf. Pdfs with one Gaussian
        (all of them after a flat start, when Baum-Welch spreads every frame over many
        states) need no posteriors: their statistics are one sparse product over all
        triples, without gathering a copy of the frames.
        """
        single = np.diff(gmm.offsets)[pdfs] == 1
        if single.any():
            self._accumulate_single(gmm, feats, frames[single], pdfs[single], weights[single])
            frames, pdfs, weights = frames[~single], pdfs[~single], weights[~single]
        order = np.argsort(pdfs, kind="stable")
        frames, pdfs, weights = frames[order], pdfs[order], weights[order]
        bounds = np.flatnonzero(np.diff(pdfs)) + 1
        for idx in np.split(np.arange(len(pdfs)), bounds):
            if len(idx) == 0:
                continue
            p = int(pdfs[idx[0]])
            g = slice(gmm.offsets[p], gmm.offsets[p + 1])
            x = np.asarray(feats[frames[idx]], dtype=np.float64)
            w = weights[idx]
            ll = gmm.gaussian_log_likelihoods(x, g).astype(np.float64)          # (n, M)
            peak = ll.max(axis=1, keepdims=True)
            post = np.exp(ll - peak)
            norm = post.sum(axis=1, keepdims=True)
            post *= w[:, None] / norm
            self.occ[g] += post.sum(axis=0)
            self.first[g] += post.T @ x
            self.second[g] += post.T @ (x * x)
            self.log_likelihood += float(w @ (peak[:, 0] + np.log(norm[:, 0])))
        self.frames += float(weights.sum())

    def _accumulate_single(self, gmm: DiagGmm, feats: np.ndarray, frames: np.ndarray,
                           pdfs: np.ndarray, weights: np.ndarray) -> None:
        """``accumulate`` for pdfs of one Gaussian: the posterior of that Gaussian is 1."""
        from scipy.sparse import csr_matrix

        x = np.asarray(feats, dtype=np.float64)
        occupancy = csr_matrix((weights.astype(np.float64), (pdfs, frames)),
                               shape=(gmm.num_pdfs, len(x)))
        occ = np.asarray(occupancy.sum(axis=1)).ravel()
        first = occupancy @ x
        second = occupancy @ (x * x)
        used = np.flatnonzero(occ > 0)
        g = gmm.offsets[used]                    # the one Gaussian of each pdf used
        self.occ[g] += occ[used]
        self.first[g] += first[used]
        self.second[g] += second[used]
        # sum_k w_k log N(x_k; g): expanded over the statistics, exactly
        mean, inv = gmm.means[g], 1.0 / gmm.variances[g]
        const = gmm.log_weights[g] - 0.5 * (gmm.dim * np.log(2 * np.pi)
                                             + np.log(gmm.variances[g]).sum(axis=1))
        self.log_likelihood += float(
            occ[used] @ (const - 0.5 * (mean * mean * inv).sum(axis=1))
            + (first[used] * mean * inv).sum() - 0.5 * (second[used] * inv).sum())
        self.frames += float(weights.sum())

    def merge(self, other: "GmmStats") -> "GmmStats":
        self.occ += other.occ
        self.first += other.first
        self.second += other.second
        self.log_likelihood += other.log_likelihood
        self.frames += other.frames
        return self
