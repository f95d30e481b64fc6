"""The project's documented exceptions.

Every error caused by input names the file (and line, where there is one) and says
what was expected, e.g. ``data/train/text:12: empty transcript for utterance 'u1'``.
An error may also carry a ``hint``, the fix a user can apply (``pass --corpus DIR with a
local copy``); :func:`error_line` renders both as the one line a command prints.
"""
from __future__ import annotations

from pathlib import Path


class AsrError(Exception):
    """Base class of every error this package raises on purpose."""

    def __init__(self, path: str | Path | None, message: str, line: int | None = None,
                 hint: str | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.message = message
        self.hint = hint
        where = "" if path is None else (f"{path}:{line}: " if line is not None else f"{path}: ")
        super().__init__(where + message)

    def __str__(self) -> str:
        text = super().__str__()
        return text if not self.hint else f"{text}; {self.hint}"

    def __reduce__(self):
        # Rebuilt from its fields, so an error raised in a worker process reaches the parent.
        return type(self), (self.path, self.message, self.line, self.hint)


def error_line(error: AsrError, prog: str) -> str:
    """The one line a command prints for ``error``: ``prog: error: FILE:LINE: reason; fix``."""
    return f"{prog}: error: {' '.join(str(error).split())}"


class DataError(AsrError):
    """A data directory, transcript, lexicon or grammar file is malformed."""


class AudioError(AsrError):
    """An audio file is missing, unreadable or not in the expected format."""


class ModelError(AsrError):
    """A model directory or checkpoint is missing, incomplete or altered."""


class SettingsError(AsrError):
    """A settings (TOML) file has an unknown key, a wrong type or a bad value."""
