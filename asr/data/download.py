"""Downloads verified by sha256 (or, where only that is published, md5).

A download goes to a temporary file beside its destination and is renamed into place only
when its checksums match the ones expected, so a cut-off or altered download never sits
where a finished one would. A file already at the destination with the right checksums is
not fetched again. sha256 is preferred; md5 is accepted for files whose publisher gives
only an md5 (OpenSLR's LibriSpeech resources). When both are given, both must match; a file
with neither is refused.

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

__all__ = ["download", "md5_of", "sha256_of"]

_CHUNK = 1 << 16
_DIGITS = {"sha256": 64, "md5": 32}


def _digest_of(path: str | Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of the file at ``path``."""
    return _digest_of(path, "sha256")


def md5_of(path: str | Path) -> str:
    """Hex md5 of the file at ``path``."""
    return _digest_of(path, "md5")


def _expected(url: str, dest: Path, sha256: str | None, md5: str | None) -> dict[str, str]:
    """The checksums to verify, by algorithm (sha256 first), each checked to be hex."""
    given = {name: value.lower() for name, value in (("sha256", sha256), ("md5", md5))
             if value is not None}
    if not given:
        raise DataError(dest, f"no sha256 or md5 is known for {url}; refusing to download "
                              "unverified data (fetch it yourself and pass the folder as "
                              "--corpus DIR)")
    for name, value in given.items():
        if not re.fullmatch(f"[0-9a-f]{{{_DIGITS[name]}}}", value):
            raise DataError(dest, f"expected a {name} of {_DIGITS[name]} hex digits for {url}, "
                                  f"got {value!r}")
    return given


def download(url: str, dest: str | Path, sha256: str | None, progress: bool = True,
             timeout: float = 60.0, md5: str | None = None) -> Path:
    """Fetch ``url`` to ``dest`` and check its sha256 and/or md5.

    Parameters
    ----------
    url : str
        Any URL urllib opens (``https://``, ``http://``, ``file://``).
    dest : str or Path
        The file to write; its folder is created.
    sha256 : str or None
        The expected hex sha256.
    progress : bool
        Show a tqdm progress bar.
    timeout : float
        Seconds to wait for the server on each read.
    md5 : str or None
        The expected hex md5, for files whose publisher gives no sha256. With ``sha256``
        both must match; with neither the download is refused: data is never taken
        unverified.

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
    expected = _expected(url, dest, sha256, md5)
    if dest.is_file() and all(_digest_of(dest, name) == value
                              for name, value in expected.items()):
        return dest
    with atomic_file(dest) as tmp:
        digests = {name: hashlib.new(name) for name in expected}
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                length = response.headers.get("Content-Length")
                with tqdm(total=int(length) if length else None, unit="B", unit_scale=True,
                          desc=dest.name, disable=not progress) as bar:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        out.write(chunk)
                        for digest in digests.values():
                            digest.update(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DataError(dest, f"cannot download {url}: {reason}") from None
        for name, value in expected.items():
            if digests[name].hexdigest() != value:
                raise DataError(dest, f"{name} mismatch for {url}: expected {value}, got "
                                      f"{digests[name].hexdigest()}; the download was removed")
    return dest
