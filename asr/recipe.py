"""Recipe machinery: numbered stages, ``--stage/--stop-stage``, resume, logs, settings.

A recipe is a list of stages; each stage is a function that writes its outputs atomically.
When a stage succeeds a marker ``exp/<corpus>/.done/<N>-<name>`` is written, and the stage
is skipped on the next run unless ``--force`` is given (or an earlier stage was re-run in
the same invocation). An interrupted stage leaves no marker and no half-written output,
so rerunning resumes where the run stopped; the temporaries of a run that was killed
outright are swept from the experiment folder when the next run starts. With the same seed
an interrupted and resumed run gives the same results as one that ran straight through.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from asr.errors import AsrError, error_line
from asr.fileio import remove_stale_temporaries, write_json, write_text
from asr.settings import load_settings, parse_override, to_dict

log = logging.getLogger("asr.recipe")

REPO = Path(__file__).resolve().parents[1]
"""The repository holding this package (recipes/, results/, data/)."""


@dataclass
class Stage:
    """One numbered step of a recipe. ``check``, if given, runs before any stage does when
    this stage is going to run: it finds the stage's inputs (e.g. the corpus), so that a
    run missing them stops before any work and any log of work."""

    number: int
    name: str
    run: Callable[[], None]
    check: Callable[[], None] | None = None


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch if it is loaded (network training seeds itself too)."""
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


_TASKS: list[Callable[[], object]] = []


def _run_task(index: int) -> object:
    from threadpoolctl import threadpool_limits

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    with threadpool_limits(limits=1):  # one BLAS thread per worker: no oversubscription
        return _TASKS[index]()


