"""Unpacking downloaded archives without letting them write outside their folder.

Every member name is checked before anything is written: an absolute path, a ``..``
component, or a link pointing outside the destination is refused with a DataError naming
the archive. Tar files are then extracted with tarfile's ``filter="data"`` as a second
guard (no device files, no setuid bits).
"""
from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from asr.errors import DataError

__all__ = ["extract_tar", "extract_zip", "extract_archive"]


def _check_member(archive: Path, name: str, what: str = "member") -> None:
    if (PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute()
            or name.startswith("\\")):
        raise DataError(archive, f"{what} '{name}' has an absolute path; expected paths inside "
                                 "the archive's folder")
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise DataError(archive, f"{what} '{name}' points outside the destination ('..'); "
                                 "expected paths inside the archive's folder")


def extract_tar(archive: str | Path, dest: str | Path) -> Path:
    """Extract a (possibly compressed) tar file into ``dest``, refusing unsafe members.

    Returns
    -------
    Path
        ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(archive, member.name)
                if member.issym():
                    link = str(PurePosixPath(member.name).parent / member.linkname)
                    _check_member(archive, link, f"link '{member.name}' ->")
                elif member.islnk():
                    _check_member(archive, member.linkname, f"link '{member.name}' ->")
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise DataError(archive, f"unsafe member refused: {exc}") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(archive, f"not a readable tar archive ({exc})") from None
    return dest


def extract_zip(archive: str | Path, dest: str | Path) -> Path:
    """Extract a zip file into ``dest``, refusing unsafe members. Returns ``dest``."""
    archive, dest = Path(archive), Path(dest)
    try:
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                _check_member(archive, name)
            dest.mkdir(parents=True, exist_ok=True)
            zf.extractall(dest)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(archive, f"not a readable zip archive ({exc})") from None
    return dest


def extract_archive(archive: str | Path, dest: str | Path) -> Path:
    """Extract a tar or zip file (told apart by content) into ``dest``. Returns ``dest``."""
    archive = Path(archive)
    if not archive.is_file():
        raise DataError(archive, "no such archive")
    if zipfile.is_zipfile(archive):
        return extract_zip(archive, dest)
    return extract_tar(archive, dest)
