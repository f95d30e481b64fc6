"""What happens to features between the archive and a model: CMVN, deltas, splicing.

``apply_pipeline`` is the one place that chains them, in Kaldi's order (``apply-cmvn``, then
``add-deltas``, then ``splice-feats``), so training and decoding can never disagree.
Edges are handled as Kaldi does: frames before the first and after the last are copies of
the first and last frame.
"""
from __future__ import annotations

import functools

import numpy as np

from asr.errors import DataError
from asr.features.config import FeatureConfig

MIN_VARIANCE = 1e-20
"""Kaldi's floor on a variance before dividing by its square root (``ApplyCmvn``)."""


def _context_index(num_frames: int, left: int, right: int) -> np.ndarray:
    """(num_frames, left + 1 + right): row t holds frames t-left..t+right, clamped to [0, T-1]."""
    offsets = np.arange(-left, right + 1)
    return np.clip(np.arange(num_frames)[:, None] + offsets, 0, num_frames - 1)


@functools.lru_cache(maxsize=16)
def _delta_filters(order: int, window: int) -> np.ndarray:
    """Kaldi's ``DeltaFeatures`` scales, one row per order, centred on ``order * window``.

    Row 0 is ``[1]``; row 1 is ``n / (2 sum_{k=1..N} k^2)`` for ``n = -N..N``; row ``i`` is
    row ``i - 1`` convolved with row 1 (so ΔΔ is the delta of the delta), ``1 + 2 i N`` taps.

    Returns
    -------
    (order + 1, 2 * order * window + 1) float64 array, read-only.
    """
    reach = order * window
    first = np.arange(-window, window + 1) / (2.0 * sum(n * n for n in range(1, window + 1)))
    filters = np.zeros((order + 1, 2 * reach + 1))
    taps = np.ones(1)
    for i in range(order + 1):
        filters[i, reach - i * window:reach + i * window + 1] = taps
        taps = np.convolve(taps, first)
    filters.flags.writeable = False
    return filters


def add_deltas(feats: np.ndarray, order: int = 2, window: int = 2) -> np.ndarray:
    """Append delta features as Kaldi's ``add-deltas`` does.

    ``delta[t] = sum_{n=1..N} n (c[t+n] - c[t-n]) / (2 sum_{n=1..N} n^2)``; order ``i`` is
    the delta of order ``i - 1``, computed (as in Kaldi) as one filter of ``1 + 2 i N`` taps
    over the original frames with the edge frames replicated.

    Parameters
    ----------
    feats : (T, D) array.
    order : 0 (no change), 1 (Δ), 2 (Δ and ΔΔ), ...
    window : N.

    Returns
    -------
    (T, D * (order + 1)) float32 array: ``[c, Δc, ΔΔc, ...]``.
    """
    feats = np.asarray(feats, dtype=np.float32)
    num_frames, dim = feats.shape
    if order == 0:
        return feats.copy()
    if num_frames == 0:
        return np.zeros((0, dim * (order + 1)), dtype=np.float32)
    reach = order * window
    context = feats[_context_index(num_frames, reach, reach)]        # (T, 2 reach + 1, D)
    deltas = _delta_filters(order, window) @ context                  # (T, order + 1, D)
    return deltas.reshape(num_frames, dim * (order + 1)).astype(np.float32)


def cmvn_stats(feats: np.ndarray) -> np.ndarray:
    """Kaldi's CMVN statistics of a set of frames; statistics of several sets add up.

    Parameters
    ----------
    feats : (T, D) array.

    Returns
    -------
    (2, D + 1) float64 array: row 0 = per-dimension sums and, last, the frame count;
    row 1 = per-dimension sums of squares and 0.
    """
    feats = np.asarray(feats, dtype=np.float64)
    stats = np.zeros((2, feats.shape[1] + 1))
    stats[0, :-1] = feats.sum(axis=0)
    stats[0, -1] = len(feats)
    stats[1, :-1] = np.einsum("td,td->d", feats, feats)
    return stats


