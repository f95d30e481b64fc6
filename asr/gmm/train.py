"""GMM-HMM training: flat start, embedded Baum-Welch or Viterbi re-estimation, mixture growth.

One function trains both systems: a monophone (monophone tree, flat-start GMM) and a
triphone (a grown tree, GMM initialised from the tree's leaf statistics). Statistics come
either from forward-backward posteriors over each utterance's training graph ("baum-welch")
or from forced alignments, refreshed on ``realign_iters`` ("viterbi", Kaldi's schedule).
The first pass from a flat start is always Baum-Welch: equal Gaussians give a Viterbi path
nothing to choose by.

A ``feature_step`` may change the feature space during training (tri2b's MLLT): called each
iteration between the E-step and the accumulation of statistics, it returns a new GMM and
new features, or None to leave both as they are.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from tqdm import tqdm

from asr.decoder.decoder import align
from asr.errors import DataError
from asr.gmm.diag_gmm import DiagGmm
from asr.gmm.stats import GmmStats
from asr.gmm.update import mle_update, split_gaussians
from asr.hmm.forward_backward import forward_backward
from asr.hmm.graph import Graph, training_graph
from asr.hmm.transitions import TransitionModel
from asr.hmm.tree import ContextTree
from asr.lexicon import Lexicon
from asr.training import Utterance

log = logging.getLogger(__name__)

FeatureStep = Callable[[int, DiagGmm, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                       Optional[tuple[DiagGmm, np.ndarray]]]
"""``step(iteration, gmm, feats (T, D), frames (N,), pdfs (N,), weights (N,))``: the current
model and features, and this iteration's labels (frame ``frames[n]`` belongs to pdf
``pdfs[n]`` with weight ``weights[n]``). Returns ``(gmm, feats)`` in a new space, or None."""

KALDI_MONO_REALIGN = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 35, 38)


@dataclass
class GmmTrainConfig:
    """Settings of one GMM-HMM training run (a ``[mono]`` or ``[tri]`` table in a recipe)."""

    training: str = "viterbi"            # "viterbi" or "baum-welch"
    num_iters: int = 40
    max_gaussians: int = 1000            # total Gaussians reached by mixture splitting
    mixup_iters: int = 30                # Gaussians grow linearly over these iterations
    realign_iters: list[int] = field(default_factory=lambda: list(KALDI_MONO_REALIGN))
    num_leaves: int = 0                  # triphone tree size; 0 trains a monophone system
    tree_min_count: float = 50.0         # frames each tree leaf must keep
    questions: str = "classes"           # tree questions: "classes" (the lexicon's phonetic
                                         # classes) or "data" (those plus phone sets
                                         # clustered on the data, Kaldi's cluster-phones)
    min_gaussian_occ: float = 3.0
    min_posterior: float = 1e-5          # Baum-Welch: smaller state posteriors are dropped
    var_floor: float = 0.01              # variance floor, as a fraction of the global variance
    silence_prob: float = 0.5
    align_acoustic_scale: float = 0.1
    align_beam: float = 10.0
    align_retry_beam: float = 40.0

    def __post_init__(self):
        if self.training not in ("viterbi", "baum-welch"):
            raise ValueError(f"training must be 'viterbi' or 'baum-welch', got {self.training!r}")
        if self.questions not in ("classes", "data"):
            raise ValueError(f"questions must be 'classes' or 'data', got {self.questions!r}")
        if self.num_iters < 1 or self.max_gaussians < 1:
            raise ValueError("num_iters and max_gaussians must be positive")


@dataclass
class TrainResult:
    gmm: DiagGmm
    tm: TransitionModel
    graphs: dict[str, Graph]
    history: list[float]                   # average log-likelihood per frame, per iteration
    utts: list[Utterance]                  # with the final features (after any feature_step)
    cfg: GmmTrainConfig

    @functools.cached_property
    def alignments(self) -> dict[str, np.ndarray]:
        """utt -> (T,) node path in its training graph, by the final model.

        Computed on first use (one scoring pass over all frames): recipes that align later
        from the saved system do not pay for it.
        """
        cfg, final = self.cfg, {}
        for u in self.utts:
            path = align(self.graphs[u.utt], self.tm, self.gmm.log_likelihoods(u.feats),
                         cfg.align_acoustic_scale, cfg.align_beam, cfg.align_retry_beam)
            if path is not None:
                final[u.utt] = path
        return final


def path_transition_counts(graph: Graph, path: np.ndarray, num_tids: int) -> np.ndarray:
    """Count of each transition id along a node path (the exit after the last frame included)."""
    ts = graph.tstate[path]
    tids = 2 * ts[:-1] + (path[1:] != path[:-1])
    counts = np.bincount(tids, minlength=num_tids).astype(np.float64)
    counts[2 * ts[-1] + 1] += 1.0
    return counts


def train_gmm_hmm(utts: list[Utterance], lexicon: Lexicon, tree: ContextTree,
                  tm: TransitionModel, gmm: DiagGmm, cfg: GmmTrainConfig,
                  progress: bool = True, desc: str = "train",
                  feature_step: FeatureStep | None = None) -> TrainResult:
    """Re-estimate ``gmm`` and ``tm`` on ``utts`` for ``cfg.num_iters`` iterations.

    Each iteration scores all frames at once (large matrix products), runs forward-backward
    or alignment per utterance on slices of that matrix, and accumulates statistics from
    (frame, pdf, weight) triples grouped by pdf. ``feature_step`` (see :data:`FeatureStep`)
    may then move features and model to a new space before the statistics are gathered.
    """
    feats = np.concatenate([u.feats for u in utts]).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum([len(u.feats) for u in utts])])
    var_floor = cfg.var_floor * feats.astype(np.float64).var(axis=0)
    graphs = {u.utt: training_graph(u.words, lexicon, tree, tm, cfg.silence_prob) for u in utts}
    num_tids = 2 * tm.num_tstates
    mixup_step = max(0, cfg.max_gaussians - gmm.num_gauss) / max(1, cfg.mixup_iters)
    target = float(gmm.num_gauss)
    alignments: dict[str, np.ndarray] = {}
    history: list[float] = []
    flat = np.allclose(gmm.means, gmm.means[:1])
    bar = tqdm(range(1, cfg.num_iters + 1), desc=desc, disable=not progress, leave=False)
    for it in bar:
        tcounts = np.zeros(num_tids)
        baum_welch = cfg.training == "baum-welch" or (flat and it == 1)
        realign = not baum_welch and (not alignments or it in cfg.realign_iters)
        loglik = gmm.log_likelihoods(feats) if baum_welch or realign else None
        frames, pdfs, weights = [], [], []
        total_ll, failed = 0.0, []
        for i, u in enumerate(utts):
            graph, lo, hi = graphs[u.utt], offsets[i], offsets[i + 1]
            if baum_welch:
                post = forward_backward(graph, tm, loglik[lo:hi])
                if not np.isfinite(post.log_likelihood):
                    failed.append(u.utt)
                    continue
                t, n = np.nonzero(post.node_posteriors > cfg.min_posterior)
                frames.append(lo + t)
                pdfs.append(graph.pdf[n])
                weights.append(post.node_posteriors[t, n])
                tcounts += post.transition_counts(graph, num_tids)
                total_ll += post.log_likelihood
            else:
                if realign:
                    path = align(graph, tm, loglik[lo:hi], cfg.align_acoustic_scale,
                                 cfg.align_beam, cfg.align_retry_beam)
                    if path is None:
                        alignments.pop(u.utt, None)
                        failed.append(u.utt)
                        continue
                    alignments[u.utt] = path
                path = alignments.get(u.utt)
                if path is None:
                    continue
                frames.append(np.arange(lo, hi))
                pdfs.append(graph.pdf[path])
                weights.append(np.ones(hi - lo))
                tcounts += path_transition_counts(graph, path, num_tids)
        if not frames:
            raise DataError(None, f"no training utterance fits its graph (e.g. "
                            f"{', '.join(failed[:3])}): utterances shorter than their HMM "
                            "paths, or features that do not match the model")
        frames, pdfs, weights = (np.concatenate(frames), np.concatenate(pdfs),
                                 np.concatenate(weights))
        changed = feature_step(it, gmm, feats, frames, pdfs, weights) if feature_step else None
        if changed is not None:
            gmm, feats = changed
            feats = np.ascontiguousarray(feats, dtype=np.float32)
            var_floor = cfg.var_floor * feats.astype(np.float64).var(axis=0)
        stats = GmmStats(gmm.num_gauss, gmm.dim)
        stats.accumulate(gmm, feats, frames, pdfs, weights)
        if baum_welch:
            history.append(total_ll / max(stats.frames, 1.0))
        else:
            history.append(stats.log_likelihood / max(stats.frames, 1.0))
        if failed:
            log.warning("iteration %d: %d of %d utterances had no path through their graph "
                        "and were skipped (%s)", it, len(failed), len(utts),
                        ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else ""))
        gmm = mle_update(gmm, stats, var_floor, cfg.min_gaussian_occ)
        tm.update(tcounts)
        if it <= cfg.mixup_iters and mixup_step > 0:
            target += mixup_step
            pdf_occ = np.bincount(gmm.gauss_pdf, weights=stats.occ, minlength=gmm.num_pdfs)
            gmm = split_gaussians(gmm, pdf_occ, int(round(target)))
        log.info("%s iteration %d: %s log-likelihood per frame %.4f, %d Gaussians", desc, it,
                 "Baum-Welch" if baum_welch else "Viterbi", history[-1], gmm.num_gauss)
        bar.set_postfix(ll=f"{history[-1]:.3f}", gauss=gmm.num_gauss)
    if feature_step is not None:
        utts = [Utterance(u.utt, feats[offsets[i]:offsets[i + 1]], u.words)
                for i, u in enumerate(utts)]
    return TrainResult(gmm, tm, graphs, history, utts, cfg)
