"""Shared helpers of the micro-benchmarks: interleaved timing, machine description, tables.

Every benchmark times its contenders in one process, in rounds: each round runs every
contender once, in an order that rotates from round to round, so that slow phases of a
shared machine hit all of them alike. Speed ratios are taken within a round (paired) and
summarised by their median; the best round of each contender is reported beside it.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Timings:
    """Seconds per round of each contender, in insertion order."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def best(self, name: str) -> float:
        return min(self.seconds[name])

    def paired_ratio(self, slow: str, fast: str) -> float:
        """Median over rounds of ``time(slow) / time(fast)``: how many times faster ``fast`` is."""
        return statistics.median(s / f for s, f in zip(self.seconds[slow], self.seconds[fast]))

    def best_ratio(self, slow: str, fast: str) -> float:
        return self.best(slow) / self.best(fast)


def interleave(contenders: dict[str, Callable[[], object]], rounds: int,
               log: Callable[[str], None] | None = None) -> Timings:
    """Run each contender once per round (rotating order) and record wall seconds."""
    names = list(contenders)
    timings = Timings({name: [] for name in names})
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            contenders[name]()
            timings.seconds[name].append(time.perf_counter() - start)
        if log is not None:
            log(f"  round {r + 1}/{rounds}: " + ", ".join(
                f"{n} {timings.seconds[n][-1] * 1e3:.1f} ms" for n in names))
    return timings


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- machine

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = {}
            for line in f:
                if ":" in line:
                    key, value = (s.strip() for s in line.split(":", 1))
                    info.setdefault(key, value)
                elif info:
                    break
        model = info.get("model name", platform.processor() or "unknown")
        extra = [f"family {info['cpu family']}" if "cpu family" in info else "",
                 f"model {info['model']}" if "model" in info else ""]
        flags = info.get("flags", "").split()
        simd = [f for f in ("avx2", "avx512f") if f in flags]
        extra.append("+".join(simd))
        return f"{model} ({', '.join(e for e in extra if e)})"
    except OSError:
        return platform.processor() or "unknown"


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("numpy", "scipy", "numba", "torch", "torchaudio", "librosa", "hmmlearn",
                 "kaldi-native-fbank"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def _blas() -> str:
    try:
        import numpy  # noqa: F401  (load numpy's BLAS before asking)
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    parts = []
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            parts.append(f"{pool.get('internal_api')} {pool.get('version')} "
                         f"({pool.get('architecture', '?')} kernels, "
                         f"{pool.get('num_threads')} threads by default)")
    return "; ".join(parts) or "no BLAS pool found"


def machine() -> dict[str, str]:
    """What the numbers were measured on; call before ``limit_threads``."""
    try:
        mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo")
                      if line.startswith("MemTotal"))
        memory = f"{mem_kb / 2 ** 20:.1f} GiB"
    except (OSError, StopIteration):
        memory = "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} logical, {usable} usable by this process",
        "memory": memory,
        "load": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
        "os": f"{platform.system()} {platform.release()}",
        "blas": _blas(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        "versions": ", ".join(f"{k} {v}" for k, v in _versions().items()),
        "commit": commit,
    }


# ----------------------------------------------------------------------------- output

def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(header))) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def si(value: float, unit: str = "") -> str:
    """3 significant digits with a k/M/G prefix: 1.23 M."""
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds * 1e3:.0f}"


def cli(description: str, default_rounds: int,
        extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(parser)
    parser.add_argument("--rounds", type=int, default=default_rounds,
                        help=f"interleaved repetitions of every contender (default "
                             f"{default_rounds})")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for BLAS, OpenMP and torch (default 1: the timings are per "
                             "core and do not depend on what else the machine runs; 0 leaves "
                             "each library's default)")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the section (markdown + numbers) to this JSON file")
    return parser.parse_args()


_LIMITS = []


def limit_threads(threads: int) -> str:
    """Cap the thread pools of the libraries loaded so far (call after the imports).

    Returns a description for the report.
    """
    if threads <= 0:
        return "library defaults"
    from threadpoolctl import threadpool_limits

    _LIMITS.append(threadpool_limits(limits=threads))   # kept alive for the whole run
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return f"{threads} (BLAS, OpenMP, torch)"


def emit(args: argparse.Namespace, result: dict, machine_info: dict) -> None:
    """Print the markdown section; write ``result`` (plus the machine) as JSON if asked."""
    result = {"machine": machine_info, **result}
    print(result["markdown"])
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))


def peer_python(requirements: Path, name: str) -> Path:
    """Python of a peer's own virtual environment, built from ``requirements`` on first use.

    The environment lives in ``${ASR_VENV_DIR:-~/.cache/asr}/peer-<name>-<key>``, keyed by
    the requirements file and the Python version, apart from asr's: a peer's pins never bend
    ours. Building it needs the package index once; pip's log is kept beside it on failure.
    """
    key = hashlib.sha256(requirements.read_bytes() + platform.python_version().encode()
                         ).hexdigest()[:16]
    base = Path(os.environ.get("ASR_VENV_DIR") or Path.home() / ".cache/asr")
    root = base / f"peer-{name}-{key}"
    python = root / "bin" / "python"
    if python.exists() and (root / ".complete").exists():
        return python
    log(f"building the {name} peer's environment in {root} from {requirements.name}")
    shutil.rmtree(root, ignore_errors=True)
    base.mkdir(parents=True, exist_ok=True)
    pip_log = base / f"peer-{name}-{key}.pip.log"
    with open(pip_log, "w") as out:
        steps = [[sys.executable, "-m", "venv", str(root)],
                 [str(python), "-m", "pip", "install", "-r", str(requirements)]]
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                raise RuntimeError(f"building the {name} peer's environment failed at "
                                   f"{' '.join(step[:4])} ...; pip's output is in {pip_log}")
    pip_log.unlink()
    (root / ".complete").touch()
    return python


def write_section(path: Path, begin: str, end: str, section: str) -> None:
    """Replace the text between the ``begin``/``end`` markers of ``path`` (or append it),
    keeping everything else; ``section`` includes both markers."""
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old and old.index(begin) < old.index(end):
        head, rest = old.split(begin, 1)
        tail = rest.split(end, 1)[1]
        new = head + section.rstrip("\n") + tail
    elif old.strip():
        new = old.rstrip("\n") + "\n\n" + section
    else:
        new = "# Benchmarks\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
