"""HCLG = H o C o L o G, built as Kaldi's ``mkgraph.sh`` builds it, and cached.

Glossary of the id spaces that meet here (``asr.hmm.transitions`` and ``asr.graph.lang``
define the others):

=================  ===================================================================
hmm id             one per distinct (phone, pdf of each HMM state): phones in context
                   that the tree ties to the same pdfs share one; from 0
hmm label          input label of CL: hmm id + 1; then the ``#k`` disambiguation labels
graph tstate       one per (transition state, pdf) pair the graph uses, from 0, sorted
                   (Kaldi's transition states hold the pdf; ours do not, the tree does)
graph label        HCLG input label, from 1: ``2*g + 1`` is the self-loop and ``2*g + 2``
                   the forward arc of graph tstate ``g``. ``label_tid[k]`` is its
                   transition id, ``label_pdf[k]`` the pdf that scores its frame;
                   entry 0 (epsilon) holds -1 in both
word label         HCLG output label: the ``words.txt`` id (see ``asr.graph.lang``)
=================  ===================================================================

Steps, as ``mkgraph.sh``:

1. CLG = minimize(determinize*(CL o G)), in the log semiring, disambiguation kept.
2. H_a maps every hmm label to the forward labels of its states (no self-loops yet); its
   weights, ``transition_scale`` times the log probability of each forward arc ignoring
   self-loops, are 0 in this project's topology (one loop and one forward arc per state).
3. HCLG_a = minimize_encoded(rmepsilon(determinize*(H_a o CLG) with ``#k`` -> epsilon)).
4. Self-loops are added as Kaldi's ``add-self-loops --reorder=true``: a state whose incoming
   arcs all carry forward labels of one graph tstate gets that tstate's self-loop, costing
   ``self_loop_scale * -log p(loop)``, and its outgoing arcs and final cost take
   ``self_loop_scale * -log (1 - p(loop))``; a state entered by several tstates is split
   first. Every path then consumes one label per frame, and the frame is scored by the pdf
   of the state the transition leaves, as in Kaldi.

Minimization quantizes weights by 1/1024 (``fstminimizeencoded``'s delta), so a path's
cost may differ from the sum of its parts by about 1e-3.

Context. The project's triphone trees are trained with word-internal contexts (context
phone -1 at both word edges, see ``asr.hmm.tree``), so ``context="word"`` (the default)
expands the contexts inside the lexicon: each pronunciation becomes the hmm labels of its
phones in word-internal context, and optional silence the hmm of ``(-1, SIL, -1)``. This
is exactly C o L for a word-internal C and needs no C transducer; for a monophone tree it
reduces to L. ``context="cross"`` builds the cross-word C with ``kaldifst.compose_context``
(width 3, central 1) on LG and maps each window ``(left, phone, right)`` through the tree,
phone-symbol 0 (utterance edge) becoming -1: the option for trees trained with cross-word
contexts.

>>> graph = build_hclg(lang, g_fst, tree, tm, "exp/mono/graph_loop")  # doctest: +SKIP
>>> graph.fst.num_states, graph.label_pdf[1:5]                        # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import kaldifst
import numpy as np

from asr.errors import ModelError
from asr.graph.arrays import FstArrays
from asr.graph.fst import ArcTable, from_fst, to_fst
from asr.graph.lang import Lang, lexicon_fst
from asr.hmm.transitions import TransitionModel
from asr.hmm.tree import ContextTree
from asr.models import load_arrays, save_arrays

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONTEXTS = ("word", "cross")


@dataclass(frozen=True)
class HclgConfig:
    """How the graph is built: context expansion and Kaldi's scales."""

    context: str = "word"
    transition_scale: float = 1.0
    self_loop_scale: float = 0.1

    def __post_init__(self):
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {self.context!r}")
        if self.transition_scale < 0 or self.self_loop_scale < 0:
            raise ValueError("transition_scale and self_loop_scale must be >= 0")


@dataclass
class DecodingGraph:
    """A compiled HCLG and the maps a decoder needs.

    Attributes
    ----------
    fst : FstArrays -- input labels are graph labels, output labels word symbols
    label_pdf : (K,) int32 -- pdf scoring each graph label; -1 at 0 (epsilon)
    label_tid : (K,) int32 -- transition id of each graph label; -1 at 0
    words : list of str -- ``words.txt``: output label -> word
    """

    fst: FstArrays
    label_pdf: np.ndarray
    label_tid: np.ndarray
    words: list[str]

    @property
    def num_labels(self) -> int:
        return len(self.label_pdf)


