"""The Free Spoken Digit Dataset (FSDD): isolated digits "zero" to "nine", 8 kHz.

Files are ``recordings/{digit}_{speaker}_{index}.wav`` with index 0-49 for each digit and
speaker. Two splits are used:

- conventional: indices 0-4 of every digit and speaker test, 5-49 train;
- speaker-independent: every recording of one held-out speaker tests, those of the
  other speakers train.

Either split may keep a dev set out of training (:func:`split_dev`): the first few training
recordings of every digit and training speaker (indices 5.. in the conventional split,
0.. in the speaker-independent one), so that dev holds the training speakers' voices and
never a recording that trains.

The utterance id of a recording is ``{speaker}_{digit}_{index:02d}`` (e.g.
``jackson_7_32``), so utterances sort by speaker as Kaldi requires; its speaker is the
FSDD speaker and its transcript the digit's word (``SEVEN``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from asr.data.datadir import DataDir
from asr.errors import DataError

__all__ = ["DIGIT_WORDS", "FSDD_SPEAKERS", "Recording", "fsdd_recordings", "split_recordings",
           "split_dev", "prepare_fsdd_isolated"]

DIGIT_WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
# The five speakers of the project's copy. The public release adds "george"; leaving him out
# makes a download and a local copy give the same corpus.
FSDD_SPEAKERS = ("jackson", "lucas", "nicolas", "theo", "yweweler")
NUM_INDICES = 50        # recordings per digit and speaker, index 0..49
NUM_TEST_INDICES = 5    # conventional split: index 0..4 test
RATE = 8000
_NAME = re.compile(r"^([0-9])_([A-Za-z0-9-]+)_([0-9]+)\.wav$")


@dataclass(frozen=True, order=True)
class Recording:
    """One FSDD file. Ordered by speaker, digit, index."""

    speaker: str
    digit: int
    index: int
    path: Path

    @property
    def utt(self) -> str:
        """Utterance id, ``{speaker}_{digit}_{index:02d}``."""
        return f"{self.speaker}_{self.digit}_{self.index:02d}"

    @property
    def word(self) -> str:
        return DIGIT_WORDS[self.digit]


def fsdd_recordings(corpus_dir: str | Path, speakers: Sequence[str] | None = None) -> list[Recording]:
    """All 500 recordings of each speaker, sorted by speaker, digit and index.

    Parameters
    ----------
    corpus_dir : str or Path
        The corpus folder (holding ``recordings/``) or the folder of WAV files itself.
    speakers : sequence of str, optional
        Defaults to :data:`FSDD_SPEAKERS`.

    Raises
    ------
    DataError
        Naming the folder and a missing file, when any recording of a speaker is absent.
    """
    folder = Path(corpus_dir)
    if (folder / "recordings").is_dir():
        folder = folder / "recordings"
    if not folder.is_dir():
        raise DataError(folder, "no such folder; expected the FSDD corpus (recordings/*.wav)")
    speakers = sorted(FSDD_SPEAKERS if speakers is None else speakers)
    names = {p.name for p in folder.iterdir()}
    found = sorted({m.group(2) for m in map(_NAME.match, names) if m})
    recordings, missing = [], []
    for speaker in speakers:
        if speaker not in found:
            raise DataError(folder, f"no recordings of speaker '{speaker}'; speakers here: "
                                    f"{', '.join(found) or 'none'}")
        for digit in range(10):
            for index in range(NUM_INDICES):
                name = f"{digit}_{speaker}_{index}.wav"
                if name in names:
                    recordings.append(Recording(speaker, digit, index, folder / name))
                else:
                    missing.append(name)
    if missing:
        raise DataError(folder, f"missing {len(missing)} of {len(speakers) * 10 * NUM_INDICES} "
                                f"recordings, e.g. {missing[0]}; expected digits 0-9, index "
                                f"0-{NUM_INDICES - 1} of speakers {', '.join(speakers)}")
    return recordings


def split_recordings(recordings: Sequence[Recording], heldout_speaker: str | None = None
                     ) -> tuple[list[Recording], list[Recording]]:
    """Split into ``(train, test)``: conventional when ``heldout_speaker`` is None."""
    if heldout_speaker is None:
        return ([r for r in recordings if r.index >= NUM_TEST_INDICES],
                [r for r in recordings if r.index < NUM_TEST_INDICES])
    speakers = sorted({r.speaker for r in recordings})
    if heldout_speaker not in speakers:
        raise DataError(None, f"held-out speaker '{heldout_speaker}' is not in the corpus; "
                              f"expected one of {', '.join(speakers)}")
    return ([r for r in recordings if r.speaker != heldout_speaker],
            [r for r in recordings if r.speaker == heldout_speaker])


def split_dev(train: Sequence[Recording], num_dev: int
              ) -> tuple[list[Recording], list[Recording]]:
    """Split training recordings into ``(train, dev)``: the ``num_dev`` lowest-indexed
    recordings of every (speaker, digit) go to dev, the rest stay in train.

    Raises
    ------
    ValueError
        When ``num_dev`` is negative or would leave a (speaker, digit) without training data.
    """
    cells: dict[tuple[str, int], list[Recording]] = {}
    for recording in sorted(train):
        cells.setdefault((recording.speaker, recording.digit), []).append(recording)
    if num_dev < 0 or any(num_dev >= len(cell) for cell in cells.values()):
        smallest = min((len(cell) for cell in cells.values()), default=0)
        raise ValueError(f"num_dev must lie in [0, {smallest - 1}] (recordings per digit and "
                         f"speaker in training, less one), got {num_dev}")
    dev = {r for cell in cells.values() for r in sorted(cell, key=lambda r: r.index)[:num_dev]}
    return ([r for r in train if r not in dev], [r for r in train if r in dev])


def _data_dir(recordings: Sequence[Recording]) -> DataDir:
    return DataDir(wavs={r.utt: r.path for r in recordings},
                   text={r.utt: [r.word] for r in recordings},
                   utt2spk={r.utt: r.speaker for r in recordings})


def prepare_fsdd_isolated(corpus_dir: str | Path, out_dir: str | Path,
                          heldout_speaker: str | None = None,
                          speakers: Sequence[str] | None = None,
                          num_dev: int = 0) -> dict[str, DataDir]:
    """Write ``out_dir/train`` and ``out_dir/test`` (and ``out_dir/dev`` with ``num_dev``),
    one utterance per recording.

    With the five speakers: 2,250 train and 250 test utterances (conventional split), or
    2,000 and 500 with a held-out speaker; ``num_dev`` recordings of every digit and
    training speaker move from train to dev (:func:`split_dev`).

    Returns
    -------
    dict[str, DataDir]
        ``{"train": ..., "test": ...}`` (and ``"dev"``), as saved.
    """
    train, test = split_recordings(fsdd_recordings(corpus_dir, speakers), heldout_speaker)
    out_dir = Path(out_dir)
    splits = {"train": _data_dir(train), "test": _data_dir(test)}
    if num_dev:
        train, dev = split_dev(train, num_dev)
        splits.update(train=_data_dir(train), dev=_data_dir(dev))
    for name, data in splits.items():
        data.save(out_dir / name)
    return splits
