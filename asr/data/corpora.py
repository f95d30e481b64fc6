"""Finding a source corpus: a local copy (``--corpus DIR``) or a verified download.

``data/corpora.json`` lists each corpus's archive: ``url``, ``sha256``, ``archive`` (file
name under the download folder), ``corpus_dir`` (the corpus folder inside the unpacked
archive) and where the checksum comes from. A corpus is unpacked into
``<download_dir>/<name>/`` atomically, so an interrupted unpacking is redone next time.

>>> locate_corpus("yesno", corpus_dir=Path("../shared/data/yesno"))   # doctest: +SKIP
PosixPath('../shared/data/yesno')
>>> locate_corpus("fsdd")        # downloads and unpacks on first use   # doctest: +SKIP
PosixPath('data/downloads/fsdd/free-spoken-digit-dataset-1.0.10')
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from asr.data.archive import extract_archive
from asr.data.download import download
from asr.data.fsdd import fsdd_recordings
from asr.data.yesno import yesno_recordings
from asr.errors import DataError
from asr.fileio import atomic_dir

__all__ = ["MANIFEST", "load_manifest", "locate_corpus"]

MANIFEST = Path(__file__).resolve().parents[2] / "data" / "corpora.json"
_REQUIRED = ("url", "sha256", "archive", "corpus_dir")
# Each corpus's check raises a DataError naming what is missing from a folder.
_CHECKS: dict[str, Callable[[Path], object]] = {"yesno": yesno_recordings, "fsdd": fsdd_recordings}


def load_manifest(path: str | Path | None = None) -> dict[str, dict]:
    """Read the download manifest (default :data:`MANIFEST`) and check its entries."""
    path = Path(path) if path is not None else MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(path, f"cannot read the download manifest: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON: {exc.msg}", exc.lineno) from None
    for name, entry in manifest.items():
        missing = [key for key in _REQUIRED if key not in entry]
        if missing:
            raise DataError(path, f"corpus '{name}' lacks {', '.join(missing)}; expected keys "
                                  f"{', '.join(_REQUIRED)}")
    return manifest


def locate_corpus(name: str, corpus_dir: str | Path | None = None,
                  download_dir: str | Path = Path("data/downloads"),
                  manifest: str | Path | None = None, progress: bool = True) -> Path:
    """The folder holding corpus ``name``'s audio, checked to be complete.

    Parameters
    ----------
    name : str
        "yesno" or "fsdd".
    corpus_dir : str or Path, optional
        A local copy; when given, nothing is downloaded.
    download_dir : str or Path
        Where archives are downloaded and unpacked.
    manifest : str or Path, optional
        The download manifest, by default :data:`MANIFEST`.
    progress : bool
        Show download progress.

    Raises
    ------
    DataError
        Naming the folder and what is missing from it, or the download that failed.
    """
    if name not in _CHECKS:
        raise DataError(None, f"unknown corpus '{name}'; expected one of "
                              f"{', '.join(sorted(_CHECKS))}")
    check = _CHECKS[name]
    if corpus_dir is not None:
        check(Path(corpus_dir))
        return Path(corpus_dir)
    manifest_path = Path(manifest) if manifest is not None else MANIFEST
    entries = load_manifest(manifest_path)
    if name not in entries:
        raise DataError(manifest_path, f"no entry for corpus '{name}'")
    entry = entries[name]
    download_dir = Path(download_dir)
    root = download_dir / name
    corpus = root / entry["corpus_dir"]
    if not corpus.is_dir():
        archive = download(entry["url"], download_dir / entry["archive"], entry["sha256"], progress)
        with atomic_dir(root) as tmp:
            extract_archive(archive, tmp)
    check(corpus)
    return corpus
