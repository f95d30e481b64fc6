"""Viterbi beam search over a graph of HMM states (compiled with numba).

The search sees only a (frames x pdfs) log-likelihood matrix, the graph and its weights:
it never knows which acoustic model produced the scores.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _viterbi(loglik, pdf, src, dst, w, start, final, beam):
    T = loglik.shape[0]
    N = pdf.shape[0]
    A = src.shape[0]
    back = np.full((T, N), -1, dtype=np.int32)
    delta = np.full(N, -np.inf)
    for j in range(N):
        if start[j] > -np.inf:
            delta[j] = start[j] + loglik[0, pdf[j]]
    new = np.empty(N)
    for t in range(1, T):
        best = -np.inf
        for j in range(N):
            if delta[j] > best:
                best = delta[j]
        cutoff = best - beam
        new[:] = -np.inf
        for a in range(A):
            s = delta[src[a]]
            if s < cutoff or s == -np.inf:
                continue
            v = s + w[a]
            if v > new[dst[a]]:
                new[dst[a]] = v
                back[t, dst[a]] = a
        for j in range(N):
            if new[j] > -np.inf:
                new[j] += loglik[t, pdf[j]]
        delta[:] = new
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
    return _viterbi(np.ascontiguousarray(loglik, dtype=np.float64), pdf, arc_src, arc_dst,
                    arc_w, start, final, float(beam))
