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

from asr.graph import FstArrays

NO_LIMIT = 2 ** 31 - 1


@dataclass
class SearchConfig:
    """Pruning settings; the defaults are Kaldi's FasterDecoder's (beam 16, min-active 20,
    beam-delta 0.5) with its usual acoustic scale 0.1.

    ``word_end_beam`` prunes tokens that have just output a word (their last arc has an
    output label) harder than the rest: they must lie within it of the frame's best.
    """

    beam: float = 16.0
    max_active: int = NO_LIMIT
    min_active: int = 20
    beam_delta: float = 0.5
    word_end_beam: float = np.inf
    acoustic_scale: float = 0.1

    def __post_init__(self):
        if not self.beam > 0 or not self.word_end_beam > 0 or not self.acoustic_scale > 0:
            raise ValueError("beam, word_end_beam and acoustic_scale must be positive")
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
            scale, beam, max_active, min_active, beam_delta, word_end_beam, slot):
    """Token passing over a graph whose arcs leaving each state list epsilons first
    (``offsets[s]:eps_end[s]``) then emitting arcs (``eps_end[s]:offsets[s+1]``).

    ``pdf`` (A,) is the pdf of each emitting arc (-1 on epsilons); ``slot`` (S,) is all -1
    and left so. Returns (arcs of the best path (n,), its total cost, reached_final, tokens
    held). The per-state arrays are allocated but only touched up to the number of active
    states, so resident memory follows the active tokens.
    """
    num_states = final_cost.shape[0]
    T = loglik.shape[0]
    # one entry per state at most in a frame: the per-frame arrays never grow (arrays that
    # are reassigned inside the frame loop would cost numba reference counting every frame)
    cur_state = np.empty(num_states, dtype=np.int32)
    cur_cost = np.empty(num_states, dtype=np.float64)
    cur_prev = np.empty(num_states, dtype=np.int64)  # token id (this frame's ids are base + j)
    cur_arc = np.empty(num_states, dtype=np.int32)
    prv_state = np.empty(num_states, dtype=np.int32)
    prv_cost = np.empty(num_states, dtype=np.float64)
    prv_tok = np.empty(num_states, dtype=np.int64)
    prv_word = np.empty(num_states, dtype=np.bool_)
    scratch = np.empty(num_states, dtype=np.float32)   # Kaldi partitions floats
    stack = np.empty(num_states, dtype=np.int32)
    on_stack = np.zeros(num_states, dtype=np.bool_)
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

    def decode(self, loglik: np.ndarray) -> SearchResult:
        """Best path for one utterance; ``loglik`` (T, num_pdfs), higher is better."""
        g, cfg = self.graph, self.cfg
        loglik = np.ascontiguousarray(loglik, dtype=np.float32)
        if g.num_states == 0:
            return SearchResult(np.zeros(0, np.int32), np.zeros(0, np.int32),
                                np.zeros(0, np.int64), np.inf, np.inf, np.inf, False, 0)
        if self._pdf.size and loglik.shape[0] and self._pdf.max() >= loglik.shape[1]:
            raise ValueError(f"graph needs pdf {int(self._pdf.max())}, scores have "
                             f"{loglik.shape[1]} columns")
        path, cost, reached, n_tok = _search(
            self._offsets, self._eps_end, self._pdf, self._cost, self._next, self._olabel,
            self._final, int(g.start), loglik, float(cfg.acoustic_scale), float(cfg.beam),
            int(cfg.max_active), int(cfg.min_active), float(cfg.beam_delta),
            float(cfg.word_end_beam), self._slot)
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


def decode(graph: FstArrays, label_pdf: np.ndarray, loglik: np.ndarray,
           cfg: SearchConfig | None = None) -> SearchResult:
    """Best path through ``graph`` for ``loglik`` (T, num_pdfs); see :class:`FasterDecoder`."""
    return FasterDecoder(graph, label_pdf, cfg).decode(loglik)


def align(graph: FstArrays, label_pdf: np.ndarray, loglik: np.ndarray,
          cfg: SearchConfig | None = None, retry_beam: float = 40.0) -> np.ndarray | None:
    """Forced alignment: the input label of each frame (T,) on the best path that ends in a
    final state of a training graph, or None. Tries ``cfg.beam`` first, then ``retry_beam``,
    as Kaldi's aligner does."""
    cfg = cfg or SearchConfig()
    for beam in (cfg.beam, max(cfg.beam, retry_beam)):
        result = decode(graph, label_pdf, loglik, dataclasses.replace(cfg, beam=beam))
        if result.reached_final:
            return result.ilabels
    return None


__all__ = ["FasterDecoder", "SearchConfig", "SearchResult", "align", "decode"]
