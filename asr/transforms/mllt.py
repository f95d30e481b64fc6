"""MLLT, or semi-tied covariance (Gales 1999), as Kaldi's ``gmm-acc-mllt`` and ``est-mllt``.

A diagonal GMM whose Gaussians share one square transform ``A`` (D, D) models a frame as
``p(x) = |det A| prod_i N(a_i x; a_i mu_m, var_m[i])`` with ``a_i`` the rows of ``A``: each
Gaussian's covariance is ``A^{-1} diag(var_m) A^{-T}``, full but with a shared basis.
With Gaussian posteriors ``gamma_tm`` fixed (from the current model) and the variances
``var_m`` (G, D) of the current model, the auxiliary function of ``A`` is::

    Q(A) = beta log|det A| - 1/2 sum_i a_i G_i a_i^T
    beta = sum_{t,m} gamma_tm                                   total occupancy
    G_i  = sum_{t,m} gamma_tm / var_m[i] (x_t - mu_m)(x_t - mu_m)^T    (D, D), i < D

which equals the log-likelihood of the data under the transformed model, up to a constant
independent of ``A``. :class:`MlltStats` holds ``beta`` and ``G`` (D, D, D); they add up over
parts of the data. Gales' update maximises ``Q`` exactly for one row given the others, so
cycling over the rows never lowers ``Q``::

    c_i = row i of the cofactors of A  (proportional to column i of A^{-1})
    a_i = c_i G_i^{-1} sqrt(beta / (c_i G_i^{-1} c_i^T))

As in Kaldi's tri2b, the features are those of the current transform (LDA, then any earlier
MLLT), the estimation starts from ``A = I``, the new feature transform is ``A @ previous`` and
the model's means become ``A mu_m`` (``gmm-transform-means``, :func:`transform_means`); the
variances are re-estimated by the following EM iterations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from asr.gmm.diag_gmm import DiagGmm

_CHUNK = 2048           # frames (or Gaussians) per block: 2048 * D^2 doubles


@dataclass(eq=False)
class MlltStats:
    """Summable MLLT statistics.

    Attributes
    ----------
    beta : total occupancy (weighted frame count).
    G : (D, D, D) float64; ``G[i]`` is the (D, D) matrix G_i of the module docstring.
    """

    beta: float
    G: np.ndarray

    @classmethod
    def zeros(cls, dim: int) -> "MlltStats":
        return cls(0.0, np.zeros((dim, dim, dim)))

    @property
    def dim(self) -> int:
        return self.G.shape[0]

    def merge(self, other: "MlltStats") -> "MlltStats":
        if other.dim != self.dim:
            raise ValueError(f"cannot merge MLLT statistics of {self.dim}- and "
                             f"{other.dim}-dim features")
        return MlltStats(self.beta + other.beta, self.G + other.G)

    __add__ = merge

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"beta": np.array(self.beta), "G": self.G}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "MlltStats":
        return cls(float(arrays["beta"]), np.asarray(arrays["G"], dtype=np.float64))

    def accumulate(self, feats: np.ndarray, means: np.ndarray, variances: np.ndarray,
                   frames: np.ndarray, gauss: np.ndarray, post: np.ndarray) -> "MlltStats":
        """Add sparse Gaussian posteriors in place; returns ``self``.

        Parameters
        ----------
        feats : (T, D) features in the current (transformed) space.
        means, variances : (G, D) the current diagonal model.
        frames, gauss, post : (N,) each: Gaussian ``gauss[n]`` has posterior ``post[n]``
            on frame ``frames[n]``.
        """
        x = np.asarray(feats, dtype=np.float64)
        frames, gauss = np.asarray(frames), np.asarray(gauss)
        post = np.asarray(post, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim or means.shape[1] != self.dim:
            raise ValueError(f"features {x.shape} and means {means.shape} given to MLLT "
                             f"statistics of dimension {self.dim}")
        if not frames.shape == gauss.shape == post.shape:
            raise ValueError("frames, gauss and post must have the same shape (N,)")
        # G_i = sum_t c_ti x_t x_t^T - sum_m (1/var_m[i]) (s_m mu_m^T + mu_m s_m^T
        #       - gamma_m mu_m mu_m^T), with c_ti = sum_m gamma_tm / var_m[i] and s_m, gamma_m
        # the first- and zeroth-order sums of Gaussian m: frames x D^3 work, not pairs x D^3.
        from scipy.sparse import csr_matrix

        share = csr_matrix((post, (frames, gauss)), shape=(len(x), len(means)))
        inv = 1.0 / np.asarray(variances, dtype=np.float64)
        weight = share @ inv                                          # (T, D): c_ti
        gamma = np.asarray(share.sum(axis=0)).ravel()                 # (G,)
        used = np.flatnonzero(gamma)
        first = (share.T @ x)[used]                                   # (G', D)
        mu, inv, gamma = np.asarray(means, dtype=np.float64)[used], inv[used], gamma[used]
        d = self.dim
        flat = self.G.reshape(d, d * d)
        for lo in range(0, len(x), _CHUNK):
            xb = x[lo:lo + _CHUNK]
            flat += weight[lo:lo + _CHUNK].T @ (xb[:, :, None] * xb[:, None, :]).reshape(-1, d * d)
        for lo in range(0, len(mu), _CHUNK):
            a, m, g = inv[lo:lo + _CHUNK], mu[lo:lo + _CHUNK], gamma[lo:lo + _CHUNK]
            cross = ((a[:, :, None] * first[lo:lo + _CHUNK, None, :]).reshape(-1, d * d).T @ m
                     ).reshape(d, d, d)                               # sum_m a_i s_j mu_k
            self.G -= cross + cross.transpose(0, 2, 1)
            self.G += (((a * g[:, None])[:, :, None] * m[:, None, :]).reshape(-1, d * d).T @ m
                       ).reshape(d, d, d)
        self.beta += float(post.sum())
        return self


def accumulate_mllt(gmm: "DiagGmm", feats: np.ndarray, pdfs: np.ndarray,
                    stats: MlltStats | None = None, weights: np.ndarray | None = None
                    ) -> MlltStats:
    """Add an aligned utterance to MLLT statistics (``gmm-acc-mllt`` on ``ali-to-post``).

    Each frame's weight is shared among the Gaussians of its pdf by their posteriors.

    Parameters
    ----------
    gmm : the current diagonal GMM (``DiagGmm``), in the space of ``feats``.
    feats : (T, D) transformed features.
    pdfs : (T,) int pdf of each frame (``graph.pdf[path]``).
    stats : statistics to add to (updated in place); new ones if None.
    weights : (T,) frame weights; 1 each if None.
    """
    x = np.asarray(feats, dtype=np.float64)
    pdfs = np.asarray(pdfs)
    if pdfs.shape != (len(x),):
        raise ValueError(f"labels of shape {pdfs.shape} for {len(x)} frames")
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
    stats = MlltStats.zeros(gmm.dim) if stats is None else stats
    rows, gauss, post, _ = gmm.component_posteriors(x, pdfs)
    return stats.accumulate(x, gmm.means, gmm.variances, rows, gauss, post * w[rows])


def mllt_auxiliary(stats: MlltStats, A: np.ndarray) -> float:
    """Q(A) = beta log|det A| - 1/2 sum_i a_i G_i a_i^T (total, not per frame)."""
    _, logdet = np.linalg.slogdet(A)
    return float(stats.beta * logdet - 0.5 * np.einsum("ij,ijk,ik->", A, stats.G, A))


def estimate_mllt(stats: MlltStats, A0: np.ndarray | None = None, iters: int = 10
                  ) -> tuple[np.ndarray, list[float]]:
    """Gales' row-by-row maximisation of Q(A).

    Parameters
    ----------
    stats : MLLT statistics; each G_i must be positive definite.
    A0 : (D, D) invertible starting point; the identity (Kaldi's choice) if None.
    iters : passes over all rows.

    Returns
    -------
    A : (D, D) float64 transform.
    aux : ``iters + 1`` values of Q: at ``A0``, then after each pass (never decreasing).
    """
    d = stats.dim
    if stats.beta <= 0:
        raise ValueError("MLLT statistics hold no frames")
    A = np.eye(d) if A0 is None else np.array(A0, dtype=np.float64)
    if A.shape != (d, d) or abs(np.linalg.det(A)) == 0:
        raise ValueError(f"MLLT needs an invertible ({d}, {d}) start, got shape {A.shape}")
    G = (stats.G + stats.G.transpose(0, 2, 1)) / 2
    try:
        np.linalg.cholesky(G)                       # raises unless every G_i is definite
    except np.linalg.LinAlgError:
        raise ValueError("an MLLT statistic G_i is not positive definite: too few frames, "
                         "or a constant feature dimension") from None
    G_inv = np.linalg.inv(G)
    eye = np.eye(d)
    aux = [mllt_auxiliary(stats, A)]
    for _ in range(iters):
        for i in range(d):
            cofactor = np.linalg.solve(A, eye[:, i])                 # column i of A^{-1}
            direction = G_inv[i] @ cofactor
            A[i] = direction * np.sqrt(stats.beta / (cofactor @ direction))
        aux.append(mllt_auxiliary(stats, A))
    return A, aux


def transform_means(gmm: "DiagGmm", A: np.ndarray) -> "DiagGmm":
    """The GMM with every mean ``mu`` replaced by ``A mu`` (Kaldi's ``gmm-transform-means``);
    variances and weights unchanged. ``A`` is (D, D)."""
    A = np.asarray(A, dtype=np.float64)
    if A.shape != (gmm.dim, gmm.dim):
        raise ValueError(f"an MLLT matrix of shape {A.shape} cannot transform {gmm.dim}-dim "
                         "means")
    return gmm.with_params(gmm.means @ A.T, gmm.variances, gmm.log_weights, gmm.gauss_pdf)
