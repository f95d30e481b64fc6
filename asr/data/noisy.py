"""Noisy test sets in the manner of Aurora-2: one copy of a test set per noise kind and SNR.

For a test directory ``.../test`` and kinds white, pink and babble at 20, 10, 5 and 0 dB,
:func:`prepare_noisy` writes data directories ``out_dir/test_white_snr20`` ...
``out_dir/test_babble_snr0`` with the same utterance ids, transcripts and speakers, and
their audio under ``out_dir/wav/test_<kind>_snr<snr>/``.

- The SNR is set by :func:`asr.audio.mix_at_snr` over the speech's active frames.
- Each utterance gets one noise segment per kind, drawn from ``(seed, utterance id,
  kind)``; its SNR copies differ only in the noise's scale, and a subset of the test set
  gets the same noise as the whole.
- Babble sums 6 talkers drawn from the babble data directory's recordings of speakers
  other than the utterance's own.
- A mixture that would clip is scaled down as a whole, which keeps its SNR.
"""
from __future__ import annotations

import contextlib
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from asr.audio import (PCM16_PEAK, babble_noise, mix_at_snr, pink_noise, read_wav, white_noise,
                       write_wav)
from asr.data.datadir import DataDir, copy_id
from asr.errors import DataError
from asr.fileio import atomic_dir

__all__ = ["NOISE_KINDS", "make_noise", "prepare_noisy", "prepare_noisy_copies"]

NOISE_KINDS = ("white", "pink", "babble")   # index = the kind's part of the noise seed


