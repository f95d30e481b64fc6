"""Word lattices: what :meth:`asr.decoder.faster.FasterDecoder.decode_lattice` returns, the best
path through one at any acoustic scale and word penalty, and n-gram LM rescoring.

A lattice is an acyclic WFST over words whose arcs keep the graph cost (LM, lexicon and
transition costs of the decoding graph) and the acoustic cost (-log-likelihood, unscaled)
apart, as Kaldi's ``CompactLattice`` does, so that any acoustic scale can be applied later
(Kaldi's ``lattice-scale`` + ``lattice-best-path``). It is state-level: one state per token
that survived lattice pruning, one arc per graph arc between two of them.

Glossary of the ids met here:

=============  =============================================================================
state          ``0 .. num_states-1``, topologically sorted (every arc goes up); 0 is the start
arc            ``0 .. num_arcs-1``, sorted by source state
word           output label of the decoding graph (``words.txt`` id); 0 = no word
ilabel         input label of the decoding graph; 0 = epsilon (no frame), ``k > 0`` consumed
               the frame ``frames[src]``
=============  =============================================================================

>>> lat = Lattice(np.array([0, 1, 2], np.int32), np.array([np.inf, np.inf, 0.5]),
...               np.array([0, 0, 1], np.int32), np.array([1, 2, 2], np.int32),
...               np.array([7, 8, 0], np.int32), np.array([1, 1, 2], np.int32),
...               np.array([1.0, 2.0, 0.0]), np.array([3.0, 1.0, 2.0], np.float32))
>>> words, cost = best_path(lat, acoustic_scale=1.0)
>>> words.tolist(), round(cost, 3)
([8], 3.5)
>>> best_path(lat, acoustic_scale=0.1)[0].tolist()
[7]
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numba
import numpy as np

__all__ = ["Lattice", "best_path", "prune", "rescore"]


@dataclass
class Lattice:
    """An acyclic word lattice of one utterance (N states, E arcs); state 0 starts.

    Attributes
    ----------
    frames : (N,) int32 -- frames consumed before each state (0 .. T)
    final_cost : (N,) float64 -- graph cost of ending in each state; ``inf`` where it may not
    src, dst : (E,) int32 -- source and destination states (``src < dst``), sorted by ``src``
    word : (E,) int32 -- word id output on each arc (0 = none)
    ilabel : (E,) int32 -- graph input label (0 = epsilon; else one frame, e.g. tid + 1)
    graph_cost : (E,) float64 -- cost of the decoding graph's arc (LM, lexicon, transitions)
    acoustic_cost : (E,) float32 -- ``-loglik`` of the frame the arc consumed (unscaled; 0 on
        epsilon arcs)

    A path's cost at acoustic scale ``a`` is ``sum(graph_cost) + a * sum(acoustic_cost)`` plus
    the final cost of its last state.
    """

    frames: np.ndarray
    final_cost: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    word: np.ndarray
    ilabel: np.ndarray
    graph_cost: np.ndarray
    acoustic_cost: np.ndarray

    @property
    def num_states(self) -> int:
        return len(self.frames)

    @property
    def num_arcs(self) -> int:
        return len(self.src)

    @property
    def num_frames(self) -> int:
        return int(self.frames.max()) if len(self.frames) else 0

    def check(self) -> None:
        """Raise ValueError unless the arrays form a topologically sorted lattice."""
        n, e = self.num_states, self.num_arcs
        if self.final_cost.shape != (n,):
            raise ValueError(f"final_cost has shape {self.final_cost.shape}, expected ({n},)")
        for f in ("dst", "word", "ilabel", "graph_cost", "acoustic_cost"):
            if getattr(self, f).shape != (e,):
                raise ValueError(f"{f} has shape {getattr(self, f).shape}, expected ({e},)")
        if e and (self.src.min() < 0 or self.dst.max() >= n or np.any(self.src >= self.dst)):
            raise ValueError("arcs must go from a state to a later state")
        if e and np.any(np.diff(self.src) < 0):
            raise ValueError("arcs must be sorted by source state")

    def save(self, path: str | Path) -> None:
        """Write as an uncompressed ``.npz`` (no pickle), atomically."""
        from asr.models import save_arrays

        save_arrays(Path(path), {f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: str | Path) -> "Lattice":
        """Read a lattice written by :meth:`save`; a damaged file is a ModelError naming it."""
        from asr.errors import ModelError
        from asr.models import load_arrays

        arrays = load_arrays(Path(path))
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in arrays]
        if missing:
            raise ModelError(Path(path), f"lattice file lacks {', '.join(missing)}")
        lat = cls(**{name: arrays[name] for name in names})
        try:
            lat.check()
        except ValueError as exc:
            raise ModelError(Path(path), f"not a valid lattice: {exc}") from None
        return lat


def empty_lattice() -> Lattice:
    """A lattice with no state (nothing survived the search)."""
    i32 = np.zeros(0, np.int32)
    return Lattice(i32, np.zeros(0), i32, i32.copy(), i32.copy(), i32.copy(), np.zeros(0),
                   np.zeros(0, np.float32))


@numba.njit(cache=True)
def _forward_backward(num_states, src, dst, cost, final_cost):
    """Shortest distances (N,) from state 0 and (N,) to the end (arcs sorted by src)."""
    alpha = np.full(num_states, np.inf)
    if num_states:
        alpha[0] = 0.0
    for e in range(src.shape[0]):
        if alpha[src[e]] + cost[e] < alpha[dst[e]]:
            alpha[dst[e]] = alpha[src[e]] + cost[e]
    beta = final_cost.copy()
    for e in range(src.shape[0] - 1, -1, -1):
        if cost[e] + beta[dst[e]] < beta[src[e]]:
            beta[src[e]] = cost[e] + beta[dst[e]]
    return alpha, beta


def prune(lat: Lattice, acoustic_scale: float, beam: float) -> Lattice:
    """Kaldi's ``lattice-prune``: keep the arcs and states on a complete path whose cost at
    ``acoustic_scale`` is within ``beam`` of the best (states renumbered, order kept)."""
    cost = arc_costs(lat, acoustic_scale)
    alpha, beta = _forward_backward(lat.num_states, lat.src, lat.dst, cost,
                                    lat.final_cost.astype(np.float64))
    if not lat.num_states or not alpha[0] + beta[0] < np.inf:
        return empty_lattice()
    limit = beta[0] + beam + 1e-6 * (1.0 + abs(beta[0]))     # rounding of the sums
    keep = alpha + beta <= limit
    arcs = keep[lat.src] & keep[lat.dst] & (alpha[lat.src] + cost + beta[lat.dst] <= limit)
    new_id = np.cumsum(keep) - 1
    return Lattice(lat.frames[keep], lat.final_cost[keep],
                   new_id[lat.src[arcs]].astype(np.int32), new_id[lat.dst[arcs]].astype(np.int32),
                   lat.word[arcs], lat.ilabel[arcs], lat.graph_cost[arcs],
                   lat.acoustic_cost[arcs])


# ----------------------------------------------------------------------------- best path

@numba.njit(cache=True)
def _shortest_path(num_states, src, dst, cost, final_cost):
    """Shortest path over a topologically sorted DAG (arcs sorted by ``src``).

    Returns (arcs of the best path (n,) int64, its cost incl. the final cost); cost is inf
    and the path empty when no final state is reachable.
    """
    dist = np.full(num_states, np.inf)
    back = np.full(num_states, -1, dtype=np.int64)
    if num_states:
        dist[0] = 0.0
    for e in range(src.shape[0]):
        w = dist[src[e]] + cost[e]
        if w < dist[dst[e]]:
            dist[dst[e]] = w
            back[dst[e]] = e
    best, end = np.inf, -1
    for s in range(num_states):
        if dist[s] + final_cost[s] < best:
            best, end = dist[s] + final_cost[s], s
    n = 0
    s = end
    while s > 0:
        n += 1
        s = src[back[s]]
    path = np.empty(n, dtype=np.int64)
    s = end
    for i in range(n - 1, -1, -1):
        path[i] = back[s]
        s = src[back[s]]
    return path, best


def arc_costs(lat: Lattice, acoustic_scale: float, word_penalty: float = 0.0) -> np.ndarray:
    """(E,) float64: ``graph_cost + acoustic_scale * acoustic_cost + word_penalty * [word]``."""
    cost = lat.graph_cost.astype(np.float64) + acoustic_scale * lat.acoustic_cost.astype(
        np.float64)
    if word_penalty:
        cost = cost + word_penalty * (lat.word > 0)
    return cost


def best_path_arcs(lat: Lattice, acoustic_scale: float, word_penalty: float = 0.0
                   ) -> tuple[np.ndarray, float]:
    """(arcs (n,) int64 of the best path, its cost); ``inf`` and no arcs for no path."""
    path, cost = _shortest_path(lat.num_states, lat.src, lat.dst,
                                arc_costs(lat, acoustic_scale, word_penalty),
                                lat.final_cost.astype(np.float64))
    return path, float(cost)


def best_path(lat: Lattice, acoustic_scale: float, word_penalty: float = 0.0
              ) -> tuple[np.ndarray, float]:
    """The best word sequence (W,) int32 and its cost, where a path costs
    ``graph + acoustic_scale * acoustic + word_penalty * words`` (Kaldi's
    ``lattice-scale --acoustic-scale`` + ``lattice-add-penalty`` + ``lattice-best-path``;
    the LM weight ``lmwt`` of Kaldi's scoring is ``acoustic_scale = 1 / lmwt``).
    ``(empty, inf)`` when the lattice has no complete path."""
    path, cost = best_path_arcs(lat, acoustic_scale, word_penalty)
    words = lat.word[path]
    return words[words > 0].astype(np.int32), cost


# ----------------------------------------------------------------------------- rescoring

LN10 = float(np.log(10.0))


class _LmCosts:
    """Costs (-ln p, as in G) of words given histories under one n-gram LM, memoized.

    A history is a tuple of LM word ids, cut to its longest suffix that is an n-gram of the
    model: p(w | h) does not depend on what is cut (no n-gram extends it), so equal cut
    histories are one LM state.
    """

    def __init__(self, lm, words: list[str]):
        from asr.lm import SENTENCE_END, SENTENCE_START

        unk = lm.word_ids.get("<unk>", -1)
        self.lm = lm
        self.ids = np.array([lm.word_ids.get(w, unk) for w in words], dtype=np.int64)
        self.end = lm.word_ids[SENTENCE_END]
        self.start = self.cut((lm.word_ids[SENTENCE_START],))
        self.memo: dict[tuple[tuple, int], tuple[float, tuple]] = {}

    def cut(self, history: tuple) -> tuple:
        history = history[max(0, len(history) - (self.lm.order - 1)):]
        while history and (history[0] < 0 or self.lm.find(np.array([history]))[0] < 0):
            history = history[1:]
        return history

    def next(self, history: tuple, word: int) -> tuple[float, tuple]:
        """(cost of LM word id ``word`` after ``history``, the history after it)."""
        key = (history, word)
        if key not in self.memo:
            log10p = self.lm.score(np.array([(*history, word)]))[0]
            self.memo[key] = (-LN10 * float(log10p), self.cut((*history, word)))
        return self.memo[key]


def rescore(lat: Lattice, old_lm, new_lm, lm_scale: float = 1.0, *,
            words: list[str] | None = None) -> Lattice:
    """Replace the old LM's costs by the new LM's in every path (Kaldi's ``lmrescore.sh``:
    ``lattice-lmrescore --lm-scale=-1`` with the old G, then ``--lm-scale=1`` with the new).

    Every path's graph cost becomes ``graph - lm_scale * old + lm_scale * new``, where
    ``old``/``new`` are the LMs' costs (-ln p) of its words followed by ``</s>``, after
    ``<s>``; ``lm_scale`` < 1 interpolates log-linearly between the two LMs. States are
    expanded exactly by the (old, new) LM histories reaching them, so the result has one
    state per (lattice state, history pair), topologically sorted as before.

    Parameters
    ----------
    lat : Lattice -- from a graph whose G is ``old_lm`` (e.g. ``arpa_fst``)
    old_lm, new_lm : asr.lm.NgramLM -- any orders; a word missing from an LM is its
        ``<unk>`` if it has one, else has probability 0 (``LOG10_ZERO``)
    words : list of str -- the graph's ``words.txt`` (word id -> word), e.g.
        ``DecodingGraph.words``; required to map the lattice's word ids to the LMs'
    """
    if words is None:
        raise ValueError("rescore needs words= (the graph's words.txt, word id -> word) to "
                         "look the lattice's words up in the LMs")
    if lat.num_states == 0:
        return lat
    if lat.num_arcs and int(lat.word.max()) >= len(words):
        raise ValueError(f"lattice word id {int(lat.word.max())} is not in words "
                         f"({len(words)} entries)")
    old, new = _LmCosts(old_lm, words), _LmCosts(new_lm, words)
    starts = np.searchsorted(lat.src, np.arange(lat.num_states + 1))
    pending: list[dict] = [dict() for _ in range(lat.num_states)]   # history pair -> state
    pending[0][(old.start, new.start)] = None
    state_of: list[int] = []       # new state -> lattice state
    hists: list[tuple] = []        # new state -> (old history, new history)
    arcs: list[tuple[int, int, tuple, int, float]] = []   # new src, lattice dst, key, arc, cost
    delta_memo: dict[tuple, tuple[float, tuple]] = {}
    for s in range(lat.num_states):
        for key in pending[s]:
            pending[s][key] = len(state_of)
            state_of.append(s)
            hists.append(key)
        for e in range(starts[s], starts[s + 1]):
            w, d = int(lat.word[e]), int(lat.dst[e])
            for key, here in pending[s].items():
                if w == 0:
                    arcs.append((here, d, key, e, 0.0))
                    pending[d].setdefault(key, None)
                    continue
                memo_key = (key, w)
                if memo_key not in delta_memo:
                    old_cost, old_next = old.next(key[0], int(old.ids[w]))
                    new_cost, new_next = new.next(key[1], int(new.ids[w]))
                    delta_memo[memo_key] = (lm_scale * (new_cost - old_cost), (old_next, new_next))
                delta, nxt = delta_memo[memo_key]
                arcs.append((here, d, nxt, e, delta))
                pending[d].setdefault(nxt, None)
    state_of_a = np.array(state_of, dtype=np.int64)
    final = lat.final_cost[state_of_a].astype(np.float64)
    for i, (ho, hn) in enumerate(hists):
        if final[i] < np.inf:
            final[i] += lm_scale * (new.next(hn, new.end)[0] - old.next(ho, old.end)[0])
    src = np.array([a[0] for a in arcs], dtype=np.int64)
    dst = np.array([pending[a[1]][a[2]] for a in arcs], dtype=np.int64)
    e = np.array([a[3] for a in arcs], dtype=np.int64)
    delta = np.array([a[4] for a in arcs], dtype=np.float64)
    order = np.argsort(src, kind="stable")
    src, dst, e, delta = src[order], dst[order], e[order], delta[order]
    return Lattice(lat.frames[state_of_a], final, src.astype(np.int32), dst.astype(np.int32),
                   lat.word[e], lat.ilabel[e], lat.graph_cost[e].astype(np.float64) + delta,
                   lat.acoustic_cost[e])
