"""Finding a source corpus: a local copy (``--corpus DIR``) or a verified download.

``data/corpora.json`` lists each corpus's archive: ``url``, ``sha256`` and/or ``md5``,
``archive`` (file name under the download folder), ``corpus_dir`` (the corpus folder inside
the unpacked archive) and where each checksum comes from (``sha256_source``,
``md5_source``). sha256 is preferred; an entry carries an ``md5`` where its publisher gives
only that (OpenSLR), and the download checks every checksum given; an entry with neither is
refused at download time. An entry without ``corpus_dir`` is a single file (a lexicon, an
ARPA LM) that :func:`fetch` downloads and leaves as it is. A corpus is unpacked into
``<download_dir>/<name>/`` atomically, laid out like ``shared/data/<name>/``
(``yesno/waves_yesno/*.wav``, ``fsdd/recordings/*.wav``), so an interrupted unpacking is
redone next time and a download and a shared copy are read the same way.

:func:`find_corpora` gives the tests (and anyone else wanting every corpus in one folder)
a root holding ``yesno/`` and ``fsdd/``: ``$ASR_SHARED_DATA``, else ``shared/data`` beside
the repository, else a verified download into the user cache.

>>> locate_corpus("yesno", corpus_dir=Path("../shared/data/yesno"))   # doctest: +SKIP
PosixPath('../shared/data/yesno')
>>> locate_corpus("fsdd")        # downloads and unpacks on first use   # doctest: +SKIP
PosixPath('data/downloads/fsdd')
>>> find_corpora()                                                    # doctest: +SKIP
PosixPath('/home/me/.cache/asr/corpora')
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

from asr.data.archive import extract_archive
from asr.data.download import download
from asr.data.fsdd import fsdd_recordings
from asr.data.yesno import yesno_recordings
from asr.errors import DataError
from asr.fileio import atomic_dir

__all__ = ["MANIFEST", "SHARED_DATA_ENV", "fetch", "find_corpora", "load_manifest",
           "locate_corpus", "user_cache_dir"]

MANIFEST = Path(__file__).resolve().parents[2] / "data" / "corpora.json"
SHARED_DATA_ENV = "ASR_SHARED_DATA"
# ``shared/data`` beside the repository, where a checkout next to the project's data has it.
_SIBLING = Path(__file__).resolve().parents[3] / "shared" / "data"
_DOWNLOAD_HINT = "pass --corpus DIR with a local copy of the corpus"
_REQUIRED = ("url", "archive")
_CHECKSUMS = ("sha256", "md5")
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
        if not any(key in entry for key in _CHECKSUMS):
            missing.append(" or ".join(_CHECKSUMS))
        if missing:
            raise DataError(path, f"corpus '{name}' lacks {', '.join(missing)}; expected keys "
                                  f"{', '.join(_REQUIRED)}, sha256 and/or md5 and, for an "
                                  "archive to unpack, corpus_dir")
    return manifest


def locate_corpus(name: str, corpus_dir: str | Path | None = None,
                  download_dir: str | Path = Path("data/downloads"),
                  manifest: str | Path | None = None, progress: bool = True,
                  timeout: float = 60.0) -> Path:
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
    timeout : float
        Seconds to wait for the server on each read.

    Returns
    -------
    Path
        ``corpus_dir``, or ``<download_dir>/<name>`` laid out like ``shared/data/<name>``.

    Raises
    ------
    DataError
        Naming the folder and what is missing from it, or the download that failed (with
        the hint to pass a local copy).
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
    corpus = Path(download_dir) / name
    if not corpus.is_dir():
        _download_corpus(entries[name], corpus, check, progress, timeout)
    check(corpus)
    return corpus


def _download_corpus(entry: dict, corpus: Path, check: Callable[[Path], object],
                     progress: bool, timeout: float) -> None:
    """Download ``entry``'s archive beside ``corpus`` and unpack it there, atomically.

    The archive's ``corpus_dir`` becomes ``corpus``, so FSDD's
    ``free-spoken-digit-dataset-1.0.10/recordings/`` lands as ``<corpus>/recordings/``; an
    archive that does not hold the whole corpus leaves nothing behind.
    """
    archive = _download_entry(entry, corpus.parent, progress, timeout)
    with atomic_dir(corpus) as tmp:
        unpacked = extract_archive(archive, tmp / ".unpacked")
        inner = (unpacked / entry["corpus_dir"]).resolve()
        if not inner.is_dir() or not inner.is_relative_to(unpacked.resolve()):
            raise DataError(archive, f"no folder '{entry['corpus_dir']}' inside; expected the "
                                     "corpus_dir that data/corpora.json names")
        for child in inner.iterdir():
            os.replace(child, tmp / child.name)
        shutil.rmtree(unpacked)
        try:
            check(tmp)
        except DataError as exc:
            raise DataError(archive, f"does not hold the whole corpus: {exc.message}") from None


def _download_entry(entry: dict, folder: Path, progress: bool, timeout: float) -> Path:
    """Download ``entry``'s file into ``folder``, verified by every checksum it gives."""
    try:
        return download(entry["url"], folder / entry["archive"], entry.get("sha256"), progress,
                        timeout, md5=entry.get("md5"))
    except DataError as exc:
        exc.hint = exc.hint or _DOWNLOAD_HINT
        raise


