"""Linear discriminant analysis of spliced features, as Kaldi's ``acc-lda`` and ``est-lda``.

Statistics (:class:`LdaStats`) of features ``x_t`` (D,) with class labels ``c_t`` (pdf ids,
counting from 0) and weights ``w_t`` (1 for an alignment, a posterior otherwise)::

    counts[c]  = sum_{t: c_t = c} w_t                  (C,)
    first[c]   = sum_{t: c_t = c} w_t x_t              (C, D)
    second     = sum_t w_t x_t x_t^T                   (D, D)

They add up: statistics of two parts of the data summed equal those of the whole, so
accumulation can be split across jobs. From them, with ``n = sum(counts)`` and the global
mean ``m = sum(first) / n``::

    T = second / n - m m^T                             total covariance        (D, D)
    B = sum_c first[c] first[c]^T / (n counts[c]) - m m^T   between-class      (D, D)
    W = T - B                                          within-class            (D, D)

Estimation (Kaldi's ``LdaEstimate::Estimate``): with the Cholesky factor ``W = C C^T``, the
symmetric ``C^{-1} B C^{-T} = U diag(lambda) U^T`` (eigenvalues sorted in decreasing order)
gives the full matrix ``M = U^T C^{-1}`` (D, D), whose first ``dim`` rows are the LDA matrix
(dim, D). It normalises the within-class covariance and diagonalises the between-class one::

    M W M^T = I,     M B M^T = diag(lambda)

(Using the symmetric root ``W^{-1/2}`` instead of ``C`` gives the same rows up to sign.) As
in Kaldi's default, no further scaling is applied and the result is linear, (dim, D): the
mean is not removed. ``remove_offset=True`` (Kaldi's ``--remove-offset``) returns the affine
(dim, D+1) ``[M, -M m]`` whose outputs have zero mean over the training data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)
class LdaStats:
    """Summable LDA statistics; see the module docstring.

    Attributes
    ----------
    counts : (C,) float64 weighted frame count of each class.
    first : (C, D) float64 weighted sum of each class's features.
    second : (D, D) float64 weighted sum of outer products of all features.
    """

    counts: np.ndarray
    first: np.ndarray
    second: np.ndarray

    @classmethod
    def zeros(cls, num_classes: int, dim: int) -> "LdaStats":
        return cls(np.zeros(num_classes), np.zeros((num_classes, dim)), np.zeros((dim, dim)))

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    @property
    def dim(self) -> int:
        return self.second.shape[0]

    @property
    def total_count(self) -> float:
        return float(self.counts.sum())

    def grown(self, num_classes: int) -> "LdaStats":
        """The same statistics with room for ``num_classes`` classes (extra ones empty)."""
        extra = num_classes - self.num_classes
        if extra <= 0:
            return self
        return LdaStats(np.concatenate([self.counts, np.zeros(extra)]),
                        np.vstack([self.first, np.zeros((extra, self.dim))]), self.second)

    def merge(self, other: "LdaStats") -> "LdaStats":
        """The statistics of both parts of the data (classes padded to the larger count)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge LDA statistics of {self.dim}- and "
                             f"{other.dim}-dim features")
        size = max(self.num_classes, other.num_classes)
        a, b = self.grown(size), other.grown(size)
        return LdaStats(a.counts + b.counts, a.first + b.first, a.second + b.second)

    __add__ = merge

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts, "first": self.first, "second": self.second}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "LdaStats":
        return cls(*(np.asarray(arrays[k], dtype=np.float64)
                     for k in ("counts", "first", "second")))

    def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean (D,), within-class W (D, D), between-class B (D, D)) of the data."""
        n = self.total_count
        if n <= 0:
            raise ValueError("LDA statistics hold no frames")
        mean = self.first.sum(axis=0) / n
        seen = self.counts > 0
        total = self.second / n - np.outer(mean, mean)
        class_first = self.first[seen]
        between = (class_first.T / self.counts[seen]) @ class_first / n - np.outer(mean, mean)
        within = total - between
        return mean, (within + within.T) / 2, (between + between.T) / 2


def accumulate_lda(feats: np.ndarray, pdfs: np.ndarray, stats: LdaStats | None = None,
                   weights: np.ndarray | None = None, num_classes: int | None = None
                   ) -> LdaStats:
    """Add one utterance (or any set of frames) to LDA statistics.

    Parameters
    ----------
    feats : (T, D) spliced features.
    pdfs : (T,) int class of each frame (pdf ids from an alignment: ``graph.pdf[path]``).
    stats : statistics to add to (returned updated, possibly grown); new ones if None.
    weights : (T,) weight of each frame, e.g. a posterior; 1 each if None. Kaldi's
        ``acc-lda`` gives silence frames a weight of 0 or a small value in the same way.
    num_classes : room for this many classes in new statistics; grown as labels require.

    Returns
    -------
    LdaStats holding ``stats`` plus these frames.
    """
    x = np.asarray(feats, dtype=np.float64)
    pdfs = np.asarray(pdfs)
    if x.ndim != 2 or pdfs.shape != (len(x),):
        raise ValueError(f"features {x.shape} and labels {pdfs.shape} do not match; "
                         "expected (T, D) and (T,)")
    if len(pdfs) and (not np.issubdtype(pdfs.dtype, np.integer) or pdfs.min() < 0):
        raise ValueError("class labels must be integers counting from 0")
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(x),):
        raise ValueError(f"weights of shape {w.shape}; expected ({len(x)},)")
    needed = max(int(pdfs.max()) + 1 if len(pdfs) else 0, num_classes or 0)
    if stats is None:
        stats = LdaStats.zeros(needed, x.shape[1])
    elif stats.dim != x.shape[1]:
        raise ValueError(f"{x.shape[1]}-dim features added to LDA statistics of "
                         f"{stats.dim}-dim features")
    stats = stats.grown(needed)
    np.add.at(stats.counts, pdfs, w)
    np.add.at(stats.first, pdfs, x * w[:, None])
    stats.second += (x.T * w) @ x
    return stats


def lda_eigensystem(stats: LdaStats) -> tuple[np.ndarray, np.ndarray]:
    """The full LDA matrix M (D, D), rows sorted, and its eigenvalues lambda (D,), decreasing.

    Raises
    ------
    ValueError
        when the within-class covariance is singular (too few frames, or a constant or
        duplicated feature dimension).
    """
    _, within, between = stats.covariances()
    try:
        chol = np.linalg.cholesky(within)
    except np.linalg.LinAlgError:
        raise ValueError("the within-class covariance is not positive definite: too few "
                         "frames, or a constant or repeated feature dimension") from None
    chol_inv = np.linalg.solve(chol, np.eye(stats.dim))      # C^{-1}
    sym = chol_inv @ between @ chol_inv.T
    eigvals, eigvecs = np.linalg.eigh((sym + sym.T) / 2)
    order = np.argsort(eigvals)[::-1]
    full = eigvecs[:, order].T @ chol_inv
    # A deterministic sign: each row's largest element positive.
    signs = np.sign(full[np.arange(len(full)), np.abs(full).argmax(axis=1)])
    return full * signs[:, None], eigvals[order]


def estimate_lda(stats: LdaStats, dim: int = 40, *, remove_offset: bool = False,
                 allow_large_dim: bool = False) -> np.ndarray:
    """The LDA matrix from statistics, as Kaldi's ``est-lda``.

    Parameters
    ----------
    stats : statistics of the training data.
    dim : output dimension, at most D.
    remove_offset : if True return the affine (dim, D+1) ``[M, -M m]``; else (dim, D).
    allow_large_dim : allow ``dim`` above the number of classes seen minus one, beyond
        which the extra directions carry no between-class information (Kaldi refuses it
        too unless ``--allow-large-dim``).

    Returns
    -------
    (dim, D) float64 matrix, or (dim, D+1) with ``remove_offset``; use it through
    ``FeatureTransform.from_kaldi(matrix, D)``.
    """
    seen = int(np.count_nonzero(stats.counts > 0))
    if not 1 <= dim <= stats.dim:
        raise ValueError(f"LDA dimension {dim} outside [1, {stats.dim}] for {stats.dim}-dim "
                         "features")
    if dim > seen - 1 and not allow_large_dim:
        raise ValueError(f"LDA dimension {dim} exceeds the number of classes seen ({seen}) "
                         "minus one; pass allow_large_dim=True to keep it")
    full, _ = lda_eigensystem(stats)
    matrix = full[:dim]
    if remove_offset:
        mean = stats.first.sum(axis=0) / stats.total_count
        matrix = np.hstack([matrix, -(matrix @ mean)[:, None]])
    return matrix
