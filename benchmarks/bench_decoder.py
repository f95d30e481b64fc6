"""Token-passing decoder: asr.decoder.faster beside Kaldi's FasterDecoder (kaldi-decoder).

Both search the same graph (an ``asr.graph.FstArrays``, handed to Kaldi as a kaldifst
StdVectorFst) with the same score matrices and the same beam, max-active, min-active and
beam-delta, in one process:

- **yesno**: the yesno recipe's monophone system (stages 0-2, trained here in seconds
  unless ``--exp`` names one), its word-loop decoding graph of HMM states turned into a WFST
  (a start state, one state per HMM state whose incoming arcs consume a frame with its pdf,
  words on the arcs entering a word's first state), and the GMM scores of the test set;
- **loop**: a synthetic word loop shaped like a small HCLG (``--words`` words of 1-3
  three-state HMMs, self-loops, epsilon exits) with scores that favour one random path;
- **sotu** (with ``--exp`` and ``--data``, instead of the two above, in a section of its
  own): the large-vocabulary case. The sotu recipe's monophone system (``EXP/sotu/mono``),
  its trigram HCLG from the recipe's graph cache (``EXP/sotu/graphs``, built by stage 6)
  and the GMM scores of its test set, searched with the recipe's decode settings (beam 13,
  max-active 7000; ``--graph-cache DIR`` compiles the graph there when the recipe has not
  yet). Besides the search alone, it times the whole decode of the test set
  including acoustic scoring (GMM log-likelihoods), for the best path and for lattices.

Kaldi reads column ``k - 1`` for input label ``k`` (``DecodableCtc``), so it is given the
matrix ``acoustic_scale * loglik[:, label_pdf[1:]]``, built before timing starts; asr reads
the (frames x pdfs) matrix itself. Reported: utterances with the same words, the largest
difference of best-path costs, decoding time per set (median of interleaved rounds), the
real-time factor at 100 frames per second, and the paired speed ratio.

    python benchmarks/bench_decoder.py [--rounds N] [--words N] [--work DIR]
    python benchmarks/bench_decoder.py --exp EXP --data DATA [--rounds N] [--graph-cache DIR]

Every thread pool (OpenMP, MKL, OpenBLAS, numba) is held to ``--threads`` (default 1).
"""
from __future__ import annotations

