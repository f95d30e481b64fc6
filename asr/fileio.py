"""Atomic outputs: write to a temporary sibling, rename on success.

An interrupted run never leaves half a file or half a directory behind: the output either
is the old one, the new one, or absent. A run killed outright (SIGKILL, power loss) can
leave its temporary behind, named ``.<name>.<8 random characters>.tmp`` beside ``<name>``
(or ``.<name>.old`` while a directory is being swapped); :func:`atomic_dir` removes those of
its own target before writing, and :func:`remove_stale_temporaries` sweeps a whole tree
(recipes call it on their experiment folder when they start). One writer per output:
two processes writing the same path at once are not supported.

>>> with atomic_dir(Path("exp/mono")) as tmp:   # doctest: +SKIP
...     model.save(tmp)
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from asr.errors import DataError


_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def _is_temporary_of(entry_name: str, name: str) -> bool:
    return (entry_name == f".{name}.old" or (entry_name.startswith(f".{name}.")
            and entry_name.endswith(".tmp") and len(entry_name) == len(name) + 14))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(root: str | Path) -> int:
    """Delete what interrupted atomic writes left anywhere under ``root``.

    Removes files and folders named like the temporaries of :func:`atomic_file` and
    :func:`atomic_dir` (``.<name>.XXXXXXXX.tmp``, ``.<name>.old``); call it only when no
    other process is writing under ``root``.

    Returns
    -------
    int : the number of temporaries removed.
    """
    root = Path(root)
    if not root.is_dir():
        return 0
    stale = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            if _TEMPORARY.match(name) or (name.startswith(".") and name.endswith(".old")
                                         and name in dirs):
                stale.append(Path(folder) / name)
        dirs[:] = [d for d in dirs if Path(folder) / d not in stale]
    for path in stale:
        _remove(path)
    return len(stale)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory; it replaces ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for entry in os.scandir(path.parent):     # left by a run killed while writing ``path``
        if _is_temporary_of(entry.name, path.name):
            _remove(Path(entry.path))
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_lines(path: str | Path, what: str = "") -> list[str]:
    """The lines of a UTF-8 text file, ended by ``\n`` only (as Kaldi reads them;
    ``str.splitlines`` would also split at U+0085 or U+2028 and miscount line numbers).

    A file that cannot be read or decoded is a DataError naming it (``what`` says what the
    file is, e.g. "lexicon").
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(path, f"cannot read{' ' + what if what else ''}: "
                              f"{exc.strerror or exc}") from None
    return lines[:-1] if lines[-1] == "" else lines
