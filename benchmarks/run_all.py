"""Run the micro-benchmarks and write their section of ``results/benchmarks.md``.

    python benchmarks/run_all.py [--threads N]

Each benchmark runs in its own process (so one's thread pools, imports and memory do not
colour the next) and hands back its markdown section as JSON. The sections land between
``<!-- begin: micro -->`` and ``<!-- end: micro -->`` in ``results/benchmarks.md``; anything
outside those markers (sections written by the recipes) is kept as it is.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from _harness import write_section  # noqa: E402
OUTPUT = REPO / "results" / "benchmarks.md"
BEGIN, END = "<!-- begin: micro -->", "<!-- end: micro -->"
BENCHMARKS = {
    "features": ("bench_features.py", "MFCC extraction vs kaldi-native-fbank", "≥ 3×"),
    "forward_backward": ("bench_forward_backward.py", "forward-backward vs hmmlearn (log)",
                         "≥ 3×"),
    "gmm": ("bench_gmm.py", "GMM log-likelihoods vs float32 GEMM rate", "≥ 50%"),
}


def run_one(name: str, threads: int, workdir: Path) -> dict:
    script, _, _ = BENCHMARKS[name]
    out = workdir / f"{name}.json"
    cmd = [sys.executable, str(HERE / script), "--threads", str(threads), "--json", str(out)]
    print(f"== {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    result = json.loads(out.read_text())
    result["wall_s"] = time.perf_counter() - start
    print(f"== {name}: {result['wall_s']:.0f} s", file=sys.stderr, flush=True)
    return result


def fmt_goal(name: str, value: float) -> str:
    return f"{value:.0%}" if name == "gmm" else f"{value:.2f}×"


def render(results: dict[str, dict], threads: int) -> str:
    first = next(iter(results.values()))["machine"]
    lines = [
        BEGIN,
        "## Micro-benchmarks",
        "",
        "Reproduce with `python benchmarks/run_all.py` (each script also runs alone, "
        "`python benchmarks/bench_<name>.py --help`). Every number is a ratio against a peer "
        "timed in the same process, in interleaved rounds, so that the load of a shared "
        "machine falls on both alike; absolute rates move with that load, ratios much less.",
        "",
        "| machine | |",
        "| --- | --- |",
        f"| date | {first['date']} |",
        f"| CPU | {first['cpu']} |",
        f"| cores | {first['cores']} |",
        f"| memory | {first['memory']} |",
        f"| OS | {first['os']} |",
        f"| BLAS | {first['blas']}; OPENBLAS_CORETYPE {first['OPENBLAS_CORETYPE']} |",
        f"| threads used | {threads if threads > 0 else 'library defaults'} "
        "(`--threads`; BLAS, OpenMP and torch) |",
        f"| versions | {first['versions']} |",
        f"| commit | {first['commit']} (plus uncommitted changes, if any) |",
        "| load average (1/5/15 min) as each benchmark started | " + "; ".join(
            f"{n}: {r['machine']['load']}" for n, r in results.items()) + " |",
        "",
        "| benchmark | goal | measured | |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, r in results.items():
        _, label, goal = BENCHMARKS[name]
        if "goal_ratios" in r and len(r["goal_ratios"]) > 1:
            measured = "; ".join(f"{k}: {fmt_goal(name, v)}" for k, v in r["goal_ratios"].items())
            met = ", ".join("met" if v >= r["goal"] else "missed"
                            for v in r["goal_ratios"].values())
        else:
            measured = fmt_goal(name, r["goal_ratio"])
            met = "met" if r["goal_ratio"] >= r["goal"] else "missed"
        lines.append(f"| {label} | {goal} | {measured} | {met} |")
    lines.append("")
    for name, r in results.items():
        lines += [r["markdown"].strip(), "",
                  f"_Started {r['machine']['date']}, took {r['wall_s']:.0f} s._", ""]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write(section: str, path: Path = OUTPUT) -> None:
    """Replace the micro section of ``path`` (or add it), keeping everything else."""
    write_section(path, BEGIN, END, section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for BLAS, OpenMP and torch in every benchmark (default 1; "
                             "0 leaves each library's default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {n: run_one(n, args.threads, Path(tmp)) for n in BENCHMARKS}
    write(render(results, args.threads))
    print(f"wrote {OUTPUT.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
