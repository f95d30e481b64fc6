"""Kaldi's monophone recipe and decoders on features written by ``bench_gmm_hmm.py``.

Runs with the python of the peer's own environment (``requirements.txt`` beside this file;
``bench_gmm_hmm.py`` builds it and starts this script), never inside asr's environment, and
imports nothing from asr. Inputs and outputs are plain arrays and JSON (no pickle)::

    WORKDIR/task.json        phones, lexicon, topology, transcripts, schedule, search settings
    WORKDIR/train_feats.npz  utt -> (T, D) float32 features of the training set
    WORKDIR/test_feats.npz   utt -> (T, D) float32 features of the test set
    WORKDIR/graph.npz        asr's decoding graph as an FST (see ``same_graph``), optional
    WORKDIR/scores.npz       utt -> (T, pdfs) float32 scaled log-likelihoods of asr's
                             monophone on the test set, optional
    WORKDIR/peer.json        written here: seconds, hypotheses, versions

    python train_decode.py WORKDIR

Id spaces (asr counts from 0, Kaldi keeps 0 for <eps>):

=============  ===============================================================
Kaldi phone    asr phone id + 1 (1 is SIL)
Kaldi word     asr word id + 1
transition id  Kaldi's, from 1; ``TransitionModel.transition_id_to_pdf``
pdf id         from 0, in both; input label of the same-graph FST: pdf id + 1
=============  ===============================================================

Training follows Kaldi's ``steps/train_mono.sh``: one Gaussian per pdf at the global mean and
variance (of all training frames, as asr's flat start; ``gmm-init-mono`` there reads the first
10 utterances), equal alignment, then passes 1..num_iters-1 of Viterbi re-estimation (realigning on
its realign iterations, beam 6 at the first realignment and 10 after, retry beam 4x), Gaussians
growing by ``split_by_count`` (power 0.25) for ``mixup_iters`` passes towards the target.
Statistics are Kaldi's (``AccumAmDiagGmm.accumulate_for_gmm``, one call per frame: the
Python API offers no batched call) and so are the updates (``mle_am_diag_gmm_update``,
``TransitionModel.mle_update``); only the transition-id counts of an alignment are taken with
``numpy.bincount``, which is the same arithmetic as ``TransitionModel.accumulate`` with
probability 1 (that binding returns a copy and leaves its argument untouched).

Both searches use the FasterDecoder that kaldi-hmm-gmm bundles (Kaldi's
``decoder/faster-decoder.h``): over ``DecodableAmDiagGmmScaled`` for its own model, over
``DecodableCtc`` for asr's score matrices. kaldi-decoder 0.3.2 has the same classes
but is built against kaldifst 1.8's FST type and refuses kaldifst 1.7's ``StdVectorFst``,
while kaldi-hmm-gmm 1.1.4 needs kaldifst 1.7 (with 1.8.3 its import hangs): one environment
cannot hold both, and one of them is enough.
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

import kaldifst
import kaldi_hmm_gmm as khg

PEER_PACKAGES = ("kaldi-hmm-gmm", "kaldifst", "numpy")


def topology_text(num_phones: int, states_per_phone: int, silence_states: int,
                  self_loop_prob: float) -> str:
    """Kaldi's ``topo`` file: left-to-right HMMs, ``silence_states`` for phone 1 (SIL)."""
    def entry(phones: list[int], n: int) -> str:
        lines = ["<TopologyEntry>", f"<ForPhones> {' '.join(map(str, phones))} </ForPhones>"]
        for s in range(n):
            lines.append(f"<State> {s} <PdfClass> {s} <Transition> {s} {self_loop_prob} "
                         f"<Transition> {s + 1} {1.0 - self_loop_prob} </State>")
        lines += [f"<State> {n} </State>", "</TopologyEntry>"]
        return "\n".join(lines)
    entries = [entry([1], silence_states)]
    if num_phones > 1:
        entries.append(entry(list(range(2, num_phones + 1)), states_per_phone))
    return "<Topology>\n" + "\n".join(entries) + "\n</Topology>\n"


