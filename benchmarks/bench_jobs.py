"""GMM training as jobs on sotu: the EM stage with --nj 1 and --nj 2, and memory at 4x the data.

Prepares the sotu recipe up to its monophone (stages 0-3, features and monophone as 2 jobs)
in a scratch folder, makes a 4x training set (the originals plus speed-perturbed copies at
0.9, 0.95 and 1.1, Kaldi's ``perturb_data_dir_speed.sh``; each copy is a new speaker) and
grows one triphone tree per set on the monophone's alignments. Then each contender trains
that triphone for a few EM iterations (forced alignment on the first and third, statistics
and updates on every one: ``asr.gmm.train.train_gmm_hmm`` through an ``asr.jobs.Executor``)
in a fresh process, so that its time and peak memory are its own:

* ``nj 1``: one job in the process (the driver does all the work);
* ``nj 2``: a local pool of 2 worker processes reading their parts of the feature archive.

Rounds alternate the contenders. Peak resident memory is Linux's VmHWM of the driver and of
each worker (read before the pool closes). The driver's peak with 2 jobs is measured on the
training set and on the 4x set: the driver holds models and statistics, never features, so
it should not grow with the data. Writes the ``jobs`` section of ``results/benchmarks.md``.

    python benchmarks/bench_jobs.py --corpus /path/to/sotu [--work DIR] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))          # asr, when it is not installed
from _harness import REPO, log, machine, table, write_section  # noqa: E402

BEGIN, END = "<!-- begin: jobs -->", "<!-- end: jobs -->"
FACTORS = (0.9, 0.95, 1.1)
REALIGN = [1, 3]


def _peak_kib(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pool_workers() -> list[int]:
    """Process ids of this process's spawned pool workers."""
    me, out = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me and b"spawn_main" in cmd:
            out.append(int(entry.name))
    return out


# ----------------------------------------------------------------------------- one contender

def child(work: Path, data_set: str, nj: int, iters: int) -> dict:
    """Train the triphone of ``data_set`` for ``iters`` EM iterations with ``nj`` jobs."""
    import dataclasses

    import hashlib

    import numpy as np

    from asr.gmm.source import ArchiveSource
    from asr.gmm.systems import system_view
    from asr.gmm.train import train_gmm_hmm
    from asr.jobs import make_executor
    from asr.lvcsr import LvcsrSettings
    from asr.settings import load_settings
    from asr.system import AsrSystem

    s = load_settings(REPO / "recipes/sotu/settings.toml", LvcsrSettings)
    cfg = dataclasses.replace(s.tri, num_iters=iters, realign_iters=list(REALIGN))
    exp = work / "exp/sotu"
    init = AsrSystem.load(exp / f"bench_tri_init_{data_set}")
    mono = AsrSystem.load(exp / "mono")
    source = ArchiveSource(str(exp / "feats" / data_set), str(work / "data/sotu" / data_set))
    start = time.perf_counter()
    workers: list[int] = []
    with make_executor(nj, "local", progress=False) as executor:
        result = train_gmm_hmm(source, init.lexicon, init.tree, init.tm, init.model.gmm, cfg,
                               progress=False, desc="tri", executor=executor,
                               view=system_view(mono), work_dir=work / f"bench_{data_set}_{nj}")
        seconds = time.perf_counter() - start
        workers = [_peak_kib(pid) for pid in _pool_workers()]
    digest = hashlib.sha256(json.dumps(result.tm.to_dict(), sort_keys=True).encode())
    for name, array in sorted(result.gmm.to_arrays().items()):
        digest.update(name.encode() + np.ascontiguousarray(array).tobytes())
    return {"seconds": seconds, "driver_kib": _peak_kib(), "worker_kib": workers,
            "history": result.history[-1], "gauss": result.gmm.num_gauss,
            "model_sha256": digest.hexdigest()}


def run_child(work: Path, data_set: str, nj: int, iters: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", data_set, "--nj", str(nj),
                          "--iters", str(iters), "--work", str(work)], check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- preparation

