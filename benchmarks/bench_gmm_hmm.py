"""GMM-HMM training and decoding times on FSDD (conventional split), asr beside Kaldi, one thread.

Trains asr's monophone system with Kaldi's train_mono.sh schedule (40 passes, Gaussians
growing to 1,000, realignment on Kaldi's iterations; MFCC+Δ+ΔΔ with per-speaker CMN) on
the 2,250 training recordings, decodes the 250 test recordings with a one-word grammar,
then hands the same features, lexicon, topology and transcripts to Kaldi's own GMM-HMM code
(kaldi-hmm-gmm, with kaldifst) and measures its monophone recipe and decoder in the same run.
Last, both decoders search one graph (asr's) with one set of score matrices (asr's
monophone), so the search itself is compared without the models around it.

The peer runs in its own virtual environment, built on first use from
``benchmarks/kaldi_peer/requirements.txt`` (needs the package index once), by
``benchmarks/kaldi_peer/train_decode.py``; the two sides exchange plain .npz arrays and JSON.
Writes the gmm-hmm section of ``results/benchmarks.md``.

    python benchmarks/bench_gmm_hmm.py [--corpus DIR] [--rounds N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _harness import (REPO, limit_threads, log, machine, peer_python, table,  # noqa: E402
                      write_section)

from asr.data import prepare_fsdd_isolated  # noqa: E402
from asr.decoder import Decoder, DecoderConfig  # noqa: E402
from asr.evaluate import decode_features  # noqa: E402
from asr.experiment import Experiment  # noqa: E402
from asr.features import FeatureConfig  # noqa: E402
from asr.gmm.systems import HmmConfig, train_monophone, train_triphone  # noqa: E402
from asr.gmm.train import GmmTrainConfig  # noqa: E402
from asr.lexicon import Lexicon  # noqa: E402
from asr.scoring import compute_wer  # noqa: E402

BEGIN, END = "<!-- begin: gmm-hmm -->", "<!-- end: gmm-hmm -->"
PEER = HERE / "kaldi_peer"
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                     "MKL_NUM_THREADS")}


def fst_arrays(graph) -> dict[str, np.ndarray]:
    """asr's HCLG (``asr.graph.hclg.DecodingGraph``) as arrays for Kaldi's decoders: every
    input label becomes its pdf + 1, so ``DecodableCtc`` reads score column ``pdf``."""
    fst = graph.fst
    src = np.repeat(np.arange(fst.num_states), np.diff(fst.arc_offsets))
    ilabel = np.where(fst.ilabel > 0, graph.label_pdf[fst.ilabel] + 1, 0)
    finals = np.flatnonzero(np.isfinite(fst.final_cost))
    return {"num_states": np.array(fst.num_states), "start": np.array(fst.start),
            "src": src.astype(np.int32), "dst": fst.nextstate.astype(np.int32),
            "ilabel": ilabel.astype(np.int32), "olabel": fst.olabel.astype(np.int32),
            "cost": fst.cost.astype(np.float64), "final_state": finals.astype(np.int32),
            "final_cost": fst.final_cost[finals].astype(np.float64)}


def timed_decode(system, feats: dict[str, np.ndarray], rounds: int
                 ) -> tuple[float, dict[str, list[str]]]:
    """Median seconds over ``rounds`` decodes of ``feats`` (graph building included), and
    the hypotheses."""
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        hyps = decode_features(system, feats, progress=False)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), hyps


def run_peer(python: Path, work: Path) -> dict:
    """Kaldi's side (train_decode.py) in its own environment, one thread; its peer.json."""
    env = {**os.environ, **ONE_THREAD}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(python), str(PEER / "train_decode.py"), str(work)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the Kaldi peer failed (exit {proc.returncode}):\n{proc.stdout}")
    return json.loads((work / "peer.json").read_text(encoding="utf-8"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=REPO.parent / "shared/data/fsdd/recordings")
    p.add_argument("--rounds", type=int, default=5,
                   help="repetitions of each decode of the test set (default 5)")
    args = p.parse_args()
    info = machine()
    python = peer_python(PEER / "requirements.txt", "kaldi")
    threads = limit_threads(1)
    lexicon = Lexicon.load(REPO / "data/lexicons/digits.txt")
    hmm, train_cfg = HmmConfig(), GmmTrainConfig()
    decoding = DecoderConfig(grammar="single")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare_fsdd_isolated(args.corpus, tmp / "data/fsdd/isolated")
        ex = Experiment("fsdd", tmp / "data", tmp / "exp", tmp / "results",
                        FeatureConfig(cmvn="speaker"), progress=False)
        start = time.perf_counter()
        for name in ("isolated/train", "isolated/test"):
            ex.make_features(name)
        t_feats = time.perf_counter() - start
        train = ex.utterances("isolated/train")
        test = ex.load_features("isolated/test")
        refs = ex.data_dir("isolated/test").text

        log("asr: monophone")
        load = {"asr": "{:.2f}".format(os.getloadavg()[0])}
        start = time.perf_counter()
        mono, _ = train_monophone(train, lexicon, ex.features, hmm, train_cfg, decoding,
                                  progress=False)
        t_train = time.perf_counter() - start
        t_dec, hyps = timed_decode(mono, test, args.rounds)
        ours = compute_wer(refs, hyps, name="asr mono")
        log("asr: triphone")
        start = time.perf_counter()
        tri, _ = train_triphone(train, mono, GmmTrainConfig(
            num_iters=35, num_leaves=300, max_gaussians=2000, mixup_iters=25,
            realign_iters=[10, 20, 30]), decoding, progress=False)
        t_tri = time.perf_counter() - start
        t_tri_dec, hyps = timed_decode(tri, test, args.rounds)
        ours_tri = compute_wer(refs, hyps, name="asr tri")

        # One graph and one set of score matrices for both searches: asr's monophone graph
        # and its log-likelihoods, scaled once (so the search adds no acoustic scale).
        same_cfg = DecoderConfig(grammar="single", beam=decoding.beam, acoustic_scale=1.0,
                                 silence_prob=decoding.silence_prob)
        same_graph = mono.graph(same_cfg)
        same = Decoder(same_graph, same_cfg)
        scores = {u: (decoding.acoustic_scale * mono.model.log_likelihoods(f)).astype(np.float32)
                  for u, f in sorted(test.items())}

        work = tmp / "kaldi"
        work.mkdir()
        np.savez(work / "train_feats.npz", **{u.utt: u.feats for u in train})
        np.savez(work / "test_feats.npz", **test)
        np.savez(work / "graph.npz", **fst_arrays(same_graph))
        np.savez(work / "scores.npz", **scores)
        (work / "task.json").write_text(json.dumps({
            "phones": lexicon.phones, "words": lexicon.words,
            "lexicon": [[w, list(pron)] for w in lexicon.words for pron in lexicon.prons[w]],
            "hmm": {"states_per_phone": hmm.states_per_phone,
                    "silence_states": hmm.silence_states,
                    "self_loop_prob": hmm.self_loop_prob},
            "schedule": {"num_iters": train_cfg.num_iters,
                         "max_gaussians": train_cfg.max_gaussians,
                         "mixup_iters": train_cfg.mixup_iters,
                         "realign_iters": list(train_cfg.realign_iters),
                         "power": 0.25, "silence_prob": train_cfg.silence_prob,
                         "acoustic_scale": train_cfg.align_acoustic_scale,
                         "self_loop_scale": 0.1},
            "search": {"beam": decoding.beam, "acoustic_scale": decoding.acoustic_scale,
                       "silence_prob": decoding.silence_prob, "rounds": args.rounds},
            "train_text": {u.utt: u.words for u in train}}), encoding="utf-8")
        log("Kaldi: monophone (train_mono.sh schedule), decode, same-graph search")
        load["kaldi"] = "{:.2f}".format(os.getloadavg()[0])
        peer = run_peer(python, work)

        log("asr: same-graph search")
        same.decode(next(iter(scores.values())))          # compiled before timing
        same_seconds = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            same_hyps = {u: same.decode(s).words for u, s in scores.items()}
            same_seconds.append(time.perf_counter() - start)

    kaldi = compute_wer(refs, peer["hyps"], name="kaldi mono")
    t_kaldi_search = statistics.median(peer["decode_seconds"])
    t_kaldi_dec = peer["graph_seconds"] + t_kaldi_search
    k_same = peer["same_graph"]
    agree = sum(same_hyps[u] == k_same["hyps"].get(u) for u in same_hyps)
    versions = ", ".join(f"{k} {v}" for k, v in peer["versions"].items())
    rows = [
        ["asr monophone", f"{t_train:.1f}", f"{t_dec:.2f}", ours.line()],
        [f"Kaldi monophone (kaldi-hmm-gmm {peer['versions']['kaldi-hmm-gmm']})",
         f"{peer['train_seconds']:.1f}", f"{t_kaldi_dec:.2f}", kaldi.line()],
        ["asr triphone (on the monophone)", f"{t_tri:.1f}", f"{t_tri_dec:.2f}",
         ours_tri.line()],
    ]
    med_ours, med_kaldi = statistics.median(same_seconds), statistics.median(k_same["seconds"])
    same_rows = [
        ["asr Viterbi (numba)", f"{med_ours * 1e3:.1f}", f"{min(same_seconds) * 1e3:.1f}",
         compute_wer(refs, same_hyps).line()],
        [f"Kaldi FasterDecoder (kaldi-hmm-gmm {peer['versions']['kaldi-hmm-gmm']}, "
         "DecodableCtc)", f"{med_kaldi * 1e3:.1f}", f"{min(k_same['seconds']) * 1e3:.1f}",
         compute_wer(refs, k_same["hyps"]).line()],
    ]
    text = "\n".join([
        BEGIN, "## GMM-HMM training and decoding (FSDD conventional split)", "",
        f"Machine: {info['cpu']}, {info['cores']}; threads: {threads}, and the Kaldi peer "
        f"with OMP, OpenBLAS and MKL set to one thread; {info['date']}; load average as each "
        "side started "
        f"training: asr {load['asr']}, Kaldi {load['kaldi']}. Features of both sets took "
        f"{t_feats:.1f} s (not included). Both systems train on the same features (asr's "
        "MFCC+Δ+ΔΔ, per-speaker CMN), the same lexicon with optional silence (0.5) and the "
        f"same left-to-right topology ({hmm.states_per_phone} states per phone, "
        f"{hmm.silence_states} for silence), and decode with a one-word grammar at acoustic "
        f"scale {decoding.acoustic_scale} and beam {decoding.beam:g}.", "",
        table(["system", "train (s)", f"decode 250 files (s, median of {args.rounds})",
               "result"], rows), "",
        f"Measured in this run: asr's monophone trained in {t_train / peer['train_seconds']:.2f}x "
        f"Kaldi's time and decoded in {t_dec / t_kaldi_dec:.2f}x Kaldi's time (one training "
        "each; decoding times are medians of the rounds; below 1 is faster).", "",
        f"- Kaldi: kaldi-hmm-gmm's Python API following `steps/train_mono.sh`: flat start, "
        f"equal alignment, {train_cfg.num_iters} passes of Viterbi re-estimation, realignment "
        f"on passes {', '.join(map(str, train_cfg.realign_iters))} (beam 6, then 10), "
        f"Gaussians split (power 0.25) towards {train_cfg.max_gaussians} over "
        f"{train_cfg.mixup_iters} passes ({peer['num_gauss']} reached, {peer['num_pdfs']} "
        "pdfs). Its statistics take one Python call per frame (the API has no batched one). "
        "Decoding: HCLG built as `mkgraph.sh` does (self-loop scale 0.1; "
        f"{peer['graph_seconds']:.3f} s, included above) and searched by "
        "kaldi-hmm-gmm's FasterDecoder over DecodableAmDiagGmmScaled "
        f"({t_kaldi_search:.2f} s).",
        "- asr: `train_monophone` with the FSDD recipe's `[mono]` schedule (the same passes, "
        "realignments and Gaussians; its first pass from the flat start is Baum-Welch where "
        "Kaldi aligns equally); decoding time includes building the graph and the GMM "
        "log-likelihoods, as Kaldi's does. The two sides run one after the other, so a "
        "change in the machine's load between them shows in the ratios.",
        f"- Peer environment (its own, from `benchmarks/kaldi_peer/requirements.txt`): "
        f"{versions}.", "",
        f"### The search alone: one graph, one set of scores ({args.rounds} rounds)", "",
        f"asr's one-word HCLG ({k_same['states']} states, {k_same['arcs']} arcs as "
        "an FST with pdf id + 1 input labels) and asr's monophone log-likelihoods of the 250 "
        f"test files, scaled by {decoding.acoustic_scale} once, searched by both decoders "
        f"with beam {decoding.beam:g}. The two agree on the words of {agree} of "
        f"{len(same_hyps)} files.", "",
        table(["decoder", "250 files, median (ms)", "best (ms)", "result"], same_rows), "",
        f"asr's search took {med_ours / med_kaldi:.2f}x Kaldi's time on the same graph "
        "(median of rounds; below 1 is faster).", "",
        "Reproduce: `python benchmarks/bench_gmm_hmm.py`", END, ""])
    write_section(REPO / "results/benchmarks.md", BEGIN, END, text)
    print(text)


if __name__ == "__main__":
    main()
