"""Audio: reading and writing WAV files, resampling, and adding noise at a set SNR.

Samples are float32 in [-1, 1], one channel, shape ``(num_samples,)``; the rate travels
beside them as an int in Hz. Every file problem is an :class:`~asr.errors.AudioError` that
names the file and says what was expected.

A file whose samples are all zero (a blank recording, or a copy that was zero-filled) is an
error by default: features of digital silence are the log floor in every frame, which
teaches a model nothing and decodes to nothing useful. Pass ``allow_silent=True`` to read
such files anyway (e.g. a silence segment used as noise).

>>> speech, rate = read_wav("recordings/7_jackson_32.wav", expected_rate=8000)  # doctest: +SKIP
>>> noise = pink_noise(len(speech), np.random.default_rng(0))                    # doctest: +SKIP
>>> noisy = mix_at_snr(speech, noise, snr_db=10)                                 # doctest: +SKIP
>>> write_wav("noisy.wav", noisy, rate)  # doctest: +SKIP

Signal-to-noise ratio
---------------------
:func:`mix_at_snr` measures the speech power over its *active* frames by default (those
within 40 dB of the loudest frame, a simple stand-in for ITU-T P.56's active speech level,
which Aurora-2 used), so silence around the words does not lower the speech level; pass
``active=False`` to use the whole signal. The noise power is always that of the whole
noise segment added.
"""
from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from asr.errors import AudioError
from asr.fileio import atomic_file

__all__ = ["PCM16_PEAK", "read_wav", "write_wav", "resample", "signal_power", "active_power",
           "mix_at_snr", "white_noise", "pink_noise", "babble_noise"]

_UNKNOWN_SIZE = 0xFFFFFFFF  # streaming writers and RF64 put this in place of the data size
PCM16_PEAK = 32767 / 32768  # the largest sample a 16-bit file holds, as a float