def apply_cmvn(feats: np.ndarray, stats: np.ndarray, variance: bool = False) -> np.ndarray:
    """Subtract the mean of ``stats`` (and divide by its standard deviation if ``variance``).

    Parameters
    ----------
    feats : (T, D) array.
    stats : (2, D + 1) array from ``cmvn_stats`` (possibly summed over many utterances).
    variance : also normalise the variance (Kaldi's ``--norm-vars``).

    Returns
    -------
    (T, D) float32 array.
    """
    feats = np.asarray(feats, dtype=np.float32)
    stats = np.asarray(stats, dtype=np.float64)
    if stats.shape != (2, feats.shape[1] + 1):
        raise ValueError(f"CMVN statistics of shape {stats.shape} do not fit features of "
                         f"dimension {feats.shape[1]}; expected {(2, feats.shape[1] + 1)}")
    if len(feats) == 0:
        return feats.copy()
    count = stats[0, -1]
    if count < 1.0:
        raise ValueError(f"CMVN statistics cover {count} frames; at least one is needed")
    mean = stats[0, :-1] / count
    if not variance:
        return (feats - mean).astype(np.float32)
    var = np.maximum(stats[1, :-1] / count - mean ** 2, MIN_VARIANCE)
    return ((feats - mean) / np.sqrt(var)).astype(np.float32)


def splice(feats: np.ndarray, left: int, right: int) -> np.ndarray:
    """Stack each frame with ``left`` frames before and ``right`` after (``splice-feats``).

    Parameters
    ----------
    feats : (T, D) array.

    Returns
    -------
    (T, D * (left + right + 1)) array; row ``t`` is ``[c[t-left], ..., c[t], ...,
    c[t+right]]`` with indices clamped to ``[0, T-1]``.
    """
    feats = np.asarray(feats)
    num_frames, dim = feats.shape
    context = left + right + 1
    if num_frames == 0:
        return np.zeros((0, dim * context), dtype=feats.dtype)
    return feats[_context_index(num_frames, left, right)].reshape(num_frames, dim * context)


def apply_pipeline(feats: dict[str, np.ndarray], cfg: FeatureConfig,
                   utt2spk: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """CMVN, then deltas, then splicing, as ``cfg`` says: the features a model sees.

    Parameters
    ----------
    feats : utterance id -> (T, cfg.base_dim) array, e.g. from ``read_archive``.
    cfg : ``cmvn``, ``cmvn_variance``, ``deltas``, ``delta_window``, ``splice_left``,
        ``splice_right`` are used.
    utt2spk : utterance id -> speaker id; needed when ``cfg.cmvn == "speaker"``, whose
        statistics pool all of a speaker's utterances in ``feats``.

    Returns
    -------
    utterance id -> (T, cfg.dim) float32 array, same keys and order as ``feats``.

    Raises
    ------
    DataError
        naming the first utterance whose features hold NaN or Inf (one such utterance
        would spoil its speaker's CMVN statistics and every model trained on them).
    """
    for utt, mat in feats.items():
        finite = np.isfinite(mat)
        if not finite.all():
            frame = int(np.argmin(finite.all(axis=-1))) if np.ndim(mat) == 2 else 0
            raise DataError(None, f"features of utterance {utt!r} hold "
                            f"{int(np.count_nonzero(~finite))} NaN or Inf values (first in "
                            f"frame {frame}); expected finite features")
    stats: dict[str, np.ndarray] = {}
    if cfg.cmvn == "utterance":
        stats = {utt: cmvn_stats(mat) for utt, mat in feats.items()}
    elif cfg.cmvn == "speaker":
        if utt2spk is None:
            raise ValueError('cmvn = "speaker" needs utt2spk')
        missing = [utt for utt in feats if utt not in utt2spk]
        if missing:
            raise DataError(None, f"{len(missing)} utterance(s) have no speaker in utt2spk, "
                            f"e.g. {missing[0]!r}")
        per_speaker: dict[str, np.ndarray] = {}
        for utt, mat in feats.items():
            speaker, utt_stats = utt2spk[utt], cmvn_stats(mat)
            per_speaker[speaker] = per_speaker.get(speaker, 0.0) + utt_stats
        stats = {utt: per_speaker[utt2spk[utt]] for utt in feats}
    out = {}
    for utt, mat in feats.items():
        mat = np.asarray(mat, dtype=np.float32)
        if cfg.cmvn != "none":
            mat = apply_cmvn(mat, stats[utt], cfg.cmvn_variance)
        if cfg.deltas:
            mat = add_deltas(mat, cfg.deltas, cfg.delta_window)
        out[utt] = np.ascontiguousarray(splice(mat, cfg.splice_left, cfg.splice_right))
    return out