def prepare(corpus: Path, work: Path, extra: list[str]) -> None:
    """sotu stages 0-3 (2 jobs), the 4x set's data and features, a tree per set."""
    from asr.data import DataDir
    from asr.data.speed import prepare_speed_perturbed
    from asr.experiment import Experiment
    from asr.gmm.model import GmmAcousticModel
    from asr.gmm.source import ArchiveSource
    from asr.gmm.systems import grow_triphone_tree, system_view
    from asr.jobs import make_executor
    from asr.lvcsr import LvcsrSettings
    from asr.settings import load_settings
    from asr.system import AsrSystem

    exp = work / "exp/sotu"
    if not (exp / "mono/manifest.json").exists():
        log("preparing sotu up to the monophone (stages 0-3, 2 jobs)")
        subprocess.run([sys.executable, str(REPO / "recipes/sotu/run.py"), "--corpus",
                        str(corpus), "--data", str(work / "data"), "--exp", str(work / "exp"),
                        "--results", str(work / "results"), "--stop-stage", "3", "--nj", "2",
                        "--no-progress", *extra], check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    s = load_settings(REPO / "recipes/sotu/settings.toml", LvcsrSettings)
    data = work / "data/sotu"
    ex = Experiment("sotu", work / "data", work / "exp", work / "results", s.features,
                    progress=False)
    with make_executor(2, "local", progress=False) as executor:
        if not (data / "train_x4/text").exists():
            log(f"speed-perturbed copies at {FACTORS}")
            copies = prepare_speed_perturbed(data / "train", data, "train_sp",
                                             factors=FACTORS)
            DataDir.combine([DataDir.load(data / "train"), copies]).save(data / "train_x4")
        if not (exp / "feats/train_x4/feats.index").exists():
            log("features of the 4x set")
            ex.make_features("train_x4", executor)
        mono = AsrSystem.load(exp / "mono")
        for name in ("train", "train_x4"):
            out = exp / f"bench_tri_init_{name}"
            if (out / "manifest.json").exists():
                continue
            log(f"triphone tree on {name}")
            source = ArchiveSource(str(exp / "feats" / name), str(data / name))
            tree, gmm = grow_triphone_tree(source, system_view(mono), mono, s.tri, executor,
                                           work / f"bench_tree_{name}")
            AsrSystem(mono.features, mono.lexicon, tree, mono.tm, GmmAcousticModel(gmm),
                      mono.decoding).save(out)


# ----------------------------------------------------------------------------- report

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="the folder synth-sotu wrote")
    parser.add_argument("--work", type=Path, default=REPO / "exp/bench_jobs",
                        help="scratch folder (kept: a rerun skips the preparation)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--iters", type=int, default=4, help="EM iterations timed (default 4)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="a recipe setting for the preparation (e.g. mono.num_iters=20)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the section without writing results/benchmarks.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--nj", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.work, args.child, args.nj, args.iters)))
        return
    if args.corpus is None:
        parser.error("--corpus is required (the folder synth-sotu wrote)")
    work = args.work.resolve()
    info = machine()
    prepare(args.corpus.resolve(), work, [x for o in args.overrides for x in ("--set", o)])
    runs: dict[str, list[dict]] = {"nj 1": [], "nj 2": []}
    for r in range(args.rounds):
        order = [1, 2] if r % 2 == 0 else [2, 1]
        for nj in order:
            runs[f"nj {nj}"].append(run_child(work, "train", nj, args.iters))
            log(f"  round {r + 1}: nj {nj}: {runs[f'nj {nj}'][-1]['seconds']:.1f} s")
    big = run_child(work, "train_x4", 2, args.iters)
    small = runs["nj 2"][-1]
    ratio = statistics.median(a["seconds"] / b["seconds"]
                              for a, b in zip(runs["nj 1"], runs["nj 2"]))
    growth = big["driver_kib"] / small["driver_kib"]
    digests = {r["model_sha256"] for rs in runs.values() for r in rs}
    same = ("Every run of the training set ended with the same model bits (GMM and "
            "transitions, sha256)." if len(digests) == 1 else
            f"**The runs ended with {len(digests)} different models** (sha256 of GMM and "
            "transitions).")
    frames_note = (f"the 4x set is the training set plus speed-perturbed copies at "
                   f"{', '.join(map(str, FACTORS))}")

    def mib(kib: float) -> str:
        return f"{kib / 1024:.0f}"

    rows = [[name, f"{statistics.median(r['seconds'] for r in rs):.1f}",
             f"{min(r['seconds'] for r in rs):.1f}", mib(max(r["driver_kib"] for r in rs)),
             ", ".join(mib(k) for k in rs[-1]["worker_kib"]) or "(none: in the driver)"]
            for name, rs in runs.items()]
    rows.append(["nj 2, 4x data", f"{big['seconds']:.1f}", f"{big['seconds']:.1f}",
                 mib(big["driver_kib"]), ", ".join(mib(k) for k in big["worker_kib"])])
    text = "\n".join([
        BEGIN, "## GMM training as jobs (sotu triphone EM: alignment + accumulation)", "",
        f"Machine: {info['cpu']}, {info['cores']}; {info['date']}; load average at start "
        f"{info['load'].split()[0]}. The sotu triphone (settings.toml `[tri]`: "
        f"its first {args.iters} EM iterations, {runs['nj 1'][0]['gauss']} Gaussians "
        f"reached) trains from a tree grown on the monophone's alignments, forced alignment on "
        f"iterations {', '.join(map(str, REALIGN))}; every contender in a fresh process, "
        f"{args.rounds} interleaved round(s). Pool start-up (2 spawned workers) is included.",
        "",
        table(["contender", "median (s)", "best (s)", "driver peak (MiB)",
               "worker peaks (MiB)"], rows), "",
        f"Speed-up of 2 jobs over 1: **{ratio:.2f}x** (median of paired rounds). The driver's "
        f"peak grows **{(growth - 1) * 100:+.1f}%** from the training set to 4x the data "
        f"({frames_note}). {same}", "",
        "Reproduce: `python benchmarks/bench_jobs.py --corpus DIR` (DIR: what "
        "`shared/tools/synth-sotu` wrote)", END, ""])
    print(text)
    if not args.no_write:
        write_section(REPO / "results/benchmarks.md", BEGIN, END, text)


if __name__ == "__main__":
    main()
