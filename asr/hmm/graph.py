"""HMM-state graphs: the search space of training (one transcript) and decoding (a grammar).

Every node of a ``Graph`` is an emitting HMM state; arcs join nodes (self-loops included).
An arc's weight is the log probability of its transition id (from the transition model)
plus a graph weight (silence and grammar probabilities, scaled by the LM weight at search
time). A word is output when a path enters a node whose ``word`` is set from another node
(or starts there). ``GraphBuilder`` turns pronunciations into chains of nodes; the training
graph is a linear sequence of words with optional silence, the decoding graph
(``asr.decoder.graph``) a grammar over all words.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asr.errors import DataError
from asr.hmm.transitions import FORWARD, LOOP, TransitionModel
from asr.hmm.tree import ContextTree
from asr.lexicon import Lexicon

NEG_INF = -np.inf


@dataclass
class Graph:
    """A graph of HMM states.

    Attributes (N nodes, A arcs)
    ----------------------------
    pdf, tstate : (N,) int32 -- pdf id and transition state of each node
    context : (N, 4) int32 -- (left phone, phone, right phone, hmm state) of each node
    word : (N,) int32 -- word id output on entering the node, or -1
    arc_src, arc_dst, arc_tid : (A,) int32 -- arcs and their transition ids
    arc_graph : (A,) float64 -- log weight of each arc besides its transition (silence)
    arc_lm : (A,) float64 -- language-model log probability of each arc (scaled at search)
    start, start_lm : (N,) float64 -- log weights of starting in each node (-inf: cannot)
    final_tid : (N,) int32 -- transition id taken on leaving the graph from a node, or -1
    final_graph, final_lm : (N,) float64 -- log weights of ending after a node (-inf: cannot)
    """

    pdf: np.ndarray
    tstate: np.ndarray
    context: np.ndarray
    word: np.ndarray
    arc_src: np.ndarray
    arc_dst: np.ndarray
    arc_tid: np.ndarray
    arc_graph: np.ndarray
    arc_lm: np.ndarray
    start: np.ndarray
    start_lm: np.ndarray
    final_tid: np.ndarray
    final_graph: np.ndarray
    final_lm: np.ndarray

    @property
    def num_nodes(self) -> int:
        return len(self.pdf)

    def weights(self, tm: TransitionModel, lm_weight: float = 1.0,
                word_penalty: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Arc, start and final log weights: transitions + graph (LM part times ``lm_weight``).

        ``word_penalty`` is added on every arc (and start) that enters a word.
        Returns (arc_w (A,), start (N,), final (N,)), float64.
        """
        tlp = tm.transition_log_probs()
        enters = (self.word[self.arc_dst] >= 0) & (self.arc_src != self.arc_dst)
        arc_w = (tlp[self.arc_tid] + self.arc_graph + lm_weight * self.arc_lm
                 + word_penalty * enters)
        start = self.start + lm_weight * self.start_lm + word_penalty * (self.word >= 0)
        final = self.final_graph + lm_weight * self.final_lm
        final = np.where(self.final_tid >= 0, final + tlp[np.maximum(self.final_tid, 0)], NEG_INF)
        return arc_w, start, final

    def words_of(self, path: np.ndarray) -> list[int]:
        """Word ids along a node path, shape (T,)."""
        entered = np.ones(len(path), dtype=bool)
        entered[1:] = path[1:] != path[:-1]
        w = self.word[path[entered]]
        return [int(x) for x in w[w >= 0]]


