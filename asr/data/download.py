"""Downloads verified by sha256.

A download goes to a temporary file beside its destination and is renamed into place only
when its sha256 matches the one expected, so a cut-off or altered download never sits
where a finished one would. A file already at the destination with the right checksum is
not fetched again.

>>> download("https://www.openslr.org/resources/1/waves_yesno.tar.gz",
...          Path("data/downloads/waves_yesno.tar.gz"), sha256="c3f4...")   # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from asr.errors import DataError
from asr.fileio import atomic_file

__all__ = ["download", "sha256_of"]

_CHUNK = 1 << 16
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: str | Path, sha256: str | None, progress: bool = True,
             timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` and check its sha256.

    Parameters
    ----------
    url : str
        Any URL urllib opens (``https://``, ``http://``, ``file://``).
    dest : str or Path
        The file to write; its folder is created.
    sha256 : str or None
        The expected hex digest. None is refused: data is never taken unverified.
    progress : bool
        Show a tqdm progress bar.
    timeout : float
        Seconds to wait for the server on each read.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    DataError
        Naming ``dest``, when no valid checksum is given, the download fails, or the
        checksum differs (the download is then removed).
    """
    dest = Path(dest)
    if sha256 is None:
        raise DataError(dest, f"no sha256 is known for {url}; refusing to download unverified "
                              "data (fetch it yourself and pass the folder as --corpus DIR)")
    sha256 = sha256.lower()
    if not _SHA256.match(sha256):
        raise DataError(dest, f"expected a sha256 of 64 hex digits for {url}, got {sha256!r}")
    if dest.is_file() and sha256_of(dest) == sha256:
        return dest
    with atomic_file(dest) as tmp:
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                length = response.headers.get("Content-Length")
                with tqdm(total=int(length) if length else None, unit="B", unit_scale=True,
                          desc=dest.name, disable=not progress) as bar:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DataError(dest, f"cannot download {url}: {reason}") from None
        if digest.hexdigest() != sha256:
            raise DataError(dest, f"sha256 mismatch for {url}: expected {sha256}, got "
                                  f"{digest.hexdigest()}; the download was removed")
    return dest
