"""Forward-backward over a graph of HMM states (compiled with numba).

Scores enter and leave in log space; inside, each frame's forward and backward vectors are
rescaled by their maximum with the scale kept as a log (so nothing under- or overflows),
which turns the per-arc work into multiply-adds. The hot loops run over arcs, so a
left-to-right training graph costs O(T * arcs), not O(T * N^2) as with a dense matrix.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from asr.hmm.graph import Graph
from asr.hmm.transitions import TransitionModel

NEG_INF = -np.inf


@numba.njit(cache=True)
def _rescale(values, loglik_row, pdf, out):
    """out[j] = values[j] * exp(loglik_row[pdf[j]]) / max_j(...); returns log of that max.

    Works on logs only per node, so nothing under- or overflows whatever the scale.
    """
    n = values.shape[0]
    peak = -np.inf
    for j in range(n):
        if values[j] > 0.0:
            v = np.log(values[j]) + loglik_row[pdf[j]]
            out[j] = v
            if v > peak:
                peak = v
        else:
            out[j] = -np.inf
    for j in range(n):
        out[j] = np.exp(out[j] - peak) if out[j] > -np.inf else 0.0
    return peak


@numba.njit(cache=True)
def _forward_backward(loglik, pdf, src, dst, w, start, final):
    """Forward-backward with per-frame rescaling; every scale factor is kept as a log.

    alpha[t] and beta[t] are stored divided by their frame maximum, so the recursions are
    plain multiply-adds over arcs (no log-add per arc); the log-likelihood is the sum of
    the logs of the scale factors.
    """
    T = loglik.shape[0]
    N = pdf.shape[0]
    A = src.shape[0]
    W = np.exp(w)
    alpha = np.zeros((T, N))
    log_scale = 0.0
    tmp = np.empty(N)
    for j in range(N):
        tmp[j] = np.exp(start[j]) if start[j] > -np.inf else 0.0
    # Start weights may be tiny; rescale them in log space too.
    smax = -np.inf
    for j in range(N):
        if start[j] > smax:
            smax = start[j]
    if smax == -np.inf:
        return -np.inf, np.zeros((T, N)), np.zeros(A), np.zeros(N)
    for j in range(N):
        tmp[j] = np.exp(start[j] - smax) if start[j] > -np.inf else 0.0
    log_scale = smax + _rescale(tmp, loglik[0], pdf, alpha[0])
    for t in range(1, T):
        tmp[:] = 0.0
        for a in range(A):
            tmp[dst[a]] += alpha[t - 1, src[a]] * W[a]
        peak = _rescale(tmp, loglik[t], pdf, alpha[t])
        if peak == -np.inf:
            return -np.inf, np.zeros((T, N)), np.zeros(A), np.zeros(N)
        log_scale += peak
    fmax = -np.inf
    for j in range(N):
        if final[j] > fmax:
            fmax = final[j]
    end = 0.0
    for j in range(N):
        if final[j] > -np.inf:
            end += alpha[T - 1, j] * np.exp(final[j] - fmax)
    if end <= 0.0 or fmax == -np.inf:
        return -np.inf, np.zeros((T, N)), np.zeros(A), np.zeros(N)
    total = log_scale + fmax + np.log(end)

    beta = np.zeros((T, N))
    for j in range(N):
        beta[T - 1, j] = np.exp(final[j] - fmax) if final[j] > -np.inf else 0.0
    gamma = np.zeros((T, N))
    arc_counts = np.zeros(A)
    final_counts = np.zeros(N)
    g = np.empty(N)
    xi = np.empty(A)
    z = 0.0
    for j in range(N):
        gamma[T - 1, j] = alpha[T - 1, j] * beta[T - 1, j]
        z += gamma[T - 1, j]
    for j in range(N):
        gamma[T - 1, j] /= z
        final_counts[j] = gamma[T - 1, j]
    for t in range(T - 2, -1, -1):
        # g = emission(t+1) * beta(t+1), rescaled; then beta(t) and the arc posteriors.
        _rescale(beta[t + 1], loglik[t + 1], pdf, g)
        tmp[:] = 0.0
        zx = 0.0
        for a in range(A):
            v = W[a] * g[dst[a]]
            tmp[src[a]] += v
            xi[a] = alpha[t, src[a]] * v
            zx += xi[a]
        for a in range(A):
            arc_counts[a] += xi[a] / zx
        bmax = 0.0
        for j in range(N):
            if tmp[j] > bmax:
                bmax = tmp[j]
        # Posteriors of frame t: alpha * beta, normalised (every frame's sum is P(O)).
        z = 0.0
        for j in range(N):
            beta[t, j] = tmp[j] / bmax
            gamma[t, j] = alpha[t, j] * beta[t, j]
            z += gamma[t, j]
        for j in range(N):
            gamma[t, j] /= z
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

    def pdf_posteriors(self, graph: Graph, num_pdfs: int) -> np.ndarray:
        """Occupation probability of each pdf per frame, shape (T, num_pdfs)."""
        out = np.zeros((self.node_posteriors.shape[0], num_pdfs))
        np.add.at(out.T, graph.pdf, self.node_posteriors.T)
        return out


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
