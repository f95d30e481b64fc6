"""Token-passing Viterbi search over a WFST's CSR arrays (Kaldi's FasterDecoder, in numba).

The search consumes a (frames x pdfs) log-likelihood matrix and a graph
(:class:`asr.graph.FstArrays`) whose input label ``k > 0`` is scored by pdf ``label_pdf[k]``;
it knows no acoustic model. Costs are tropical (-log probability, lower is better): an
emitting arc into frame ``t`` costs ``arc cost - acoustic_scale * loglik[t, label_pdf[k]]``.

Per frame the search (1) finds a cutoff over the active tokens: ``beam`` above the best, or
tighter where more than ``max_active`` tokens are alive, or looser where fewer than
``min_active`` are; (2) passes the surviving tokens along their emitting arcs, keeping one
token per destination state, and pruning against a running bound on the next cutoff;
(3) follows epsilon arcs within the frame with a stack until nothing improves (epsilon
cycles of non-negative cost end). Each frame's survivors are appended to a traceback store
of (previous token, arc) pairs that is compacted when it grows, so its memory follows the
tokens still reachable from the active ones, not frames x states.

At the end the best token plus its final cost wins; if no active token sits in a final
state, the best token wins without one and ``reached_final`` is False (as in Kaldi).

Glossary of the ids met here (see :mod:`asr.graph.arrays`):

=============  =============================================================================
state, arc     graph states and arcs (arc ids are those of the ``FstArrays``)
input label    0 = epsilon; ``k > 0`` consumes one frame, scored by pdf ``label_pdf[k]``
output label   0 = epsilon, else a word id
token          one entry of the traceback store: (previous token, arc); -1 = none
=============  =============================================================================

>>> g = FstArrays.from_arcs(2, 0, {1: 0.0}, [(0, 1, 1, 7, 0.5), (1, 1, 2, 0, 0.1)])
>>> r = decode(g, np.array([-1, 0, 1]), np.zeros((3, 2), np.float32), SearchConfig())
>>> r.words.tolist(), r.ilabels.tolist(), round(r.cost, 3)
([7], [1, 2, 2], 0.7)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numba
import numpy as np

from asr.decoder.lattice import Lattice, empty_lattice, prune
from asr.graph import FstArrays

NO_LIMIT = 2 ** 31 - 1


@dataclass
class SearchConfig:
    """Pruning settings; the defaults are Kaldi's FasterDecoder's (beam 16, min-active 20,
    beam-delta 0.5) with its usual acoustic scale 0.1, and LatticeFasterDecoder's lattice
    beam 8 (used by :meth:`FasterDecoder.decode_lattice` only).

    ``word_end_beam`` prunes tokens that have just output a word (their last arc has an
    output label) harder than the rest: they must lie within it of the frame's best.
    """

    beam: float = 16.0
    max_active: int = NO_LIMIT
    min_active: int = 20
    beam_delta: float = 0.5
    word_end_beam: float = np.inf
    acoustic_scale: float = 0.1
    lattice_beam: float = 8.0

    def __post_init__(self):
        if not self.beam > 0 or not self.word_end_beam > 0 or not self.acoustic_scale > 0:
            raise ValueError("beam, word_end_beam and acoustic_scale must be positive")
        if not self.lattice_beam >= 0:
            raise ValueError("lattice_beam must be >= 0")
        if self.max_active < 1 or self.min_active < 0 or self.min_active > self.max_active:
            raise ValueError("need 0 <= min_active <= max_active and max_active >= 1")
        if self.beam_delta < 0:
            raise ValueError("beam_delta must be >= 0")


@dataclass
class SearchResult:
    """The best path of one utterance (T frames).

    Attributes
    ----------
    words : (W,) int32 -- output labels along the path (epsilons removed)
    ilabels : (T,) int32 -- the input label that consumed each frame (e.g. transition id + 1)
    arcs : (n,) int64 -- graph arcs along the path, epsilon arcs included
    cost : float -- total cost (acoustic + graph); ``inf`` when no token survived
    acoustic_cost : float -- ``-acoustic_scale * sum of the path's log-likelihoods``
    graph_cost : float -- arc costs plus the final cost (when ``reached_final``)
    reached_final : bool -- False: no active token was final, the best one was taken as is
    num_tokens : int -- tokens held by the traceback store at the end (its memory, in entries)
    """

    words: np.ndarray
    ilabels: np.ndarray
    arcs: np.ndarray
    cost: float
    acoustic_cost: float
    graph_cost: float
    reached_final: bool
    num_tokens: int


# ----------------------------------------------------------------------------- kernels

@numba.njit(cache=True)
def _grow(a, n):
    """``a`` with room for at least ``n`` entries (doubling)."""
    if n <= a.shape[0]:
        return a
    b = np.empty(max(n, 2 * a.shape[0]), dtype=a.dtype)
    b[:a.shape[0]] = a
    return b


@numba.njit(cache=True)
def _cutoff(costs, n, beam, max_active, min_active, beam_delta, word_end_beam, scratch):
    """Kaldi's GetCutoff over ``costs[:n]``: returns (cutoff, word-end cutoff, adaptive beam,
    index of the best token)."""
    best, best_i = np.inf, -1
    for i in range(n):
        if costs[i] < best:
            best, best_i = costs[i], i
    beam_cut = best + beam
    word_cut = best + word_end_beam
    if max_active == NO_LIMIT and min_active == 0:
        return beam_cut, min(beam_cut, word_cut), beam, best_i
    scratch[:n] = costs[:n]
    max_cut = np.inf
    if n > max_active:
        max_cut = np.partition(scratch[:n], max_active)[max_active]
    if max_cut < beam_cut:       # max_active is tighter than the beam
        return max_cut, min(max_cut, word_cut), max_cut - best + beam_delta, best_i
    min_cut = np.inf             # as in Kaldi: min_active tokens or fewer are all kept
    if n > min_active:
        min_cut = best if min_active == 0 else np.partition(scratch[:n], min_active)[min_active]
    if min_cut > beam_cut:       # min_active is looser than the beam
        return min_cut, min(min_cut, word_cut), min_cut - best + beam_delta, best_i
    return beam_cut, min(beam_cut, word_cut), beam, best_i


@numba.njit(cache=True)
def _compact(tok_prev, tok_arc, n_tok, live_toks):
    """Drop tokens no longer reachable from ``live_toks`` (renumbered in place).

    Back-pointers always point to lower indices, so one backward sweep marks the live ones.
    Returns the new number of tokens.
    """
    live = np.zeros(n_tok, dtype=np.bool_)
    for t in live_toks:
        live[t] = True
    for i in range(n_tok - 1, -1, -1):
        if live[i] and tok_prev[i] >= 0:
            live[tok_prev[i]] = True
    new_id = np.full(n_tok, -1, dtype=np.int64)
    m = 0
    for i in range(n_tok):
        if live[i]:
            new_id[i] = m
            p = tok_prev[i]
            tok_prev[m] = new_id[p] if p >= 0 else -1
            tok_arc[m] = tok_arc[i]
            m += 1
    for k in range(live_toks.shape[0]):
        live_toks[k] = new_id[live_toks[k]]
    return m


@numba.njit(cache=True)
def _search(offsets, eps_end, pdf, arc_cost, nextstate, olabel, final_cost, start, loglik,
            scale, beam, max_active, min_active, beam_delta, word_end_beam, slot,
            cur_state, cur_cost, cur_prev, cur_arc, prv_state, prv_cost, prv_tok, prv_word,
            scratch, stack, on_stack):
    """Token passing over a graph whose arcs leaving each state list epsilons first
    (``offsets[s]:eps_end[s]``) then emitting arcs (``eps_end[s]:offsets[s+1]``).

    ``pdf`` (A,) is the pdf of each emitting arc (-1 on epsilons); ``slot`` (S,) is all -1
    and left so, as is ``on_stack`` (S,) all False. Returns (arcs of the best path (n,), its
    total cost, reached_final, tokens held). The other per-state arrays (S,) are the caller's
    workspace (``cur_prev``: token ids, this frame's are base + j; ``scratch``: float32, as
    Kaldi partitions floats); one entry per state at most in a frame, so they never grow
    (arrays reassigned inside the frame loop would cost numba reference counting every
    frame). They are only touched up to the number of active states, so resident memory
    follows the active tokens.
    """
    T = loglik.shape[0]
    tok_prev = np.empty(1 << 16, dtype=np.int64)
    tok_arc = np.empty(tok_prev.shape[0], dtype=np.int32)
    n_tok = 0
    gc_at = 1 << 20

    # frame "-1": the start state and its epsilon closure
    n_cur = 1
    cur_state[0], cur_cost[0], cur_prev[0], cur_arc[0] = start, 0.0, -1, -1
    slot[start] = 0
    cutoff = np.inf
    n_prv = 0
    for t in range(T + 1):
        # epsilon arcs within the frame (Kaldi's ProcessNonemitting)
        base = n_tok
        n_stack = 0
        for j in range(n_cur):                # popped last first, as Kaldi's queue
            stack[n_stack] = j
            on_stack[j] = True
            n_stack += 1
        while n_stack > 0:
            n_stack -= 1
            j = stack[n_stack]
            on_stack[j] = False
            c = cur_cost[j]
            if c > cutoff:
                continue
            s = cur_state[j]
            for a in range(offsets[s], eps_end[s]):
                w = c + arc_cost[a]
                if w > cutoff:
                    continue
                d = nextstate[a]
                k = slot[d]
                if k < 0:
                    k = n_cur
                    n_cur += 1
                    slot[d] = k
                    cur_state[k] = d
                elif not w < cur_cost[k]:
                    continue
                cur_cost[k], cur_prev[k], cur_arc[k] = w, base + j, a
                if not on_stack[k]:
                    on_stack[k] = True
                    stack[n_stack] = k
                    n_stack += 1
        # the frame's survivors become tokens; they are the next frame's active list
        if n_tok + n_cur > tok_prev.shape[0]:
            tok_prev = _grow(tok_prev, n_tok + n_cur)
            tok_arc = _grow(tok_arc, n_tok + n_cur)
        for j in range(n_cur):
            tok_prev[n_tok + j] = cur_prev[j]
            tok_arc[n_tok + j] = cur_arc[j]
            prv_state[j] = cur_state[j]
            prv_cost[j] = cur_cost[j]
            prv_tok[j] = n_tok + j
            prv_word[j] = cur_arc[j] >= 0 and olabel[cur_arc[j]] != 0
            slot[cur_state[j]] = -1
        n_tok += n_cur
        n_prv = n_cur
        n_cur = 0
        if n_tok >= gc_at:
            n_tok = _compact(tok_prev, tok_arc, n_tok, prv_tok[:n_prv])
            gc_at = max(gc_at, 2 * n_tok)
        if t == T:
            break
        # emitting arcs into frame t (Kaldi's GetCutoff + ProcessEmitting)
        cut, word_cut, adaptive, best_i = _cutoff(prv_cost, n_prv, beam, max_active,
                                                  min_active, beam_delta, word_end_beam,
                                                  scratch)
        next_cut = np.inf
        if best_i >= 0:   # the best token first: a tight bound on the next cutoff early on
            s = prv_state[best_i]
            for a in range(eps_end[s], offsets[s + 1]):
                w = prv_cost[best_i] + arc_cost[a] - scale * loglik[t, pdf[a]]
                if w + adaptive < next_cut:
                    next_cut = w + adaptive
        for i in range(n_prv):
            c = prv_cost[i]
            if not c < (word_cut if prv_word[i] else cut):
                continue
            s = prv_state[i]
            for a in range(eps_end[s], offsets[s + 1]):
                w = c + arc_cost[a] - scale * loglik[t, pdf[a]]
                if not w < next_cut:
                    continue
                d = nextstate[a]
                k = slot[d]
                if k < 0:
                    k = n_cur
                    n_cur += 1
                    slot[d] = k
                    cur_state[k] = d
                    cur_cost[k], cur_prev[k], cur_arc[k] = w, prv_tok[i], a
                elif w < cur_cost[k]:
                    cur_cost[k], cur_prev[k], cur_arc[k] = w, prv_tok[i], a
                if w + adaptive < next_cut:
                    next_cut = w + adaptive
        cutoff = next_cut
    # the best final token, else the best token (Kaldi's GetBestPath)
    best_tok, best_cost, reached = -1, np.inf, False
    for i in range(n_prv):
        f = final_cost[prv_state[i]]
        if f < np.inf and prv_cost[i] < np.inf and prv_cost[i] + f < best_cost:
            best_cost, best_tok, reached = prv_cost[i] + f, prv_tok[i], True
    if not reached:
        for i in range(n_prv):
            if prv_cost[i] < best_cost:
                best_cost, best_tok = prv_cost[i], prv_tok[i]
    n_path = 0
    k = best_tok
    while k >= 0 and tok_arc[k] >= 0:
        n_path += 1
        k = tok_prev[k]
    path = np.empty(n_path, dtype=np.int64)
    k = best_tok
    for i in range(n_path - 1, -1, -1):
        path[i] = tok_arc[k]
        k = tok_prev[k]
    return path, best_cost, reached, n_tok


# ----------------------------------------------------------------------------- lattices
#
# The lattice search keeps, besides the traceback store above (the 1-best, unchanged), every
# token of every frame (its state and forward cost ``alpha``) and every link the search
# followed into one: (source token, destination token, arc, acoustic cost), as Kaldi's
# LatticeFasterDecoder. Tokens and links are stored frame by frame: frame ``f`` (f = 0 is the
# start, before any frame is consumed; f = t + 1 after frame t) owns tokens
# ``frame_tok[f]:frame_tok[f+1]``, the emitting links into it ``frame_link[f]:frame_eps[f]``
# and its epsilon links ``frame_eps[f]:frame_link[f+1]``. A dead link has arc -1.

PRUNE_INTERVAL = 25     # frames between lattice prunings, as Kaldi's prune-interval


@numba.njit(cache=True)
def _prune_lattice(n_f, frame_tok, frame_link, frame_eps, alpha, lk_src, lk_dst, lk_arc, lk_ac,
                   arc_cost, scale, lattice_beam, frontier_extra):
    """Kaldi's PruneForwardLinks over frames ``0..n_f-1``, last first.

    A token's extra cost is how much worse than the best path to the frontier the best path
    through it is (``frontier_extra`` (n,) for the last frame's tokens); a link's is
    ``alpha[src] + cost - alpha[dst] + extra[dst]``. Links whose extra cost exceeds
    ``lattice_beam`` die (arc -1). Returns extra (tokens,) float64.
    """
    n_lt = frame_tok[n_f]
    extra = np.full(n_lt, np.inf)
    last = frame_tok[n_f - 1]
    for i in range(last, n_lt):
        extra[i] = frontier_extra[i - last]
    for f in range(n_f - 1, -1, -1):
        if f < n_f - 1:                       # emitting links out of frame f
            for k in range(frame_link[f + 1], frame_eps[f + 1]):
                if lk_arc[k] < 0:
                    continue
                s, d = lk_src[k], lk_dst[k]
                e = alpha[s] + arc_cost[lk_arc[k]] + scale * lk_ac[k] - alpha[d] + extra[d]
                if e > lattice_beam:
                    lk_arc[k] = -1
                elif e < extra[s]:
                    extra[s] = e
        lo, hi = frame_eps[f], frame_link[f + 1]
        changed = True                        # epsilon links: not in topological order
        while changed:
            changed = False
            for k in range(hi - 1, lo - 1, -1):
                if lk_arc[k] < 0:
                    continue
                s, d = lk_src[k], lk_dst[k]
                e = alpha[s] + arc_cost[lk_arc[k]] - alpha[d] + extra[d]
                if e < extra[s]:
                    extra[s] = e
                    changed = True
        for k in range(lo, hi):
            if lk_arc[k] >= 0:
                s, d = lk_src[k], lk_dst[k]
                if alpha[s] + arc_cost[lk_arc[k]] - alpha[d] + extra[d] > lattice_beam:
                    lk_arc[k] = -1
    return extra


@numba.njit(cache=True)
def _compact_lattice(n_f, frame_tok, frame_link, frame_eps, lt_state, alpha, lk_src, lk_dst,
                     lk_arc, lk_ac, lk_best, extra, lattice_beam):
    """Drop tokens whose extra cost exceeds ``lattice_beam`` and dead links, in place
    (renumbering tokens, updating the frame offsets). Returns (tokens, links) kept."""
    n_lt = frame_tok[n_f]
    new_id = np.full(n_lt, -1, dtype=np.int64)
    m = 0
    for f in range(n_f):
        lo, hi = frame_tok[f], frame_tok[f + 1]
        frame_tok[f] = m
        for i in range(lo, hi):
            if extra[i] <= lattice_beam:
                new_id[i] = m
                lt_state[m], alpha[m] = lt_state[i], alpha[i]
                m += 1
    frame_tok[n_f] = m
    n = 0
    for f in range(n_f):
        lo, mid, hi = frame_link[f], frame_eps[f], frame_link[f + 1]
        frame_link[f] = n
        for k in range(lo, hi):
            if k == mid:
                frame_eps[f] = n
            if lk_arc[k] < 0 or new_id[lk_src[k]] < 0 or new_id[lk_dst[k]] < 0:
                continue
            lk_src[n], lk_dst[n] = new_id[lk_src[k]], new_id[lk_dst[k]]
            lk_arc[n], lk_ac[n], lk_best[n] = lk_arc[k], lk_ac[k], lk_best[k]
            n += 1
        if mid == hi:
            frame_eps[f] = n
    frame_link[n_f] = n
    return m, n


@numba.njit(cache=True)
def _search_lattice(offsets, eps_end, pdf, arc_cost, nextstate, olabel, final_cost, start,
                    loglik, scale, beam, max_active, min_active, beam_delta, word_end_beam, slot,
                    lattice_beam, prune_interval):
    """:func:`_search` that also keeps the lattice (see above), pruned with ``lattice_beam``
    every ``prune_interval`` frames and at the end.

    Returns (best path arcs, cost, reached_final, tokens held, frame_tok (T+2,), token states,
    links' src, dst, arc, acoustic cost, best flag, frame_link (T+2,), frame_eps (T+2,)).
    The 1-best is exactly :func:`_search`'s.
    """
    num_states = final_cost.shape[0]
    T = loglik.shape[0]
    cur_state = np.empty(num_states, dtype=np.int32)
    cur_cost = np.empty(num_states, dtype=np.float64)
    cur_prev = np.empty(num_states, dtype=np.int64)
    cur_arc = np.empty(num_states, dtype=np.int32)
    cur_bpl = np.empty(num_states, dtype=np.int64)    # best incoming link of each entry
    eps_lo = np.empty(num_states, dtype=np.int64)     # its latest epsilon links out
    eps_hi = np.empty(num_states, dtype=np.int64)
    prv_state = np.empty(num_states, dtype=np.int32)
    prv_cost = np.empty(num_states, dtype=np.float64)
    prv_tok = np.empty(num_states, dtype=np.int64)
    prv_lt = np.empty(num_states, dtype=np.int64)     # lattice token of each active token
    prv_word = np.empty(num_states, dtype=np.bool_)
    scratch = np.empty(num_states, dtype=np.float32)
    stack = np.empty(num_states, dtype=np.int32)
    on_stack = np.zeros(num_states, dtype=np.bool_)
    tok_prev = np.empty(1 << 16, dtype=np.int64)
    tok_arc = np.empty(tok_prev.shape[0], dtype=np.int32)
    n_tok = 0
    gc_at = 1 << 20
    lt_state = np.empty(1 << 16, dtype=np.int32)
    alpha = np.empty(lt_state.shape[0], dtype=np.float64)
    lk_src = np.empty(1 << 16, dtype=np.int64)
    lk_dst = np.empty(lk_src.shape[0], dtype=np.int64)
    lk_arc = np.empty(lk_src.shape[0], dtype=np.int32)
    lk_ac = np.empty(lk_src.shape[0], dtype=np.float32)
    lk_best = np.empty(lk_src.shape[0], dtype=np.bool_)
    frame_tok = np.zeros(T + 2, dtype=np.int64)
    frame_link = np.zeros(T + 2, dtype=np.int64)
    frame_eps = np.zeros(T + 2, dtype=np.int64)
    n_lt = 0
    n_lk = 0

    n_cur = 1
    cur_state[0], cur_cost[0], cur_prev[0], cur_arc[0] = start, 0.0, -1, -1
    cur_bpl[0], eps_lo[0], eps_hi[0] = -1, 0, 0
    slot[start] = 0
    cutoff = np.inf
    n_prv = 0
    for t in range(T + 1):
        base = n_tok
        frame_eps[t] = n_lk
        n_stack = 0
        for j in range(n_cur):
            stack[n_stack] = j
            on_stack[j] = True
            n_stack += 1
        while n_stack > 0:
            n_stack -= 1
            j = stack[n_stack]
            on_stack[j] = False
            c = cur_cost[j]
            if c > cutoff:
                continue
            s = cur_state[j]
            for k in range(eps_lo[j], eps_hi[j]):   # superseded by the links made below
                lk_arc[k] = -1
            eps_lo[j] = n_lk
            for a in range(offsets[s], eps_end[s]):
                w = c + arc_cost[a]
                if w > cutoff:
                    continue
                d = nextstate[a]
                k = slot[d]
                if k < 0:
                    k = n_cur
                    n_cur += 1
                    slot[d] = k
                    cur_state[k] = d
                    eps_lo[k], eps_hi[k] = 0, 0
                    better = True
                else:
                    better = w < cur_cost[k]
                if n_lk == lk_src.shape[0]:
                    lk_src, lk_dst = _grow(lk_src, n_lk + 1), _grow(lk_dst, n_lk + 1)
                    lk_arc, lk_ac = _grow(lk_arc, n_lk + 1), _grow(lk_ac, n_lk + 1)
                    lk_best = _grow(lk_best, n_lk + 1)
                lk_src[n_lk], lk_dst[n_lk], lk_arc[n_lk] = n_lt + j, n_lt + k, a
                lk_ac[n_lk], lk_best[n_lk] = 0.0, False
                n_lk += 1
                if not better:
                    continue
                cur_cost[k], cur_prev[k], cur_arc[k] = w, base + j, a
                cur_bpl[k] = n_lk - 1
                if not on_stack[k]:
                    on_stack[k] = True
                    stack[n_stack] = k
                    n_stack += 1
            eps_hi[j] = n_lk
        if n_tok + n_cur > tok_prev.shape[0]:
            tok_prev = _grow(tok_prev, n_tok + n_cur)
            tok_arc = _grow(tok_arc, n_tok + n_cur)
        if n_lt + n_cur > lt_state.shape[0]:
            lt_state = _grow(lt_state, n_lt + n_cur)
            alpha = _grow(alpha, n_lt + n_cur)
        for j in range(n_cur):
            tok_prev[n_tok + j] = cur_prev[j]
            tok_arc[n_tok + j] = cur_arc[j]
            prv_state[j] = cur_state[j]
            prv_cost[j] = cur_cost[j]
            prv_tok[j] = n_tok + j
            prv_word[j] = cur_arc[j] >= 0 and olabel[cur_arc[j]] != 0
            slot[cur_state[j]] = -1
            lt_state[n_lt + j], alpha[n_lt + j] = cur_state[j], cur_cost[j]
            prv_lt[j] = n_lt + j
            if cur_bpl[j] >= 0:
                lk_best[cur_bpl[j]] = True
        n_tok += n_cur
        n_lt += n_cur
        frame_tok[t + 1] = n_lt
        frame_link[t + 1] = n_lk
        n_prv = n_cur
        n_cur = 0
        if n_tok >= gc_at:
            n_tok = _compact(tok_prev, tok_arc, n_tok, prv_tok[:n_prv])
            gc_at = max(gc_at, 2 * n_tok)
        if t == T:
            break
        if (t + 1) % prune_interval == 0:     # Kaldi's PruneActiveTokens: frontier extra 0
            extra = _prune_lattice(t + 1, frame_tok, frame_link, frame_eps, alpha, lk_src,
                                   lk_dst, lk_arc, lk_ac, arc_cost, scale, lattice_beam,
                                   np.zeros(n_prv))
            n_lt, n_lk = _compact_lattice(t + 1, frame_tok, frame_link, frame_eps, lt_state,
                                          alpha, lk_src, lk_dst, lk_arc, lk_ac, lk_best, extra,
                                          lattice_beam)
            for j in range(n_prv):
                prv_lt[j] = frame_tok[t] + j
        cut, word_cut, adaptive, best_i = _cutoff(prv_cost, n_prv, beam, max_active,
                                                  min_active, beam_delta, word_end_beam,
                                                  scratch)
        next_cut = np.inf
        if best_i >= 0:
            s = prv_state[best_i]
            for a in range(eps_end[s], offsets[s + 1]):
                w = prv_cost[best_i] + arc_cost[a] - scale * loglik[t, pdf[a]]
                if w + adaptive < next_cut:
                    next_cut = w + adaptive
        for i in range(n_prv):
            c = prv_cost[i]
            if not c < (word_cut if prv_word[i] else cut):
                continue
            s = prv_state[i]
            for a in range(eps_end[s], offsets[s + 1]):
                w = c + arc_cost[a] - scale * loglik[t, pdf[a]]
                if not w < next_cut:
                    continue
                d = nextstate[a]
                k = slot[d]
                better = True
                if k < 0:
                    k = n_cur
                    n_cur += 1
                    slot[d] = k
                    cur_state[k] = d
                    eps_lo[k], eps_hi[k] = 0, 0
                    cur_cost[k], cur_prev[k], cur_arc[k] = w, prv_tok[i], a
                elif w < cur_cost[k]:
                    cur_cost[k], cur_prev[k], cur_arc[k] = w, prv_tok[i], a
                else:
                    better = False
                if n_lk == lk_src.shape[0]:
                    lk_src, lk_dst = _grow(lk_src, n_lk + 1), _grow(lk_dst, n_lk + 1)
                    lk_arc, lk_ac = _grow(lk_arc, n_lk + 1), _grow(lk_ac, n_lk + 1)
                    lk_best = _grow(lk_best, n_lk + 1)
                lk_src[n_lk], lk_dst[n_lk], lk_arc[n_lk] = prv_lt[i], n_lt + k, a
                lk_ac[n_lk], lk_best[n_lk] = -loglik[t, pdf[a]], False
                if better:
                    cur_bpl[k] = n_lk
                n_lk += 1
                if w + adaptive < next_cut:
                    next_cut = w + adaptive
        cutoff = next_cut
    best_tok, best_cost, reached = -1, np.inf, False
    for i in range(n_prv):
        f = final_cost[prv_state[i]]
        if f < np.inf and prv_cost[i] < np.inf and prv_cost[i] + f < best_cost:
            best_cost, best_tok, reached = prv_cost[i] + f, prv_tok[i], True
    if not reached:
        for i in range(n_prv):
            if prv_cost[i] < best_cost:
                best_cost, best_tok = prv_cost[i], prv_tok[i]
    # the last prune (Kaldi's PruneForwardLinksFinal): the frontier's extra cost counts the
    # final cost where a final state was reached
    frontier = np.full(n_prv, np.inf)
    for i in range(n_prv):
        if reached:
            f = final_cost[prv_state[i]]
            if f < np.inf:
                frontier[i] = prv_cost[i] + f - best_cost
        else:
            frontier[i] = prv_cost[i] - best_cost
    extra = _prune_lattice(T + 1, frame_tok, frame_link, frame_eps, alpha, lk_src, lk_dst,
                           lk_arc, lk_ac, arc_cost, scale, lattice_beam, frontier)
    n_lt, n_lk = _compact_lattice(T + 1, frame_tok, frame_link, frame_eps, lt_state, alpha,
                                  lk_src, lk_dst, lk_arc, lk_ac, lk_best, extra, lattice_beam)
    n_path = 0
    k = best_tok
    while k >= 0 and tok_arc[k] >= 0:
        n_path += 1
        k = tok_prev[k]
    path = np.empty(n_path, dtype=np.int64)
    k = best_tok
    for i in range(n_path - 1, -1, -1):
        path[i] = tok_arc[k]
        k = tok_prev[k]
    return (path, best_cost, reached, n_tok, frame_tok, lt_state[:n_lt].copy(),
            lk_src[:n_lk].copy(), lk_dst[:n_lk].copy(), lk_arc[:n_lk].copy(),
            lk_ac[:n_lk].copy(), lk_best[:n_lk].copy(), frame_link, frame_eps)


@numba.njit(cache=True)
def _topsort_lattice(n_f, frame_tok, frame_link, frame_eps, lk_src, lk_dst, lk_arc, lk_best):
    """Tokens (n,) int64 in topological order: frame by frame, and within a frame along its
    epsilon links (Kahn). An epsilon cycle (possible where the graph has one) is broken by
    dropping its links that are no token's best incoming link (arc set to -1). Returns
    (order, number of links dropped)."""
    n = frame_tok[n_f]
    order = np.empty(n, dtype=np.int64)
    indeg = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=np.bool_)
    queue = np.empty(n, dtype=np.int64)
    m = 0
    n_dropped = 0
    for f in range(n_f):
        lo, hi = frame_tok[f], frame_tok[f + 1]
        llo, lhi = frame_eps[f], frame_link[f + 1]
        start = np.zeros(hi - lo + 1, dtype=np.int64)    # epsilon links by source (CSR)
        for k in range(llo, lhi):
            if lk_arc[k] >= 0:
                start[lk_src[k] - lo + 1] += 1
                indeg[lk_dst[k]] += 1
        for i in range(hi - lo):
            start[i + 1] += start[i]
        fill = start[:-1].copy()
        out = np.empty(start[-1], dtype=np.int64)
        for k in range(llo, lhi):
            if lk_arc[k] >= 0:
                out[fill[lk_src[k] - lo]] = k
                fill[lk_src[k] - lo] += 1
        qh = qt = 0
        for i in range(lo, hi):
            if indeg[i] == 0:
                queue[qt] = i
                qt += 1
        while True:
            while qh < qt:
                i = queue[qh]
                qh += 1
                done[i] = True
                order[m] = i
                m += 1
                for e in range(start[i - lo], start[i - lo + 1]):
                    k = out[e]
                    if lk_arc[k] < 0:
                        continue
                    indeg[lk_dst[k]] -= 1
                    if indeg[lk_dst[k]] == 0:
                        queue[qt] = lk_dst[k]
                        qt += 1
            if m == hi:
                break
            dropped = 0              # stuck on a cycle
            for k in range(llo, lhi):
                if (lk_arc[k] >= 0 and not lk_best[k] and not done[lk_src[k]]
                        and not done[lk_dst[k]]):
                    lk_arc[k] = -1
                    dropped += 1
                    indeg[lk_dst[k]] -= 1
                    if indeg[lk_dst[k]] == 0:
                        queue[qt] = lk_dst[k]
                        qt += 1
            if dropped == 0:         # cannot happen (best links form a tree); be safe
                for k in range(llo, lhi):
                    if lk_arc[k] >= 0 and not done[lk_src[k]] and not done[lk_dst[k]]:
                        lk_arc[k] = -1
                        dropped += 1
                        indeg[lk_dst[k]] -= 1
                        if indeg[lk_dst[k]] == 0:
                            queue[qt] = lk_dst[k]
                            qt += 1
            n_dropped += dropped
    return order, n_dropped


# ----------------------------------------------------------------------------- interface

class FasterDecoder:
    """A graph laid out for the search once, then any number of utterances.

    Parameters
    ----------
    graph : FstArrays (S states, A arcs)
    label_pdf : (L,) int -- pdf id of each input label (entry 0, epsilon, is ignored)
    cfg : SearchConfig
    """

    def __init__(self, graph: FstArrays, label_pdf: np.ndarray, cfg: SearchConfig | None = None):
        self.graph, self.cfg = graph, cfg or SearchConfig()
        self.label_pdf = np.asarray(label_pdf, dtype=np.int64)
        if graph.num_arcs and graph.ilabel.max() >= len(self.label_pdf):
            raise ValueError(f"input label {int(graph.ilabel.max())} has no pdf "
                             f"(label_pdf has {len(self.label_pdf)} entries)")
        # epsilon arcs first within each state, emitting arcs after (a stable permutation)
        src = np.repeat(np.arange(graph.num_states), np.diff(graph.arc_offsets))
        emitting = graph.ilabel > 0
        self._order = np.lexsort((emitting, src)).astype(np.int64)
        eps_count = np.bincount(src[~emitting], minlength=graph.num_states)
        self._offsets = np.ascontiguousarray(graph.arc_offsets, dtype=np.int64)
        self._eps_end = self._offsets[:-1] + eps_count
        il = graph.ilabel[self._order]
        self._pdf = np.where(il > 0, self.label_pdf[il], -1).astype(np.int32)
        self._cost = graph.cost[self._order].astype(np.float64)
        self._next = np.ascontiguousarray(graph.nextstate[self._order])
        self._olabel = np.ascontiguousarray(graph.olabel[self._order])
        self._final = graph.final_cost.astype(np.float64)
        self._slot = np.full(graph.num_states, -1, dtype=np.int32)  # state -> entry; reused
        self._max_pdf = int(self._pdf.max()) if self._pdf.size else -1   # checked per call
        self._work: tuple | None = None       # the 1-best search's per-state arrays, reused

    def _check(self, loglik: np.ndarray) -> np.ndarray:
        loglik = np.ascontiguousarray(loglik, dtype=np.float32)
        if loglik.shape[0] and self._max_pdf >= loglik.shape[1]:
            raise ValueError(f"graph needs pdf {self._max_pdf}, scores have "
                             f"{loglik.shape[1]} columns")
        return loglik

    def _workspace(self) -> tuple:
        """The per-state arrays of :func:`_search`, allocated on first use and kept: the
        search touches them only up to the number of active states, and a fresh set per
        utterance would cost more than a short utterance's search on a large graph."""
        if self._work is None:
            n = self.graph.num_states
            self._work = tuple(np.empty(n, dtype=t) for t in (
                np.int32, np.float64, np.int64, np.int32, np.int32, np.float64, np.int64,
                np.bool_, np.float32, np.int32)) + (np.zeros(n, dtype=np.bool_),)
        return self._work

    def _args(self, loglik: np.ndarray) -> tuple:
        cfg = self.cfg
        return (self._offsets, self._eps_end, self._pdf, self._cost, self._next, self._olabel,
                self._final, int(self.graph.start), loglik, float(cfg.acoustic_scale),
                float(cfg.beam), int(cfg.max_active), int(cfg.min_active),
                float(cfg.beam_delta), float(cfg.word_end_beam), self._slot)

    def _result(self, loglik, path, cost, reached, n_tok) -> SearchResult:
        g, cfg = self.graph, self.cfg
        arcs = self._order[path]
        il = g.ilabel[arcs]
        ilabels = il[il > 0].astype(np.int32)
        words = g.olabel[arcs]
        words = words[words > 0].astype(np.int32)
        if len(ilabels) != loglik.shape[0]:     # nothing survived (or an empty graph)
            return SearchResult(np.zeros(0, np.int32), np.zeros(0, np.int32),
                                np.zeros(0, np.int64), np.inf, np.inf, np.inf, False, n_tok)
        acoustic = -cfg.acoustic_scale * float(
            loglik[np.arange(len(ilabels)), self.label_pdf[ilabels]].astype(np.float64).sum())
        graph_cost = float(g.cost[arcs].astype(np.float64).sum())
        if reached:
            graph_cost += float(g.final_cost[g.nextstate[arcs[-1]] if len(arcs) else g.start])
        return SearchResult(words, ilabels, arcs, float(cost), acoustic, graph_cost,
                            bool(reached), int(n_tok))

    def decode(self, loglik: np.ndarray) -> SearchResult:
        """Best path for one utterance; ``loglik`` (T, num_pdfs), higher is better."""
        if self.graph.num_states == 0:
            return _no_result()
        loglik = self._check(loglik)
        path, cost, reached, n_tok = _search(*self._args(loglik), *self._workspace())
        return self._result(loglik, path, cost, reached, n_tok)

    def decode_lattice(self, loglik: np.ndarray) -> tuple[SearchResult, Lattice]:
        """The best path (exactly as :meth:`decode`) and the word lattice of the paths within
        ``cfg.lattice_beam`` of it (Kaldi's LatticeFasterDecoder, lattice not determinized);
        ``loglik`` (T, num_pdfs). See :mod:`asr.decoder.lattice`."""
        g = self.graph
        if g.num_states == 0:
            return _no_result(), empty_lattice()
        loglik = self._check(loglik)
        (path, cost, reached, n_tok, frame_tok, lt_state, lk_src, lk_dst, lk_arc, lk_ac,
         lk_best, frame_link, frame_eps) = _search_lattice(
            *self._args(loglik), float(self.cfg.lattice_beam), PRUNE_INTERVAL)
        result = self._result(loglik, path, cost, reached, n_tok)
        n_f = loglik.shape[0] + 1
        order, cut = _topsort_lattice(n_f, frame_tok, frame_link, frame_eps, lk_src, lk_dst, lk_arc,
                                 lk_best)
        state_of = np.empty(len(order), dtype=np.int64)
        state_of[order] = np.arange(len(order))
        alive = lk_arc >= 0
        src, dst = state_of[lk_src[alive]], state_of[lk_dst[alive]]
        arcs = self._order[lk_arc[alive]]
        by_src = np.argsort(src, kind="stable")
        src, dst, arcs, ac = src[by_src], dst[by_src], arcs[by_src], lk_ac[alive][by_src]
        token_frame = np.repeat(np.arange(n_f, dtype=np.int32), np.diff(frame_tok))
        final = np.full(len(order), np.inf)
        last = token_frame[order] == n_f - 1
        last_states = lt_state[order][last]
        final[last] = g.final_cost[last_states] if reached else 0.0
        lat = Lattice(token_frame[order], final, src.astype(np.int32), dst.astype(np.int32),
                      g.olabel[arcs].astype(np.int32), g.ilabel[arcs].astype(np.int32),
                      g.cost[arcs].astype(np.float64), ac.astype(np.float32))
        if cut:     # paths around an epsilon cycle were cut: some kept ones may now be worse
            return result, prune(lat, self.cfg.acoustic_scale, self.cfg.lattice_beam)
        return result, lat


def _no_result(n_tok: int = 0) -> SearchResult:
    return SearchResult(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int64),
                        np.inf, np.inf, np.inf, False, n_tok)


def decode(graph: FstArrays, label_pdf: np.ndarray, loglik: np.ndarray,
           cfg: SearchConfig | None = None) -> SearchResult:
    """Best path through ``graph`` for ``loglik`` (T, num_pdfs); see :class:`FasterDecoder`."""
    return FasterDecoder(graph, label_pdf, cfg).decode(loglik)


class Aligner:
    """Forced alignment through one training graph (see :func:`align`), laid out once for
    every utterance aligned to it: a corpus of isolated words repeats a few transcripts."""

    def __init__(self, graph: FstArrays, label_pdf: np.ndarray, cfg: SearchConfig | None = None,
                 retry_beam: float = 40.0):
        self.graph, self.label_pdf, self.cfg = graph, label_pdf, cfg or SearchConfig()
        # the retry only where it is wider: the same beam again finds the same nothing
        self.beams = (self.cfg.beam,) + ((retry_beam,) if retry_beam > self.cfg.beam else ())
        self._searches: dict[float, FasterDecoder] = {}

    def __call__(self, loglik: np.ndarray) -> np.ndarray | None:
        """The input label of each frame (T,) for ``loglik`` (T, num_pdfs), or None."""
        for beam in self.beams:
            if beam not in self._searches:
                self._searches[beam] = FasterDecoder(self.graph, self.label_pdf,
                                                     dataclasses.replace(self.cfg, beam=beam))
            result = self._searches[beam].decode(loglik)
            if result.reached_final:
                return result.ilabels
        return None


def align(graph: FstArrays, label_pdf: np.ndarray, loglik: np.ndarray,
          cfg: SearchConfig | None = None, retry_beam: float = 40.0) -> np.ndarray | None:
    """Forced alignment: the input label of each frame (T,) on the best path that ends in a
    final state of a training graph, or None. Tries ``cfg.beam`` first, then ``retry_beam``
    (when wider), as Kaldi's aligner does."""
    return Aligner(graph, label_pdf, cfg, retry_beam)(loglik)


__all__ = ["Aligner", "FasterDecoder", "SearchConfig", "SearchResult", "align", "decode"]
