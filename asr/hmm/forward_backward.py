"""Log-space forward-backward over a graph of HMM states (compiled with numba).

The hot loops run over arcs, so a left-to-right training graph costs O(T * arcs), not
O(T * N^2) as with a dense transition matrix.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from asr.hmm.graph import Graph
from asr.hmm.transitions import TransitionModel

NEG_INF = -np.inf


@numba.njit(cache=True, inline="always")
def _logadd(a, b):
    if a == -np.inf:
        return b
    if b == -np.inf:
        return a
    if a > b:
        return a + np.log1p(np.exp(b - a))
    return b + np.log1p(np.exp(a - b))


@numba.njit(cache=True)
def _forward_backward(loglik, pdf, src, dst, w, start, final):
    T = loglik.shape[0]
    N = pdf.shape[0]
    A = src.shape[0]
    alpha = np.full((T, N), -np.inf)
    for j in range(N):
        if start[j] > -np.inf:
            alpha[0, j] = start[j] + loglik[0, pdf[j]]
    for t in range(1, T):
        for a in range(A):
            s = alpha[t - 1, src[a]]
            if s > -np.inf:
                alpha[t, dst[a]] = _logadd(alpha[t, dst[a]], s + w[a])
        for j in range(N):
            if alpha[t, j] > -np.inf:
                alpha[t, j] += loglik[t, pdf[j]]
    total = -np.inf
    for j in range(N):
        total = _logadd(total, alpha[T - 1, j] + final[j])
    beta = np.full((T, N), -np.inf)
    for j in range(N):
        beta[T - 1, j] = final[j]
    arc_counts = np.zeros(A)
    for t in range(T - 2, -1, -1):
        for a in range(A):
            nb = beta[t + 1, dst[a]]
            if nb == -np.inf:
                continue
            v = w[a] + loglik[t + 1, pdf[dst[a]]] + nb
            beta[t, src[a]] = _logadd(beta[t, src[a]], v)
            f = alpha[t, src[a]]
            if f > -np.inf:
                arc_counts[a] += np.exp(f + v - total)
    gamma = np.zeros((T, N))
    for t in range(T):
        for j in range(N):
            v = alpha[t, j] + beta[t, j]
            if v > -np.inf:
                gamma[t, j] = np.exp(v - total)
    final_counts = np.zeros(N)
    for j in range(N):
        v = alpha[T - 1, j] + final[j]
        if v > -np.inf:
            final_counts[j] = np.exp(v - total)
    return total, gamma, arc_counts, final_counts


@dataclass
class Posteriors:
    """Result of forward-backward on one utterance.

    log_likelihood : float -- total log-likelihood of the utterance under the graph
    node_posteriors : (T, N) float64 -- occupation probability of each node per frame
    arc_counts : (A,) float64 -- expected number of times each arc is taken
    final_counts : (N,) float64 -- probability of ending in each node
    """

    log_likelihood: float
    node_posteriors: np.ndarray
    arc_counts: np.ndarray
    final_counts: np.ndarray

    def transition_counts(self, graph: Graph, num_tids: int) -> np.ndarray:
        """Expected count of each transition id, shape (num_tids,)."""
        counts = np.bincount(graph.arc_tid, weights=self.arc_counts, minlength=num_tids)
        ends = graph.final_tid >= 0
        counts += np.bincount(graph.final_tid[ends], weights=self.final_counts[ends],
                              minlength=num_tids)
        return counts



def forward_backward(graph: Graph, tm: TransitionModel, loglik: np.ndarray) -> Posteriors:
    """Run forward-backward for one utterance.

    Parameters
    ----------
    graph : Graph with N nodes and A arcs
    tm : TransitionModel giving the arc probabilities
    loglik : (T, num_pdfs) emission log-likelihoods

    Returns ``Posteriors``; ``log_likelihood`` is -inf if no path fits the frames.
    """
    arc_w, start, final = graph.weights(tm)
    return forward_backward_arcs(loglik, graph.pdf, graph.arc_src, graph.arc_dst, arc_w, start,
                                 final)


def forward_backward_arcs(loglik: np.ndarray, pdf: np.ndarray, arc_src: np.ndarray,
                          arc_dst: np.ndarray, arc_w: np.ndarray, start: np.ndarray,
                          final: np.ndarray) -> Posteriors:
    """Forward-backward over explicit arcs.

    loglik (T, P); pdf (N,) pdf of each node; arc_src, arc_dst, arc_w (A,); start, final (N,)
    log weights (use zeros in ``final`` for an HMM that may end in any state).
    """
    total, gamma, arcs, finals = _forward_backward(
        np.ascontiguousarray(loglik, dtype=np.float64), np.asarray(pdf, dtype=np.int32),
        np.asarray(arc_src, dtype=np.int32), np.asarray(arc_dst, dtype=np.int32),
        np.asarray(arc_w, dtype=np.float64), np.asarray(start, dtype=np.float64),
        np.asarray(final, dtype=np.float64))
    return Posteriors(float(total), gamma, arcs, finals)
