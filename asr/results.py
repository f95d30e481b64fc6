"""Results of a recipe: ``results.json``, the generated ``RESULTS.md`` and plots.

``results.json`` maps system -> test set -> scores, and nothing else::

    {"mono": {"test": {"wer": 1.23, "errors": 12, "words": 974,
                       "ins": 3, "del": 4, "sub": 5,
                       "line": "%WER 1.23 [ 12 / 974, 3 ins, 4 del, 5 sub ] exp/mono/decode_test"}}}

Facts about a run (date, machine, commands) belong in ``RESULTS.md``, passed as ``notes``.
Every output is deterministic: the same results give the same bytes.

>>> update_results("results/yesno/results.json", "mono", "test", wer)      # doctest: +SKIP
>>> write_results_md("results/yesno/results.json", "results/yesno/RESULTS.md", "yesno")  # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from asr.errors import DataError
from asr.fileio import atomic_file, write_json, write_text
from asr.scoring import WerResult

MISSING = "–"
"""Table cell of a system not scored on a test set."""

_LAYOUT = "expected {system: {test set: {wer, errors, words, ins, del, sub, line}}}"


# --------------------------------------------------------------------------- store

def load_results(json_path: str | Path) -> dict[str, dict[str, dict]]:
    """Read ``results.json``; a missing file is an empty store.

    Raises
    ------
    DataError
        The file is not JSON or not laid out as system -> test set -> scores.
    """
    path = Path(json_path)
    if not path.exists():
        return {}
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON ({err.msg}); {_LAYOUT}", err.lineno) from err
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(path, f"cannot read results: {err}") from err
    if not isinstance(results, dict):
        raise DataError(path, f"top level is {type(results).__name__}; {_LAYOUT}")
    for system, by_set in results.items():
        if not isinstance(by_set, dict):
            raise DataError(path, f"system {system!r} maps to {type(by_set).__name__}; {_LAYOUT}")
        for test_set, cell in by_set.items():
            ok = (isinstance(cell, dict) and isinstance(cell.get("line"), str)
                  and isinstance(cell.get("wer"), (int, float)) and not isinstance(cell["wer"], bool))
            if not ok:
                raise DataError(path, f"{system!r} / {test_set!r} lacks a numeric 'wer' or a "
                                      f"'line'; {_LAYOUT}")
    return results


def update_results(json_path: str | Path, system: str, test_set: str, wer_result: WerResult) -> None:
    """Record ``wer_result`` as ``system`` on ``test_set`` in ``results.json``.

    Reads the store, replaces that one entry and writes the whole file back atomically
    with sorted keys. Writers of one file must take turns (recipe stages run in order).
    """
    for what, value in (("system", system), ("test set", test_set)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{what} name must be a non-empty string, got {value!r}")
    results = load_results(json_path)
    results.setdefault(system, {})[test_set] = {**wer_result.to_dict(), "line": wer_result.line()}
    write_json(json_path, results)


def _ordered(first: Sequence[str] | None, present: Sequence[str]) -> list[str]:
    """Names in ``first`` (in that order), then the other ``present`` ones, sorted."""
    head = list(dict.fromkeys(first or []))
    return head + sorted(set(present) - set(head))


def _test_sets(results: dict) -> list[str]:
    return [test_set for by_set in results.values() for test_set in by_set]


# --------------------------------------------------------------------------- RESULTS.md

def _cell(name: str) -> str:
    return name.replace("|", "\\|")


def write_results_md(json_path: str | Path, md_path: str | Path, title: str,
                     system_order: Sequence[str] | None = None,
                     test_set_order: Sequence[str] | None = None,
                     notes: str = "",
                     mean_columns: dict[str, Sequence[str]] | None = None) -> None:
    """Generate ``RESULTS.md`` from ``results.json``.

    Parameters
    ----------
    json_path, md_path
        The results store, and where to write the Markdown (atomically).
    title
        The page heading, e.g. the corpus name.
    system_order, test_set_order
        Rows and columns to put first, in this order (shown with empty cells if not
        scored); every other system and test set follows, sorted.
    notes
        Markdown placed under the heading: date, machine, commands of the run.
    mean_columns
        Extra columns, name -> test sets, holding the mean WER over those test sets
        (empty cell unless the system was scored on all of them),
        e.g. ``{"heldout mean": ["spk_a", "spk_b"]}``.

    The page holds a table (rows = systems, columns = test sets, cells = WER in percent
    with two decimals, ``–`` where missing), then every ``%WER`` line grouped by system.
    """
    results = load_results(json_path)
    systems = _ordered(system_order, list(results))
    test_sets = _ordered(test_set_order, _test_sets(results))
    means = dict(mean_columns or {})

    def wer_cell(system: str, members: Sequence[str]) -> str:
        scored = results.get(system, {})
        if not members or any(t not in scored for t in members):
            return MISSING
        return f"{math.fsum(scored[t]['wer'] for t in members) / len(members):.2f}"

    header = ["system", *test_sets, *means]
    out = [f"# {title}", "",
           f"Generated by the recipe from `{Path(json_path).name}`; do not edit by hand.", ""]
    if notes.strip():
        out += [notes.strip(), ""]
    out += ["WER (%) by system (rows) and test set (columns).", "",
            "| " + " | ".join(_cell(h) for h in header) + " |",
            "| :--- |" + " ---: |" * (len(header) - 1)]
    for system in systems:
        cells = [wer_cell(system, [t]) for t in test_sets]
        cells += [wer_cell(system, members) for members in means.values()]
        out.append("| " + " | ".join([_cell(system), *cells]) + " |")
    out += ["", "## %WER lines", "", "```"]
    groups = []
    for system in systems:
        scored = results.get(system, {})
        lines = [scored[t]["line"] for t in test_sets if t in scored]
        if lines:
            groups.append([f"# {system}", *lines])
    out += "\n\n".join("\n".join(group) for group in groups).splitlines()
    out += ["```", ""]
    write_text(md_path, "\n".join(out))


# --------------------------------------------------------------------------- plots

def _figure(width: float, height: float):
    """A pyplot-free figure, so plotting never touches the caller's matplotlib backend."""
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save_png(figure, png_path: str | Path) -> None:
    """Write ``figure`` as PNG atomically, without metadata that varies between runs."""
    with atomic_file(png_path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})