import dataclasses
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _threads_from_argv() -> int:
    """``--threads`` before anything is imported: thread pools read their sizes at load."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
        if arg == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
    return 1


if _threads_from_argv() > 0:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                 "NUMBA_NUM_THREADS"):
        os.environ[_var] = str(_threads_from_argv())

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _harness import REPO, cli, interleave, limit_threads, log, machine, table, write_section  # noqa: E402

import numpy as np  # noqa: E402

from asr.decoder.faster import NO_LIMIT, FasterDecoder, SearchConfig  # noqa: E402
from asr.experiment import Experiment  # noqa: E402
from asr.graph import FstArrays  # noqa: E402

import kaldi_decoder  # noqa: E402
import kaldifst  # noqa: E402

BEGIN, END = "<!-- begin: decoder -->", "<!-- end: decoder -->"
LV_BEGIN, LV_END = "<!-- begin: decoder-lvcsr -->", "<!-- end: decoder-lvcsr -->"


def yesno_set(work: Path):
    """(fst, label_pdf, [loglik (T, pdfs)], acoustic scale) of the yesno test set under the
    recipe's monophone system in ``work`` (its ``data`` and ``exp`` folders), trained there
    first when absent."""
    if not (work / "exp/yesno/.done/02-train_mono").exists():
        log(f"training the yesno monophone system in {work} (recipe stages 0-2)")
        subprocess.run([sys.executable, str(REPO / "recipes/yesno/run.py"), "--corpus",
                        str(REPO.parent / "shared/data/yesno"), "--exp", str(work / "exp"),
                        "--data", str(work / "data"), "--results", str(work / "results"),
                        "--stop-stage", "2", "--no-progress"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ex = Experiment("yesno", work / "data", work / "exp", work / "results", None,
                    progress=False)
    system = ex.load_system("mono")
    graph = system.graph()
    feats = ex.load_features("test", system.features)
    scores = [system.model.log_likelihoods(feats[u]).astype(np.float32) for u in sorted(feats)]
    return graph.fst, graph.label_pdf, scores, system.decoding.acoustic_scale


def word_loop(rng, num_words: int, num_pdfs: int = 500) -> tuple[FstArrays, np.ndarray]:
    """A loop state, one chain of 1-3 three-state HMMs per word (self-loops, the word on the
    entering arc), epsilon exits back to the loop state, which is final."""
    arcs, label_pdf, n = [], [-1], 1
    for w in range(1, num_words + 1):
        prev = 0
        for i in range(3 * int(rng.integers(1, 4))):
            pdf = int(rng.integers(num_pdfs))
            label_pdf += [pdf, pdf]
            arcs.append((prev, n, len(label_pdf) - 2, w if i == 0 else 0,
                         float(np.log(num_words)) if i == 0 else 0.69))
            arcs.append((n, n, len(label_pdf) - 1, 0, 0.69))
            prev, n = n, n + 1
        arcs.append((prev, 0, 0, 0, 0.5))
    return FstArrays.from_arcs(n, 0, {0: 0.0}, arcs), np.array(label_pdf, dtype=np.int64)


def planted_scores(rng, fst: FstArrays, label_pdf: np.ndarray, frames: int) -> np.ndarray:
    """(frames, pdfs) log-likelihoods, noise plus a bonus on the pdfs of one random path."""
    loglik = rng.normal(scale=2.0, size=(frames, int(label_pdf.max()) + 1)).astype(np.float32)
    state, t = fst.start, 0
    while t < frames:
        a = int(rng.integers(fst.arc_offsets[state], fst.arc_offsets[state + 1]))
        if fst.ilabel[a]:
            loglik[t, label_pdf[fst.ilabel[a]]] += 8.0
            t += 1
        state = fst.nextstate[a]
    return loglik


def kaldi_decode(decoder, scaled: np.ndarray) -> tuple[list[int], float]:
    decoder.decode(kaldi_decoder.DecodableCtc(scaled))
    ok, lattice = decoder.get_best_path()
    if not ok:
        return [], np.inf
    _, _, olabels, weight = kaldifst.get_linear_symbol_sequence(lattice)
    return list(olabels), weight.value1 + weight.value2


def kaldi_best(decoder, scaled: np.ndarray):
    """(words, cost, best-path lattice) of Kaldi's search; cost as Kaldi sums it (float32)."""
    decoder.decode(kaldi_decoder.DecodableCtc(scaled))
    ok, lattice = decoder.get_best_path()
    if not ok:
        return [], np.inf, None
    _, _, olabels, weight = kaldifst.get_linear_symbol_sequence(lattice)
    return list(olabels), weight.value1 + weight.value2, lattice


def lattice_path_cost(lattice) -> float:
    """Total cost (graph + acoustic) of a linear Kaldi lattice, its float32 arc weights
    summed in float64: the binary ``vector`` form parsed (kaldifst has no arc iterator for
    lattices), states in order."""
    fd, name = tempfile.mkstemp(suffix=".lat")
    os.close(fd)
    try:
        lattice.write(name)
        data = open(name, "rb").read()
    finally:
        os.unlink(name)
    pos = 4
    for _ in range(2):                              # fst type, arc type
        (n,) = struct.unpack_from("<i", data, pos)
        pos += 4 + n
    _, _, _, start, num_states, _ = struct.unpack_from("<iiQqqq", data, pos)
    pos += 40
    total = 0.0
    arc = np.dtype([("ilabel", "<i4"), ("olabel", "<i4"), ("w", "<f4", 2), ("next", "<i4")])
    for _ in range(num_states):
        final = np.frombuffer(data, "<f4", 2, pos)
        (narcs,) = struct.unpack_from("<q", data, pos + 8)
        pos += 16
        arcs = np.frombuffer(data, arc, narcs, pos)
        pos += 20 * narcs
        total += float(arcs["w"].astype(np.float64).sum())
        if np.isfinite(final).all():
            total += float(final.astype(np.float64).sum())
    return total


