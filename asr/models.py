"""The seam that makes acoustic models interchangeable, and their registry.

Every acoustic model turns features into per-frame log-likelihoods over the tied HMM states
(pdfs) of one transition model and tree. A GMM returns exact log-likelihoods; a hybrid
network returns scaled likelihoods (log posterior - log prior). The decoder sees only the
matrix. A new model is one class that implements ``AcousticModel``, named in the
``asr.acoustic_models`` entry-point group of the package that ships it (``setup.cfg``)::

    [options.entry_points]
    asr.acoustic_models =
        lstm = my_package.lstm:LstmModel

The registry names no model itself: the built-in ``gmm`` and ``dnn`` arrive through the
same group in asr's own metadata, and a third-party package adds one without touching
``asr``. An entry point is loaded when its name is asked for (``model_class``) or when all
names are listed (``registered_models``). A class may also be registered by hand with
``@register("name")`` once its module is imported (for a model defined in a script).
"""
from __future__ import annotations

import json
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from asr.errors import ModelError
from asr.fileio import atomic_file

ENTRY_POINT_GROUP = "asr.acoustic_models"

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
    """The acoustic model class registered as ``name`` (its entry point loaded if need be)."""
    eps = _entry_points()
    if name not in _REGISTRY and name in eps:
        _load(_only(name, eps[name]))
    if name not in _REGISTRY:
        raise ModelError(None, f"unknown acoustic model type {name!r}; registered: "
                         f"{sorted(set(_REGISTRY) | set(eps))}",
                         hint=f"a model's package names its class in the "
                              f"{ENTRY_POINT_GROUP!r} entry-point group and must be installed")
    return _REGISTRY[name]


def registered_models() -> list[str]:
    """Names of every acoustic model: all entry points loaded, plus any registered by hand."""
    for name, eps in sorted(_entry_points().items()):
        ep = _only(name, eps)
        if name not in _REGISTRY:
            _load(ep)
    return sorted(_REGISTRY)


def _entry_points() -> dict[str, list[EntryPoint]]:
    """name -> the entry points of the group that claim it (one each, unless two packages do)."""
    found: dict[str, dict[str, EntryPoint]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, {})[ep.value] = ep
    return {name: list(eps.values()) for name, eps in found.items()}


def _only(name: str, eps: list[EntryPoint]) -> EntryPoint:
    if len(eps) > 1:
        raise ModelError(None, f"acoustic model {name!r} is claimed by more than one entry "
                         f"point: {'; '.join(_describe(ep) for ep in eps)}",
                         hint="uninstall one of the packages")
    return eps[0]


def _describe(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return (f"entry point '{ep.name} = {ep.value}' in group {ENTRY_POINT_GROUP!r}"
            + (f" of package {dist.name!r}" if dist is not None else ""))


def _load(ep: EntryPoint) -> type:
    """Import the class ``ep`` names and register it as ``ep.name``; ModelError if it cannot."""
    where = _describe(ep)
    try:
        cls = ep.load()
    except Exception as exc:
        raise ModelError(None, f"{where} cannot be loaded: {type(exc).__name__}: {exc}") \
            from exc
    missing = [m for m in ("log_likelihoods", "save", "load") if not hasattr(cls, m)]
    if not isinstance(cls, type) or missing:
        raise ModelError(None, f"{where} is not an acoustic model class: it needs num_pdfs, "
                         f"log_likelihoods, save and load (missing: {', '.join(missing)})")
    declared = getattr(cls, "model_type", ep.name)
    if declared != ep.name:
        raise ModelError(None, f"{where} names a class whose model_type is {declared!r}; "
                         f"expected {ep.name!r}")
    if _REGISTRY.get(ep.name, cls) is not cls:
        raise ModelError(None, f"{where}: {ep.name!r} is already registered to "
                         f"{_REGISTRY[ep.name].__module__}.{_REGISTRY[ep.name].__qualname__}")
    return register(ep.name)(cls)


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