def lexicon_fst(prons: list[tuple[int, list[int]]], silence_prob: float) -> kaldifst.StdVectorFst:
    """L: Kaldi phones -> Kaldi words with optional silence at the start and after each word
    (the shape of Kaldi's ``make_lexicon_fst.py --sil-prob``). prons: (word, [phone, ...])."""
    sil_cost, nosil_cost = -math.log(silence_prob), -math.log(1.0 - silence_prob)
    fst = kaldifst.StdVectorFst()
    start, loop, sil = fst.add_state(), fst.add_state(), fst.add_state()
    fst.start = start
    fst.set_final(loop, 0.0)
    fst.add_arc(start, kaldifst.StdArc(0, 0, nosil_cost, loop))
    fst.add_arc(start, kaldifst.StdArc(1, 0, sil_cost, loop))
    fst.add_arc(sil, kaldifst.StdArc(1, 0, 0.0, loop))
    for word, phones in prons:
        src = loop
        for i, phone in enumerate(phones):
            olabel = word if i == 0 else 0
            if i + 1 < len(phones):
                nxt = fst.add_state()
                fst.add_arc(src, kaldifst.StdArc(phone, olabel, 0.0, nxt))
                src = nxt
            else:
                fst.add_arc(src, kaldifst.StdArc(phone, olabel, nosil_cost, loop))
                fst.add_arc(src, kaldifst.StdArc(phone, olabel, sil_cost, sil))
    kaldifst.arcsort(fst, sort_type="olabel")
    return fst


def single_word_fst(num_words: int) -> kaldifst.StdVectorFst:
    """G: exactly one of the words 1..num_words, each with probability 1/num_words."""
    fst = kaldifst.StdVectorFst()
    s0, s1 = fst.add_state(), fst.add_state()
    fst.start = s0
    fst.set_final(s1, 0.0)
    for w in range(1, num_words + 1):
        fst.add_arc(s0, kaldifst.StdArc(w, w, math.log(num_words), s1))
    kaldifst.arcsort(fst, sort_type="ilabel")
    return fst


def mkgraph(L: kaldifst.StdVectorFst, G: kaldifst.StdVectorFst, tree, tm,
            self_loop_scale: float) -> kaldifst.StdVectorFst:
    """HCLG the way Kaldi's ``utils/mkgraph.sh`` builds it (no disambiguation symbols are
    needed: the digit lexicon has no homophones and G has no back-off)."""
    LG = kaldifst.compose(L, G)
    kaldifst.determinize_star(LG, use_log=True)
    kaldifst.minimize_encoded(LG)
    kaldifst.arcsort(LG, sort_type="ilabel")
    CLG, ilabels = kaldifst.compose_context(disambig_syms=[], context_width=tree.context_width,
                                            central_position=tree.central_position, ifst=LG)
    kaldifst.arcsort(CLG, sort_type="ilabel")
    Ha, _ = khg.get_h_transducer(ilabel_info=ilabels, ctx_dep=tree, trans_model=tm,
                                 config=khg.HTransducerConfig(transition_scale=1.0))
    HCLGa = kaldifst.compose(Ha, CLG)
    kaldifst.determinize_star(HCLGa, use_log=True)
    kaldifst.minimize_encoded(HCLGa)
    return khg.add_self_loops(self_loop_scale=self_loop_scale, disambig_syms=[], reorder=True,
                              trans_model=tm, ifst=HCLGa)


def best_words(decoder) -> list[int]:
    """Kaldi word ids of the decoder's best path ([] if it found none)."""
    ok, lattice = decoder.get_best_path()
    if not ok:
        return []
    ok, _, words, _ = kaldifst.get_linear_symbol_sequence(lattice)
    return list(words) if ok else []


def flat_start(train: dict[str, np.ndarray], num_pdfs: int) -> khg.AmDiagGmm:
    """One Gaussian per pdf at the global mean and variance of all training frames."""
    frames = np.concatenate(list(train.values())).astype(np.float64)
    gmm = khg.DiagGmm(nmix=1, dim=frames.shape[1])
    gmm.set_weights(np.ones(1, dtype=np.float32))
    gmm.set_means(frames.mean(axis=0, keepdims=True).astype(np.float32))
    gmm.set_invvars((1.0 / frames.var(axis=0, keepdims=True)).astype(np.float32))
    gmm.compute_gconsts()
    am = khg.AmDiagGmm()
    for _ in range(num_pdfs):
        am.add_pdf(gmm)
    return am