def compare(name: str, fst: FstArrays, label_pdf: np.ndarray, scores: list[np.ndarray],
            cfg: SearchConfig, rounds: int) -> list[str]:
    ours = FasterDecoder(fst, label_pdf, cfg)
    kaldi_fst = fst.to_kaldifst()        # the decoder keeps a reference only: hold it here
    kaldi = kaldi_decoder.FasterDecoder(kaldi_fst, kaldi_decoder.FasterDecoderOptions(
        beam=cfg.beam, max_active=cfg.max_active, min_active=cfg.min_active,
        beam_delta=cfg.beam_delta))
    scaled = [np.ascontiguousarray(cfg.acoustic_scale * s[:, label_pdf[1:]], dtype=np.float32)
              for s in scores]
    same, worst, relative, better, worse = 0, 0.0, 0.0, 0, 0
    for s, k in zip(scores, scaled):
        a = ours.decode(s)
        words, cost = kaldi_decode(kaldi, k)
        if a.words.tolist() == words:
            same += 1
            worst = max(worst, abs(a.cost - cost))
            relative = max(relative, abs(a.cost - cost) / abs(cost))
        else:
            better += a.cost < cost
            worse += a.cost > cost
    timings = interleave({"asr": lambda: [ours.decode(s) for s in scores],
                          "kaldi": lambda: [kaldi_decode(kaldi, k) for k in scaled]},
                         rounds, log)
    audio = sum(len(s) for s in scores) / 100.0
    limits = (f"beam {cfg.beam:g}, max-active "
              f"{'none' if cfg.max_active >= 2 ** 31 - 1 else cfg.max_active}, "
              f"min-active {cfg.min_active}")
    return [name, f"{fst.num_states} / {fst.num_arcs}", f"{len(scores)} / "
            f"{sum(len(s) for s in scores)}", limits,
            f"{same}/{len(scores)} ({100 * same / len(scores):.1f} %)",
            f"{worst:.1e} ({relative:.1e})", f"{better} / {worse}",
            f"{timings.median('asr') * 1e3:.1f} ({timings.median('asr') / audio:.4f})",
            f"{timings.median('kaldi') * 1e3:.1f} ({timings.median('kaldi') / audio:.4f})",
            f"{timings.paired_ratio('kaldi', 'asr'):.2f}×"]


# ----------------------------------------------------------------------------- large vocabulary

def sotu_set(exp: Path, data: Path, graph_cache: Path | None = None):
    """(system, graph, decode settings, {utt: features}, settings changes) of the sotu
    recipe's monophone system under ``exp``/``data``, its graph read from the recipe's graph
    cache (or from ``graph_cache``, where it is built first when absent)."""
    from asr.decoder import DecoderConfig
    from asr.settings import from_dict

    root = exp / "sotu"
    if not (root / ".done/03-train_mono").exists():
        raise SystemExit(f"{root} has no trained monophone system yet (recipes/sotu/run.py "
                         f"stage 3)")
    if graph_cache is None and not (root / ".done/06-graphs").exists():
        raise SystemExit(f"{root} has no decoding graphs yet (recipes/sotu/run.py stage 6 "
                         f"writes {root / '.done/06-graphs'} when they are built); "
                         f"--graph-cache DIR builds the graph there instead")
    ex = Experiment("sotu", data, exp, exp, None, progress=False)
    system = ex.load_system("mono")
    settings = json.loads((root / "settings.json").read_text(encoding="utf-8"))
    cfg = from_dict(DecoderConfig, settings["decode"])       # the recipe's decode settings
    order = settings.get("lm", {}).get("order", 3)
    cfg = dataclasses.replace(cfg, grammar=str((root / "lm" / f"{order}gram.arpa").resolve()))
    start = time.perf_counter()
    graph = system.graph(cfg, cache=graph_cache or ex.graph_cache)
    log(f"graph read (or built) in {time.perf_counter() - start:.1f} s")
    feats = ex.load_features("test", system.features)
    return system, graph, cfg, {u: feats[u] for u in sorted(feats)}, settings_changes(settings)


def settings_changes(settings: dict) -> list[str]:
    """``key = value`` for each setting of a run that differs from recipes/sotu/settings.toml
    (settings the run does not know, added to the recipe after it, are left out)."""
    from asr.lvcsr import LvcsrSettings
    from asr.settings import load_settings, to_dict

    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict)
                       else {prefix + key: value})
        return out

    recipe = flat(to_dict(load_settings(REPO / "recipes/sotu/settings.toml", LvcsrSettings)))
    run = flat(settings)
    return [f"{key} = {json.dumps(run.get(key))} (recipe: {json.dumps(recipe.get(key))})"
            for key in sorted(run) if recipe.get(key) != run[key]]


