"""Kaldi's MFCC and log-mel filterbank front end, vectorised over all frames at once.

The numerics follow Kaldi's ``feat/feature-window.cc``, ``mel-computations.cc``,
``feature-mfcc.cc`` and ``feature-fbank.cc`` step for step, in float32 as Kaldi computes
them; the tests compare with ``torchaudio.compliance.kaldi``. Per frame:

    dither -> remove DC -> (raw log energy) -> pre-emphasis -> window -> zero-pad ->
    |rfft|^2 -> mel filterbank -> log (floor: float32 eps) -> [MFCC: DCT -> lifter]

Each step is one array operation over a (frames, samples) matrix, never a loop over frames,
and the constant matrices (window, mel banks, DCT with the lifter folded in) are cached per
setting. Float32, as in Kaldi, also halves the memory traffic that the time goes on.

``FeatureConfig.mel_convention`` chooses the mel filterbank: Kaldi's (the default), or
librosa's HTK or Slaney filters (:func:`librosa_mel_banks`, checked against
``librosa.feature`` in the tests); every other step stays Kaldi's.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import numpy as np
import scipy.fft

from asr.features.config import FeatureConfig

FLOAT_EPS = float(np.finfo(np.float32).eps)
"""Kaldi's floor on energies before the log: ``std::numeric_limits<float>::epsilon()``."""

INT16_SCALE = 32768.0
"""Kaldi works on samples on the int16 scale; soundfile gives them in [-1, 1)."""


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def num_frames(num_samples: int, window_size: int, window_shift: int, snip_edges: bool) -> int:
    """Frames Kaldi extracts from ``num_samples`` samples (``NumFrames`` in feature-window.cc)."""
    if snip_edges:
        return 0 if num_samples < window_size else 1 + (num_samples - window_size) // window_shift
    return (num_samples + window_shift // 2) // window_shift


def frame_signal(signal: np.ndarray, window_size: int, window_shift: int,
                 snip_edges: bool = True) -> np.ndarray:
    """Cut a signal into overlapping frames, as Kaldi's ``ExtractWindow`` does.

    Parameters
    ----------
    signal : (num_samples,) array
    window_size, window_shift : frame length and hop in samples.
    snip_edges : if True, only frames that lie wholly inside the signal; if False, frame
        ``t`` is centred on sample ``t * window_shift + window_shift // 2`` and samples
        outside the signal are reflected back into it (``x[-1] = x[0]``, ``x[-2] = x[1]``, ...).

    Returns
    -------
    (num_frames, window_size) read-only array, a view of ``signal`` where possible.
    """
    signal = np.asarray(signal)
    count = num_frames(len(signal), window_size, window_shift, snip_edges)
    if count == 0:
        return _frozen(np.zeros((0, window_size), dtype=signal.dtype))
    first = 0 if snip_edges else window_shift // 2 - window_size // 2
    last = first + (count - 1) * window_shift + window_size
    if first < 0 or last > len(signal):
        # Kaldi's reflection, x[-1-i] = x[i] and x[n+i] = x[n-1-i], repeated as often as needed.
        index = np.arange(first, last) % (2 * len(signal))
        signal = signal[np.where(index >= len(signal), 2 * len(signal) - 1 - index, index)]
        first = 0
    stride = signal.strides[0]
    return np.lib.stride_tricks.as_strided(signal[first:], shape=(count, window_size),
                                           strides=(window_shift * stride, stride),
                                           writeable=False)


@functools.lru_cache(maxsize=32)
def window_function(kind: str, size: int, blackman_coeff: float = 0.42) -> np.ndarray:
    """Kaldi's analysis window (``FeatureWindowFunction``), read-only, float64, shape (size,).

    ``povey`` is a Hann window raised to 0.85, which, unlike Hamming, reaches zero at the ends.
    """
    a = 2.0 * math.pi / (size - 1)
    i = np.arange(size, dtype=np.float64)
    if kind == "hanning":
        window = 0.5 - 0.5 * np.cos(a * i)
    elif kind == "hamming":
        window = 0.54 - 0.46 * np.cos(a * i)
    elif kind == "povey":
        window = (0.5 - 0.5 * np.cos(a * i)) ** 0.85
    elif kind == "rectangular":
        window = np.ones(size)
    elif kind == "blackman":
        window = blackman_coeff - 0.5 * np.cos(a * i) + (0.5 - blackman_coeff) * np.cos(2 * a * i)
    else:
        raise ValueError(f"unknown window {kind!r}")
    return _frozen(window)


def power_spectrum(frames: np.ndarray, fft_size: int) -> np.ndarray:
    """Squared magnitude of the real FFT of each frame, zero-padded to ``fft_size``.

    Parameters
    ----------
    frames : (num_frames, window_size) float array, ``window_size <= fft_size``.

    Returns
    -------
    (num_frames, fft_size // 2 + 1) array, float32 for float32 frames, else float64.
    """
    spectrum = scipy.fft.rfft(frames, n=fft_size, axis=-1)
    return np.square(spectrum.real) + np.square(spectrum.imag)


def mel_scale(freq):
    """Hz to mel, Kaldi's ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


@functools.lru_cache(maxsize=32)
def _high_freq(low_freq: float, high_freq: float, sample_rate: float) -> float:
    """The filterbank's upper edge in Hz (``<= 0``: offset from Nyquist), checked."""
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < high_freq <= nyquist):
        raise ValueError(f"need 0 <= low_freq < high_freq <= {nyquist} Hz, got {low_freq} "
                         f"and {high_freq}")
    return high_freq


