"""The yesno corpus: 60 recordings of eight words, each "yes" or "no", by one speaker.

The transcript is the file name: ``0_1_1_0_0_1_1_0.wav`` is "NO YES YES NO NO YES YES NO".
As in Kaldi's ``egs/yesno/s5``, the first 31 files in sorted order train and the other 29
test; the utterance id is the file stem and every utterance has the speaker ``global``.
"""
from __future__ import annotations

import re
from pathlib import Path

from asr.data.datadir import DataDir
from asr.errors import DataError

__all__ = ["YESNO_WORDS", "yesno_recordings", "prepare_yesno"]

YESNO_WORDS = ("NO", "YES")      # word for digit 0 and 1 in a file name
NUM_RECORDINGS, NUM_TRAIN = 60, 31
SPEAKER = "global"
_NAME = re.compile(r"^[01](_[01]){7}\.wav$")


def yesno_recordings(corpus_dir: str | Path) -> list[Path]:
    """The 60 recordings, sorted by name.

    Parameters
    ----------
    corpus_dir : str or Path
        The corpus folder (holding ``waves_yesno/``) or the folder of WAV files itself.

    Raises
    ------
    DataError
        Naming the folder, when it does not hold exactly 60 files named like
        ``0_1_1_0_0_1_1_0.wav``.
    """
    folder = Path(corpus_dir)
    if (folder / "waves_yesno").is_dir():
        folder = folder / "waves_yesno"
    if not folder.is_dir():
        raise DataError(folder, "no such folder; expected the yesno corpus (waves_yesno/*.wav)")
    files = sorted(p for p in folder.iterdir() if _NAME.match(p.name))
    if len(files) != NUM_RECORDINGS:
        raise DataError(folder, f"found {len(files)} recordings named like 0_1_1_0_0_1_1_0.wav; "
                                f"expected the {NUM_RECORDINGS} of the yesno corpus")
    return files


def _data_dir(files: list[Path]) -> DataDir:
    return DataDir(wavs={p.stem: p for p in files},
                   text={p.stem: [YESNO_WORDS[int(d)] for d in p.stem.split("_")] for p in files},
                   utt2spk={p.stem: SPEAKER for p in files})


def prepare_yesno(corpus_dir: str | Path, out_dir: str | Path) -> dict[str, DataDir]:
    """Write the data directories ``out_dir/train`` (31 utterances) and ``out_dir/test`` (29).

    Returns
    -------
    dict[str, DataDir]
        ``{"train": ..., "test": ...}``, as saved.
    """
    files = yesno_recordings(corpus_dir)
    out_dir = Path(out_dir)
    splits = {"train": _data_dir(files[:NUM_TRAIN]), "test": _data_dir(files[NUM_TRAIN:])}
    for name, data in splits.items():
        data.save(out_dir / name)
    return splits