def compare_lvcsr(system, graph, cfg, feats: dict, rounds: int) -> dict:
    """One run over the test set, interleaved: scoring alone, asr's and Kaldi's searches on
    the same score matrices, and asr's whole decode (scoring + search; best path and
    lattices). Returns the numbers of the section."""
    search = cfg.search()
    model, fst, label_pdf = system.model, graph.fst, graph.label_pdf
    ours = FasterDecoder(fst, label_pdf, search)
    log(f"graph {fst.num_states} states, {fst.num_arcs} arcs: converting for Kaldi")
    kaldi_fst = fst.to_kaldifst()        # the decoder keeps a reference only: hold it here
    kaldi = kaldi_decoder.FasterDecoder(kaldi_fst, kaldi_decoder.FasterDecoderOptions(
        beam=search.beam, max_active=search.max_active, min_active=search.min_active,
        beam_delta=search.beam_delta))
    utts = list(feats)
    scores = [model.log_likelihoods(feats[u]) for u in utts]
    # Kaldi reads column k - 1 for input label k: the scaled matrix, built before timing
    scaled = [np.ascontiguousarray(search.acoustic_scale * s[:, label_pdf[1:]],
                                   dtype=np.float32) for s in scores]
    shortest = int(np.argmin([len(s) for s in scores]))
    ours.decode(scores[shortest])                 # compiled (or loaded) before timing
    ours.decode_lattice(scores[shortest])
    kaldi_best(kaldi, scaled[shortest])
    out = {}

    def run(name, fn, items):
        out[name] = [fn(x) for x in items]

    timings = interleave({
        "scoring": lambda: run("scoring", model.log_likelihoods, feats.values()),
        "asr": lambda: run("asr", ours.decode, scores),
        "kaldi": lambda: run("kaldi", lambda k: kaldi_best(kaldi, k), scaled),
        "asr decode": lambda: run("asr decode", lambda f: ours.decode(model.log_likelihoods(f)),
                                  feats.values()),
        "asr lattice": lambda: run("asr lattice",
                                   lambda f: ours.decode_lattice(model.log_likelihoods(f)),
                                   feats.values()),
    }, rounds, log)
    # per-call cost, whatever the length: a one-frame utterance, median of 21 calls
    one = scores[shortest][:1]
    one_scaled = np.ascontiguousarray(scaled[shortest][:1])
    per_call = {}
    for name, fn in (("asr", lambda: ours.decode(one)),
                     ("kaldi", lambda: kaldi_best(kaldi, one_scaled))):
        times = []
        for _ in range(21):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        per_call[name] = float(np.median(times))
    spare = {}

    def unlimited(loglik, matrix) -> str:
        """Both best-path costs without max-active (did max-active part the searches?)."""
        if "all" not in spare:
            spare["all"] = FasterDecoder(fst, label_pdf,
                                         dataclasses.replace(search, max_active=NO_LIMIT))
        a = spare["all"].decode(loglik)
        k = kaldi_best(kaldi_decoder.FasterDecoder(kaldi_fst, kaldi_decoder.FasterDecoderOptions(
            beam=search.beam, max_active=NO_LIMIT, min_active=search.min_active,
            beam_delta=search.beam_delta)), matrix)
        k_cost = lattice_path_cost(k[2]) if k[2] is not None else np.inf
        return f"asr {a.cost:.3f}, Kaldi {k_cost:.3f}"

    same, worst, worst32, relative, better, worse, differ = 0, 0.0, 0.0, 0.0, 0, 0, []
    for u, a, (words, cost32, lattice) in zip(utts, out["asr"], out["kaldi"]):
        cost = lattice_path_cost(lattice) if lattice is not None else np.inf
        if a.words.tolist() == words:
            same += 1
            worst = max(worst, abs(a.cost - cost))
            worst32 = max(worst32, abs(a.cost - cost32))
            relative = max(relative, abs(a.cost - cost) / abs(cost))
        else:
            better += a.cost < cost
            worse += a.cost > cost
            differ.append(f"{u} (asr {a.cost:.3f}, Kaldi {cost:.3f}; without max-active "
                          f"{unlimited(scores[utts.index(u)], scaled[utts.index(u)])})")
    lattice_same = sum(a.words.tolist() == r.words.tolist() and abs(a.cost - r.cost) < 1e-6
                       for a, (r, _) in zip(out["asr"], out["asr lattice"]))
    lattice_arcs = sum(len(lat.src) for _, lat in out["asr lattice"])
    frames = sum(len(s) for s in scores)
    audio = frames / 100.0
    return {"states": fst.num_states, "arcs": fst.num_arcs, "words": len(graph.words) - 1,
            "pdfs": scores[0].shape[1], "gaussians": getattr(getattr(model, "gmm", None),
                                                             "num_gauss", None),
            "utterances": len(utts), "frames": frames, "audio_s": audio,
            "beam": search.beam, "max_active": search.max_active,
            "min_active": search.min_active, "beam_delta": search.beam_delta,
            "lattice_beam": search.lattice_beam, "acoustic_scale": search.acoustic_scale,
            "same": same, "max_cost_diff": worst, "max_relative_diff": relative,
            "max_cost_diff_kaldi_float32_sum": worst32,
            "asr_lower": int(better), "asr_higher": int(worse), "differ": differ,
            "lattice_same_best": int(lattice_same), "lattice_arcs_per_frame":
                lattice_arcs / frames,
            "seconds": {name: timings.median(name) for name in timings.seconds},
            "rounds": {name: timings.seconds[name] for name in timings.seconds},
            "per_call_s": per_call,
            "speed_ratio": timings.paired_ratio("kaldi", "asr"),
            "speed_ratio_best": timings.best_ratio("kaldi", "asr")}


