"""HCLG build on the sotu LM: time and peak memory of every step, from the LM to FstArrays.

    python benchmarks/bench_graph.py [--order 3] [--prune T] [--vocab-size N] [--lm ARPA]
                                     [--timeout S] [--max-memory-gib G] [--check] [--fresh]

One run builds one graph, in a child process, as a large-vocabulary recipe would:

- **LM**: ``asr.lm.train_kneser_ney`` on ``lm-norm.txt`` (the real State of the Union text;
  the sotu speech corpus itself is synthetic) over the words CMUdict pronounces (the
  ``--vocab-size`` most frequent of them, or all), every other word becoming ``<UNK>``;
  written as ARPA. ``--lm`` reads an ARPA file instead (its words CMUdict lacks are dropped
  from the lexicon, and kaldilm skips their n-grams);
- **lexicon**: CMUdict pronunciations, stress removed, word-position phones, ``<UNK>`` ->
  ``SPN`` (``asr.pronunciations.build_lexicon``); **lang/L**: ``asr.graph.lang.make_lang``
  and L with disambiguation symbols;
- **G**: ``asr.graph.grammar_fst.arpa_fst`` (kaldilm's arpa2fst);
- **CLG**, **HCLG**, **FstArrays**: the steps of ``asr.graph.hclg.compile_hclg`` for a
  monophone tree (``ContextTree.monophone``, 3 states per phone, silence included), called
  one by one so that each is timed; ``--check`` also runs ``compile_hclg`` itself and checks
  that the graphs are identical, and times the final minimization that ``compile_hclg``
  leaves out by default (``HclgConfig.minimize``) on a copy, to show what it would remove.

The child reports each step as it ends (seconds, and its peak resident set so far); the
parent stops it after ``--timeout`` seconds or when its resident set passes
``--max-memory-gib``, and then reports how far it got. Peak memory of the whole build is
the child's ``ru_maxrss`` (from ``wait4``). Each run's numbers are kept (as JSON inside a
comment of the section) and the section of ``results/benchmarks.md`` is rewritten with
every run measured so far; ``--fresh`` forgets the earlier runs.
"""
from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _harness import REPO, log, machine, table, write_section  # noqa: E402

BEGIN, END = "<!-- begin: graph -->", "<!-- end: graph -->"
RUNS = re.compile(r"<!-- graph-runs: (.*?) -->", re.S)
DEFAULT_TEXT = Path("/work/shared/data/sotu/lm-norm.txt")
TARGET_S, TARGET_GB = 300.0, 8.0
GROUPS = ("LM", "lang/L", "G", "CLG", "HCLG", "FstArrays")


# ----------------------------------------------------------------------------- child

def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10


def _fst_size(fst) -> tuple[int, int]:
    """(states, arcs) of a kaldifst FST."""
    n = fst.num_states
    return n, sum(fst.num_arcs(s) for s in range(n))


