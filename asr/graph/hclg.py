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

1. CLG = minimize(determinize*(CL o G)), in the log semiring, disambiguation kept (kaldifst);
   its arcs are then read into arrays, where the rest happens.
2. H_a maps every hmm label to the forward labels of its states (no self-loops yet); its
   weights, ``transition_scale`` times the log probability of each forward arc ignoring
   self-loops, are 0 in this project's topology (one loop and one forward arc per state).
   H_a o CLG is built on the arrays as ``fstcompose`` builds it: each CLG arc with an hmm
   label becomes the first arc of a chain of states, one chain per distinct (hmm,
   destination) pair.
3. HCLG_a = rmepsilon(determinize*(H_a o CLG) with ``#k`` -> epsilon). determinize* (in
   kaldifst) is skipped when H_a o CLG is already deterministic (no input epsilons, distinct
   first labels out of every CLG state: a monophone tree, or any tree whose hmms of one
   phone never share their first pdf), since it would return the same machine. Epsilon
   removal runs on the arrays and does what OpenFst's ``RmEpsilon`` does (see
   :func:`_remove_disambig`).
   ``mkgraph.sh`` ends with ``fstminimizeencoded``; here it runs only with
   ``HclgConfig.minimize``, and then on the deterministic machine, before ``#k`` become
   epsilons (after epsilon removal the graph is no longer deterministic, which OpenFst's
   minimization assumes). Measured on the sotu trigram LM (monophone tree), it removes
   nothing there (2,000 words: 2,490,587 states before and after), and the former build's
   minimization after epsilon removal removed under 0.1% (2,000 words: none of 2,384,807
   states; full vocabulary: 5,314,126 -> 5,310,285) while taking a third of the build
   (124 of 362 s).
4. Self-loops are added as Kaldi's ``add-self-loops --reorder=true``: a state whose incoming
   arcs all carry forward labels of one graph tstate gets that tstate's self-loop, costing
   ``self_loop_scale * -log p(loop)``, and its outgoing arcs and final cost take
   ``self_loop_scale * -log (1 - p(loop))``; a state entered by several tstates is split
   first. Every path then consumes one label per frame, and the frame is scored by the pdf
   of the state the transition leaves, as in Kaldi.