def plot_results(json_path: str | Path, png_path: str | Path, title: str,
                 system_order: Sequence[str] | None = None,
                 test_set_order: Sequence[str] | None = None) -> None:
    """Grouped bar chart of WER: one group per test set, one bar per system.

    Orders follow :func:`write_results_md`. The figure widens with the number of bars
    and tilts the test set names, so many test sets stay readable.
    """
    import numpy as np
    from matplotlib import colormaps

    results = load_results(json_path)
    systems = _ordered(system_order, list(results))
    test_sets = _ordered(test_set_order, _test_sets(results))
    n_sets, n_systems = len(test_sets), max(len(systems), 1)
    figure = _figure(min(max(6.4, 1.5 + n_sets * (0.3 * n_systems + 0.4)), 40.0), 4.8)
    ax = figure.add_subplot()
    colours = colormaps["tab10" if n_systems <= 10 else "tab20"]
    width = 0.8 / n_systems
    positions = np.arange(n_sets)
    for index, system in enumerate(systems):
        scored = results.get(system, {})
        present = [i for i, t in enumerate(test_sets) if t in scored]
        bars = ax.bar(positions[present] + (index - (n_systems - 1) / 2) * width,
                      [scored[test_sets[i]]["wer"] for i in present], width,
                      label=system, color=colours(index % colours.N))
        if n_sets * n_systems <= 40:
            ax.bar_label(bars, fmt="%.1f", fontsize="x-small", padding=1)
    ax.set_xticks(positions, test_sets, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_ylabel("WER (%)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if systems:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    _save_png(figure, png_path)


def plot_curves(curves: dict[str, Sequence[float]], png_path: str | Path, xlabel: str,
                ylabel: str, title: str, x: Sequence[float] | None = None) -> None:
    """Line plot of named series, e.g. training and validation loss per epoch.

    Parameters
    ----------
    curves
        Series name -> values, drawn in the dict's order.
    x
        Shared x positions; series ``k`` uses its first ``len(curves[k])``. Default
        ``1, 2, 3, ...`` (iteration or epoch numbers).
    """
    figure = _figure(6.4, 4.8)
    ax = figure.add_subplot()
    for name, values in curves.items():
        values = list(values)
        if x is None:
            xs = list(range(1, len(values) + 1))
        elif len(x) < len(values):
            raise ValueError(f"curve {name!r} has {len(values)} values but x has only {len(x)}")
        else:
            xs = list(x)[:len(values)]
        ax.plot(xs, values, label=name, marker="o" if len(values) <= 30 else None, markersize=3)
    if x is None:
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize="small")
    _save_png(figure, png_path)