class GraphBuilder:
    """Collects nodes and arcs; pronunciations become chains of HMM states."""

    def __init__(self, lexicon: Lexicon, tree: ContextTree, tm: TransitionModel):
        self.lexicon, self.tree, self.tm = lexicon, tree, tm
        self.nodes: list[tuple[int, int, int, int, int, int, int]] = []
        self.arcs: list[tuple[int, int, int, float, float]] = []
        self.start: dict[int, tuple[float, float]] = {}
        self.final: dict[int, tuple[float, float]] = {}

    def chain(self, phones: tuple[int, ...], word: int = -1, left_context: int = -1,
              right_context: int = -1) -> tuple[int, int]:
        """Add the states of a phone sequence, its outer phones in the given contexts
        (-1: a boundary, as in word-internal triphones).

        Returns (first node, last node).
        """
        first = len(self.nodes)
        prev = -1
        for i, phone in enumerate(phones):
            left = phones[i - 1] if i > 0 else left_context
            right = phones[i + 1] if i + 1 < len(phones) else right_context
            for state in range(self.tm.topology.num_states(phone)):
                node = len(self.nodes)
                ts = self.tm.tstate(phone, state)
                pdf = self.tree.pdf(left, phone, right, state)
                self.nodes.append((pdf, ts, left, phone, right, state,
                                   word if node == first else -1))
                self.arcs.append((node, node, 2 * ts + LOOP, 0.0, 0.0))
                if prev >= 0:
                    self.arcs.append((prev, node, 2 * self.nodes[prev][1] + FORWARD, 0.0, 0.0))
                prev = node
        return first, prev

    def silence(self) -> tuple[int, int]:
        return self.chain((0,))

    def link(self, src_last: int, dst_first: int, weight: float = 0.0, lm: float = 0.0) -> None:
        """Arc from the last node of one chain to the first node of another (an exit)."""
        self.arcs.append((src_last, dst_first, 2 * self.nodes[src_last][1] + FORWARD, weight, lm))

    def set_start(self, node: int, weight: float = 0.0, lm: float = 0.0) -> None:
        self.start[node] = (weight, lm)

    def set_final(self, node: int, weight: float = 0.0, lm: float = 0.0) -> None:
        self.final[node] = (weight, lm)

    def build(self) -> Graph:
        n = len(self.nodes)
        nodes = np.array(self.nodes, dtype=np.int32).reshape(n, 7)
        arcs = self.arcs
        start = np.full(n, NEG_INF)
        start_lm = np.zeros(n)
        for node, (w, lm) in self.start.items():
            start[node], start_lm[node] = w, lm
        final_tid = np.full(n, -1, dtype=np.int32)
        final_graph = np.full(n, NEG_INF)
        final_lm = np.zeros(n)
        for node, (w, lm) in self.final.items():
            final_tid[node] = 2 * nodes[node, 1] + FORWARD
            final_graph[node], final_lm[node] = w, lm
        return Graph(
            pdf=nodes[:, 0].copy(), tstate=nodes[:, 1].copy(), context=nodes[:, 2:6].copy(),
            word=nodes[:, 6].copy(),
            arc_src=np.array([a[0] for a in arcs], dtype=np.int32),
            arc_dst=np.array([a[1] for a in arcs], dtype=np.int32),
            arc_tid=np.array([a[2] for a in arcs], dtype=np.int32),
            arc_graph=np.array([a[3] for a in arcs], dtype=np.float64),
            arc_lm=np.array([a[4] for a in arcs], dtype=np.float64),
            start=start, start_lm=start_lm, final_tid=final_tid, final_graph=final_graph,
            final_lm=final_lm)


def training_graph(words: list[str], lexicon: Lexicon, tree: ContextTree, tm: TransitionModel,
                   silence_prob: float = 0.5, cross_word: bool | None = None) -> Graph:
    """Linear graph of a transcript: optional silence before, between and after the words.

    Every pronunciation of a word is a parallel path. ``cross_word`` (None: the tree's
    ``cross_word``) gives a word's edge phones the neighbouring phone as context (see
    :func:`_cross_word_graph`); a monophone system aligning for a cross-word tree's
    statistics builds it so.
    """
    missing = [w for w in words if w not in lexicon.prons]
    if missing:
        raise DataError(None, f"transcript word {missing[0]!r} is not in the lexicon")
    if tree.cross_word if cross_word is None else cross_word:
        return _cross_word_graph(words, lexicon, tree, tm, silence_prob)
    b = GraphBuilder(lexicon, tree, tm)
    index = lexicon.word_index
    log_sil, log_nosil = np.log(silence_prob), np.log1p(-silence_prob)
    # "ends": (last node, weight still owed on leaving it) of everything before the next word.
    sil_first, sil_last = b.silence()
    b.set_start(sil_first, log_sil)
    ends: list[tuple[int, float]] = [(sil_last, 0.0)]
    starts_allowed = True
    for word in words:
        firsts_lasts = [b.chain(pron, index[word]) for pron in lexicon.prons[word]]
        for first, _ in firsts_lasts:
            if starts_allowed:
                b.set_start(first, log_nosil)
            for last, owed in ends:
                b.link(last, first, owed)
        starts_allowed = False
        sil_first, sil_last = b.silence()
        ends = [(sil_last, 0.0)]
        for _, last in firsts_lasts:
            b.link(last, sil_first, log_sil)
            ends.append((last, log_nosil))
    for last, owed in ends:
        b.set_final(last, owed)
    if not words:  # silence only
        b.set_start(0, 0.0)
    return b.build()


