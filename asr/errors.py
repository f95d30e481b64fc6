"""The project's documented exceptions.

Every error caused by input names the file (and line, where there is one) and says
what was expected, e.g. ``data/train/text:12: empty transcript for utterance 'u1'``.
"""
from __future__ import annotations

from pathlib import Path


class AsrError(Exception):
    """Base class of every error this package raises on purpose."""

    def __init__(self, path: str | Path | None, message: str, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.message = message
        where = "" if path is None else (f"{path}:{line}: " if line is not None else f"{path}: ")
        super().__init__(where + message)


class DataError(AsrError):
    """A data directory, transcript, lexicon or grammar file is malformed."""


class AudioError(AsrError):
    """An audio file is missing, unreadable or not in the expected format."""


class ModelError(AsrError):
    """A model directory or checkpoint is missing, incomplete or altered."""


class SettingsError(AsrError):
    """A settings (TOML) file has an unknown key, a wrong type or a bad value."""