def _die_with_parent() -> None:
    """Worker initialiser: end this worker if the recipe process is killed (Linux)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_parallel(tasks: list[Callable[[], object]], jobs: int) -> list[object]:
    """Run independent tasks (e.g. one per fold) in ``jobs`` forked worker processes.

    Tasks are closures: the workers inherit them by forking, so only their indices and
    (small, plain) return values cross between processes. With ``jobs <= 1`` they run here.
    Tasks must not need threads started before the fork; torch tasks set their own
    thread count (see ``NnetConfig.num_threads``).
    """
    if jobs <= 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    import multiprocessing

    global _TASKS
    _TASKS = list(tasks)
    try:
        with multiprocessing.get_context("fork").Pool(min(jobs, len(tasks)),
                                                      initializer=_die_with_parent) as pool:
            return pool.map(_run_task, range(len(tasks)), chunksize=1)
    finally:
        _TASKS = []


def recipe_arguments(description: str, default_settings: Path) -> argparse.ArgumentParser:
    """The command line every recipe shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--stage", type=int, default=0, help="first stage to run")
    p.add_argument("--stop-stage", type=int, default=100, help="last stage to run")
    p.add_argument("--force", action="store_true", help="re-run stages that already finished")
    p.add_argument("--corpus", type=Path, default=None,
                   help="local copy of the corpus (default: download it, checking sha256)")
    p.add_argument("--settings", type=Path, default=default_settings, help="TOML settings file")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting, e.g. --set mono.num_iters=10")
    p.add_argument("--exp", type=Path, default=Path("exp"), help="experiment root")
    p.add_argument("--data", type=Path, default=Path("data"), help="prepared data root")
    p.add_argument("--results", type=Path, default=Path("results"), help="results root")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="where the hybrid network trains (sets dnn.device): auto = CUDA when "
                        "torch sees a GPU, else the CPU (default: the settings file's)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--skip-bad-utts", action="store_true",
                   help="leave out (and log) utterances whose audio cannot be used instead of "
                        "stopping; they are listed in exp/<corpus>/feats/<set>/skipped")
    p.add_argument("--debug", action="store_true",
                   help="show the full traceback of an error instead of one line")
    p.add_argument("--nj", type=_positive_int, default=1, metavar="N",
                   help="split each data set by speaker into N parts and run the heavy "
                        "stages as N tasks (default 1: here, one after another)")
    p.add_argument("--cluster", type=_engine, default=None, metavar="ENGINE",
                   help="where the tasks run: local (a process pool), dask (a Dask "
                        "LocalCluster), tcp://HOST:PORT (an existing Dask scheduler), slurm "
                        "or pbs (dask-jobqueue, from the settings' [cluster] table) "
                        "(default: the [cluster] table's engine, else local)")
    return p


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _engine(text: str) -> str:
    from asr.jobs import check_engine

    try:
        return check_engine(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def recipe_executor(args: argparse.Namespace, settings=None, progress: bool | None = None):
    """The :class:`asr.jobs.Executor` a recipe's stages run their tasks through.

    ``args.nj`` tasks at a time on ``args.cluster`` (``--nj``, ``--cluster``); without
    ``--cluster``, the engine of the settings' ``[cluster]`` table (``settings.cluster``,
    an ``asr.jobs.ClusterConfig``), else ``local``. Use it as a context manager, so that the
    workers are released when the recipe ends::

        with recipe_executor(args, settings) as executor:
            run_stages(...)
    """
    from asr.jobs import cluster_config_from, make_executor, replace_engine

    config = replace_engine(cluster_config_from(settings), getattr(args, "cluster", None))
    if progress is None:
        progress = not getattr(args, "no_progress", False)
    return make_executor(getattr(args, "nj", 1), config.engine, config, progress)


def run_recipe(main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run a recipe's ``main(argv)``; an :class:`AsrError` ends it with one line and status 2.

    The line, on stderr, names the recipe, the file and line at fault, the reason and the
    fix where the error knows one (``error_line``); with ``--debug`` the error propagates
    with its traceback. Use as ``sys.exit(run_recipe(main))``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return main(argv)
    except AsrError as exc:
        if "--debug" in argv[:argv.index("--") if "--" in argv else len(argv)]:
            raise
        path = Path(main.__code__.co_filename)
        prog = os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
        print(error_line(exc, prog), file=sys.stderr)
        return 2


def resolve_settings(args: argparse.Namespace, cls: type):
    overrides = dict(parse_override(s) for s in args.set)
    if getattr(args, "device", None) is not None:
        overrides["dnn.device"] = args.device
    return load_settings(args.settings, cls, overrides)


def setup_logging(log_path: Path) -> None:
    """Log to ``log_path`` (appending) and to the console."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "_asr_recipe", False):
            root.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    for handler in (logging.FileHandler(log_path), logging.StreamHandler()):
        handler.setFormatter(fmt)
        handler._asr_recipe = True
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler,
                                                                          logging.FileHandler):
            handler.setLevel(logging.WARNING if os.environ.get("ASR_QUIET") else logging.INFO)
        root.addHandler(handler)


def run_stages(stages: list[Stage], exp_dir: Path, first: int, last: int,
               force: bool = False, clean: Sequence[Path] = ()) -> dict[int, float]:
    """Run the stages numbered ``first..last`` in order; returns seconds per stage run.

    A stage that finished before is skipped unless ``force``, or unless an earlier stage
    runs; a stage that runs first clears its own done-marker and those of every stage after
    it, so a run that stops early leaves none of them skippable. The ``check`` of every stage about to run is called before the first one starts.
    First removes what a killed run left half-written under ``exp_dir`` and the folders in
    ``clean`` (e.g. the recipe's data and results folders); see
    ``asr.fileio.remove_stale_temporaries``.
    """
    for folder in (exp_dir, *clean):
        removed = remove_stale_temporaries(folder)
        if removed:
            log.info("removed %d temporaries of an interrupted run under %s", removed, folder)
    done_dir = exp_dir / ".done"
    done_dir.mkdir(parents=True, exist_ok=True)
    chosen = [stage for stage in stages if first <= stage.number <= last]
    pending = [not (done_dir / f"{stage.number:02d}-{stage.name}").exists() or force
               for stage in chosen]
    # once one stage runs, every later one runs too: it may read what that one rewrote
    to_run = [any(pending[:i + 1]) for i in range(len(chosen))]
    for stage, runs in zip(chosen, to_run):
        if runs and stage.check is not None:
            stage.check()
    timings: dict[int, float] = {}
    for stage, runs in zip(chosen, to_run):
        marker = done_dir / f"{stage.number:02d}-{stage.name}"
        if not runs:
            log.info("Stage %d: %s (done, skipped)", stage.number, stage.name)
            continue
        log.info("Stage %d: %s", stage.number, stage.name)
        # this stage's marker and those after it (which may read what it rewrites) no longer
        # hold, even if this run stops before they finish again
        for later in stages[stages.index(stage):]:
            (done_dir / f"{later.number:02d}-{later.name}").unlink(missing_ok=True)
        start = time.perf_counter()
        stage.run()
        timings[stage.number] = time.perf_counter() - start
        write_text(marker, f"{timings[stage.number]:.3f}\n")
        log.info("Stage %d: %s finished in %.1f s", stage.number, stage.name,
                 timings[stage.number])
    return timings


def write_settings(exp_dir: Path, settings) -> None:
    """Record the resolved settings of a run in its experiment folder."""
    write_json(exp_dir / "settings.json", to_dict(settings))


def _display_path(token: str) -> str:
    """An absolute path under the repository's parent folder, relative to the repository."""
    path = Path(token)
    if not path.is_absolute():
        return token
    try:
        path.relative_to(REPO.parent)
    except ValueError:
        return token
    return os.path.relpath(path, REPO)


def source_commit() -> str:
    """The repository's commit, with ``+changes`` when tracked files other than the
    generated ``results/`` differ from it."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *cmd], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                    ":(exclude)results")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return commit + ("+changes" if dirty else "")


def run_record(recipe: str, argv: Sequence[str], settings) -> dict:
    """What ``results.json`` keeps of this run: commit, date, command line, settings.

    Parameters
    ----------
    recipe : the recipe's folder name under ``recipes/``.
    argv : the command-line arguments as given (overrides and path flags included).
    settings : the resolved settings dataclass.
    """
    return {"commit": source_commit(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "machine": machine_description(),
            "command": shlex.join(["python", f"recipes/{recipe}/run.py",
                                   *(_display_path(a) for a in argv)]),
            "settings": to_dict(settings)}


def machine_description() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


__all__ = ["Stage", "machine_description", "recipe_arguments", "recipe_executor",
           "resolve_settings", "run_recipe",
           "run_record", "run_stages", "seed_everything", "setup_logging", "source_commit",
           "write_settings"]