def child(cfg: dict) -> None:
    """Build the graph step by step; one JSON line on stdout per step."""
    def report(group, step, seconds, **extra):
        print(json.dumps({"group": group, "step": step, "seconds": seconds,
                          "peak_mib": _peak_mib(), **extra}), flush=True)

    class Step:
        """Times its block; reports at the end of it, or at ``report()`` if ``defer``
        (to add sizes counted outside the timing)."""

        def __init__(self, group, step, defer=False):
            self.group, self.step, self.defer, self.extra = group, step, defer, {}

        def __enter__(self):
            self.start = time.perf_counter()
            return self

        def __exit__(self, *exc):
            self.seconds = time.perf_counter() - self.start
            if exc[0] is None and not self.defer:
                self.report()

        def report(self):
            report(self.group, self.step, self.seconds, **self.extra)

    import numpy as np

    import kaldifst
    from asr.graph.fst import from_fst
    from asr.graph.grammar_fst import arpa_fst
    from asr.graph.hclg import (HclgConfig, _add_self_loops, _compose_h, _det_min,
                                _determinize, _fst_arrays, _Hmms, _minimize, _remove_disambig,
                                _word_internal, compile_hclg)
    from asr.graph.lang import make_lang
    from asr.hmm.transitions import Topology, TransitionModel
    from asr.hmm.tree import ContextTree
    from asr.lm import read_arpa, read_sentences, train_kneser_ney, write_arpa
    from asr.pronunciations import UNK, LexiconConfig, build_lexicon, cmudict_pronunciations

    hcfg = HclgConfig()
    with tempfile.TemporaryDirectory(prefix="bench_graph.") as tmp:
        with Step("lang/L", "CMUdict") as s:
            prons = cmudict_pronunciations()
        if cfg["lm"]:
            arpa = Path(cfg["lm"])
            with Step("LM", "read ARPA vocabulary") as s:
                lm = read_arpa(arpa)
                words = [w for w in lm.vocab if w in prons]
                s.extra["ngrams"] = list(lm.counts)
        else:
            arpa = Path(tmp) / "lm.arpa"
            with Step("LM", "vocabulary") as s:
                counts: dict[str, int] = {}
                sentences = read_sentences(cfg["text"])
                for sentence in sentences:
                    for w in sentence:
                        counts[w] = counts.get(w, 0) + 1
                words = sorted((w for w in counts if w in prons), key=lambda w: (-counts[w], w))
                if cfg["vocab_size"]:
                    words = words[:cfg["vocab_size"]]
                s.extra["text_words"] = len(counts)
                s.extra["vocab"] = len(words)
            with Step("LM", "train KN") as s:
                lm = train_kneser_ney(sentences, cfg["order"], words, unk=UNK,
                                      prune=cfg["prune"])
                del sentences
                s.extra["ngrams"] = list(lm.counts)
            with Step("LM", "write ARPA"):
                write_arpa(lm, arpa)
        del lm
        with Step("lang/L", "build lexicon") as s:
            lexicon, _ = build_lexicon(words, prons, LexiconConfig())
            del prons
            s.extra["words"] = len(lexicon.words)
            s.extra["prons"] = sum(len(p) for p in lexicon.prons.values())
            s.extra["phones"] = len(lexicon.phones)
        with Step("lang/L", "make_lang + L_disambig", defer=True) as s:
            lang = make_lang(lexicon)
            L = lang.L(disambig=True)
        s.extra["size"] = _fst_size(L)
        s.report()
        del L
        with Step("G", "arpa2fst", defer=True) as s:
            g = arpa_fst(arpa, lang)
        s.extra["size"] = _fst_size(g)
        s.report()

        topology = Topology(len(lexicon.phones))
        tree, tm = ContextTree.monophone(topology), TransitionModel(topology)
        # The steps of compile_hclg (context="word"), one at a time.
        with Step("CLG", "CL (word-internal)") as s:
            hmms = _Hmms(tree, tm)
            cl = _word_internal(lang, hmms)
            kaldifst.arcsort(cl, sort_type="olabel")
            s.extra["states"] = cl.num_states
        with Step("CLG", "compose CL o G") as s:
            clg = kaldifst.compose(cl, g)
            s.extra["states"] = clg.num_states
        del cl
        with Step("CLG", "determinize* + minimize") as s:
            clg = _det_min(clg, "CLG")
            s.extra["states"] = clg.num_states
        with Step("CLG", "read arcs (from_fst)") as s:
            clg = from_fst(clg)
            s.extra["size"] = [clg.num_states, clg.num_arcs]
        with Step("HCLG", "H o CLG (arrays)") as s:
            tstates = hmms.graph_tstates()
            hclg, num_labels, deterministic = _compose_h(clg, hmms, tstates,
                                                         hcfg.transition_scale)
            s.extra["states"] = hclg.num_states
            s.extra["size"] = [hclg.num_states, hclg.num_arcs]
            s.extra["deterministic"] = deterministic
        del clg
        if not deterministic:
            with Step("HCLG", "determinize*") as s:
                hclg = _determinize(hclg)
                s.extra["states"] = hclg.num_states
        if hcfg.minimize:
            with Step("HCLG", "minimize (encoded)") as s:
                hclg = _minimize(hclg)
                s.extra["states"] = hclg.num_states
        elif cfg["check"]:
            with Step("check", "minimize (encoded), not kept") as s:
                small = _minimize(hclg)
                s.extra["size"] = [small.num_states, small.num_arcs]
                s.extra["states"] = small.num_states
                del small
        with Step("HCLG", "#k -> eps, rmepsilon (arrays)") as s:
            hclg = _remove_disambig(hclg, num_labels)
            s.extra["states"] = hclg.num_states
            s.extra["size"] = [hclg.num_states, hclg.num_arcs]
        with Step("FstArrays", "add self-loops"):
            arcs = _add_self_loops(hclg, tstates, tm, hcfg.self_loop_scale)
        del hclg
        with Step("FstArrays", "CSR arrays") as s:
            fst = _fst_arrays(arcs)
            s.extra["size"] = [fst.num_states, fst.num_arcs]
        del arcs
        if cfg["check"]:
            with Step("check", "compile_hclg, compared") as s:
                graph = compile_hclg(lang, g, tree, tm, hcfg)
                ref = graph.fst
                s.extra["same"] = bool(
                    ref.start == fst.start and np.array_equal(ref.arc_offsets, fst.arc_offsets)
                    and all(np.array_equal(getattr(ref, a), getattr(fst, a))
                            for a in ("final_cost", "ilabel", "olabel", "cost", "nextstate")))
    print(json.dumps({"done": True, "peak_mib": _peak_mib()}), flush=True)