SILENCE_PHONE = 0


def _cross_word_graph(words: list[str], lexicon: Lexicon, tree: ContextTree,
                      tm: TransitionModel, silence_prob: float) -> Graph:
    """:func:`training_graph` with cross-word triphones, as Kaldi's C o L o (linear G).

    A word's first phone takes as left context the previous word's last phone, or silence
    (phone 0) after optional silence, or -1 at the utterance's start; its last phone, the
    next word's first phone, silence, or -1 at the end. Each edge phone gets one copy per
    context it can have (a one-phone word one per pair), and arcs join only copies whose
    contexts agree, so every path's contexts are those of its phone sequence. Silence keeps
    (-1, 0, -1): its tree root is never split.
    """
    b = GraphBuilder(lexicon, tree, tm)
    index = lexicon.word_index
    log_sil, log_nosil = np.log(silence_prob), np.log1p(-silence_prob)
    prons = [lexicon.prons[w] for w in words]
    # per word position: entries (left context, first node, first phone) and exits
    # (right context, last node, last phone) of every pronunciation's copies
    entries: list[list[tuple[int, int, int]]] = []
    exits: list[list[tuple[int, int, int]]] = []
    for i, word in enumerate(words):
        lefts = sorted({SILENCE_PHONE, -1} if i == 0 else
                       {SILENCE_PHONE} | {p[-1] for p in prons[i - 1]})
        rights = sorted({SILENCE_PHONE, -1} if i + 1 == len(words) else
                        {SILENCE_PHONE} | {p[0] for p in prons[i + 1]})
        ins, outs = [], []
        for pron in prons[i]:
            if len(pron) == 1:
                for left in lefts:
                    for right in rights:
                        first, last = b.chain(pron, index[word], left, right)
                        ins.append((left, first, pron[0]))
                        outs.append((right, last, pron[-1]))
                continue
            heads = [(left, *b.chain(pron[:1], index[word], left, pron[1])) for left in lefts]
            tails = [(right, *b.chain(pron[-1:], -1, pron[-2], right)) for right in rights]
            middle = b.chain(pron[1:-1], -1, pron[0], pron[-1]) if len(pron) > 2 else None
            for left, first, last in heads:
                ins.append((left, first, pron[0]))
                for _, tail_first, _ in ([(None, middle[0], None)] if middle else tails):
                    b.link(last, tail_first)
            if middle:
                for _, tail_first, _ in tails:
                    b.link(middle[1], tail_first)
            outs += [(right, last, pron[-1]) for right, _, last in tails]
        entries.append(ins)
        exits.append(outs)

    def into(i: int, left: int, from_node: int, weight: float) -> None:
        """Arcs from ``from_node`` into word ``i``'s copies whose left context is ``left``."""
        for context, first, _ in entries[i]:
            if context == left:
                b.link(from_node, first, weight)

    sil_first, sil_last = b.silence()
    if not words:                       # silence only
        b.set_start(sil_first, 0.0)
        b.set_final(sil_last, 0.0)
        return b.build()
    b.set_start(sil_first, log_sil)
    into(0, SILENCE_PHONE, sil_last, 0.0)
    for context, first, _ in entries[0]:
        if context == -1:
            b.set_start(first, log_nosil)
    for i in range(len(words)):
        sil_first, sil_last = b.silence()
        for right, last, phone in exits[i]:
            if right == SILENCE_PHONE:
                b.link(last, sil_first, log_sil)
            elif i + 1 == len(words):
                b.set_final(last, log_nosil)
            else:
                for context, first, next_phone in entries[i + 1]:
                    if next_phone == right and context == phone:
                        b.link(last, first, log_nosil)
        if i + 1 < len(words):
            into(i + 1, SILENCE_PHONE, sil_last, 0.0)
        else:
            b.set_final(sil_last, 0.0)
    return b.build()
