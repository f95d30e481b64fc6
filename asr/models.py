"""The seam that makes acoustic models interchangeable, and their registry.

Every acoustic model turns features into per-frame log-likelihoods over the tied HMM states
(pdfs) of one transition model and tree. A GMM returns exact log-likelihoods; a hybrid
network returns scaled likelihoods (log posterior - log prior). The decoder sees only the
matrix. A new model is one class that implements ``AcousticModel`` and is registered::

    @register("lstm")
    class LstmModel:
        ...
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from asr.errors import ModelError
from asr.fileio import atomic_file

_REGISTRY: dict[str, type] = {}


@runtime_checkable
class AcousticModel(Protocol):
    num_pdfs: int

    def log_likelihoods(self, feats: np.ndarray) -> np.ndarray:
        """(frames, num_pdfs) float32 scores for features (frames, dim)."""

    def save(self, directory: Path) -> None:
        """Write the model's files into an existing, empty directory."""

    @classmethod
    def load(cls, directory: Path) -> "AcousticModel":
        """Read a model written by ``save``."""


def register(name: str):
    """Class decorator: make an acoustic model available under ``name``."""
    def wrap(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"acoustic model {name!r} is already registered")
        cls.model_type = name
        _REGISTRY[name] = cls
        return cls
    return wrap


def model_class(name: str) -> type:
    _load_builtin()
    if name not in _REGISTRY:
        raise ModelError(None, f"unknown acoustic model type {name!r}; registered: "
                         f"{sorted(_REGISTRY)}")
    return _REGISTRY[name]


def registered_models() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    import asr.gmm.model  # noqa: F401  (registers "gmm")
    try:
        import asr.nnet.model  # noqa: F401  (registers the neural models)
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("asr.nnet"):
            raise


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays as an uncompressed ``.npz`` (no pickled objects), atomically."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for name, array in arrays.items():
        if array.dtype.hasobject:
            raise ValueError(f"array {name!r} holds Python objects; only numeric arrays are "
                             "saved (they load without pickle)")
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read an ``.npz`` written by ``save_arrays``; never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise ModelError(path, "missing model file") from None
    except (OSError, ValueError, EOFError) as exc:
        raise ModelError(path, f"unreadable array file: {exc}") from None


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(path, "missing model file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(path, f"unreadable: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(path, f"not valid JSON: {exc.msg}", exc.lineno) from None