# ----------------------------------------------------------------------------- parent

def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2 ** 10
    except OSError:
        pass
    return 0.0


def run_build(cfg: dict, timeout: float, max_mib: float) -> dict:
    """Run the child; stop it past ``timeout`` or ``max_mib``; collect its steps."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(cfg)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    steps, done = [], {}

    def read():
        for line in proc.stdout:
            record = json.loads(line)
            if record.get("done"):
                done.update(record)
            else:
                steps.append(record)
                log(f"  {record['group']:9s} {record['step']:32s} {record['seconds']:8.1f} s  "
                    f"peak {record['peak_mib']:7.0f} MiB  "
                    + " ".join(f"{k}={v}" for k, v in record.items()
                               if k not in ("group", "step", "seconds", "peak_mib")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    start = time.perf_counter()
    stopped, polled = None, 0.0
    while True:        # reaped here, not by Popen, so that wait4 gives the child's rusage
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        rss = _rss_mib(proc.pid)
        polled = max(polled, rss)
        elapsed = time.perf_counter() - start
        if stopped is None and (elapsed > timeout or rss > max_mib):
            stopped = (f"time limit ({timeout:.0f} s)" if elapsed > timeout
                       else f"memory limit ({max_mib / 1024:.1f} GiB)")
            proc.kill()
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    reader.join(timeout=5)
    peak = max(usage.ru_maxrss / 2 ** 10, polled)
    if stopped is None and not done:
        stopped = f"failed (exit status {proc.returncode})"
    return {"steps": steps, "wall_s": wall, "peak_mib": peak, "stopped": stopped}


# ----------------------------------------------------------------------------- report

def _name(cfg: dict) -> str:
    if cfg["lm"]:
        return f"ARPA {Path(cfg['lm']).name}"
    vocab = f"{cfg['vocab_size']:,} words" if cfg["vocab_size"] else "full vocabulary"
    prune = f", pruned {cfg['prune']:g}" if cfg["prune"] else ""
    return f"{cfg['order']}-gram, {vocab}{prune}"


def _extra(run: dict, step: str, key: str):
    for s in run["steps"]:
        if s["step"] == step and key in s:
            return s[key]
    return None


def _size(pair) -> str:
    return f"{pair[0]:,} / {pair[1]:,}" if pair else "–"


def verdict(runs: list[dict]) -> str:
    """Met or missed, for the full-vocabulary trigram, and its slowest step."""
    full = [r for r in runs if r["name"] == "3-gram, full vocabulary"]
    if not full:
        return "Not measured yet."
    run = full[-1]
    total = sum(s["seconds"] for s in run["steps"] if s["group"] != "check")
    gb = run["peak_mib"] * 2 ** 20 / 1e9
    if run["stopped"]:
        head = f"Missed: the build was {run['stopped'].split(',')[0]}"
    else:
        head = (f"{'Met' if total <= TARGET_S and gb <= TARGET_GB else 'Missed'}: "
                f"{total:.0f} s ({'met' if total <= TARGET_S else 'missed'}), "
                f"{gb:.2f} GB peak ({'met' if gb <= TARGET_GB else 'missed'})")
    steps = sorted((s for s in run["steps"] if s["group"] != "check"),
                   key=lambda s: -s["seconds"])[:3]
    return (f"{head}. Slowest steps: " + ", ".join(
        f"{s['group']} / {s['step']} {s['seconds']:.0f} s ({s['seconds'] / total:.0%})"
        for s in steps) + ".")


def render(runs: list[dict]) -> str:
    rows, detail = [], []
    for run in runs:
        seconds = {g: sum(s["seconds"] for s in run["steps"] if s["group"] == g)
                   for g in GROUPS}
        reached = {s["group"] for s in run["steps"]}
        total = sum(s["seconds"] for s in run["steps"] if s["group"] != "check")
        vocab = _extra(run, "build lexicon", "words")
        ngrams = _extra(run, "train KN", "ngrams") or _extra(run, "read ARPA vocabulary",
                                                             "ngrams")
        status = "complete" if not run["stopped"] else f"stopped: {run['stopped']}"
        if run["stopped"]:
            last = run["steps"][-1] if run["steps"] else None
            status += (f", after {last['group']} / {last['step']} at {run['wall_s']:.0f} s"
                       if last else f" at {run['wall_s']:.0f} s")
        rows.append([run["name"], f"{vocab:,}" if vocab else "–",
                     " / ".join(f"{c:,}" for c in ngrams) if ngrams else "–",
                     _size(_extra(run, "arpa2fst", "size")),
                     _size(_extra(run, "CSR arrays", "size")),
                     *(f"{seconds[g]:.1f}" if g in reached else "–" for g in GROUPS),
                     f"{total:.0f}", f"{run['peak_mib'] / 1024:.2f}", status,
                     f"{run['machine']['date']}, {run['machine']['commit']}"])
        steps = [f"{s['group']} / {s['step']} {s['seconds']:.1f} s ({s['peak_mib']:.0f} MiB"
                 + (f", {s['states']:,} states" if "states" in s else "") + ")"
                 for s in run["steps"]]
        detail.append(f"- {run['name']}: " + "; ".join(steps)
                      + (f"; check against `compile_hclg`: "
                         f"{'identical' if _extra(run, 'compile_hclg, compared', 'same') else 'DIFFERENT'}"
                         if _extra(run, "compile_hclg, compared", "same") is not None else ""))
    info = runs[-1]["machine"]
    return "\n".join([
        BEGIN,
        "## HCLG build on the sotu LM (`benchmarks/bench_graph.py`)",
        "",
        "LM text: sotu `lm-norm.txt` (real State of the Union text, 45,991 sentences; the sotu "
        "speech corpus is synthetic, its LM text is not). The LM is an interpolated modified "
        "Kneser-Ney model (`asr.lm`) over the words CMUdict pronounces (the most frequent N "
        "of them where a vocabulary size is given), every other word `<UNK>` (pronounced "
        "`SPN`); lexicon: CMUdict without stress, word-position phones; G: kaldilm's "
        "arpa2fst; HCLG: the steps of `asr.graph.hclg.compile_hclg` (word-internal context) "
        "for a monophone tree, 3 states per phone, then self-loops and the searchable "
        "`FstArrays`. Every build runs in a fresh process on "
        f"{info['cpu']}, {info['cores']}, {info['memory']} (shared with other work); seconds "
        "per group of steps, peak resident set of the whole build (LM training included).",
        "",
        table(["setting", "lexicon words", "n-grams", "G states / arcs",
               "HCLG states / arcs", *(f"{g} s" for g in GROUPS), "total s", "peak GiB",
               "status", "measured (date, commit)"], rows),
        "",
        f"Target: the full-vocabulary trigram HCLG in ≤ {TARGET_S / 60:.0f} min and ≤ "
        f"{TARGET_GB:.0f} GB ({TARGET_GB * 1e9 / 2 ** 30:.2f} GiB) peak on this 2-core machine "
        "(Kaldi's mkgraph, monophone, same data: 8.3M states, 131 s, 4.4 GB). "
        + verdict(runs),
        "",
        "Steps (seconds; peak resident set so far; states after the step):",
        "",
        *detail,
        "",
        "Reproduce: `python benchmarks/bench_graph.py --vocab-size 2000 --check`, "
        "`python benchmarks/bench_graph.py` (full vocabulary), "
        "`python benchmarks/bench_graph.py --prune 1e-7` (options: `--order`, `--prune`, "
        "`--vocab-size`, `--lm`, `--timeout`, `--max-memory-gib`).",
        f"<!-- graph-runs: {json.dumps(runs)} -->",
        END, ""])


def main() -> None:
    import argparse

    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--prune", type=float, default=0.0,
                        help="relative-entropy pruning threshold of the LM (0 = none)")
    parser.add_argument("--vocab-size", type=int, default=0,
                        help="the N most frequent pronounceable words (0 = all)")
    parser.add_argument("--lm", type=Path, default=None, help="read this ARPA file instead")
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="stop the build after this many seconds (default 600)")
    parser.add_argument("--max-memory-gib", type=float, default=12.0,
                        help="stop the build when its resident set passes this (default 12)")
    parser.add_argument("--check", action="store_true",
                        help="also run compile_hclg and check the graphs are identical")
    parser.add_argument("--fresh", action="store_true", help="forget the runs reported so far")
    parser.add_argument("--no-write", action="store_true",
                        help="print the section, leave results/benchmarks.md alone")
    args = parser.parse_args()
    cfg = {"order": args.order, "prune": args.prune, "vocab_size": args.vocab_size,
           "lm": str(args.lm.resolve()) if args.lm else None, "text": str(args.text),
           "check": args.check}
    name = _name(cfg)
    info = machine()
    log(f"{name}: building (limits {args.timeout:.0f} s, {args.max_memory_gib:.1f} GiB)")
    result = run_build(cfg, args.timeout, args.max_memory_gib * 1024)
    log(f"{name}: {'complete' if not result['stopped'] else result['stopped']}, "
        f"{result['wall_s']:.1f} s, peak {result['peak_mib']:.0f} MiB")
    results = REPO / "results/benchmarks.md"
    old = results.read_text() if results.exists() else ""
    found = RUNS.search(old.split(BEGIN, 1)[1]) if BEGIN in old else None
    runs = [] if args.fresh or not found else json.loads(found.group(1))
    runs = [r for r in runs if r["name"] != name]
    runs.append({"name": name, "config": cfg, "machine": info, **result})
    md = render(runs)
    if not args.no_write:
        write_section(results, BEGIN, END, md)
    print(md)


if __name__ == "__main__":
    main()