def lvcsr_section(r: dict, info: dict, threads: str, rounds: int, changes: list[str],
                  own_cache: bool) -> str:
    sec, audio = r["seconds"], r["audio_s"]

    def rtf(name):
        return f"{sec[name]:.2f} s (RTF {sec[name] / audio:.4f})"

    n = r["utterances"]
    rows = [["same words (asr / Kaldi)", f"{r['same']}/{n} ({100 * r['same'] / n:.1f} %)",
             "≥ 99 %"],
            ["max \\|best-path cost difference\\| (relative)",
             f"{r['max_cost_diff']:.1e} ({r['max_relative_diff']:.1e})", "≤ 1e-3"],
            ["the same, against the total Kaldi reports (summed in float32)",
             f"{r['max_cost_diff_kaldi_float32_sum']:.1e}", ""],
            ["where the words differ: asr's cost lower / higher",
             f"{r['asr_lower']} / {r['asr_higher']}", ""],
            ["search only, asr", rtf("asr"), ""],
            ["search only, Kaldi's FasterDecoder", rtf("kaldi"), ""],
            ["speed, asr / Kaldi (search only; median of paired rounds, best rounds)",
             f"{r['speed_ratio']:.2f}× ({r['speed_ratio_best']:.2f}×)", "≥ 1.0×"],
            ["per call, whatever the length (a one-frame utterance): asr / Kaldi",
             f"{r['per_call_s']['asr'] * 1e3:.2f} / {r['per_call_s']['kaldi'] * 1e3:.2f} ms "
             f"(× {n} utterances: {r['per_call_s']['asr'] * n:.2f} / "
             f"{r['per_call_s']['kaldi'] * n:.2f} s)", ""],
            ["acoustic scoring alone (GMM log-likelihoods)", rtf("scoring"), ""],
            ["**asr decode: scoring + best-path search**", f"**{rtf('asr decode')}**",
             "RTF ≤ 0.05"],
            ["asr decode with lattices: scoring + `decode_lattice`", rtf("asr lattice"), ""],
            ["Kaldi's search + our scoring (sum of the two medians)",
             f"{sec['kaldi'] + sec['scoring']:.2f} s (RTF "
             f"{(sec['kaldi'] + sec['scoring']) / audio:.4f})", ""]]
    gauss = f", {r['gaussians']:,} Gaussians" if r["gaussians"] else ""
    differ = ("" if not r["differ"] else
              " Utterances whose words differ: " + "; ".join(r["differ"][:10])
              + (" ..." if len(r["differ"]) > 10 else "") + ".")
    source = (" The graph was compiled by this script from the run's system and G (the "
              "recipe's `decoding_graph`, the same cache key as its stage 6 graph) into a "
              "cache of its own." if own_cache else "")
    fixed = r["per_call_s"]["asr"] * n
    overhead = ("" if fixed < 0.1 * sec["asr"] else
                f" {fixed:.2f} s of asr's {sec['asr']:.2f} s search is its per-call cost, "
                f"which grows with the graph, not the utterance; without it asr's search "
                f"would take {sec['asr'] - fixed:.2f} s, "
                f"{sec['kaldi'] / max(sec['asr'] - fixed, 1e-9):.2f}× Kaldi's speed.")
    if changes:
        run = (f"**A reduced run, not the recipe's**: its settings differ from "
               f"`recipes/sotu/settings.toml` in {'; '.join(changes)}.")
    else:
        run = "The run used `recipes/sotu/settings.toml` as it stands."
    return "\n".join([
        LV_BEGIN, "## Large vocabulary: asr's decoder beside Kaldi's FasterDecoder on the sotu "
        "trigram HCLG", "",
        f"The sotu recipe's monophone system ({r['pdfs']} pdfs{gauss}) and its trigram "
        f"HCLG over a {r['words']:,}-word vocabulary: **{r['states']:,} states, "
        f"{r['arcs']:,} arcs**; its test set, {n} utterances, {r['frames']:,} frames "
        f"({audio / 60:.1f} min of audio). **The speech is synthetic** (State of the Union "
        f"sentences read by espeak-ng voices), so these are not real-speech numbers. Both "
        f"searches run in one process on the same graph (handed to Kaldi as a kaldifst "
        f"StdVectorFst, input label k read from column k - 1 of the scaled matrix, as "
        f"`DecodableCtc` does) and the same score matrices, the acoustic scale "
        f"({r['acoustic_scale']:g}) applied once; the recipe's pruning: beam "
        f"{r['beam']:g}, max-active {r['max_active']}, min-active {r['min_active']}, "
        f"beam-delta {r['beam_delta']:g} (lattice beam {r['lattice_beam']:g} for "
        f"`decode_lattice`). {run}{source}", "",
        f"{rounds} interleaved rounds over the whole test set, medians; threads: {threads} "
        f"(OpenMP, MKL, OpenBLAS and numba pools); {info['cpu']}, "
        f"{info['cores']}; load average {info['load']} when it started (another job shared "
        f"the cores); {info['date']}; commit {info['commit']}.", "",
        table(["measure", "value", "goal"], rows), "",
        f"RTF: seconds per second of audio (frames × 0.01 s). The decodes with scoring time "
        f"everything from the feature matrix (after CMVN and deltas) to the best path or "
        f"lattice, one utterance after another; reading the graph ({r['arcs']:,} arcs) "
        f"and the features is not counted. Cost differences are over the utterances with "
        f"the same words; Kaldi's cost there is its best-path lattice's float32 arc weights "
        f"summed in float64, as asr sums its path; the next row compares with the total "
        f"Kaldi reports, which it sums in float32 (at totals near 1e4 a float32 step is "
        f"1e-3). Where the words differ, the row after says whose path has the lower cost; "
        f"the higher one is a search error of its search. Both prune to the beam with a "
        f"cutoff estimated while the frame's tokens are expanded, and max-active keeps the "
        f"best tokens, so which paths survive depends on the order tokens are visited: "
        f"Kaldi's follows its token hash list, asr's the order tokens were created. "
        f"`decode_lattice` returned the same best path as `decode` on "
        f"{r['lattice_same_best']}/{n} utterances; its lattices hold "
        f"{r['lattice_arcs_per_frame']:.1f} arcs per frame.{overhead}{differ}", "",
        f"Reproduce: `python benchmarks/bench_decoder.py --exp EXP --data DATA --rounds "
        f"{rounds}{' --graph-cache DIR' if own_cache else ''}`, where `python recipes/sotu/run.py --corpus DIR --exp EXP --data DATA "
        f"--stop-stage {3 if own_cache else 6}` has trained the systems"
        f"{'' if own_cache else ' and built their graphs'} (needs kaldi-decoder).", LV_END, ""])