def make_noise(kind: str, n: int, rng: np.random.Generator,
               babble: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Unit-power noise of ``kind``, shape (n,), float32; ``babble`` feeds the babble kind."""
    if kind == "white":
        return white_noise(n, rng)
    if kind == "pink":
        return pink_noise(n, rng)
    if kind == "babble":
        return babble_noise(n, babble, rng)
    raise ValueError(f"unknown noise kind {kind!r}; expected one of {', '.join(NOISE_KINDS)}")


def _babble_pools(babble_dir: DataDir, speakers: set[str], rate: int) -> dict[str, list[np.ndarray]]:
    """Speaker -> the babble recordings of every other speaker."""
    by_speaker: dict[str, list[np.ndarray]] = {}
    for utt in babble_dir.utts:
        by_speaker.setdefault(babble_dir.utt2spk[utt], []).append(
            read_wav(babble_dir.wavs[utt], expected_rate=rate)[0])
    pools = {}
    for speaker in sorted(speakers):
        pools[speaker] = [x for other, xs in by_speaker.items() if other != speaker for x in xs]
        if not pools[speaker]:
            raise DataError(babble_dir.path, f"no recordings of speakers other than '{speaker}'; "
                                             "expected other speakers' speech for babble")
    return pools


def _check_kinds(kinds: Sequence[str]) -> None:
    for kind in kinds:
        if kind not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {kind!r}; expected one of {', '.join(NOISE_KINDS)}")


def _load(data: str | Path | DataDir) -> DataDir:
    return data if isinstance(data, DataDir) else DataDir.load(data)


def _pools_for(data: DataDir, kinds: Sequence[str], recordings_for_babble, rate: int
               ) -> dict[str, list[np.ndarray]]:
    if "babble" not in kinds:
        return {}
    if recordings_for_babble is None:
        raise ValueError("babble noise needs recordings_for_babble")
    return _babble_pools(_load(recordings_for_babble), set(data.utt2spk.values()), rate)


def _unclipped(mixed: np.ndarray) -> np.ndarray:
    """A mixture scaled down as a whole if it would clip (which keeps its SNR)."""
    peak = float(np.max(np.abs(mixed)))
    return mixed * (PCM16_PEAK / peak) if peak > PCM16_PEAK else mixed


def _noise_rng(seed: int, utt: str, kind: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(utt.encode()), NOISE_KINDS.index(kind)])


def prepare_noisy(test_dir: str | Path | DataDir, out_dir: str | Path,
                  recordings_for_babble: str | Path | DataDir | None = None,
                  kinds: Sequence[str] = NOISE_KINDS, snrs: Sequence[float] = (20, 10, 5, 0),
                  seed: int = 0) -> dict[str, DataDir]:
    """Write one noisy copy of ``test_dir`` per noise kind and SNR (dB).

    Parameters
    ----------
    test_dir : path or DataDir
        The clean test set; its folder name prefixes the new ones.
    out_dir : path
    recordings_for_babble : path or DataDir, optional
        A data directory (e.g. the training set) whose recordings make babble; needed when
        ``kinds`` holds "babble".
    kinds : sequence of str
        Any of :data:`NOISE_KINDS`.
    snrs : sequence of float
    seed : int

    Returns
    -------
    dict[str, DataDir]
        Name (``test_white_snr10``) -> the saved data directory.
    """
    test = _load(test_dir)
    prefix = test.path.name if test.path is not None else "test"
    _check_kinds(kinds)
    rate = read_wav(test.wavs[test.utts[0]])[1]
    pools = _pools_for(test, kinds, recordings_for_babble, rate)
    speech = {utt: read_wav(test.wavs[utt], expected_rate=rate)[0] for utt in test.utts}
    out_dir = Path(out_dir)
    result = {}
    for kind in kinds:
        names = {snr: f"{prefix}_{kind}_snr{snr:g}" for snr in snrs}
        with contextlib.ExitStack() as stack:
            tmps = {snr: stack.enter_context(atomic_dir(out_dir / "wav" / name))
                    for snr, name in names.items()}
            for utt, clean in speech.items():
                noise = make_noise(kind, clean.size, _noise_rng(seed, utt, kind),
                                   pools.get(test.utt2spk[utt], ()))
                for snr in snrs:
                    write_wav(tmps[snr] / f"{utt}.wav", _unclipped(mix_at_snr(clean, noise, snr)),
                              rate)
        for snr, name in names.items():
            data = DataDir(wavs={u: out_dir / "wav" / name / f"{u}.wav" for u in test.utts},
                           text=dict(test.text), utt2spk=dict(test.utt2spk))
            data.save(out_dir / name)
            result[name] = data
    return result


def prepare_noisy_copies(data: str | Path | DataDir, out_dir: str | Path, name: str,
                         recordings_for_babble: str | Path | DataDir | None = None,
                         kinds: Sequence[str] = NOISE_KINDS,
                         snrs: Sequence[float] = (20, 15, 10, 5, 0), seed: int = 0) -> DataDir:
    """One noisy copy of every utterance of ``data``, for multi-condition training.

    Each utterance gets one (kind, SNR) condition drawn from ``(seed, utterance id)``.
    The copy of utterance ``u`` of speaker ``s`` in condition ``white`` at 10 dB is
    ``white10-u`` of speaker ``white10-s``: per-speaker CMVN then pools one condition at a
    time, as it does on a noisy test set. The copy keeps the clean recording's length, so
    frame targets carry over (:func:`asr.data.copy_source` gives the clean id).

    Returns the data directory saved as ``out_dir/name``, its audio under ``out_dir/wav/name``.
    """
    data = _load(data)
    _check_kinds(kinds)
    if not snrs:
        raise ValueError("snrs must not be empty")
    rate = read_wav(data.wavs[data.utts[0]])[1]
    pools = _pools_for(data, kinds, recordings_for_babble, rate)
    out_dir = Path(out_dir)
    conditions = [(kind, snr) for kind in kinds for snr in snrs]
    wavs, text, utt2spk = {}, {}, {}
    with atomic_dir(out_dir / "wav" / name) as tmp:
        for utt in data.utts:
            pick = np.random.default_rng([seed, zlib.crc32(utt.encode())])
            kind, snr = conditions[int(pick.integers(len(conditions)))]
            clean = read_wav(data.wavs[utt], expected_rate=rate)[0]
            noise = make_noise(kind, clean.size, _noise_rng(seed, utt, kind),
                               pools.get(data.utt2spk[utt], ()))
            copy = copy_id(f"{kind}{snr:g}", utt)
            write_wav(tmp / f"{copy}.wav", _unclipped(mix_at_snr(clean, noise, snr)), rate)
            wavs[copy] = out_dir / "wav" / name / f"{copy}.wav"
            text[copy] = list(data.text[utt])
            utt2spk[copy] = copy_id(f"{kind}{snr:g}", data.utt2spk[utt])
    noisy = DataDir(wavs=wavs, text=text, utt2spk=utt2spk)
    noisy.save(out_dir / name)
    return noisy