Costs are float32, summed in float64 where epsilon removal and self-loops add them; with
``minimize``, minimization quantizes weights by 1/1024 (``fstminimizeencoded``'s delta), so a
path's cost may then differ from the sum of its parts by about 1e-3.

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
import numba
import numpy as np

from asr.errors import ModelError
from asr.graph.arrays import FstArrays
from asr.graph.fst import ArcTable, from_fst, to_fst
from asr.graph.lang import Lang, lexicon_fst
from asr.hmm.transitions import TransitionModel
from asr.hmm.tree import ContextTree
from asr.models import load_arrays, save_arrays

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
CONTEXTS = ("word", "cross")


@dataclass(frozen=True)
class HclgConfig:
    """How the graph is built: context expansion, Kaldi's scales, and whether HCLG is
    minimized at the end as ``mkgraph.sh`` does (off: it removes almost nothing and is the
    slowest step, see the module docstring)."""

    context: str = "word"
    transition_scale: float = 1.0
    self_loop_scale: float = 0.1
    minimize: bool = False

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
    path : the ``HCLG.npz`` a cached graph was read from or written to (None: in memory);
        decoding jobs load it by :func:`load_cached_graph`, without rebuilding G
    """

    fst: FstArrays
    label_pdf: np.ndarray
    label_tid: np.ndarray
    words: list[str]
    path: Path | None = None

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


_DISAMBIG = 1 << 28          # CLG's label of #k: _DISAMBIG + k (hmm labels are below)


def _det_min(fst: kaldifst.StdVectorFst, what: str) -> kaldifst.StdVectorFst:
    if kaldifst.determinize_star(fst, use_log=True):
        raise ModelError(None, f"determinizing {what} stopped early")
    kaldifst.minimize_encoded(fst)
    return fst


def _clg(lang: Lang, g: kaldifst.StdVectorFst, hmms: _Hmms, context: str) -> ArcTable:
    """CLG over hmm labels, ``#k`` labelled ``_DISAMBIG + k``."""
    if context == "word":
        cl = _word_internal(lang, hmms)
        kaldifst.arcsort(cl, sort_type="olabel")
        clg = _det_min(kaldifst.compose(cl, g), "CLG")
        del cl
        return from_fst(clg)
    lg = _det_min(kaldifst.compose(lang.L(disambig=True), g), "LG")
    disambig = lang.disambig_phone_symbols
    clg, windows = kaldifst.compose_context(disambig, 3, 1, lg)
    num_phone_symbols = len(lang.lexicon.phones) + 1
    table = np.zeros(len(windows), dtype=np.int64)
    for i, window in enumerate(windows):
        if len(window) == 1 and window[0] < 0:           # a disambiguation symbol
            table[i] = _DISAMBIG + -window[0] - disambig[0]
        elif len(window) == 3 and 0 < window[1] < num_phone_symbols:
            left, phone, right = (w - 1 if 0 < w < num_phone_symbols else -1 for w in window)
            table[i] = hmms.label(left, phone, right)
        elif window and window[1 if len(window) == 3 else 0] != 0:
            raise ModelError(None, f"unexpected context window {window}")
    arcs = from_fst(clg)
    arcs.ilabel[:] = table[arcs.ilabel]
    return arcs


def _h(hmms: _Hmms, tstates: np.ndarray, num_disambig: int, first_disambig: int,
       transition_scale: float) -> tuple[kaldifst.StdVectorFst, int]:
    """H_a as an FST: hmm labels -> forward graph labels, ``#k`` (``first_disambig + k``
    on its output side) passed through as ``num_labels + k``. :func:`_compose_h` builds
    H_a o CLG without it; tests compose this one with kaldifst to check that."""
    forward, cost, num_labels = _h_arrays(hmms, tstates, transition_scale)
    arcs = []
    state = 1
    for h, n in enumerate((forward > 0).sum(axis=1).tolist()):
        src = 0
        for s in range(n):
            dst = 0 if s == n - 1 else state
            arcs.append((src, dst, int(forward[h, s]), h + 1 if s == 0 else 0,
                         float(cost[h, s])))
            if dst:
                src, state = dst, state + 1
    for k in range(num_disambig + 1):
        arcs.append((0, 0, num_labels + k, first_disambig + k, 0.0))
    fst = to_fst(ArcTable.from_arcs(state, 0, {0: 0.0}, arcs))
    kaldifst.arcsort(fst, sort_type="olabel")
    return fst, num_labels


def _h_arrays(hmms: _Hmms, tstates: np.ndarray, transition_scale: float
              ) -> tuple[np.ndarray, np.ndarray, int]:
    """The HMM of each hmm id as arrays: ``forward`` (H, n) int64, the forward graph label
    of each state (0 after the last), ``cost`` (H, n) float64, its cost, and the number of
    graph labels (epsilon included)."""
    index = {(int(t), int(p)): g for g, (t, p) in enumerate(tstates)}
    width = max((len(pdfs) for _, pdfs in hmms.keys), default=1)
    forward = np.zeros((len(hmms.keys), width), dtype=np.int64)
    for h, (phone, pdfs) in enumerate(hmms.keys):
        for s, pdf in enumerate(pdfs):
            forward[h, s] = 2 * index[(hmms.tm.tstate(phone, s), pdf)] + 2
    # Forward probability ignoring the self-loop: 1 in this topology.
    cost = np.where(forward > 0, transition_scale * 0.0, 0.0)
    return forward, cost, 2 * len(tstates) + 1


def _compose_h(clg: ArcTable, hmms: _Hmms, tstates: np.ndarray, transition_scale: float
               ) -> tuple[ArcTable, int, bool]:
    """H_a o CLG, as ``kaldifst.compose(H_a, CLG)`` builds it (one chain of states per
    distinct (hmm, destination) pair), ``#k`` labelled ``num_labels + k``.

    Returns the arcs, the number of graph labels and whether the result is already
    deterministic (no input epsilons, distinct first labels on the arcs of each CLG state),
    so that determinizing it would change nothing."""
    forward, hcost, num_labels = _h_arrays(hmms, tstates, transition_scale)
    num_hmms = len(forward)
    il = clg.ilabel
    is_hmm = (il > 0) & (il <= num_hmms)
    is_disambig = il >= _DISAMBIG
    if np.any((il > 0) & ~is_hmm & ~is_disambig):
        raise ModelError(None, "CLG has an input label that is neither an hmm nor a #k")
    h = np.where(is_hmm, il - 1, 0)
    first = np.where(is_hmm, forward[h, 0], np.where(is_disambig, il - _DISAMBIG + num_labels,
                                                     0))
    key = clg.src.astype(np.int64) * (int(first.max(initial=0)) + 1) + first
    deterministic = bool(np.all(first > 0)) and len(np.unique(key)) == len(key)
    del key
    # States inside each chain: one run per distinct (destination, hmm) pair.
    length = (forward > 0).sum(axis=1)
    hmm_arcs = np.flatnonzero(is_hmm)
    pair_key, inverse = np.unique(clg.dst[hmm_arcs].astype(np.int64) * num_hmms
                                  + h[hmm_arcs], return_inverse=True)
    pair_dst, pair_h = pair_key // num_hmms, pair_key % num_hmms
    inner = length[pair_h] - 1                       # states inside the chain
    base = clg.num_states + np.concatenate([[0], np.cumsum(inner)[:-1]]).astype(np.int64)
    num_states = clg.num_states + int(inner.sum())
    # The first arc of each chain replaces the CLG arc; it keeps its word and cost.
    dst = clg.dst.astype(np.int64)
    into = np.where(inner[inverse] > 0, base[inverse], pair_dst[inverse])
    dst[hmm_arcs] = into
    cost = clg.cost.astype(np.float64)
    cost[hmm_arcs] += hcost[h[hmm_arcs], 0]
    # The rest of each chain.
    pair = np.repeat(np.arange(len(pair_key)), inner)
    step = np.arange(len(pair)) - np.repeat(np.cumsum(inner) - inner, inner) + 1
    last = step == inner[pair]
    chain_src = base[pair] + step - 1
    chain_dst = np.where(last, pair_dst[pair], base[pair] + step)
    final = np.full(num_states, np.inf, dtype=np.float32)
    final[:clg.num_states] = clg.final
    table = ArcTable(clg.start, final, np.concatenate([clg.src, chain_src]),
                     np.concatenate([dst, chain_dst]),
                     np.concatenate([first, forward[pair_h[pair], step]]),
                     np.concatenate([clg.olabel, np.zeros(len(pair), dtype=np.int64)]),
                     np.concatenate([cost, hcost[pair_h[pair], step]]).astype(np.float32))
    return table, num_labels, deterministic


def _determinize(table: ArcTable) -> ArcTable:
    """determinize* in the log semiring, with kaldifst."""
    fst = to_fst(table)
    del table
    if kaldifst.determinize_star(fst, use_log=True):
        raise ModelError(None, "determinizing HCLG stopped early")
    return from_fst(fst)


def _remove_disambig(table: ArcTable, num_labels: int) -> ArcTable:
    """``#k`` -> epsilon, then epsilon removal as OpenFst's ``RmEpsilon`` does it: the
    epsilon arcs go, each state gets the arcs and final cost of the states it reached
    through them (parallel arcs with the same labels and destination merged, the cheapest
    kept), and states no longer reachable are dropped. Arcs come out grouped by source."""
    ilabel = np.where(table.ilabel >= num_labels, 0, table.ilabel).astype(np.int32)
    order = np.argsort(table.src, kind="stable")
    counts = np.bincount(table.src, minlength=table.num_states)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out = _rmepsilon(offsets, ilabel[order], table.olabel[order].astype(np.int32),
                     table.cost[order].astype(np.float32), table.dst[order].astype(np.int32),
                     table.final.astype(np.float64), int(table.start))
    del order, ilabel
    offsets, il, ol, cost, dst, final = out
    alive = _reachable(offsets, dst, int(table.start))
    new_id = (np.cumsum(alive) - 1).astype(np.int32)
    counts = np.diff(offsets)
    keep = np.repeat(alive, counts)
    src = np.repeat(np.arange(len(final), dtype=np.int32), counts)[keep]
    return ArcTable(int(new_id[table.start]), final[alive].astype(np.float32), new_id[src],
                    new_id[dst[keep]], il[keep], ol[keep], cost[keep])


@numba.njit(cache=True)
def _closure(s, offsets, il, ol, cost, dst, dist, on_stack, stack, members):
    """States reachable from ``s`` through epsilon arcs (``members[:m]``, ``s`` first) and
    the cost of the best way to each (``dist``, which the caller resets to inf); returns
    ``m``."""
    dist[s] = 0.0
    members[0] = s
    m = 1
    stack[0] = s
    top = 1
    on_stack[s] = True
    while top:
        top -= 1
        q = stack[top]
        on_stack[q] = False
        for a in range(offsets[q], offsets[q + 1]):
            if il[a] == 0 and ol[a] == 0:
                t = dst[a]
                d = dist[q] + cost[a]
                if d < dist[t]:
                    if dist[t] == np.inf:
                        members[m] = t
                        m += 1
                    dist[t] = d
                    if not on_stack[t]:
                        stack[top] = t
                        top += 1
                        on_stack[t] = True
    return m


@numba.njit(cache=True)
def _rmepsilon(offsets, il, ol, cost, dst, final, start):
    """Epsilon removal over CSR arcs (see :func:`_remove_disambig`); returns the new CSR
    arrays (offsets, il, ol, cost, dst) and final costs, same states."""
    n = offsets.shape[0] - 1
    dist = np.full(n, np.inf)
    on_stack = np.zeros(n, dtype=np.bool_)
    stack = np.empty(n, dtype=np.int64)
    members = np.empty(n, dtype=np.int64)
    plain = np.zeros(n, dtype=np.int64)          # arcs that are not epsilon
    merged = np.zeros(n, dtype=np.bool_)         # states with epsilon arcs
    for s in range(n):
        for a in range(offsets[s], offsets[s + 1]):
            if il[a] == 0 and ol[a] == 0:
                merged[s] = True
            else:
                plain[s] += 1
    bound = 0                                     # arcs before merging parallel ones
    for s in range(n):
        bound += plain[s]
        if merged[s]:
            m = _closure(s, offsets, il, ol, cost, dst, dist, on_stack, stack, members)
            for i in range(1, m):
                bound += plain[members[i]]
            for i in range(m):
                dist[members[i]] = np.inf
    new_offsets = np.zeros(n + 1, dtype=np.int64)
    new_final = final.copy()
    o_il = np.empty(bound, dtype=np.int32)
    o_ol = np.empty(bound, dtype=np.int32)
    o_cost = np.empty(bound, dtype=np.float32)
    o_dst = np.empty(bound, dtype=np.int32)
    stamp = np.full(n, -1, dtype=np.int64)
    k = 0
    for s in range(n):
        k0 = k
        if not merged[s]:
            for a in range(offsets[s], offsets[s + 1]):
                o_il[k], o_ol[k], o_cost[k], o_dst[k] = il[a], ol[a], cost[a], dst[a]
                k += 1
            new_offsets[s + 1] = k
            continue
        m = _closure(s, offsets, il, ol, cost, dst, dist, on_stack, stack, members)
        for i in range(m):
            q = members[i]
            if i:
                new_final[s] = min(new_final[s], dist[q] + final[q])
            for a in range(offsets[q], offsets[q + 1]):
                if il[a] != 0 or ol[a] != 0:
                    o_il[k], o_ol[k], o_dst[k] = il[a], ol[a], dst[a]
                    o_cost[k] = cost[a] + dist[q] if i else cost[a]
                    k += 1
        for i in range(m):
            dist[members[i]] = np.inf
        # Parallel arcs (same labels and destination): the cheapest stays. Only states
        # with two arcs into one state can have them.
        repeated = False
        for j in range(k0, k):
            if stamp[o_dst[j]] == s:
                repeated = True
            stamp[o_dst[j]] = s
        if repeated:
            by_dst = np.argsort(o_dst[k0:k], kind="mergesort")
            labels = (o_il[k0:k].astype(np.int64) << 31) | o_ol[k0:k].astype(np.int64)
            order = by_dst[np.argsort(labels[by_dst], kind="mergesort")]
            r_il, r_ol = o_il[k0:k][order], o_ol[k0:k][order]
            r_cost, r_dst = o_cost[k0:k][order], o_dst[k0:k][order]
            j = k0
            for i in range(order.shape[0]):
                if (j > k0 and r_il[i] == o_il[j - 1] and r_ol[i] == o_ol[j - 1]
                        and r_dst[i] == o_dst[j - 1]):
                    o_cost[j - 1] = min(o_cost[j - 1], r_cost[i])
                else:
                    o_il[j], o_ol[j], o_cost[j], o_dst[j] = r_il[i], r_ol[i], r_cost[i], r_dst[i]
                    j += 1
            k = j
        new_offsets[s + 1] = k
    return new_offsets, o_il[:k], o_ol[:k], o_cost[:k], o_dst[:k], new_final


@numba.njit(cache=True)
def _reachable(offsets, dst, start):
    """(S,) bool: the states reachable from ``start``."""
    n = offsets.shape[0] - 1
    seen = np.zeros(n, dtype=np.bool_)
    stack = np.empty(n, dtype=np.int64)
    seen[start] = True
    stack[0] = start
    top = 1
    while top:
        top -= 1
        q = stack[top]
        for a in range(offsets[q], offsets[q + 1]):
            t = dst[a]
            if not seen[t]:
                seen[t] = True
                stack[top] = t
                top += 1
    return seen


def _minimize(table: ArcTable) -> ArcTable:
    """``fstminimizeencoded``, with kaldifst (the input should be deterministic)."""
    fst = to_fst(table)
    del table
    kaldifst.minimize_encoded(fst)
    return from_fst(fst)


def _add_self_loops(table: ArcTable, tstates: np.ndarray, tm: TransitionModel,
                    scale: float) -> ArcTable:
    """Kaldi's ``AddSelfLoops`` with ``reorder``: see the module docstring (step 4)."""
    log_loop = tm.log_probs[tstates[:, 0], 0]
    log_leave = np.log1p(-np.exp(log_loop))
    n = table.num_states
    cls = _tstate_of(table.ilabel)
    lo, hi = _entry_classes(table.dst, cls, n, int(table.start))
    single = (lo == hi) & (hi >= 0)
    del lo
    # States entered by one tstate: loop on the state, the leave cost on what leaves it.
    loop_state = np.where(single, hi, -1).astype(np.int32)
    del hi
    has = np.flatnonzero(loop_state >= 0)
    cost = _leave_costs(table.src, table.cost, loop_state, -scale * log_leave)
    final = table.final.astype(np.float64)
    final[has] += -scale * log_leave[loop_state[has]]
    new_src = [has]
    new_dst = [has]
    new_il = [2 * loop_state[has] + 1]
    new_cost = [-scale * log_loop[loop_state[has]]]
    # States entered by several: arcs of each tstate go through a new state with the loop.
    mixed = np.flatnonzero(~single[table.dst] & (cls >= 0))
    del cls
    dst = table.dst
    if len(mixed):
        key = dst[mixed].astype(np.int64) * len(tstates) + _tstate_of(table.ilabel[mixed])
        pairs, inverse = np.unique(key, return_inverse=True)
        pair_dst, g = pairs // len(tstates), pairs % len(tstates)
        extra = n + np.arange(len(pairs))
        dst = dst.copy()
        dst[mixed] = extra[inverse.reshape(-1)]
        new_src += [extra, extra]
        new_dst += [extra, pair_dst]
        new_il += [2 * g + 1, np.zeros(len(pairs), dtype=np.int64)]
        new_cost += [-scale * log_loop[g], -scale * log_leave[g]]
        final = np.concatenate([final, np.full(len(pairs), np.inf)])
    added = sum(len(x) for x in new_src)
    return ArcTable(table.start, final.astype(np.float32),
                    np.concatenate([table.src, *new_src]).astype(np.int32),
                    np.concatenate([dst, *new_dst]).astype(np.int32),
                    np.concatenate([table.ilabel, *new_il]).astype(np.int32),
                    np.concatenate([table.olabel, np.zeros(added, dtype=np.int32)]
                                   ).astype(np.int32),
                    np.concatenate([cost, *(c.astype(np.float32) for c in new_cost)]))


def _tstate_of(ilabel: np.ndarray) -> np.ndarray:
    """Graph tstate of each graph label, -1 for epsilon."""
    return np.where(ilabel > 0, (ilabel - 1) // 2, -1).astype(np.int32)


@numba.njit(cache=True)
def _entry_classes(dst, cls, n, start):
    """Lowest and highest tstate (-1: epsilon) of the arcs entering each state; the start
    state counts as entered by epsilon, a state no arc enters has (max int, -2)."""
    lo = np.full(n, np.iinfo(np.int32).max, dtype=np.int32)
    hi = np.full(n, -2, dtype=np.int32)
    for a in range(dst.shape[0]):
        d = dst[a]
        c = cls[a]
        if c < lo[d]:
            lo[d] = c
        if c > hi[d]:
            hi[d] = c
    lo[start] = min(lo[start], -1)
    return lo, hi


@numba.njit(cache=True)
def _leave_costs(src, cost, loop_state, leave):
    """float32 arc costs plus ``leave[loop_state[src]]`` where the source has a loop
    (added in float64)."""
    out = np.empty(cost.shape[0], dtype=np.float32)
    for a in range(cost.shape[0]):
        g = loop_state[src[a]]
        out[a] = np.float64(cost[a]) + leave[g] if g >= 0 else cost[a]
    return out


def _fst_arrays(table: ArcTable) -> FstArrays:
    """CSR arrays, arcs of each state sorted by input label (stable)."""
    offsets, order = _csr_order(table.src, table.ilabel, table.num_states)
    return FstArrays(int(table.start), table.final.astype(np.float32), offsets,
                     table.ilabel[order].astype(np.int32), table.olabel[order].astype(np.int32),
                     table.cost[order].astype(np.float32),
                     table.dst[order].astype(np.int32))


@numba.njit(cache=True)
def _csr_order(src, ilabel, n):
    """(S + 1,) offsets and (A,) permutation: arcs by source state, then input label, in
    their order otherwise (a counting sort, then an insertion sort inside each state)."""
    offsets = np.zeros(n + 1, dtype=np.int64)
    for a in range(src.shape[0]):
        offsets[src[a] + 1] += 1
    for s in range(n):
        offsets[s + 1] += offsets[s]
    fill = offsets[:-1].copy()
    order = np.empty(src.shape[0], dtype=np.int64)
    for a in range(src.shape[0]):
        order[fill[src[a]]] = a
        fill[src[a]] += 1
    for s in range(n):
        lo, hi = offsets[s], offsets[s + 1]
        if hi - lo > 32:
            seg = order[lo:hi]
            order[lo:hi] = seg[np.argsort(ilabel[seg], kind="mergesort")]
            continue
        for i in range(lo + 1, hi):
            a = order[i]
            key = ilabel[a]
            j = i - 1
            while j >= lo and ilabel[order[j]] > key:
                order[j + 1] = order[j]
                j -= 1
            order[j + 1] = a
    return offsets, order


def compile_hclg(lang: Lang, g: kaldifst.StdVectorFst, tree: ContextTree,
                 tm: TransitionModel, cfg: HclgConfig = HclgConfig()) -> DecodingGraph:
    """Compose, determinize and minimize H o C o L o G; add self-loops (no cache)."""
    start = time.perf_counter()
    hmms = _Hmms(tree, tm)
    clg = _clg(lang, g, hmms, cfg.context)
    tstates = hmms.graph_tstates()
    hclg, num_labels, deterministic = _compose_h(clg, hmms, tstates, cfg.transition_scale)
    del clg
    if not deterministic:
        hclg = _determinize(hclg)
    if cfg.minimize:
        hclg = _minimize(hclg)
    hclg = _remove_disambig(hclg, num_labels)
    table = _add_self_loops(hclg, tstates, tm, cfg.self_loop_scale)
    del hclg
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
                graph.path = path
                return graph
        except ModelError as exc:
            log.warning("rebuilding the graph: %s", exc)
    graph = compile_hclg(lang, g, tree, tm, cfg)
    graph_dir.mkdir(parents=True, exist_ok=True)
    write_text(graph_dir / "words.txt", "".join(f"{w} {i}\n" for i, w in enumerate(lang.words)))
    save_graph(graph, path, key)
    graph.path = path
    return graph


def load_cached_graph(path: str | Path) -> DecodingGraph:
    """A graph :func:`build_hclg` wrote (``HCLG.npz`` and ``words.txt`` beside it)."""
    path = Path(path)
    words = [line.rsplit(" ", 1)[0]
             for line in (path.parent / "words.txt").read_text(encoding="utf-8").splitlines()]
    graph, _ = load_graph(path, words)
    graph.path = path
    return graph


__all__ = ["DecodingGraph", "HclgConfig", "build_hclg", "compile_hclg", "graph_key",
           "load_cached_graph", "load_graph", "save_graph"]
