"""Feature archives: the features of a whole data set in one directory.

    feats.npy     (total_frames, D) float32: every utterance's frames, one after another
    feats.index   one line per utterance, sorted by id: ``utt_id offset num_frames``
    config.json   the FeatureConfig that made them

The index is plain text a person can read (``head feats.index``); the matrix loads without
pickle and can be memory-mapped, so reading an archive costs nothing until frames are used.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping

import numpy as np
import soundfile as sf
from tqdm import tqdm

from asr.errors import AudioError, DataError, SettingsError
from asr.features.config import FeatureConfig
from asr.features.frontend import compute_features
from asr.fileio import atomic_dir, write_json, write_text
from asr.settings import from_dict

MATRIX_NAME = "feats.npy"
INDEX_NAME = "feats.index"
CONFIG_NAME = "config.json"


def write_archive(directory: str | Path, feats: Mapping[str, np.ndarray],
                  cfg: FeatureConfig) -> None:
    """Write ``feats`` as an archive at ``directory``, atomically (all or nothing).

    Parameters
    ----------
    directory : replaced if it exists.
    feats : utterance id -> (T_u, D) array; every array has the same D. Ids must be non-empty
        and free of whitespace.
    cfg : the settings that made the features, saved as ``config.json``.
    """
    utts = sorted(feats)
    shapes = {np.shape(feats[utt]) for utt in utts}
    if any(len(shape) != 2 for shape in shapes) or len({s[1] for s in shapes}) > 1:
        raise ValueError(f"features must be 2-D arrays of one width, got shapes "
                         f"{sorted(shapes)[:5]}")
    bad = [utt for utt in utts if not utt or utt.split() != [utt]]
    if bad:
        raise ValueError(f"utterance ids must be non-empty without whitespace, got {bad[0]!r}")
    lengths = [len(feats[utt]) for utt in utts]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    matrix = (np.concatenate([np.asarray(feats[utt], dtype=np.float32) for utt in utts])
              if utts else np.zeros((0, 0), dtype=np.float32))
    index = "".join(f"{utt} {offset} {length}\n"
                    for utt, offset, length in zip(utts, offsets, lengths))
    with atomic_dir(directory) as tmp:
        np.save(tmp / MATRIX_NAME, matrix, allow_pickle=False)
        write_text(tmp / INDEX_NAME, index)
        write_json(tmp / CONFIG_NAME, dataclasses.asdict(cfg))


def read_archive(directory: str | Path, mmap: bool = True) -> dict[str, np.ndarray]:
    """The features of an archive written by ``write_archive``.

    Parameters
    ----------
    directory : the archive.
    mmap : map ``feats.npy`` instead of reading it; the arrays are then read-only views.

    Returns
    -------
    utterance id -> (T_u, D) float32 array, in sorted id order.

    Raises
    ------
    DataError
        naming the file (and the line of ``feats.index``) that is missing or malformed.
    """
    directory = Path(directory)
    index_path, matrix_path = directory / INDEX_NAME, directory / MATRIX_NAME
    for path in (index_path, matrix_path):
        if not path.is_file():
            raise DataError(path, "missing; a feature archive holds feats.npy, feats.index "
                            "and config.json")
    try:
        matrix = np.load(matrix_path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(matrix_path, f"not a readable .npy array: {exc}") from None
    if matrix.ndim != 2 or matrix.dtype != np.float32:
        raise DataError(matrix_path, f"expected a 2-D float32 array, found a {matrix.ndim}-D "
                        f"{matrix.dtype} array")
    try:
        lines = index_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(index_path, f"cannot read: {exc}") from None
    feats: dict[str, np.ndarray] = {}
    previous = None
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        try:
            utt, offset, length = fields[0], int(fields[1]), int(fields[2])
            if len(fields) != 3 or offset < 0 or length < 0:
                raise ValueError
        except (IndexError, ValueError):
            raise DataError(index_path, f"expected 'utt_id offset num_frames' with two "
                            f"non-negative integers, got {line!r}", number) from None
        if offset + length > len(matrix):
            raise DataError(index_path, f"frames {offset}..{offset + length} of {utt!r} lie "
                            f"outside {MATRIX_NAME}, which has {len(matrix)} frames", number)
        if previous is not None and utt <= previous:
            raise DataError(index_path, f"utterance {utt!r} is a duplicate or out of order; "
                            "ids must be unique and sorted", number)
        feats[utt] = matrix[offset:offset + length]
        previous = utt
    return feats


def read_archive_config(directory: str | Path) -> FeatureConfig:
    """The ``FeatureConfig`` saved in an archive (``config.json``)."""
    path = Path(directory) / CONFIG_NAME
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "missing; a feature archive holds feats.npy, feats.index and "
                        "config.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not readable JSON: {exc}") from None
    if not isinstance(values, dict):
        raise DataError(path, f"expected a JSON object of feature settings, got "
                        f"{type(values).__name__}")
    try:
        return from_dict(FeatureConfig, values, path=path)
    except SettingsError as exc:
        raise DataError(path, exc.message) from None


def _read_wav(path: str | Path, rate: int) -> np.ndarray:
    """(num_samples,) float32 samples in [-1, 1] of a mono file at ``rate`` Hz.

    Raises AudioError naming the file if it is missing, unreadable, not mono or at another
    sample rate.
    """
    if not Path(path).is_file():
        raise AudioError(path, "no such audio file")
    try:
        samples, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        raise AudioError(path, f"cannot read audio: {exc.error_string}") from None
    except (RuntimeError, OSError, ValueError) as exc:
        raise AudioError(path, f"cannot read audio: {exc}") from None
    if samples.shape[1] != 1:
        raise AudioError(path, f"expected mono audio, found {samples.shape[1]} channels")
    if file_rate != rate:
        raise AudioError(path, f"sample rate is {file_rate} Hz, expected {rate} Hz "
                         "(the features' sample_rate)")
    return samples[:, 0]


def compute_archive_in_memory(wav_paths: Mapping[str, str | Path], cfg: FeatureConfig,
                              progress: bool = True) -> dict[str, np.ndarray]:
    """The features of every utterance, as ``read_archive`` would return them, unwritten.

    Parameters
    ----------
    wav_paths : utterance id -> path of a mono audio file at ``cfg.sample_rate``.
    cfg : the front-end settings.
    progress : show a progress bar.

    Returns
    -------
    utterance id -> (T_u, cfg.base_dim) float32 array, in sorted id order.

    Raises
    ------
    AudioError
        naming the first file that is missing, unreadable, not mono or at another rate.
    """
    return {utt: compute_features(_read_wav(wav_paths[utt], cfg.sample_rate), cfg)
            for utt in tqdm(sorted(wav_paths), desc="features", unit="utt", disable=not progress)}


def compute_archive(wav_paths: Mapping[str, str | Path], cfg: FeatureConfig,
                    directory: str | Path, progress: bool = True) -> None:
    """Compute the features of every utterance and write them as an archive at ``directory``.

    The archive is written atomically (replacing any old one) only if every file could be
    read; an AudioError names the first that could not (see ``compute_archive_in_memory``).
    """
    write_archive(directory, compute_archive_in_memory(wav_paths, cfg, progress), cfg)