class _Hmms:
    """Distinct HMMs (phone, pdf per state) and the graph tstates they use."""

    def __init__(self, tree: ContextTree, tm: TransitionModel):
        self.tree, self.tm = tree, tm
        self.keys: list[tuple[int, tuple[int, ...]]] = []
        self.index: dict[tuple[int, tuple[int, ...]], int] = {}

    def label(self, left: int, phone: int, right: int) -> int:
        """Hmm label (hmm id + 1) of a phone in context; -1 = boundary."""
        states = range(self.tm.topology.num_states(phone))
        key = (phone, tuple(self.tree.pdf(left, phone, right, s) for s in states))
        if key not in self.index:
            self.index[key] = len(self.keys)
            self.keys.append(key)
        return self.index[key] + 1

    def graph_tstates(self) -> np.ndarray:
        """(G, 2) int: sorted distinct (transition state, pdf) pairs."""
        pairs = {(self.tm.tstate(phone, s), pdf) for phone, pdfs in self.keys
                 for s, pdf in enumerate(pdfs)}
        return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def _word_internal(lang: Lang, hmms: _Hmms) -> kaldifst.StdVectorFst:
    """CL with word-internal contexts and the ``#k`` of L_disambig (after the hmm labels,
    whose number is only known at the end: they are placed at a high offset first)."""
    prons = []
    for word, pron, k in lang.entries:
        n = len(pron)
        labels = [hmms.label(pron[i - 1] if i else -1, p, pron[i + 1] if i + 1 < n else -1)
                  for i, p in enumerate(pron)]
        prons.append((word + 1, labels + ([_DISAMBIG + k] if k else [])))
    silence = hmms.label(-1, 0, -1)
    fst = lexicon_fst(prons, silence, lang.silence_prob, _DISAMBIG + lang.num_disambig)
    kaldifst.add_self_loops(fst, [_DISAMBIG], [lang.word_disambig_symbol])
    return fst


_DISAMBIG = 1 << 28          # temporary offset of #k labels before hmm labels are counted


def _relabel(fst: kaldifst.StdVectorFst, mapping, side: str = "input"
             ) -> kaldifst.StdVectorFst:
    table = from_fst(fst)
    labels = table.ilabel if side == "input" else table.olabel
    labels[:] = mapping(labels)
    return to_fst(table)


def _det_min(fst: kaldifst.StdVectorFst, what: str) -> kaldifst.StdVectorFst:
    if kaldifst.determinize_star(fst, use_log=True):
        raise ModelError(None, f"determinizing {what} stopped early")
    kaldifst.minimize_encoded(fst)
    return fst


def _clg(lang: Lang, g: kaldifst.StdVectorFst, hmms: _Hmms, context: str
         ) -> tuple[kaldifst.StdVectorFst, int]:
    """CLG over hmm labels and ``#k`` labels; returns it and the first ``#k`` label."""
    if context == "word":
        cl = _word_internal(lang, hmms)
        kaldifst.arcsort(cl, sort_type="olabel")
        clg = _det_min(kaldifst.compose(cl, g), "CLG")
        first = len(hmms.keys) + 1
        return _relabel(clg, lambda x: np.where(x >= _DISAMBIG, x - _DISAMBIG + first, x)), \
            first
    lg = _det_min(kaldifst.compose(lang.L(disambig=True), g), "LG")
    disambig = lang.disambig_phone_symbols
    clg, windows = kaldifst.compose_context(disambig, 3, 1, lg)
    num_phone_symbols = len(lang.lexicon.phones) + 1
    table = np.zeros(len(windows), dtype=np.int64)
    pending = []
    for i, window in enumerate(windows):
        if len(window) == 1 and window[0] < 0:           # a disambiguation symbol
            pending.append((i, -window[0]))
        elif len(window) == 3 and 0 < window[1] < num_phone_symbols:
            left, phone, right = (w - 1 if 0 < w < num_phone_symbols else -1 for w in window)
            table[i] = hmms.label(left, phone, right)
        elif window and window[1 if len(window) == 3 else 0] != 0:
            raise ModelError(None, f"unexpected context window {window}")
    first = len(hmms.keys) + 1
    for i, symbol in pending:
        table[i] = first + symbol - disambig[0]
    return _relabel(clg, lambda x: table[x]), first


def _h(hmms: _Hmms, tstates: np.ndarray, num_disambig: int, first_disambig: int,
       transition_scale: float) -> tuple[kaldifst.StdVectorFst, int]:
    """H_a: hmm labels -> forward graph labels, ``#k`` passed through above the labels."""
    index = {(int(t), int(p)): g for g, (t, p) in enumerate(tstates)}
    num_labels = 2 * len(tstates) + 1
    arcs = []
    state = 1
    for h, (phone, pdfs) in enumerate(hmms.keys):
        src = 0
        for s, pdf in enumerate(pdfs):
            dst = 0 if s == len(pdfs) - 1 else state
            # Forward probability ignoring the self-loop: 1 in this topology.
            cost = transition_scale * 0.0
            label = 2 * index[(hmms.tm.tstate(phone, s), pdf)] + 2
            arcs.append((src, dst, label, h + 1 if s == 0 else 0, cost))
            if dst:
                src, state = dst, state + 1
    for k in range(num_disambig + 1):
        arcs.append((0, 0, num_labels + k, first_disambig + k, 0.0))
    fst = to_fst(ArcTable.from_arcs(state, 0, {0: 0.0}, arcs))
    kaldifst.arcsort(fst, sort_type="olabel")
    return fst, num_labels