def mel_banks(num_bins: int, fft_size: int, sample_rate: float, low_freq: float,
              high_freq: float) -> np.ndarray:
    """Kaldi's triangular mel filterbank (``MelBanks``), read-only.

    Filter ``m`` rises linearly in mel from edge ``m`` to centre ``m + 1`` and falls to edge
    ``m + 2`` of ``num_bins + 2`` edges equally spaced in mel between ``low_freq`` and
    ``high_freq`` (``<= 0``: offset from Nyquist). As in Kaldi the Nyquist bin gets weight 0.

    Returns
    -------
    (fft_size // 2 + 1, num_bins) float64 array; ``power_spectrum(...) @ banks`` gives the
    mel energies.
    """
    high_freq = _high_freq(low_freq, high_freq, sample_rate)
    mel_low, mel_high = mel_scale(low_freq), mel_scale(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    left = mel_low + delta * np.arange(num_bins)[:, None]
    center, right = left + delta, left + 2 * delta
    mel = mel_scale(sample_rate / fft_size * np.arange(fft_size // 2))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    weights = np.where((mel > left) & (mel < right), np.where(mel <= center, up, down), 0.0)
    empty = np.flatnonzero(~weights.any(axis=1))
    if empty.size:
        raise ValueError(f"mel bin {int(empty[0])} of {num_bins} covers no FFT bin; "
                         f"num_mel_bins is too large for an FFT of {fft_size} points")
    banks = np.zeros((fft_size // 2 + 1, num_bins))
    banks[:-1] = weights.T
    return _frozen(banks)


@functools.lru_cache(maxsize=32)
def librosa_mel_banks(convention: str, num_bins: int, fft_size: int, sample_rate: float,
                      low_freq: float, high_freq: float) -> np.ndarray:
    """librosa's mel filterbank (``librosa.filters.mel``) in :func:`mel_banks`' layout, read-only.

    ``"htk"``: HTK's mel scale, ``2595 log10(1 + f / 700)`` (Kaldi's in another base), with
    ``num_bins + 2`` edges equally spaced in mel and triangles linear in Hz, peak 1
    (``htk=True, norm=None``). ``"slaney"``: the Auditory Toolbox's scale, linear below 1 kHz
    and logarithmic above, each triangle scaled to unit area (``htk=False, norm="slaney"``,
    librosa's default).

    Returns
    -------
    (fft_size // 2 + 1, num_bins) float64 array.
    """
    import librosa

    if convention not in ("htk", "slaney"):
        raise ValueError(f"librosa's mel convention is 'htk' or 'slaney', got {convention!r}")
    high_freq = _high_freq(low_freq, high_freq, sample_rate)
    with warnings.catch_warnings():       # librosa warns of empty filters; refused below
        warnings.simplefilter("ignore", UserWarning)
        weights = librosa.filters.mel(sr=sample_rate, n_fft=fft_size, n_mels=num_bins,
                                      fmin=low_freq, fmax=high_freq, htk=convention == "htk",
                                      norm=None if convention == "htk" else "slaney",
                                      dtype=np.float64)
    empty = np.flatnonzero(~weights.any(axis=1))
    if empty.size:
        raise ValueError(f"mel bin {int(empty[0])} of {num_bins} covers no FFT bin; "
                         f"num_mel_bins is too large for an FFT of {fft_size} points")
    return _frozen(np.ascontiguousarray(weights.T))


@functools.lru_cache(maxsize=32)
def dct_matrix(num_ceps: int, num_bins: int) -> np.ndarray:
    """Kaldi's orthonormal DCT-II (``ComputeDctMatrix``), first ``num_ceps`` rows, read-only.

    ``M[k, n] = sqrt(2 / N) cos(pi k (n + 1/2) / N)``, row 0 scaled to ``sqrt(1 / N)``.

    Returns
    -------
    (num_ceps, num_bins) float64 array.
    """
    k = np.arange(num_ceps)[:, None]
    n = np.arange(num_bins)[None, :]
    matrix = math.sqrt(2.0 / num_bins) * np.cos(math.pi / num_bins * (n + 0.5) * k)
    matrix[0] = math.sqrt(1.0 / num_bins)
    return _frozen(matrix)


def lifter_coeffs(num_ceps: int, lifter: float) -> np.ndarray:
    """Cepstral lifter ``1 + Q/2 sin(pi i / Q)``, shape (num_ceps,); all ones when ``Q == 0``."""
    if lifter == 0.0:
        return np.ones(num_ceps)
    return 1.0 + 0.5 * lifter * np.sin(math.pi * np.arange(num_ceps) / lifter)


class _Constants(NamedTuple):
    """The float32 matrices of one setting, built once (see ``_constants``)."""

    mean: np.ndarray      # (window_size,) of 1 / window_size: frames @ mean = frame means
    window: np.ndarray    # (window_size,) window times 32768 (int16 scaling rides along)
    banks: np.ndarray     # (fft_size // 2 + 1, num_mel_bins)
    cepstra: np.ndarray   # (num_mel_bins, num_ceps): DCT with the lifter folded in


@functools.lru_cache(maxsize=32)
def _constants(window: str, size: int, fft_size: int, num_bins: int, sample_rate: float,
               low_freq: float, high_freq: float, num_ceps: int, lifter: float,
               mel_convention: str) -> _Constants:
    cepstra = (dct_matrix(num_ceps, num_bins) * lifter_coeffs(num_ceps, lifter)[:, None]).T
    banks_args = (num_bins, fft_size, sample_rate, low_freq, high_freq)
    return _Constants(*(_frozen(np.ascontiguousarray(a, dtype=np.float32)) for a in (
        np.full(size, 1.0 / size),
        window_function(window, size) * INT16_SCALE,
        mel_banks(*banks_args) if mel_convention == "kaldi"
        else librosa_mel_banks(mel_convention, *banks_args),
        cepstra)))


def _log_energy(frames: np.ndarray, scale: float, log_floor: float | None) -> np.ndarray:
    """(num_frames,) ``log(max(scale * sum x^2, eps))``, floored at ``log_floor`` if given."""
    energy = np.einsum("ij,ij->i", frames, frames) * scale
    energy = np.log(np.maximum(energy, FLOAT_EPS, out=energy), out=energy)
    return energy if log_floor is None else np.maximum(energy, log_floor, out=energy)


def _features_of_frames(frames: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The front end after framing: (num_frames, window_size) float32 in [-1, 1] to features.

    Every step is one array operation over all frames; ``frames`` is not modified.
    """
    if len(frames) == 0:
        return np.zeros((0, cfg.base_dim), dtype=np.float32)
    coeff = cfg.preemphasis
    const = _constants(cfg.window, cfg.window_size, cfg.padded_size, cfg.num_mel_bins,
                       float(cfg.sample_rate), float(cfg.low_freq), float(cfg.high_freq),
                       cfg.num_ceps, float(cfg.cepstral_lifter), cfg.mel_convention)
    log_floor = math.log(cfg.energy_floor) if cfg.energy_floor > 0.0 else None
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    mean = frames @ const.mean if cfg.remove_dc_offset else None
    if cfg.use_energy and cfg.raw_energy:
        centred = frames if mean is None else frames - mean[:, None]
        energy = _log_energy(centred, INT16_SCALE ** 2, log_floor)
    # Pre-emphasis of the DC-free frame, x[i] - c x[i-1] and (1 - c) x[0], then the window
    # (which also scales to int16 range). The difference runs over the flattened frames (fast,
    # contiguous); column 0, which it gets wrong, is then set on its own.
    x = np.empty_like(frames)
    flat_in, flat_out = frames.reshape(-1), x.reshape(-1)
    np.multiply(flat_in[:-1], -coeff, out=flat_out[1:])
    flat_out[1:] += flat_in[1:]
    np.multiply(frames[:, 0], 1.0 - coeff, out=x[:, 0])
    if mean is not None:
        x -= ((1.0 - coeff) * mean)[:, None]
    x *= const.window
    if cfg.use_energy and not cfg.raw_energy:
        energy = _log_energy(x, 1.0, log_floor)
    mel = power_spectrum(x, cfg.padded_size) @ const.banks
    if cfg.kind == "mfcc" or cfg.use_log_fbank:
        mel = np.log(np.maximum(mel, FLOAT_EPS, out=mel), out=mel)
    if cfg.kind == "fbank":
        return np.concatenate([energy[:, None], mel], axis=1) if cfg.use_energy else mel
    ceps = mel @ const.cepstra
    if cfg.use_energy:
        ceps[:, 0] = energy
    return ceps


def _frames_of(waveform: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """(num_frames, window_size) float32 frames of one utterance, dithered when asked."""
    waveform = np.asarray(waveform)
    if waveform.ndim != 1 or waveform.dtype.kind != "f":
        raise ValueError(f"waveform must be 1-D (mono) floats in [-1, 1], got shape "
                         f"{waveform.shape} of {waveform.dtype}")
    frames = frame_signal(waveform.astype(np.float32, copy=False), cfg.window_size,
                          cfg.window_shift, cfg.snip_edges)
    if cfg.dither > 0.0 and len(frames):
        # Kaldi adds fresh noise to every frame, so overlapping samples differ between frames.
        rng = np.random.default_rng(cfg.seed)
        frames = frames + rng.standard_normal(frames.shape, dtype=np.float32) * np.float32(
            cfg.dither / INT16_SCALE)
    return frames


def compute_features(waveform: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """MFCC or log-mel filterbank features of one utterance, as Kaldi computes them.

    Parameters
    ----------
    waveform : (num_samples,) float array in [-1, 1] at ``cfg.sample_rate`` (as soundfile
        reads 16-bit PCM); Kaldi's int16-scale samples are ``waveform * 32768``.
    cfg : the front-end settings (``kind``, framing, window, mel, cepstra, energy, dither).
        Dither noise (on the int16 scale) restarts from ``cfg.seed`` for every utterance.

    Returns
    -------
    (num_frames, cfg.base_dim) float32 array: ``num_ceps`` cepstra (C0 replaced by log energy
    when ``use_energy``) or ``num_mel_bins`` log energies (log energy prepended as column 0
    when ``use_energy``).
    """
    return _features_of_frames(_frames_of(waveform, cfg), cfg)