def train_mono(task: dict, train: dict[str, np.ndarray]):
    """Kaldi's train_mono.sh schedule. Returns (am, tm, tree, log lines)."""
    hmm, sched = task["hmm"], task["schedule"]
    num_phones = len(task["phones"])
    topo = khg.HmmTopology()
    topo.read(topology_text(num_phones, hmm["states_per_phone"], hmm["silence_states"],
                            hmm["self_loop_prob"]))
    tree = khg.monophone_context_dependency(
        phones=topo.phones, phone2num_pdf_classes=topo.get_phone_to_num_pdf_classes())
    tm = khg.TransitionModel(ctx_dep=tree, hmm_topo=topo)
    am = flat_start(train, tree.num_pdfs)

    word_id = {w: i + 1 for i, w in enumerate(task["words"])}
    L = lexicon_fst([(word_id[w], [p + 1 for p in pron]) for w, pron in task["lexicon"]],
                    sched["silence_prob"])
    compiler = khg.TrainingGraphCompiler(trans_model=tm, ctx_dep=tree, lex_fst=L,
                                         disambig_syms=[],
                                         opts=khg.TrainingGraphCompilerOptions())
    utts = sorted(train)
    graphs = {u: compiler.compile_graph_from_text([word_id[w] for w in task["train_text"][u]])
              for u in utts}

    alignments: dict[str, np.ndarray] = {}
    for i, u in enumerate(utts):                      # align-equal-compiled
        ok, fst = kaldifst.equal_align(ifst=graphs[u], length=len(train[u]), rand_seed=i,
                                       num_retries=10)
        if ok:
            ok, tids, _, _ = kaldifst.get_linear_symbol_sequence(fst)
        if ok:
            alignments[u] = np.asarray(tids, dtype=np.int64)

    num_gauss = am.num_gauss
    inc_gauss = (sched["max_gaussians"] - num_gauss) // sched["mixup_iters"]
    realign = set(sched["realign_iters"])
    tcfg = khg.MleTransitionUpdateConfig()
    flags = khg.str_to_gmm_flags("mvwt")
    tid2pdf = np.asarray(tm.transition_id_to_pdf_array(), dtype=np.int64)
    beam, log = 6.0, []
    for it in range(sched["num_iters"]):
        failed = 0
        if it in realign:                             # gmm-align-compiled
            cfg = khg.AlignConfig(beam=beam, retry_beam=4 * beam, careful=False)
            for u in utts:
                fst = graphs[u].copy()
                khg.add_transition_probs(trans_model=tm, transition_scale=1.0,
                                         self_loop_scale=sched["self_loop_scale"], fst=fst)
                decodable = khg.DecodableAmDiagGmmScaled(am=am, tm=tm, feats=train[u],
                                                         scale=sched["acoustic_scale"])
                *_, ali, _ = khg.align_utterance_wrapper(
                    config=cfg, utt=u, acoustic_scale=sched["acoustic_scale"], fst=fst,
                    decodable=decodable, num_done=0, num_error=0, num_retried=0, tot_like=0.0,
                    frame_count=0)
                if len(ali) == len(train[u]):
                    alignments[u] = np.asarray(ali, dtype=np.int64)
                else:
                    alignments.pop(u, None)
                    failed += 1
            beam = 10.0
        accs = khg.AccumAmDiagGmm()                    # gmm-acc-stats-ali
        accs.init(am, khg.GmmUpdateFlags.kGmmAll)
        tcounts = np.zeros(tm.num_transition_ids + 1)
        for u in utts:
            ali = alignments.get(u)
            if ali is None:
                continue
            tcounts += np.bincount(ali, minlength=len(tcounts))
            feats = train[u]
            for t, pdf in enumerate(tid2pdf[ali].tolist()):
                accs.accumulate_for_gmm(am, feats[t], pdf, 1.0)
        like, frames = accs.tot_log_like, accs.tot_count     # gmm-est
        tm.mle_update(tcounts, tcfg)
        opts = khg.MleDiagGmmOptions()
        if it == 0:
            opts.min_gaussian_occupancy = 3.0
        khg.mle_am_diag_gmm_update(config=opts, amdiag_gmm_acc=accs, flags=flags, am_gmm=am)
        occs = np.array([accs.get_acc(p).occupancy.sum() for p in range(accs.num_accs)],
                        dtype=np.float32)
        am.split_by_count(state_occs=occs, target_components=num_gauss, perturb_factor=0.01,
                          power=sched["power"], min_count=20.0)
        log.append(f"pass {it}: {like / max(frames, 1.0):.4f} per frame over {frames:.0f} "
                   f"frames, {am.num_gauss} Gaussians" + (f", {failed} not aligned" if failed
                                                           else ""))
        if 0 < it <= sched["mixup_iters"]:
            num_gauss += inc_gauss
    return am, tm, tree, log