def _add_self_loops(table: ArcTable, tstates: np.ndarray, tm: TransitionModel,
                    scale: float) -> ArcTable:
    """Kaldi's ``AddSelfLoops`` with ``reorder``: see the module docstring (step 4)."""
    log_loop = tm.log_probs[tstates[:, 0], 0]
    log_leave = np.log1p(-np.exp(log_loop))
    cls = np.where(table.ilabel > 0, (table.ilabel - 1) // 2, -1)
    n = table.num_states
    lo = np.full(n, np.iinfo(np.int64).max)
    hi = np.full(n, -2, dtype=np.int64)
    np.minimum.at(lo, table.dst, cls)
    np.maximum.at(hi, table.dst, cls)
    lo[table.start] = min(lo[table.start], -1)
    single = (lo == hi) & (hi >= 0)
    src, dst = table.src.copy(), table.dst.copy()
    ilabel, olabel, cost = table.ilabel.copy(), table.olabel.copy(), table.cost.astype(np.float64)
    final = table.final.astype(np.float64)
    # States entered by one tstate: loop on the state, the leave cost on what leaves it.
    loop_state = np.full(n, -1, dtype=np.int64)
    loop_state[single] = hi[single]
    leaving = loop_state[src] >= 0
    cost[leaving] += -scale * log_leave[loop_state[src[leaving]]]
    has = loop_state >= 0
    final[has] += -scale * log_leave[loop_state[has]]
    new_src = [np.flatnonzero(has)]
    new_dst = [np.flatnonzero(has)]
    new_il = [2 * loop_state[has] + 1]
    new_ol = [np.zeros(int(has.sum()), dtype=np.int64)]
    new_cost = [-scale * log_loop[loop_state[has]]]
    # States entered by several: arcs of each tstate go through a new state with the loop.
    mixed = ~single[dst] & (cls >= 0)
    if mixed.any():
        pairs, inverse = np.unique(np.stack([dst[mixed], cls[mixed]], axis=1), axis=0,
                                   return_inverse=True)
        extra = n + np.arange(len(pairs))
        dst[np.flatnonzero(mixed)] = extra[inverse.reshape(-1)]
        g = pairs[:, 1]
        new_src += [extra, extra]
        new_dst += [extra, pairs[:, 0]]
        new_il += [2 * g + 1, np.zeros(len(pairs), dtype=np.int64)]
        new_ol += [np.zeros(len(pairs), dtype=np.int64)] * 2
        new_cost += [-scale * log_loop[g], -scale * log_leave[g]]
        final = np.concatenate([final, np.full(len(pairs), np.inf)])
    return ArcTable(table.start, final.astype(np.float32),
                    np.concatenate([src, *new_src]), np.concatenate([dst, *new_dst]),
                    np.concatenate([ilabel, *new_il]), np.concatenate([olabel, *new_ol]),
                    np.concatenate([cost, *new_cost]).astype(np.float32))


def _fst_arrays(table: ArcTable) -> FstArrays:
    """CSR arrays, arcs of each state sorted by input label."""
    order = np.lexsort((table.ilabel, table.src))
    offsets = np.zeros(table.num_states + 1, dtype=np.int64)
    np.add.at(offsets, table.src + 1, 1)
    return FstArrays(int(table.start), table.final.astype(np.float32), np.cumsum(offsets),
                     table.ilabel[order].astype(np.int32), table.olabel[order].astype(np.int32),
                     table.cost[order].astype(np.float32),
                     table.dst[order].astype(np.int32))


def compile_hclg(lang: Lang, g: kaldifst.StdVectorFst, tree: ContextTree,
                 tm: TransitionModel, cfg: HclgConfig = HclgConfig()) -> DecodingGraph:
    """Compose, determinize and minimize H o C o L o G; add self-loops (no cache)."""
    start = time.perf_counter()
    hmms = _Hmms(tree, tm)
    clg, first_disambig = _clg(lang, g, hmms, cfg.context)
    tstates = hmms.graph_tstates()
    h, num_labels = _h(hmms, tstates, lang.num_disambig, first_disambig,
                       cfg.transition_scale)
    kaldifst.arcsort(clg, sort_type="ilabel")
    hclg = kaldifst.compose(h, clg)
    if kaldifst.determinize_star(hclg, use_log=True):
        raise ModelError(None, "determinizing HCLG stopped early")
    hclg = _relabel(hclg, lambda x: np.where(x >= num_labels, 0, x))   # #k -> epsilon
    kaldifst.rmepsilon(hclg)
    kaldifst.minimize_encoded(hclg)
    table = _add_self_loops(from_fst(hclg), tstates, tm, cfg.self_loop_scale)
    label_pdf = np.full(num_labels, -1, dtype=np.int32)
    label_tid = np.full(num_labels, -1, dtype=np.int32)
    label_pdf[1::2] = label_pdf[2::2] = tstates[:, 1]
    label_tid[1::2] = 2 * tstates[:, 0]
    label_tid[2::2] = 2 * tstates[:, 0] + 1
    graph = DecodingGraph(_fst_arrays(table), label_pdf, label_tid, list(lang.words))
    log.info("HCLG: %d states, %d arcs, %d hmms, %d labels (%.2f s)", graph.fst.num_states,
             graph.fst.num_arcs, len(hmms.keys), num_labels, time.perf_counter() - start)
    return graph


def graph_key(lang: Lang, g: kaldifst.StdVectorFst, tree: ContextTree, tm: TransitionModel,
              cfg: HclgConfig) -> str:
    """sha256 of everything the graph depends on."""
    gt = from_fst(g)
    digest = hashlib.sha256()
    digest.update(json.dumps({
        "format": FORMAT_VERSION, "phones": lang.phones, "words": lang.words,
        "entries": [[w, list(p), k] for w, p, k in lang.entries],
        "silence_prob": lang.silence_prob, "tree": tree.to_dict(), "tm": tm.to_dict(),
        "cfg": asdict(cfg)}, sort_keys=True).encode())
    for array in (np.array([gt.start]), gt.final, gt.src, gt.dst, gt.ilabel, gt.olabel,
                  gt.cost):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def save_graph(graph: DecodingGraph, path: str | Path, key: str = "") -> None:
    """Write ``HCLG.npz`` (arrays, label maps, cache key) atomically; no pickle."""
    fst = graph.fst
    save_arrays(Path(path), {
        "start": np.array([fst.start], dtype=np.int64), "final_cost": fst.final_cost,
        "arc_offsets": fst.arc_offsets, "ilabel": fst.ilabel, "olabel": fst.olabel,
        "cost": fst.cost, "nextstate": fst.nextstate, "label_pdf": graph.label_pdf,
        "label_tid": graph.label_tid,
        "key": np.frombuffer(key.encode("ascii"), dtype=np.uint8)})


def load_graph(path: str | Path, words: list[str]) -> tuple[DecodingGraph, str]:
    """Read ``HCLG.npz``; returns the graph and its cache key."""
    path = Path(path)
    fst = FstArrays.load(path)
    arrays = load_arrays(path)
    for name in ("label_pdf", "label_tid", "key"):
        if name not in arrays:
            raise ModelError(path, f"graph file lacks {name}")
    label_pdf = arrays["label_pdf"].astype(np.int32)
    if fst.num_arcs and fst.ilabel.max() >= len(label_pdf):
        raise ModelError(path, "an input label has no pdf in label_pdf")
    return (DecodingGraph(fst, label_pdf, arrays["label_tid"].astype(np.int32), list(words)),
            arrays["key"].tobytes().decode("ascii", "replace"))


def build_hclg(lang: Lang, g: kaldifst.StdVectorFst, tree: ContextTree, tm: TransitionModel,
               graph_dir: str | Path, cfg: HclgConfig = HclgConfig()) -> DecodingGraph:
    """The graph from ``graph_dir/HCLG.npz`` if it was built from the same lang, G, tree,
    transition model and settings; else compiled and written there (with ``words.txt``)."""
    from asr.fileio import write_text

    graph_dir = Path(graph_dir)
    key = graph_key(lang, g, tree, tm, cfg)
    path = graph_dir / "HCLG.npz"
    if path.is_file():
        try:
            graph, saved = load_graph(path, lang.words)
            if saved == key:
                log.info("HCLG: cached %s", path)
                return graph
        except ModelError as exc:
            log.warning("rebuilding the graph: %s", exc)
    graph = compile_hclg(lang, g, tree, tm, cfg)
    graph_dir.mkdir(parents=True, exist_ok=True)
    write_text(graph_dir / "words.txt", "".join(f"{w} {i}\n" for i, w in enumerate(lang.words)))
    save_graph(graph, path, key)
    return graph


__all__ = ["DecodingGraph", "HclgConfig", "build_hclg", "compile_hclg", "graph_key",
           "load_graph", "save_graph"]