def _check_not_truncated(path: Path) -> None:
    """Raise if a RIFF/WAVE file's ``data`` chunk declares more bytes than the file holds.

    libsndfile silently reads what is there, so a cut-off download would otherwise pass.
    Files that are not RIFF/WAVE are left to libsndfile.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return
        order = "<" if head[:4] == b"RIFF" else ">"
        position = 12
        while position + 8 <= size:
            f.seek(position)
            chunk_id, chunk_size = struct.unpack(order + "4sI", f.read(8))
            if chunk_id == b"data":
                held = size - position - 8
                if chunk_size != _UNKNOWN_SIZE and chunk_size > held:
                    raise AudioError(path, f"truncated: the WAV header declares {chunk_size} bytes "
                                           f"of samples but the file holds {held}")
                return
            position += 8 + chunk_size + (chunk_size & 1)


def read_wav(path: str | Path, expected_rate: int | None = None, *,
             allow_silent: bool = False) -> tuple[np.ndarray, int]:
    """Read a mono audio file as float32 samples in [-1, 1].

    Integer PCM of any width (8, 16, 24, 32 bit) is scaled by its full range; float files
    are taken as they are and must already lie in [-1, 1].

    Parameters
    ----------
    path : str or Path
        A WAV file (any format libsndfile reads is accepted).
    expected_rate : int, optional
        When given, a file at another sample rate is an error.
    allow_silent : bool
        Accept a file whose samples are all zero (refused by default).

    Returns
    -------
    samples : np.ndarray, shape (num_samples,), float32
    rate : int
        Sample rate in Hz.

    Raises
    ------
    AudioError
        Naming the file, when it is missing, not audio, truncated, empty, not mono, at the
        wrong rate, all zero (unless ``allow_silent``), or holds NaN, Inf or float samples
        outside [-1, 1].
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such audio file")
    try:
        _check_not_truncated(path)
        with sf.SoundFile(path) as f:
            channels, rate, subtype = f.channels, f.samplerate, f.subtype
            samples = f.read(dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError, struct.error) as exc:
        # libsndfile reports damaged headers as SoundFileError; odd headers it half-parses
        # can surface as the others from soundfile's own checks.
        raise AudioError(path, f"cannot read audio: not a readable audio file ({exc})") from None
    except MemoryError:
        raise AudioError(path, "cannot read audio: its header declares more samples than "
                               "fit in memory") from None
    except OSError as exc:
        raise AudioError(path, f"cannot read audio: {exc.strerror or exc}") from None
    if channels != 1:
        raise AudioError(path, f"expected mono audio, found {channels} channels")
    if expected_rate is not None and rate != expected_rate:
        raise AudioError(path, f"sample rate is {rate} Hz, expected {expected_rate} Hz")
    samples = samples[:, 0]
    if samples.size == 0:
        raise AudioError(path, "empty: the file holds no samples")
    if not np.all(np.isfinite(samples)):
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise AudioError(path, f"{bad} samples are NaN or Inf; expected finite samples")
    peak = float(np.max(np.abs(samples)))
    if peak > 1.0:
        raise AudioError(path, f"{subtype} samples reach {peak:.3g}; expected samples in [-1, 1]")
    if peak == 0.0 and not allow_silent:
        raise AudioError(path, f"all {samples.size} samples are zero (a blank recording); "
                               "expected speech")
    return np.ascontiguousarray(samples), int(rate)


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write mono samples as a 16-bit PCM WAV file, atomically.

    Samples are scaled by 32768, rounded to the nearest integer and clipped to the int16
    range, so samples that were read from a 16-bit file are written back bit for bit.

    Parameters
    ----------
    path : str or Path
    samples : np.ndarray, shape (num_samples,)
        Floats, nominally in [-1, 1]; values beyond are clipped.
    rate : int
        Sample rate in Hz.
    """
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise AudioError(path, f"expected mono samples of shape (num_samples,), got {samples.shape}")
    if not np.all(np.isfinite(samples)):
        raise AudioError(path, "cannot write NaN or Inf samples")
    pcm = np.clip(np.round(samples.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    with atomic_file(path) as tmp:
        sf.write(tmp, pcm, int(rate), subtype="PCM_16", format="WAV")


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample by a rational factor with a polyphase anti-aliasing filter.

    Parameters
    ----------
    x : np.ndarray, shape (num_samples,)
    from_rate, to_rate : int
        Rates in Hz.

    Returns
    -------
    np.ndarray, shape (ceil(num_samples * to_rate / from_rate),), float32
    """
    from scipy.signal import resample_poly  # imported here: scipy.signal is slow to load
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} and {to_rate}")
    x = np.asarray(x, dtype=np.float32)
    if from_rate == to_rate:
        return x.copy()
    g = math.gcd(int(from_rate), int(to_rate))
    return resample_poly(x, int(to_rate) // g, int(from_rate) // g).astype(np.float32)


def signal_power(x: np.ndarray) -> float:
    """Mean square of ``x`` (shape (num_samples,)), computed in float64."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x * x)) if x.size else 0.0


def active_power(x: np.ndarray, frame_length: int = 200, floor_db: float = 40.0) -> float:
    """Mean square of ``x`` over its active frames.

    ``x`` (shape (num_samples,)) is cut into non-overlapping frames of ``frame_length``
    samples (25 ms at 8 kHz); a frame is active when its power is within ``floor_db`` of
    the loudest frame's. A signal shorter than one frame is measured whole.
    """
    x = np.asarray(x, dtype=np.float64)
    num_frames = x.size // frame_length
    if num_frames == 0:
        return signal_power(x)
    frames = x[: num_frames * frame_length].reshape(num_frames, frame_length)
    powers = np.mean(frames * frames, axis=1)
    active = powers >= powers.max() * 10.0 ** (-floor_db / 10.0)
    return float(np.mean(powers[active]))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, *,
               active: bool = True) -> np.ndarray:
    """Add ``noise`` to ``speech``, scaled so that 10 log10(Ps / Pn) equals ``snr_db``.

    Parameters
    ----------
    speech : np.ndarray, shape (num_samples,)
    noise : np.ndarray, shape (num_noise_samples,)
        Repeated end to end when shorter than ``speech``, cut when longer.
    snr_db : float
    active : bool
        Measure Ps over the active frames of ``speech`` (:func:`active_power`); otherwise
        over all of it. Pn is measured over the whole noise segment that is added.

    Returns
    -------
    np.ndarray, shape (num_samples,), float32
        Not clipped: the caller decides whether to scale the mixture down.
    """
    speech = np.asarray(speech, dtype=np.float64)
    noise = np.resize(np.asarray(noise, dtype=np.float64), speech.shape)
    noise_power = signal_power(noise)
    if noise_power == 0.0:
        raise ValueError("the noise is silent; cannot scale it to an SNR")
    speech_power = active_power(speech) if active else signal_power(speech)
    gain = math.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (speech + gain * noise).astype(np.float32)


def _unit_power(x: np.ndarray) -> np.ndarray:
    power = signal_power(x)
    return (x / math.sqrt(power) if power > 0 else x).astype(np.float32)


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise of unit power, shape (n,), float32."""
    return _unit_power(rng.standard_normal(n))


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f power spectrum) noise of unit power, shape (n,), float32.

    White Gaussian noise is shaped in the frequency domain by 1/sqrt(f); the DC bin is
    set to zero.
    """
    spectrum = np.fft.rfft(rng.standard_normal(n))
    bins = np.arange(spectrum.size, dtype=np.float64)
    bins[0] = np.inf
    return _unit_power(np.fft.irfft(spectrum / np.sqrt(bins), n=n))


def _pick(recordings: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One recording drawn at random, scaled to unit power."""
    return _unit_power(np.asarray(recordings[int(rng.integers(len(recordings)))], dtype=np.float64))


def babble_noise(n: int, recordings: Sequence[np.ndarray], rng: np.random.Generator,
                 talkers: int = 6) -> np.ndarray:
    """Babble: the sum of ``talkers`` streams of speech, each made of random recordings.

    Each talker's stream joins recordings drawn at random (each scaled to unit power)
    end to end and starts at a random offset, so the talkers do not speak in step.

    Parameters
    ----------
    n : int
        Number of samples wanted.
    recordings : sequence of np.ndarray, each shape (num_samples_i,)
        The speech to draw from, at the target rate; pass other speakers' recordings.
    rng : np.random.Generator
    talkers : int

    Returns
    -------
    np.ndarray, shape (n,), float32, unit power
    """
    if not recordings or any(len(r) == 0 for r in recordings):
        raise ValueError("babble needs at least one recording, none of them empty")
    total = np.zeros(n, dtype=np.float64)
    for _ in range(talkers):
        pieces = [_pick(recordings, rng)]
        offset = int(rng.integers(pieces[0].size))
        length = pieces[0].size
        while length < n + offset:
            pieces.append(_pick(recordings, rng))
            length += pieces[-1].size
        total += np.concatenate(pieces)[offset: offset + n]
    return _unit_power(total)
