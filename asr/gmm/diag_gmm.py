"""Diagonal-covariance GMMs for every pdf, stacked so that one GEMM scores them all.

Gaussians of all pdfs are stored together, sorted by pdf: ``gauss_pdf[g]`` is the pdf of
Gaussian g and ``offsets[p]:offsets[p+1]`` the Gaussians of pdf p. The log-likelihood of
every Gaussian for every frame is ``[x, x**2, 1] @ [W, c].T``: one matrix product,
the constants its last row.
"""
from __future__ import annotations

import numba
import numpy as np

LOG_2PI = float(np.log(2 * np.pi))


class DiagGmm:
    """Attributes: means, variances (G, D) float64; log_weights (G,); gauss_pdf (G,) int."""

    def __init__(self, means: np.ndarray, variances: np.ndarray, log_weights: np.ndarray,
                 gauss_pdf: np.ndarray, num_pdfs: int):
        order = np.argsort(gauss_pdf, kind="stable")
        self.means = np.asarray(means, dtype=np.float64)[order]
        self.variances = np.asarray(variances, dtype=np.float64)[order]
        self.log_weights = np.asarray(log_weights, dtype=np.float64)[order]
        self.gauss_pdf = np.asarray(gauss_pdf, dtype=np.int64)[order]
        self.num_pdfs = int(num_pdfs)
        counts = np.bincount(self.gauss_pdf, minlength=num_pdfs)
        if np.any(counts == 0):
            raise ValueError("every pdf needs at least one Gaussian")
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self._prepare()

    @property
    def num_gauss(self) -> int:
        return len(self.gauss_pdf)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _prepare(self) -> None:
        inv = 1.0 / self.variances
        const = self.log_weights - 0.5 * (self.dim * LOG_2PI + np.log(self.variances).sum(1)
                                          + (self.means ** 2 * inv).sum(1))
        # (2D + 1, G), the constants as the last row: scoring is one plain GEMM of
        # [x, x**2, 1], with no pass over its (T, G) output to add them
        self._proj_t = np.ascontiguousarray(
            np.vstack([(self.means * inv).T, (-0.5 * inv).T, const[None]]), dtype=np.float32)
        # (G, 2D) rows and (G,) in float64, read per (frame, Gaussian) pair by
        # component_posteriors
        self._proj_rows = np.ascontiguousarray(np.hstack([self.means * inv, -0.5 * inv]))
        self._const64 = const

    def gaussian_log_likelihoods(self, feats: np.ndarray, gauss: slice | None = None
                                 ) -> np.ndarray:
        """(T, G') log weight + log density of each Gaussian (or of the range ``gauss``)."""
        xx = _with_squares(feats)
        return xx @ (self._proj_t if gauss is None else self._proj_t[:, gauss])

    def log_likelihoods(self, feats: np.ndarray, chunk: int = 4096,
                        pdfs: np.ndarray | None = None) -> np.ndarray:
        """(T, num_pdfs) float32 log-likelihood of each pdf's mixture.

        With ``pdfs`` (K,) int, only the Gaussians of those pdfs are scored and the result is
        (T, K), column k for pdf ``pdfs[k]``: an utterance's training graph uses a few
        hundred of a triphone system's thousands of pdfs.
        """
        every = PdfSubset(self._proj_t, self.offsets) if pdfs is None else self.subset(pdfs)
        return every.log_likelihoods(feats, chunk)

    def component_posteriors(self, feats: np.ndarray, pdfs: np.ndarray
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Posteriors of the Gaussians of each row's own pdf, in float64.

        feats (K, D), pdfs (K,) int -> ``rows`` (P,), ``gauss`` (P,), ``post`` (P,) and
        ``loglik`` (K,): one (row, Gaussian) pair for each Gaussian of each row's pdf,
        grouped by row (P = the rows' pdf sizes summed); ``loglik[k]`` is the
        log-likelihood of row k under its pdf. Only the rows' own Gaussians are scored
        (P x 2D work).
        """
        x = np.ascontiguousarray(feats, dtype=np.float64)
        pdfs = np.asarray(pdfs, dtype=np.int64)
        sizes = np.diff(self.offsets)[pdfs]
        rows = np.repeat(np.arange(len(pdfs)), sizes)
        first = np.concatenate([[0], np.cumsum(sizes)])[:-1]       # each row's first pair
        gauss = np.repeat(self.offsets[pdfs] - first, sizes) + np.arange(len(rows))
        ll = _pair_log_likelihoods(x, rows, gauss, self._proj_rows)
        ll += self._const64[gauss]
        if not len(rows):
            return rows, gauss, ll, np.zeros(0)
        peak = np.maximum.reduceat(ll, first)
        post = np.exp(ll - peak[rows])
        norm = np.add.reduceat(post, first)
        post /= norm[rows]
        return rows, gauss, post, peak + np.log(norm)

    def gaussians_of(self, pdfs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The Gaussians of ``pdfs`` (K,): their indices (G',) in pdf order, and (K+1,)
        offsets of each pdf's run within them."""
        pdfs = np.asarray(pdfs, dtype=np.int64)
        sizes = self.offsets[pdfs + 1] - self.offsets[pdfs]
        local = np.concatenate([[0], np.cumsum(sizes)])
        gauss = np.repeat(self.offsets[pdfs] - local[:-1], sizes) + np.arange(local[-1])
        return gauss, local

    def subset(self, pdfs: np.ndarray) -> "PdfSubset":
        """The mixtures of ``pdfs`` (K,) alone, laid out for scoring once: a training graph
        uses a few hundred of a triphone system's thousands of pdfs."""
        gauss, local = self.gaussians_of(pdfs)
        return PdfSubset(self._proj_t[:, gauss], local)

    def with_params(self, means, variances, log_weights, gauss_pdf) -> "DiagGmm":
        return DiagGmm(means, variances, log_weights, gauss_pdf, self.num_pdfs)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"means": self.means, "variances": self.variances,
                "log_weights": self.log_weights, "gauss_pdf": self.gauss_pdf}

    @classmethod
    def from_arrays(cls, arrays: dict, num_pdfs: int) -> "DiagGmm":
        return cls(arrays["means"], arrays["variances"], arrays["log_weights"],
                   arrays["gauss_pdf"], num_pdfs)


class PdfSubset:
    """Some (or all) pdfs' Gaussians, gathered from a DiagGmm's scoring matrix
    (``DiagGmm.subset``).

    proj : (2D + 1, G') float32 columns of the pdfs' Gaussians, pdf by pdf; offsets : (K+1,).
    """

    def __init__(self, proj: np.ndarray, offsets: np.ndarray):
        self.proj, self.offsets = proj, offsets

    def log_likelihoods(self, feats: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """(T, K) float32 log-likelihood of each of the pdfs' mixtures, in their order."""
        out = [_logsumexp_blocks(_with_squares(feats[i:i + chunk]) @ self.proj, self.offsets)
               for i in range(0, max(len(feats), 1), chunk)]
        return np.concatenate(out) if len(out) > 1 else out[0]


def _with_squares(feats: np.ndarray) -> np.ndarray:
    """(T, D) -> (T, 2D + 1) float32 [x, x**2, 1]: the left factor of the scoring GEMM."""
    x = np.asarray(feats, dtype=np.float32)
    return np.hstack([x, x * x, np.ones((len(x), 1), np.float32)])


def _logsumexp_blocks(ll: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Log-sum-exp over contiguous column blocks: (T, G) float32 -> (T, len(offsets) - 1).

    ``ll`` is overwritten (it is scratch: a GEMM's output). Each block's peak is found and
    subtracted (numba), numpy's vectorised ``exp`` and ``log`` run over whole matrices, and
    the blocks are summed in between (numba): scalar ``exp`` or ``log`` calls per element
    cost more than everything else here, and numpy's ``reduceat`` route makes four (T, G)
    temporaries.
    """
    if len(offsets) - 1 == ll.shape[1]:
        return ll
    ll = np.ascontiguousarray(ll, dtype=np.float32)
    offsets = np.asarray(offsets, dtype=np.int64)
    peak = _subtract_block_peaks(ll, offsets)
    np.exp(ll, out=ll)
    total = _block_sums(ll, offsets)
    np.log(total, out=total)
    total += peak
    return total


@numba.njit(cache=True)
def _pair_log_likelihoods(x, rows, gauss, proj):
    """(P,) ``proj[g] . [x_r, x_r**2]`` of each (row r, Gaussian g) pair, in float64, with
    no gathered (P, 2D) copies of either side."""
    dim = x.shape[1]
    out = np.empty(len(rows))
    for p in range(len(rows)):
        xr, pg = x[rows[p]], proj[gauss[p]]
        acc = 0.0
        for d in range(dim):
            v = xr[d]
            acc += v * (pg[d] + v * pg[dim + d])
        out[p] = acc
    return out


@numba.njit(cache=True)
def _subtract_block_peaks(ll, offsets):
    """(T, G) -> (T, P) peak of each block; each block has its peak subtracted in place."""
    num_frames, num_blocks = ll.shape[0], len(offsets) - 1
    peak = np.empty((num_frames, num_blocks), np.float32)
    for t in range(num_frames):
        row = ll[t]
        for p in range(num_blocks):
            a, b = offsets[p], offsets[p + 1]
            m = row[a]
            for j in range(a + 1, b):
                m = max(m, row[j])
            for j in range(a, b):
                row[j] -= m
            peak[t, p] = m
    return peak


@numba.njit(cache=True)
def _block_sums(e, offsets):
    """(T, G) -> (T, P): the sum of each block."""
    num_frames, num_blocks = e.shape[0], len(offsets) - 1
    total = np.zeros((num_frames, num_blocks), np.float32)
    for t in range(num_frames):
        row = e[t]
        for p in range(num_blocks):
            for j in range(offsets[p], offsets[p + 1]):
                total[t, p] += row[j]
    return total


def flat_start(feats: np.ndarray, num_pdfs: int) -> DiagGmm:
    """One Gaussian per pdf, all equal to the global mean and variance of ``feats`` (T, D)."""
    return flat_start_from(feats.mean(axis=0), feats.var(axis=0), num_pdfs)


def flat_start_from(mean: np.ndarray, var: np.ndarray, num_pdfs: int) -> DiagGmm:
    """One Gaussian per pdf, all with ``mean`` (D,) and ``var`` (D,)."""
    return DiagGmm(np.tile(mean, (num_pdfs, 1)), np.tile(var, (num_pdfs, 1)),
                   np.zeros(num_pdfs), np.arange(num_pdfs), num_pdfs)
