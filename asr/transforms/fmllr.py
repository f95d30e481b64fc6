"""Feature-space MLLR (fMLLR, "constrained MLLR"): one affine transform per speaker.

A speaker's features x (D,) are mapped to ``A x + b = W [x; 1]`` with W = [A b] (D, D+1),
chosen to maximise the likelihood of that speaker's data under a diagonal GMM (Gales 1998,
"Maximum likelihood linear transformations for HMM-based speech recognition"; Kaldi's
``FmllrDiagGmmAccs`` and ``gmm-est-fmllr``). It is the building block of speaker-adaptive
training (Kaldi's tri3b) and of adapted decoding (``asr.adaptation``).

With frame posteriors gamma_tm of Gaussian m (mean mu_m, variances var_m) and extended
features xi_t = [x_t; 1], the statistics are

    beta  = sum_t sum_m gamma_tm                                    (count)
    K[i]  = sum_t sum_m gamma_tm mu_mi / var_mi xi_t                (D, D+1)
    G[i]  = sum_t sum_m gamma_tm / var_mi xi_t xi_t^T               (D, D+1, D+1)

and, up to a constant, the posterior-weighted log-likelihood of the transformed data,
Jacobian included, is the auxiliary function

    Q(W) = beta log|det A| + sum_i (w_i . K[i] - 0.5 w_i G[i] w_i^T).

``estimate_fmllr`` maximises Q one row of W at a time, each row exactly (so Q never falls):
with c the i-th row of inv(A)^T extended by a zero, w_i = (alpha c + K[i]) G[i]^-1, where
alpha solves a alpha^2 + b alpha - beta = 0 (a = c G^-1 c, b = c G^-1 K[i]); the root kept is
the one with the larger beta log|alpha a + b| - 0.5 alpha^2 a.

Example::

    stats = FmllrStats(gmm.dim)
    for utt in speaker_utts:
        stats.accumulate_alignment(gmm, feats[utt], pdfs[utt])     # pdfs: (T,) per frame
    W, aux = estimate_fmllr(stats)
    adapted = apply_fmllr(W, feats[utt])

Glossary of ids: frames count from 0 within an utterance; pdf ids are the GMM's
(``gauss_pdf``), counting from 0; rows of W are output feature dimensions.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from asr.errors import ModelError
from asr.gmm.diag_gmm import DiagGmm
from asr.models import load_arrays, save_arrays

log = logging.getLogger(__name__)

DEFAULT_ITERS = 40          # Kaldi's --fmllr-num-iters
DEFAULT_MIN_COUNT = 20.0    # Kaldi's --fmllr-min-count (frames, or summed posteriors)
_CHUNK = 2048               # frames per matrix product when accumulating G


class FmllrStats:
    """fMLLR statistics of one speaker; they add up across utterances and jobs.

    Attributes
    ----------
    beta : float
        Total count (frames, or summed posterior weight).
    K : (D, D+1) float64
        Linear term, one row per output dimension.
    G : (D, D+1, D+1) float64
        Quadratic term, one symmetric matrix per output dimension.
    """

    def __init__(self, dim: int):
        self.beta = 0.0
        self.K = np.zeros((dim, dim + 1))
        self.G = np.zeros((dim, dim + 1, dim + 1))

    @property
    def dim(self) -> int:
        return self.K.shape[0]

    def accumulate_alignment(self, gmm: DiagGmm, feats: np.ndarray, pdfs: np.ndarray,
                             posterior_feats: np.ndarray | None = None) -> None:
        """Add an aligned utterance: frame t belongs wholly to pdf ``pdfs[t]``.

        feats : (T, D) features the transform will be applied to.
        pdfs : (T,) int pdf id of each frame (``graph.pdf[path]`` of an alignment).
        posterior_feats : (T, D), optional; the features on which the Gaussian posteriors
            within each pdf are computed (e.g. already adapted ones, as Kaldi's second
            pass does); ``feats`` by default.
        """
        pdfs = np.asarray(pdfs, dtype=np.int64)
        if pdfs.ndim != 1 or len(pdfs) != len(feats):
            raise ValueError(f"an alignment of {pdfs.shape} pdfs for {len(feats)} frames; "
                             "expected one pdf per frame")
        self.accumulate(gmm, feats, np.arange(len(pdfs)), pdfs, np.ones(len(pdfs)),
                        posterior_feats)

    def accumulate(self, gmm: DiagGmm, feats: np.ndarray, frames: np.ndarray,
                   pdfs: np.ndarray, weights: np.ndarray,
                   posterior_feats: np.ndarray | None = None) -> None:
        """Add weighted frames given as (frame, pdf, weight) triples, as ``GmmStats`` does.

        feats : (T, D); frames, pdfs : (K,) int; weights : (K,) occupation of pdf
        ``pdfs[k]`` at frame ``frames[k]`` (a posterior, or 1 from an alignment). The weight
        is shared among the pdf's Gaussians by their posteriors, computed on
        ``posterior_feats`` (T, D) when given, else on ``feats``.
        """
        feats = np.asarray(feats, dtype=np.float64)
        frames = np.asarray(frames, dtype=np.int64)
        pdfs = np.asarray(pdfs, dtype=np.int64)
        weights = np.asarray(weights, dtype=np.float64)
        _check_inputs(gmm, self.dim, feats, frames, pdfs, weights, posterior_feats)
        scored = feats if posterior_feats is None else np.asarray(posterior_feats)
        inv_var = 1.0 / gmm.variances                        # (G, D)
        mean_inv_var = gmm.means * inv_var                   # (G, D)
        # Per frame: v[t, i] = sum_m gamma_tm / var_mi, u[t, i] = sum_m gamma_tm mu_mi / var_mi.
        v = np.zeros_like(feats)
        u = np.zeros_like(feats)
        order = np.argsort(pdfs, kind="stable")
        frames, pdfs, weights = frames[order], pdfs[order], weights[order]
        for idx in np.split(np.arange(len(pdfs)), np.flatnonzero(np.diff(pdfs)) + 1):
            if len(idx) == 0:
                continue
            p = int(pdfs[idx[0]])
            g = slice(gmm.offsets[p], gmm.offsets[p + 1])
            t = frames[idx]
            ll = gmm.gaussian_log_likelihoods(scored[t], g).astype(np.float64)   # (n, M)
            post = np.exp(ll - ll.max(axis=1, keepdims=True))
            post *= (weights[idx] / post.sum(axis=1))[:, None]
            np.add.at(v, t, post @ inv_var[g])
            np.add.at(u, t, post @ mean_inv_var[g])
        used = np.flatnonzero(v.any(axis=1))
        xi = np.hstack([feats[used], np.ones((len(used), 1))])           # (n, D+1)
        v = v[used]
        self.K += u[used].T @ xi
        d1 = self.dim + 1
        for lo in range(0, len(used), _CHUNK):
            x = xi[lo:lo + _CHUNK]
            outer = (x[:, :, None] * x[:, None, :]).reshape(len(x), d1 * d1)
            self.G += (v[lo:lo + _CHUNK].T @ outer).reshape(self.dim, d1, d1)
        self.beta += float(weights.sum())

    def merge(self, other: "FmllrStats") -> "FmllrStats":
        """Add ``other``'s statistics into these; returns self."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge fMLLR statistics of dimension {other.dim} into "
                             f"{self.dim}")
        self.beta += other.beta
        self.K += other.K
        self.G += other.G
        return self

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The statistics as plain arrays (for a job to return or save)."""
        return {"beta": np.array(self.beta), "K": self.K, "G": self.G}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "FmllrStats":
        stats = cls(np.asarray(arrays["K"]).shape[0])
        stats.beta = float(arrays["beta"])
        stats.K = np.array(arrays["K"], dtype=np.float64)
        stats.G = np.array(arrays["G"], dtype=np.float64)
        return stats


def _check_inputs(gmm, dim, feats, frames, pdfs, weights, posterior_feats) -> None:
    if feats.ndim != 2 or feats.shape[1] != dim or gmm.dim != dim:
        raise ValueError(f"features of shape {feats.shape} for {dim}-dimensional fMLLR "
                         f"statistics and a {gmm.dim}-dimensional GMM")
    if not (len(frames) == len(pdfs) == len(weights)):
        raise ValueError(f"frames, pdfs and weights differ in length: {len(frames)}, "
                         f"{len(pdfs)}, {len(weights)}")
    if len(frames) and (frames.min() < 0 or frames.max() >= len(feats)):
        raise ValueError(f"frame index out of range 0..{len(feats) - 1}")
    if len(pdfs) and (pdfs.min() < 0 or pdfs.max() >= gmm.num_pdfs):
        raise ValueError(f"pdf id out of range 0..{gmm.num_pdfs - 1}")
    if posterior_feats is not None and np.shape(posterior_feats) != feats.shape:
        raise ValueError(f"posterior_feats of shape {np.shape(posterior_feats)} for features "
                         f"of shape {feats.shape}")


def identity_transform(dim: int) -> np.ndarray:
    """(D, D+1) float64 [I 0]: the transform that changes nothing."""
    return np.hstack([np.eye(dim), np.zeros((dim, 1))])


def fmllr_logdet(W: np.ndarray) -> float:
    """log|det A| of W = [A b]: add it per frame to adapted log-likelihoods (the Jacobian)."""
    sign, logdet = np.linalg.slogdet(np.asarray(W, dtype=np.float64)[:, :-1])
    return float(logdet) if sign != 0 else float("-inf")


def fmllr_auxf(stats: FmllrStats, W: np.ndarray) -> float:
    """Q(W) = beta log|det A| + sum_i (w_i . K[i] - 0.5 w_i G[i] w_i^T)."""
    W = np.asarray(W, dtype=np.float64)
    quad = np.einsum("ij,ijk,ik->", W, stats.G, W)
    return stats.beta * fmllr_logdet(W) + float(np.sum(W * stats.K)) - 0.5 * float(quad)


def estimate_fmllr(stats: FmllrStats, W0: np.ndarray | None = None,
                   iters: int = DEFAULT_ITERS, min_count: float = DEFAULT_MIN_COUNT,
                   tol: float = 0.0) -> tuple[np.ndarray, list[float]]:
    """Maximum-likelihood transform from a speaker's statistics, row by row (Gales 1998).

    Parameters
    ----------
    stats : FmllrStats of dimension D.
    W0 : (D, D+1), optional; the starting transform (its A non-singular); [I 0] by default.
    iters : passes over all rows.
    min_count : below this count ``beta`` no transform is estimated (Kaldi's min-count):
        the starting transform comes back with a logged warning.
    tol : stop early once a pass improves Q by less than ``tol`` per unit of count.

    Returns
    -------
    W : (D, D+1) float64, the transform [A b].
    aux : Q before the first pass and after each pass (never decreasing); empty when
        nothing was estimated.
    """
    dim = stats.dim
    W = identity_transform(dim) if W0 is None else np.array(W0, dtype=np.float64)
    if W.shape != (dim, dim + 1):
        raise ValueError(f"starting transform of shape {W.shape}; expected {(dim, dim + 1)}")
    if stats.beta < min_count or stats.beta <= 0:
        log.warning("fMLLR count %.1f is below min_count %.1f: transform not estimated",
                    stats.beta, min_count)
        return W, []
    if not np.isfinite(fmllr_logdet(W)):
        raise ValueError("the starting transform's A is singular")
    g_inv = []
    for i in range(dim):
        try:
            np.linalg.cholesky(stats.G[i])
            g_inv.append(np.linalg.inv(stats.G[i]))
        except np.linalg.LinAlgError:
            log.warning("fMLLR statistics of dimension %d are singular (a constant feature?): "
                        "its row is left as it is", i)
            g_inv.append(None)
    history = [fmllr_auxf(stats, W)]
    for _ in range(iters):
        for i in range(dim):
            if g_inv[i] is None:
                continue
            c = np.zeros(dim + 1)
            c[:dim] = np.linalg.inv(W[:, :dim])[:, i]       # row i of inv(A)^T
            gc = g_inv[i] @ c
            gk = g_inv[i] @ stats.K[i]
            alpha = _best_alpha(float(c @ gc), float(c @ gk), stats.beta)
            W[i] = alpha * gc + gk
        history.append(fmllr_auxf(stats, W))
        if tol > 0 and history[-1] - history[-2] < tol * stats.beta:
            break
    return W, history


def _best_alpha(a: float, b: float, beta: float) -> float:
    """The root of a x^2 + b x - beta = 0 maximising beta log|a x + b| - 0.5 a x^2."""
    root = np.sqrt(b * b + 4.0 * a * beta)
    candidates = ((-b - root) / (2.0 * a), (-b + root) / (2.0 * a))
    return max(candidates, key=lambda x: beta * np.log(abs(a * x + b)) - 0.5 * a * x * x)


def apply_fmllr(W: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """``feats @ A.T + b`` for W = [A b] (D, D+1) and feats (T, D); keeps a float dtype."""
    W = np.asarray(W)
    feats = np.asarray(feats)
    if W.ndim != 2 or W.shape[1] != W.shape[0] + 1 or feats.shape[-1] != W.shape[0]:
        raise ValueError(f"transform of shape {W.shape} for features of shape {feats.shape}; "
                         "expected W (D, D+1) and features (T, D)")
    out = feats @ W[:, :-1].T + W[:, -1]
    dtype = feats.dtype if np.issubdtype(feats.dtype, np.floating) else np.float64
    return out.astype(dtype, copy=False)


def estimate_speaker_transforms(
        gmm: DiagGmm, feats_by_utt: Mapping[str, np.ndarray],
        targets_by_utt: Mapping[str, np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]],
        spk2utt: Mapping[str, Sequence[str]], min_count: float = DEFAULT_MIN_COUNT,
        iters: int = DEFAULT_ITERS, previous: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """One fMLLR transform per speaker: speaker id -> W (D, D+1) float64.

    Parameters
    ----------
    gmm : the speaker-independent (or SAT) model the transforms adapt to.
    feats_by_utt : utterance id -> (T, D) unadapted features.
    targets_by_utt : utterance id -> either an alignment, (T,) int pdf per frame, or
        posteriors over pdfs as a (frames, pdfs, weights) triple of (K,) arrays (silence
        may be down-weighted there, as Kaldi's ``weight-silence-post`` does).
    spk2utt : speaker id -> its utterance ids (``DataDir.spk2utt``).
    min_count : a speaker with a smaller count gets the identity, with a logged warning.
    previous : speaker id -> an earlier transform, optional: Gaussian posteriors are then
        computed on the features it adapts (statistics stay on the unadapted ones) and
        estimation starts from it, like Kaldi's second fMLLR pass.

    Utterances without features or targets are skipped, with a warning per speaker.
    """
    out = {}
    for spk, utts in spk2utt.items():
        stats = FmllrStats(gmm.dim)
        start = None if previous is None else previous.get(spk)
        missing = [u for u in utts if u not in feats_by_utt or u not in targets_by_utt]
        if missing:
            log.warning("speaker %s: %d of %d utterances have no features or alignment and "
                        "are skipped (%s)", spk, len(missing), len(utts),
                        ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        skipped = set(missing)
        for utt in utts:
            if utt in skipped:
                continue
            feats = np.asarray(feats_by_utt[utt], dtype=np.float64)
            scored = None if start is None else apply_fmllr(start, feats)
            target = targets_by_utt[utt]
            try:
                if isinstance(target, tuple):
                    stats.accumulate(gmm, feats, *target, posterior_feats=scored)
                else:
                    stats.accumulate_alignment(gmm, feats, target, posterior_feats=scored)
            except ValueError as exc:
                raise ValueError(f"utterance {utt} of speaker {spk}: {exc}") from None
        if stats.beta < min_count or stats.beta <= 0:
            log.warning("speaker %s has a count of %.1f, below min_count %.1f: identity "
                        "fMLLR transform", spk, stats.beta, min_count)
            out[spk] = identity_transform(gmm.dim)
            continue
        W, aux = estimate_fmllr(stats, start, iters=iters, min_count=min_count)
        log.info("speaker %s: fMLLR auxiliary function up %.4f per frame over %.0f frames",
                 spk, (aux[-1] - aux[0]) / stats.beta, stats.beta)
        out[spk] = W
    return out


def save_transforms(path: str | Path, transforms: Mapping[str, np.ndarray]) -> None:
    """Write a speaker id -> W (D, D+1) table as an ``.npz`` (no pickle), atomically."""
    speakers = sorted(transforms)
    mats = [np.asarray(transforms[s], dtype=np.float64) for s in speakers]
    shapes = {m.shape for m in mats}
    if len(shapes) > 1 or any(len(s) != 2 or s[1] != s[0] + 1 for s in shapes):
        raise ValueError(f"fMLLR transforms must all be (D, D+1); got shapes {sorted(shapes)}")
    stacked = np.stack(mats) if mats else np.zeros((0, 0, 1))
    save_arrays(Path(path), {"speakers": np.array(speakers, dtype=str),
                             "transforms": stacked})


def load_transforms(path: str | Path) -> dict[str, np.ndarray]:
    """Read a table written by ``save_transforms``; ModelError naming the file if damaged."""
    path = Path(path)
    try:
        arrays = load_arrays(path)
    except zipfile.BadZipFile as exc:       # a truncated .npz is not an OSError
        raise ModelError(path, f"unreadable array file: {exc}") from None
    if set(arrays) != {"speakers", "transforms"}:
        raise ModelError(path, f"not an fMLLR transform table: arrays {sorted(arrays)}; "
                               "expected 'speakers' and 'transforms'")
    speakers, mats = arrays["speakers"], arrays["transforms"]
    if speakers.ndim != 1 or (len(speakers) and speakers.dtype.kind != "U"):
        raise ModelError(path, f"'speakers' has shape {speakers.shape} and dtype "
                               f"{speakers.dtype}; expected a 1-d array of speaker ids")
    if (mats.ndim != 3 or len(mats) != len(speakers) or mats.shape[2] != mats.shape[1] + 1
            or not np.issubdtype(mats.dtype, np.floating)):
        raise ModelError(path, f"'transforms' has shape {mats.shape} for {len(speakers)} "
                               "speakers; expected (speakers, D, D+1) floats")
    if len(set(speakers.tolist())) != len(speakers):
        raise ModelError(path, "a speaker id appears twice")
    if not np.all(np.isfinite(mats)):
        bad = speakers[~np.isfinite(mats).all(axis=(1, 2))]
        raise ModelError(path, f"non-finite values in the transform of speaker {bad[0]}")
    return {str(s): m.astype(np.float64) for s, m in zip(speakers, mats)}
