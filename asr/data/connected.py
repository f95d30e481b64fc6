"""Connected digits built from FSDD: strings of one speaker's recordings joined by pauses.

Each string holds ``min_digits`` to ``max_digits`` digits, drawn uniformly, spoken by one
speaker drawn uniformly; each digit is a recording of that speaker drawn uniformly from the
split's pool (train strings use train recordings only, test strings test recordings only).
Between digits go pauses of 50-400 ms, before the first and after the last 100-500 ms, and
under everything a white noise floor 50-60 dB below the speech's active level, so that
silence is not digital zero.

Making a corpus is two steps: :func:`plan_fsdd_connected` draws every choice from the
seed (no audio is read), and :func:`render_string` turns one planned string into samples.
The train and test plans use separate random streams, so the test strings do not change
with ``num_train``. The same seed gives the same bytes.

Utterance ids are ``{speaker}_{split}_{n:05d}`` (e.g. ``theo_test_00042``), so utterances
sort by speaker.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from asr.audio import mix_at_snr, read_wav, white_noise, write_wav
from asr.data.datadir import DataDir
from asr.data.fsdd import RATE, Recording, fsdd_recordings, split_recordings
from asr.fileio import atomic_dir

__all__ = ["DigitString", "plan_fsdd_connected", "plan_strings", "render_string",
           "prepare_fsdd_connected"]

EDGE_PAUSE_MS = (100, 500)      # before the first and after the last digit
INNER_PAUSE_MS = (50, 400)      # between digits
NOISE_FLOOR_DB = (50.0, 60.0)   # noise level below the speech's active level
SPLITS = ("train", "test")


@dataclass(frozen=True)
class DigitString:
    """One planned utterance.

    Attributes
    ----------
    utt, speaker : str
    recordings : tuple of Recording, length num_digits
    pauses : tuple of int, length num_digits + 1
        Samples of silence before each digit and after the last.
    noise_floor_db : float
        The noise floor's level below the speech's active level.
    noise_seed : int
        Seed of the noise floor's random stream.
    """

    utt: str
    speaker: str
    recordings: tuple[Recording, ...]
    pauses: tuple[int, ...]
    noise_floor_db: float
    noise_seed: int

    @property
    def words(self) -> list[str]:
        return [r.word for r in self.recordings]


def plan_strings(pool: Sequence[Recording], split: str, num: int, rng: np.random.Generator,
                 min_digits: int = 1, max_digits: int = 7) -> list[DigitString]:
    """``num`` strings of one speaker's recordings from ``pool`` (speaker, length, digits,
    recordings, pauses and noise floor drawn from ``rng``); ids ``{speaker}_{split}_{n:05d}``."""
    by_cell: dict[tuple[str, int], list[Recording]] = {}
    for recording in sorted(pool):
        by_cell.setdefault((recording.speaker, recording.digit), []).append(recording)
    speakers = sorted({r.speaker for r in pool})
    strings = []
    for n in range(num):
        speaker = speakers[int(rng.integers(len(speakers)))]
        length = int(rng.integers(min_digits, max_digits + 1))
        recordings = []
        for digit in rng.integers(10, size=length):
            cell = by_cell[(speaker, int(digit))]
            recordings.append(cell[int(rng.integers(len(cell)))])
        edges = rng.integers(EDGE_PAUSE_MS[0], EDGE_PAUSE_MS[1] + 1, size=2)
        inner = rng.integers(INNER_PAUSE_MS[0], INNER_PAUSE_MS[1] + 1, size=length - 1)
        pauses = [int(ms) * RATE // 1000 for ms in (edges[0], *inner, edges[1])]
        strings.append(DigitString(
            utt=f"{speaker}_{split}_{n:05d}", speaker=speaker, recordings=tuple(recordings),
            pauses=tuple(pauses), noise_floor_db=float(rng.uniform(*NOISE_FLOOR_DB)),
            noise_seed=int(rng.integers(2**63))))
    return strings


def plan_fsdd_connected(corpus_dir: str | Path, num_train: int = 2000, num_test: int = 300,
                        seed: int = 0, heldout_speaker: str | None = None, min_digits: int = 1,
                        max_digits: int = 7, speakers: Sequence[str] | None = None
                        ) -> dict[str, list[DigitString]]:
    """Draw every string of the corpus from ``seed``; see the module docstring.

    Returns
    -------
    dict[str, list[DigitString]]
        ``{"train": [...num_train], "test": [...num_test]}``.
    """
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"expected 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    if num_train < 1 or num_test < 1:
        raise ValueError(f"expected at least one train and one test string, got {num_train}, "
                         f"{num_test}")
    pools = split_recordings(fsdd_recordings(corpus_dir, speakers), heldout_speaker)
    return {split: plan_strings(pool, split, num, np.random.default_rng([seed, i]),
                                min_digits, max_digits)
            for i, (split, pool, num) in enumerate(zip(SPLITS, pools, (num_train, num_test)))}


def render_string(string: DigitString, audio: dict[Path, np.ndarray]) -> np.ndarray:
    """The samples of one planned string, shape (num_samples,), float32.

    ``audio`` caches recordings by path; missing ones are read (at 8 kHz) and added.
    """
    pieces = [np.zeros(string.pauses[0], dtype=np.float32)]
    for recording, pause in zip(string.recordings, string.pauses[1:]):
        if recording.path not in audio:
            audio[recording.path] = read_wav(recording.path, expected_rate=RATE)[0]
        pieces += [audio[recording.path], np.zeros(pause, dtype=np.float32)]
    speech = np.concatenate(pieces)
    noise = white_noise(speech.size, np.random.default_rng(string.noise_seed))
    return mix_at_snr(speech, noise, string.noise_floor_db)


def prepare_fsdd_connected(corpus_dir: str | Path, out_dir: str | Path, num_train: int = 2000,
                           num_test: int = 300, seed: int = 0, heldout_speaker: str | None = None,
                           min_digits: int = 1, max_digits: int = 7,
                           speakers: Sequence[str] | None = None) -> dict[str, DataDir]:
    """Write the strings as 16-bit 8 kHz WAVs and their data directories.

    Audio goes to ``out_dir/wav/{train,test}/<utt>.wav``, data directories to
    ``out_dir/train`` and ``out_dir/test``; each folder is replaced atomically.

    Returns
    -------
    dict[str, DataDir]
        ``{"train": ..., "test": ...}``, as saved.
    """
    out_dir = Path(out_dir)
    plan = plan_fsdd_connected(corpus_dir, num_train, num_test, seed, heldout_speaker,
                               min_digits, max_digits, speakers)
    audio: dict[Path, np.ndarray] = {}
    result = {}
    for split, strings in plan.items():
        wav_dir = out_dir / "wav" / split
        with atomic_dir(wav_dir) as tmp:
            for string in strings:
                write_wav(tmp / f"{string.utt}.wav", render_string(string, audio), RATE)
        data = DataDir(wavs={s.utt: wav_dir / f"{s.utt}.wav" for s in strings},
                       text={s.utt: s.words for s in strings},
                       utt2spk={s.utt: s.speaker for s in strings})
        data.save(out_dir / split)
        result[split] = data
    return result
