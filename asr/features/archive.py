"""Feature archives: the features of a whole data set in one directory.

    feats.npy     (total_frames, D) float32: every utterance's frames, one after another
    feats.index   one line per utterance, sorted by id: ``utt_id offset num_frames``
    config.json   the FeatureConfig that made them
    skipped       (only when computed with ``skip_bad``) ``utt_id error`` of each utterance
                  whose audio could not be used, e.g. with a recipe's ``--skip-bad-utts``

The index is plain text a person can read (``head feats.index``); the matrix loads without
pickle and is memory-mapped, so it is read from disk once (to check that every value is
finite) and never copied.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Collection, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from asr.audio import read_wav
from asr.errors import AudioError, DataError, SettingsError
from asr.features.config import FeatureConfig
from asr.features.frontend import compute_features
from asr.fileio import atomic_dir, write_json, write_text
from asr.settings import from_dict

MATRIX_NAME = "feats.npy"
INDEX_NAME = "feats.index"
CONFIG_NAME = "config.json"
SKIPPED_NAME = "skipped"

log = logging.getLogger(__name__)


def write_archive(directory: str | Path, feats: Mapping[str, np.ndarray],
                  cfg: FeatureConfig, skipped: str | None = None) -> None:
    """Write ``feats`` as an archive at ``directory``, atomically (all or nothing).

    Parameters
    ----------
    directory : replaced if it exists.
    feats : utterance id -> (T_u, D) array; every array has the same D. Ids must be non-empty
        and free of whitespace.
    cfg : the settings that made the features, saved as ``config.json``.
    skipped : when given, written as the ``skipped`` file (see ``compute_archive``).
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
        if skipped is not None:
            write_text(tmp / SKIPPED_NAME, skipped)


