"""Settings: one dataclass per component, filled from a TOML file and the command line.

A recipe's TOML has one table per component, e.g.::

    [features]
    kind = "mfcc"
    [mono]
    num_iters = 40

``load_settings`` checks every key and type against the dataclasses and names the file and
line of anything unknown or mistyped; ``to_dict`` gives the resolved settings to write into
the experiment folder.
"""
from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

from asr.errors import SettingsError

T = TypeVar("T")


def _line_of(text: str, key: str, table: str | None) -> int | None:
    """1-based line on which ``key`` is set (inside ``[table]`` when given), or None."""
    current = None
    for number, line in enumerate(text.split("\n"), start=1):   # TOML lines end at \n only
        stripped = line.strip()
        header = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
        if header:
            current = header.group(1)
            if key == current and table is None:
                return number
            continue
        if current == table and re.match(rf"^\"?{re.escape(key)}\"?\s*=", stripped):
            return number
    return None


def _check_type(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_check_type(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            return False
        inner = args[0] if args else Any
        return all(_check_type(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def from_dict(cls: type[T], values: dict, *, path: Path | None = None, text: str = "",
              table: str | None = None) -> T:
    """Build dataclass ``cls`` from ``values``, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        where = f"[{table}] " if table else ""
        if key not in fields:
            raise SettingsError(path, f"unknown setting {where}{key!r}; expected one of "
                                f"{sorted(fields)}", _line_of(text, key, table))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise SettingsError(path, f"{where}{key!r} must be a table",
                                    _line_of(text, key, table))
            sub = f"{table}.{key}" if table else key
            kwargs[key] = from_dict(hint, value, path=path, text=text, table=sub)
            continue
        if not _check_type(value, hint):
            name = str(hint) if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))
            raise SettingsError(path, f"setting {where}{key!r} must be of type {name}, got "
                                f"{type(value).__name__} {value!r}", _line_of(text, key, table))
        if _holds_nan(value):
            raise SettingsError(path, f"setting {where}{key!r} is NaN; expected a number",
                                _line_of(text, key, table))
        if hint is float and isinstance(value, int):
            value = float(value)
        if typing.get_origin(hint) is tuple:
            value = tuple(value)
        kwargs[key] = value
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError, OverflowError) as exc:
        where = f" in [{table}]" if table else ""
        line = _line_of(text, table, None) if table else None
        raise SettingsError(path, f"bad settings{where}: {exc}", line) from None
    return obj


def _holds_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, (list, tuple)):
        return any(_holds_nan(v) for v in value)
    return False


def load_settings(path: str | Path, cls: type[T], overrides: dict | None = None) -> T:
    """Read the TOML file at ``path`` into dataclass ``cls`` (tables become nested dataclasses).

    ``overrides`` maps dotted names (``"mono.num_iters"``) to values, e.g. from ``--set``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SettingsError(path, f"cannot read settings file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(path, f"not UTF-8 text (byte {exc.start}); TOML files are UTF-8",
                            raw[:exc.start].count(b"\n") + 1) from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)         # Python >= 3.14; before, only the message
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        if line is None and found:
            line = int(found.group(1))
        raise SettingsError(path, f"not valid TOML: {exc}", line) from None
    for dotted, value in (overrides or {}).items():
        target = values
        *parents, leaf = dotted.split(".")
        for name in parents:
            target = target.setdefault(name, {})
            if not isinstance(target, dict):
                raise SettingsError(path, f"override {dotted!r}: {name!r} is a setting, not a "
                                    "table")
        target[leaf] = value
    return from_dict(cls, values, path=path, text=text)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a command-line override ``section.key=value`` (value in TOML syntax)."""
    if "=" not in text:
        raise SettingsError(None, f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare string
    return key.strip(), value


def to_dict(obj) -> dict:
    """The resolved settings as plain data (for ``settings.json`` in an experiment folder)."""
    return dataclasses.asdict(obj)