def fetch(name: str, download_dir: str | Path, manifest: str | Path | None = None,
          check: Callable[[Path], object] | None = None, progress: bool = True,
          timeout: float = 60.0) -> Path:
    """Download manifest entry ``name`` (any entry, not only the corpora of
    :func:`locate_corpus`), verified, into ``download_dir``.

    An entry with ``corpus_dir`` is an archive, unpacked atomically into
    ``<download_dir>/<name>/`` (its ``corpus_dir`` becomes that folder) unless that folder
    exists; ``check`` (raising :class:`DataError`) then vets the folder. An entry without
    it is one file, ``<download_dir>/<archive>``, fetched unless a file with the right
    checksums is there already.

    Returns
    -------
    Path
        The unpacked folder or the downloaded file.
    """
    manifest_path = Path(manifest) if manifest is not None else MANIFEST
    entries = load_manifest(manifest_path)
    if name not in entries:
        raise DataError(manifest_path, f"no entry '{name}'; expected one of "
                                       f"{', '.join(sorted(entries))}")
    entry, download_dir = entries[name], Path(download_dir)
    if "corpus_dir" not in entry:
        return _download_entry(entry, download_dir, progress, timeout)
    check = check or (lambda folder: None)
    folder = download_dir / name
    if not folder.is_dir():
        _download_corpus(entry, folder, check, progress, timeout)
    check(folder)
    return folder


def user_cache_dir() -> Path:
    """Where downloaded corpora are kept: ``$XDG_CACHE_HOME/asr/corpora`` (``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "asr" / "corpora"


def find_corpora(names: tuple[str, ...] = ("yesno", "fsdd"), cache_dir: str | Path | None = None,
                 manifest: str | Path | None = None, progress: bool = True,
                 timeout: float = 30.0) -> Path:
    """A folder holding each corpus in ``names`` as ``<root>/<name>/``, checked to be complete.

    Tried in order: ``$ASR_SHARED_DATA`` (when set, it must hold every corpus), ``shared/data``
    beside the repository (used when complete), then ``cache_dir`` (default
    :func:`user_cache_dir`), downloading and unpacking what it lacks, verified by sha256.

    Parameters
    ----------
    names : tuple of str
        The corpora wanted, each a key of ``data/corpora.json``.
    cache_dir : str or Path, optional
        Where downloads are kept and unpacked.
    manifest : str or Path, optional
        The download manifest, by default :data:`MANIFEST`.
    progress : bool
        Show download progress.
    timeout : float
        Seconds to wait for the server on each read.

    Raises
    ------
    DataError
        Naming the folder or download that failed, with a hint saying what to set.
    """
    unknown = [name for name in names if name not in _CHECKS]
    if unknown:
        raise DataError(None, f"unknown corpus '{unknown[0]}'; expected one of "
                              f"{', '.join(sorted(_CHECKS))}")
    hint = (f"set {SHARED_DATA_ENV}=/path/with/{'-and-'.join(names)} (a folder holding "
            f"{', '.join(f'{n}/' for n in names)}) or connect to the network to download them")
    if os.environ.get(SHARED_DATA_ENV):
        root = Path(os.environ[SHARED_DATA_ENV])
        try:
            for name in names:
                _CHECKS[name](root / name)
        except DataError as exc:
            exc.hint = f"{SHARED_DATA_ENV} is set to {root}; expected {', '.join(names)} in it"
            raise
        return root
    try:
        for name in names:
            _CHECKS[name](_SIBLING / name)
        return _SIBLING
    except DataError:
        pass
    root = Path(cache_dir) if cache_dir is not None else user_cache_dir()
    try:
        for name in names:
            locate_corpus(name, download_dir=root, manifest=manifest, progress=progress,
                          timeout=timeout)
    except DataError as exc:
        exc.hint = hint
        raise
    return root
