"""Results of a recipe: ``results.json``, the generated ``RESULTS.md`` and plots.

``results.json`` holds one row per system and the runs the rows came from::

    {"systems": {"mono": {"run": "3f2a9c01d4e5",
                          "test_sets": {"test": {"wer": 1.23, "errors": 12, "words": 974,
                                                 "ins": 3, "del": 4, "sub": 5,
                                                 "line": "%WER 1.23 [ 12 / 974, ...] exp/..."}}}},
     "runs": {"3f2a9c01d4e5": {"commit": "...", "date": "...", "command": "...",
                               "settings": {...}, "skipped_utts": 0, ...}}}

A recipe records each system it ran as a whole row (:func:`record_system`): the row's
test sets are exactly those of that run, so nothing from an earlier run survives in it,
and the row names the run (commit, date, command line, resolved settings, utterances
skipped as bad) it came from. Rows of systems the run did not touch keep their own runs.
The same results and runs give the same bytes.

>>> record_system("results/yesno/results.json", "mono", {"test": wer}, run)  # doctest: +SKIP
>>> write_results_md("results/yesno/results.json", "results/yesno/RESULTS.md", "yesno")  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Mapping, Sequence

from asr.errors import DataError
from asr.fileio import atomic_file, write_json, write_text
from asr.scoring import WerResult

MISSING = "–"
"""Table cell of a system not scored on a test set."""

_LAYOUT = ('expected {"systems": {system: {"run": id, "test_sets": {test set: {wer, errors, '
           'words, ins, del, sub, line}}}}, "runs": {id: {...}}}')


# --------------------------------------------------------------------------- store

def _load_store(json_path: str | Path) -> dict:
    """The whole store, checked; a missing file is an empty store."""
    path = Path(json_path)
    if not path.exists():
        return {"systems": {}, "runs": {}}
    try:
        store = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON ({err.msg}); {_LAYOUT}", err.lineno) from err
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(path, f"cannot read results: {err}") from err
    if not isinstance(store, dict) or set(store) != {"systems", "runs"}:
        raise DataError(path, f"top level must hold exactly 'systems' and 'runs'; {_LAYOUT}",
                        hint="a results.json of an older layout holds no runs: remove it and "
                             "rerun the recipe's decode and results stages (--force)")
    systems, runs = store["systems"], store["runs"]
    if not isinstance(systems, dict) or not isinstance(runs, dict):
        raise DataError(path, f"'systems' and 'runs' must be objects; {_LAYOUT}")
    for system, row in systems.items():
        if not (isinstance(row, dict) and isinstance(row.get("test_sets"), dict)):
            raise DataError(path, f"system {system!r} lacks a 'test_sets' object; {_LAYOUT}")
        if row.get("run") not in runs:
            raise DataError(path, f"system {system!r} names run {row.get('run')!r}, which "
                                  f"'runs' does not hold; {_LAYOUT}")
        for test_set, cell in row["test_sets"].items():
            ok = (isinstance(cell, dict) and isinstance(cell.get("line"), str)
                  and isinstance(cell.get("wer"), (int, float)) and not isinstance(cell["wer"], bool))
            if not ok:
                raise DataError(path, f"{system!r} / {test_set!r} lacks a numeric 'wer' or a "
                                      f"'line'; {_LAYOUT}")
    return store


def load_results(json_path: str | Path) -> dict[str, dict[str, dict]]:
    """The scores of ``results.json``: system -> test set -> ``{wer, errors, ..., line}``.

    Raises
    ------
    DataError
        The file is not JSON or not laid out as the module docstring shows.
    """
    return {system: row["test_sets"]
            for system, row in _load_store(json_path)["systems"].items()}


def load_runs(json_path: str | Path) -> dict[str, dict]:
    """system -> the run its row came from (commit, date, command, settings, ...)."""
    store = _load_store(json_path)
    return {system: store["runs"][row["run"]] for system, row in store["systems"].items()}


def run_id(run: Mapping) -> str:
    """A short id of a run record: the first 12 hex digits of its canonical JSON's sha256."""
    canonical = json.dumps(run, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def record_system(json_path: str | Path, system: str, scores: Mapping[str, WerResult],
                  run: Mapping) -> None:
    """Replace ``system``'s whole row in ``results.json`` with ``scores`` from ``run``.

    Parameters
    ----------
    system : the row's name.
    scores : test set -> result; the row holds exactly these test sets afterwards.
    run : plain-JSON facts of the run that made them (see ``asr.recipe.run_record``).

    Runs that no row names any more are dropped. The file is written atomically with
    sorted keys; writers of one file must take turns (recipe stages run in order).
    """
    for what, value in [("system", system), *(("test set", t) for t in scores)]:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{what} name must be a non-empty string, got {value!r}")
    if not scores:
        raise ValueError(f"system {system!r}: no scores to record")
    store = _load_store(json_path)
    run = json.loads(json.dumps(run))          # plain JSON, detached from the caller
    key = run_id(run)
    store["runs"][key] = run
    store["systems"][system] = {
        "run": key,
        "test_sets": {t: {**r.to_dict(), "line": r.line()} for t, r in scores.items()}}
    used = {row["run"] for row in store["systems"].values()}
    store["runs"] = {k: v for k, v in store["runs"].items() if k in used}
    write_json(json_path, store)


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
                     mean_columns: dict[str, Sequence[str]] | None = None,
                     sections: Sequence[str] = ()) -> None:
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
    sections
        Markdown blocks placed after the table (e.g. :func:`seed_spread_table`).

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
    for section in sections:
        out += ["", section.strip()]
    out += ["", "## %WER lines", "", "```"]
    groups = []
    for system in systems:
        scored = results.get(system, {})
        lines = [scored[t]["line"] for t in test_sets if t in scored]
        if lines:
            groups.append([f"# {system}", *lines])
    out += "\n\n".join("\n".join(group) for group in groups).splitlines()
    out += ["```", ""]
    out += _runs_section(_load_store(json_path), systems)
    write_text(md_path, "\n".join(out))