def main() -> None:
    def extra(parser):
        parser.add_argument("--work", type=Path, default=None,
                            help="folder of a yesno recipe run (its data/ and exp/ with a "
                                 "trained 'mono' system; trained there if absent; default: a "
                                 "temporary folder)")
        parser.add_argument("--words", type=int, default=2000,
                            help="words of the synthetic loop (default 2000)")
        parser.add_argument("--utterances", type=int, default=40,
                            help="utterances of 200-600 frames on the synthetic loop")
        parser.add_argument("--exp", type=Path, default=None,
                            help="exp folder of a sotu recipe run (its sotu/mono system and "
                                 "graph cache); with --data: the large-vocabulary section "
                                 "instead of the yesno and loop one")
        parser.add_argument("--data", type=Path, default=None,
                            help="data folder of the same sotu run (its test set)")
        parser.add_argument("--graph-cache", type=Path, default=None,
                            help="graph cache to read the HCLG from, built there first when "
                                 "absent (default: the run's EXP/sotu/graphs, which the "
                                 "recipe's stage 6 must have filled)")
    args = cli(__doc__.splitlines()[0], default_rounds=3, extra=extra)
    info = machine()
    threads = limit_threads(args.threads)
    if args.threads > 0:
        import numba

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
        threads = str(args.threads)
    if (args.exp is None) != (args.data is None):
        raise SystemExit("--exp and --data go together")
    if args.exp is not None:
        start = time.perf_counter()
        system, graph, cfg, feats, changes = sotu_set(args.exp, args.data, args.graph_cache)
        log(f"loaded in {time.perf_counter() - start:.1f} s")
        result = compare_lvcsr(system, graph, cfg, feats, args.rounds)
        text = lvcsr_section(result, info, threads, args.rounds, changes,
                             args.graph_cache is not None)
        write_section(REPO / "results/benchmarks.md", LV_BEGIN, LV_END, text)
        if args.json is not None:
            args.json.write_text(json.dumps({"machine": info, "settings_changes": changes,
                                             **result}, indent=1))
        print(text)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fst, label_pdf, scores, scale = yesno_set(args.work or Path(tmp))
    rows.append(compare("yesno (GMM scores)", fst, label_pdf, scores,
                        SearchConfig(beam=16.0, acoustic_scale=scale), args.rounds))
    rng = np.random.default_rng(0)
    fst, label_pdf = word_loop(rng, args.words)
    scores = [planted_scores(rng, fst, label_pdf, int(rng.integers(200, 600)))
              for _ in range(args.utterances)]
    for cfg in (SearchConfig(beam=13.0), SearchConfig(beam=13.0, max_active=2000)):
        rows.append(compare(f"loop of {args.words} words", fst, label_pdf, scores, cfg,
                            args.rounds))
    text = "\n".join([
        BEGIN, "## Token-passing decoder (asr.decoder.faster) beside Kaldi's FasterDecoder", "",
        f"Same graph, same score matrices, same pruning settings (beam-delta 0.5, acoustic "
        f"scale {scale:g} on yesno and 0.1 on the loop); {args.rounds} interleaved rounds "
        f"over each whole set; threads: {threads}; load {info['load']}; {info['date']}; "
        f"{info['cpu']}.", "",
        table(["set", "states / arcs", "utterances / frames", "pruning", "same words",
               "max cost diff (relative)", "others: asr lower / higher cost", "asr ms (RTF)",
               "Kaldi ms (RTF)", "asr speed / Kaldi"], rows), "",
        "Cost differences are over the utterances with the same words: Kaldi returns its "
        "path as float32 lattice weights summed in float32, asr sums in float64, so the gap "
        "grows with the total (about 1e-6 of it). Where the words differ, the next column "
        "counts whose best path has the lower cost: with max-active both searches make search "
        "errors, and Kaldi's depend on the order of its token hash list (which buckets fill "
        "first, and a hash size that carries over from earlier utterances), so they do not "
        "coincide with asr's, which follow the order tokens were created.", "",
        "RTF: decoding seconds per second of audio at 100 frames per second. Speed ratio: "
        "median over rounds of Kaldi's time / asr's (above 1: asr is faster). Kaldi's input "
        "matrices (scaled, one column per input label) are built before timing.", "",
        "Reproduce: `python benchmarks/bench_decoder.py` (needs the benchmark extra, "
        "kaldi-decoder).", END, ""])
    write_section(REPO / "results/benchmarks.md", BEGIN, END, text)
    print(text)


if __name__ == "__main__":
    main()
