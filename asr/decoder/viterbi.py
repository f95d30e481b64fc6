"""Viterbi beam search over a graph of HMM states (compiled with numba).

The search sees only a (frames x pdfs) log-likelihood matrix, the graph and its weights:
it never knows which acoustic model produced the scores.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _viterbi(loglik, pdf, src, dst, w, arc_start, start, final, beam):
    """Arcs sorted by source; ``arc_start[n]:arc_start[n+1]`` are the arcs leaving node n.

    Only nodes within ``beam`` of the frame's best are expanded, and only the range of node
    ids that holds them is scanned, so a long left-to-right training graph costs about
    O(T * active states) rather than O(T * arcs).
    """
    T = loglik.shape[0]
    N = pdf.shape[0]
    back = np.full((T, N), -1, dtype=np.int32)
    delta = np.full(N, -np.inf)
    lo, hi = N, -1
    for j in range(N):
        if start[j] > -np.inf:
            delta[j] = start[j] + loglik[0, pdf[j]]
            lo = min(lo, j)
            hi = max(hi, j)
    new = np.full(N, -np.inf)
    for t in range(1, T):
        best = -np.inf
        for j in range(lo, hi + 1):
            if delta[j] > best:
                best = delta[j]
        cutoff = best - beam
        new_lo, new_hi = N, -1
        for n in range(lo, hi + 1):
            s = delta[n]
            if s < cutoff or s == -np.inf:
                continue
            for a in range(arc_start[n], arc_start[n + 1]):
                d = dst[a]
                v = s + w[a]
                if v > new[d]:
                    if new[d] == -np.inf:
                        new_lo = min(new_lo, d)
                        new_hi = max(new_hi, d)
                    new[d] = v
                    back[t, d] = a
        for j in range(lo, hi + 1):
            delta[j] = -np.inf
        for j in range(new_lo, new_hi + 1):
            if new[j] > -np.inf:
                delta[j] = new[j] + loglik[t, pdf[j]]
                new[j] = -np.inf
        lo, hi = new_lo, new_hi
        if hi < 0:
            break
    best = -np.inf
    end = -1
    for j in range(N):
        v = delta[j] + final[j]
        if v > best:
            best = v
            end = j
    path = np.full(T, -1, dtype=np.int32)
    if end < 0:
        return best, path
    path[T - 1] = end
    for t in range(T - 1, 0, -1):
        a = back[t, path[t]]
        path[t - 1] = src[a]
    return best, path


def viterbi(loglik: np.ndarray, pdf: np.ndarray, arc_src: np.ndarray, arc_dst: np.ndarray,
            arc_w: np.ndarray, start: np.ndarray, final: np.ndarray,
            beam: float = np.inf) -> tuple[float, np.ndarray]:
    """Best path through a graph.

    Parameters
    ----------
    loglik : (T, P) scaled acoustic log-likelihoods
    pdf : (N,) pdf id of each node
    arc_src, arc_dst : (A,) arcs; arc_w : (A,) their log weights
    start, final : (N,) log weights of starting and ending in each node
    beam : states further than ``beam`` below the frame's best are pruned

    Returns (score, path); path is (T,) node ids, all -1 when no path survives.
    """
    if loglik.shape[0] == 0:
        return -np.inf, np.zeros(0, dtype=np.int32)
    order = np.argsort(arc_src, kind="stable")
    arc_start = np.searchsorted(arc_src[order], np.arange(len(pdf) + 1)).astype(np.int64)
    src, dst = arc_src[order], arc_dst[order]
    score, path = _viterbi(np.ascontiguousarray(loglik, dtype=np.float64), pdf, src, dst,
                           np.asarray(arc_w, dtype=np.float64)[order], arc_start, start, final,
                           float(beam))
    return score, path