def _runs_section(store: dict, systems: Sequence[str]) -> list[str]:
    """Markdown lines naming the run (commit, date, command, skipped) behind each row."""
    by_run: dict[str, list[str]] = {}
    for system in systems:
        if system in store["systems"]:
            by_run.setdefault(store["systems"][system]["run"], []).append(system)
    if not by_run:
        return []
    out = ["## Runs", "",
           "Each row comes from one run; `results.json` also holds each run's resolved "
           "settings.", ""]
    for key, names in by_run.items():
        run = store["runs"][key]
        facts = [f"commit `{run.get('commit', 'unknown')}`", str(run.get("date", "no date"))]
        if "machine" in run:
            facts.append(str(run["machine"]))
        if "skipped_utts" in run:
            facts.append(f"{run['skipped_utts']} utterance(s) skipped as bad")
        out.append(f"- **{', '.join(_cell(n) for n in names)}** (run `{key}`): "
                   + "; ".join(facts) + ".")
        if run.get("command"):
            out.append(f"  `{run['command']}`")
    return out + [""]


def dev_choice(json_path: str | Path, systems: Sequence[str], dev_sets: Sequence[str]
               ) -> tuple[str, dict[str, int]]:
    """The one of ``systems`` with the fewest errors summed over ``dev_sets`` (ties: the
    first listed), and each one's sum; a dev set some system lacks is left out."""
    results = load_results(json_path)
    shared = [d for d in dev_sets if all(d in results.get(x, {}) for x in systems)]
    errors = {x: sum(results[x][d]["errors"] for d in shared) for x in systems}
    return min(systems, key=lambda x: errors[x]), errors


def dev_choice_section(json_path: str | Path, systems: Sequence[str],
                       dev_sets: Sequence[str]) -> str:
    """RESULTS.md's paragraph naming the hybrid input that wins on dev."""
    best, errors = dev_choice(json_path, systems, dev_sets)
    return ("## Hybrid input, chosen on dev\n\nErrors summed over the dev sets ("
            + ", ".join(f"`{d}`" for d in dev_sets) + "): "
            + ", ".join(f"{x} {errors[x]}" for x in systems)
            + f". The fewest win (ties: the first): **{best}** is the hybrid of this table "
            "that the goals are judged on; the other input is reported beside it.")


def seed_spread_table(json_path: str | Path, systems: Sequence[str],
                      test_sets: Sequence[str],
                      mean_rows: dict[str, Sequence[str]] | None = None) -> str:
    """Markdown table of one system trained with several seeds (one row each in the store).

    Rows are ``test_sets``, then ``mean_rows`` (name -> test sets: the mean WER over them
    per seed); columns give each system's WER and errors, then the mean over the systems
    ± the sample standard deviation, and the range. Test sets that not every system
    scored are left out.
    """
    results = load_results(json_path)

    def everywhere(names: Sequence[str]) -> list[str]:
        return [t for t in names if all(t in results.get(x, {}) for x in systems)]

    def row(name: str, wers: list[float], cells: list[str]) -> str:
        mean = math.fsum(wers) / len(wers)
        std = (math.sqrt(math.fsum((w - mean) ** 2 for w in wers) / (len(wers) - 1))
               if len(wers) > 1 else 0.0)
        return (f"| {_cell(name)} | " + " | ".join(cells)
                + f" | {mean:.2f} ± {std:.2f} | {min(wers):.2f}–{max(wers):.2f} |")

    out = ["| test set | " + " | ".join(_cell(x) for x in systems) + " | mean ± sd | range |",
           "| :--- |" + " ---: |" * (len(systems) + 2)]
    for t in everywhere(test_sets):
        cells = [results[x][t] for x in systems]
        out.append(row(t, [c["wer"] for c in cells],
                       [f"{c['wer']:.2f} ({c['errors']})" for c in cells]))
    for name, members in (mean_rows or {}).items():
        members = everywhere(members)
        if members:
            means = [math.fsum(results[x][t]["wer"] for t in members) / len(members)
                     for x in systems]
            out.append(row(name, means, [f"{m:.2f}" for m in means]))
    return "\n".join(out)


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