def read_archive(directory: str | Path, mmap: bool = True,
                 utts: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """The features of an archive written by ``write_archive``.

    Parameters
    ----------
    directory : the archive.
    mmap : map ``feats.npy`` instead of reading it; the arrays are then read-only views.
    utts : only these utterances (those the archive lacks are left out; the caller checks);
        only their frames are read and checked. Default: every utterance.

    Returns
    -------
    utterance id -> (T_u, D) float32 array, in sorted id order.

    Raises
    ------
    DataError
        naming the file (and the line of ``feats.index``) that is missing or malformed, or
        the line of an utterance whose frames hold NaN or Inf (every frame is checked once,
        so reading an archive reads all of ``feats.npy``).
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
    wanted = None if utts is None else set(utts)
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
        previous = utt
        if wanted is not None and utt not in wanted:
            continue
        feats[utt] = matrix[offset:offset + length]
        if not np.isfinite(feats[utt]).all():
            bad = int(np.count_nonzero(~np.isfinite(feats[utt])))
            raise DataError(index_path, f"the frames of utterance {utt!r} in {MATRIX_NAME} hold "
                            f"{bad} NaN or Inf values; expected finite features (recompute the "
                            "archive)", number)
    return feats


def merge_archives(parts: Sequence[str | Path], directory: str | Path, cfg: FeatureConfig,
                   skipped: str | None = None) -> None:
    """Write the archives ``parts`` (disjoint utterance sets, e.g. one per job) as one
    archive at ``directory``, atomically; the same bytes ``write_archive`` writes for their
    union. Frames are copied part by part into a memory-mapped ``feats.npy``, so the merge
    never holds more than one utterance in memory.

    ``skipped`` as in ``write_archive``.
    """
    location: dict[str, tuple[int, int, int]] = {}      # utt -> (part, offset, length)
    for k, part in enumerate(parts):
        for line in (Path(part) / INDEX_NAME).read_text(encoding="utf-8").splitlines():
            utt, offset, length = line.split()
            if utt in location:
                raise ValueError(f"utterance {utt!r} is in two archives being merged")
            location[utt] = (k, int(offset), int(length))
    matrices = [np.load(Path(part) / MATRIX_NAME, mmap_mode="r", allow_pickle=False)
                for part in parts]
    widths = {m.shape[1] for m in matrices if len(m)}
    if len(widths) > 1:
        raise ValueError(f"archives of different widths {sorted(widths)} cannot be merged")
    width = widths.pop() if widths else 0
    utts = sorted(location)
    total = sum(location[u][2] for u in utts)
    index, offset = [], 0
    with atomic_dir(directory) as tmp:
        out = np.lib.format.open_memmap(tmp / MATRIX_NAME, mode="w+", dtype=np.float32,
                                        shape=(total, width) if utts else (0, 0))
        for utt in utts:
            k, start, length = location[utt]
            out[offset:offset + length] = matrices[k][start:start + length]
            index.append(f"{utt} {offset} {length}\n")
            offset += length
        out.flush()
        del out
        write_text(tmp / INDEX_NAME, "".join(index))
        write_json(tmp / CONFIG_NAME, dataclasses.asdict(cfg))
        if skipped is not None:
            write_text(tmp / SKIPPED_NAME, skipped)


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


def compute_archive_in_memory(wav_paths: Mapping[str, str | Path], cfg: FeatureConfig,
                              progress: bool = True, skip_bad: bool = False,
                              skipped: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """The features of every utterance, as ``read_archive`` would return them, unwritten.

    Parameters
    ----------
    wav_paths : utterance id -> path of a mono audio file at ``cfg.sample_rate``.
    cfg : the front-end settings.
    progress : show a progress bar.
    skip_bad : leave out (and log) each utterance whose audio cannot be used, instead of
        stopping at the first.
    skipped : when given, filled with utterance id -> the error of each one left out.

    Returns
    -------
    utterance id -> (T_u, cfg.base_dim) float32 array, in sorted id order.

    Raises
    ------
    AudioError
        naming the first file that is missing, unreadable, truncated, empty, not mono, at
        another rate, all zero or not finite (see ``asr.audio.read_wav``), unless
        ``skip_bad``.
    """
    feats = {}
    for utt in tqdm(sorted(wav_paths), desc="features", unit="utt", disable=not progress):
        try:
            samples, _ = read_wav(wav_paths[utt], expected_rate=cfg.sample_rate)
        except AudioError as exc:
            if not skip_bad:
                raise
            log.warning("skipping utterance %s: %s", utt, exc)
            if skipped is not None:
                skipped[utt] = str(exc)
            continue
        feats[utt] = compute_features(samples, cfg)
    return feats


def compute_archive(wav_paths: Mapping[str, str | Path], cfg: FeatureConfig,
                    directory: str | Path, progress: bool = True, skip_bad: bool = False) -> int:
    """Compute the features of every utterance and write them as an archive at ``directory``.

    The archive is written atomically (replacing any old one). Without ``skip_bad`` it is
    written only if every file could be read; an AudioError names the first that could not
    (see ``compute_archive_in_memory``). With ``skip_bad`` such utterances are left out,
    each logged as a warning, and listed in ``directory/skipped`` (``<utt-id> <error>`` per
    line, sorted; empty when none was skipped).

    Returns
    -------
    int : the number of utterances skipped.
    """
    skipped: dict[str, str] = {}
    feats = compute_archive_in_memory(wav_paths, cfg, progress, skip_bad, skipped)
    if skipped and not feats:
        raise AudioError(directory, f"none of the {len(wav_paths)} audio files could be used; "
                         f"the first error: {skipped[min(skipped)]}")
    if skipped:
        log.warning("%s: skipped %d of %d utterances whose audio could not be used (listed in "
                    "%s)", directory, len(skipped), len(wav_paths), Path(directory) / SKIPPED_NAME)
    write_archive(directory, feats, cfg,
                  skipped="".join(f"{u} {' '.join(skipped[u].split())}\n" for u in sorted(skipped))
                  if skip_bad else None)
    return len(skipped)