def decode_gmm(task: dict, am, tm, tree, test: dict[str, np.ndarray]
               ) -> tuple[float, float, dict[str, list[str]]]:
    """gmm-decode-faster with Kaldi's HCLG, the test set decoded ``task["search"]["rounds"]``
    times: (graph seconds, search seconds of each round, hypotheses)."""
    search = task["search"]
    start = time.perf_counter()
    word_id = {w: i + 1 for i, w in enumerate(task["words"])}
    L = lexicon_fst([(word_id[w], [p + 1 for p in pron]) for w, pron in task["lexicon"]],
                    search["silence_prob"])
    HCLG = mkgraph(L, single_word_fst(len(task["words"])), tree, tm,
                   task["schedule"]["self_loop_scale"])
    decoder = khg.FasterDecoder(HCLG, khg.FasterDecoderOptions(beam=search["beam"]))
    t_graph = time.perf_counter() - start
    seconds = []
    for _ in range(search["rounds"]):
        start = time.perf_counter()
        hyps = {}
        for u in sorted(test):
            decoder.decode(khg.DecodableAmDiagGmmScaled(am=am, tm=tm, feats=test[u],
                                                        scale=search["acoustic_scale"]))
            hyps[u] = [task["words"][w - 1] for w in best_words(decoder)]
        seconds.append(time.perf_counter() - start)
    return t_graph, seconds, hyps


def same_graph(task: dict, graph: dict[str, np.ndarray], scores: dict[str, np.ndarray]
               ) -> tuple[float, dict[str, list[str]], dict]:
    """Kaldi's FasterDecoder on asr's own decoding graph and score matrices.

    graph: ``num_states``, ``start``; arcs ``src``, ``dst``, ``ilabel`` (pdf id + 1, or 0),
    ``olabel`` (Kaldi word id, or 0), ``cost``; ``final_state``, ``final_cost``.
    scores: utt -> (T, pdfs) already scaled by the acoustic scale, read through
    ``DecodableCtc`` (column k-1 for input label k). The whole set is decoded
    ``task["search"]["rounds"]`` times. Returns (seconds of each round, hypotheses, info).
    """
    fst = kaldifst.StdVectorFst()
    for _ in range(int(graph["num_states"])):
        fst.add_state()
    fst.start = int(graph["start"])
    for s, d, i, o, c in zip(graph["src"].tolist(), graph["dst"].tolist(),
                             graph["ilabel"].tolist(), graph["olabel"].tolist(),
                             graph["cost"].tolist()):
        fst.add_arc(s, kaldifst.StdArc(i, o, c, d))
    for s, c in zip(graph["final_state"].tolist(), graph["final_cost"].tolist()):
        fst.set_final(s, c)
    decoder = khg.FasterDecoder(fst, khg.FasterDecoderOptions(beam=task["search"]["beam"]))
    seconds = []
    for _ in range(task["search"]["rounds"]):
        start = time.perf_counter()
        hyps = {}
        for u in sorted(scores):
            decoder.decode(khg.DecodableCtc(scores[u]))
            hyps[u] = [task["words"][w - 1] for w in best_words(decoder)]
        seconds.append(time.perf_counter() - start)
    return seconds, hyps, {"states": fst.num_states, "arcs": int(len(graph["src"]))}


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    work = Path(sys.argv[1])
    task = json.loads((work / "task.json").read_text(encoding="utf-8"))
    train = {u: np.ascontiguousarray(a, dtype=np.float32)
             for u, a in load_arrays(work / "train_feats.npz").items()}
    test = {u: np.ascontiguousarray(a, dtype=np.float32)
            for u, a in load_arrays(work / "test_feats.npz").items()}
    out = {"versions": {p: metadata.version(p) for p in PEER_PACKAGES}
           | {"python": platform.python_version()},
           "threads": os.environ.get("OMP_NUM_THREADS", "unset")}
    start = time.perf_counter()
    am, tm, tree, log = train_mono(task, train)
    out["train_seconds"] = time.perf_counter() - start
    out["train_log"] = log
    out["num_pdfs"], out["num_gauss"] = am.num_pdfs, am.num_gauss
    t_graph, t_search, hyps = decode_gmm(task, am, tm, tree, test)
    out |= {"graph_seconds": t_graph, "decode_seconds": t_search, "hyps": hyps}
    if (work / "graph.npz").exists() and (work / "scores.npz").exists():
        seconds, same_hyps, info = same_graph(task, load_arrays(work / "graph.npz"),
                                              load_arrays(work / "scores.npz"))
        out["same_graph"] = {"seconds": seconds, "hyps": same_hyps, **info}
    tmp = work / "peer.json.tmp"
    tmp.write_text(json.dumps(out, indent=1), encoding="utf-8")
    os.replace(tmp, work / "peer.json")


if __name__ == "__main__":
    main()
