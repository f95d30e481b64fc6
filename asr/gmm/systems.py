"""Building GMM-HMM systems: a monophone from a flat start, a triphone on its alignments.

>>> mono, res = train_monophone(utts, lexicon, feature_cfg, HmmConfig(), GmmTrainConfig())  # doctest: +SKIP
>>> tri, res = train_triphone(utts, mono, GmmTrainConfig(num_leaves=200, num_iters=35))   # doctest: +SKIP
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asr.decoder import DecoderConfig, align
from asr.features import FeatureConfig
from asr.adaptation import gmm_of
from asr.gmm.accumulate import (Labeller, PassResult, PassTask, graph_log_likelihoods,
                                run_passes)
from asr.gmm.diag_gmm import DiagGmm, flat_start_from
from asr.gmm.model import GmmAcousticModel
from asr.gmm.source import FeatureView, MemorySource, UtteranceSource
from asr.gmm.train import GmmTrainConfig, TrainResult, _work_dir, as_source, train_gmm_hmm
from asr.hmm.graph import training_graph
from asr.hmm.questions import derived_questions
from asr.hmm.transitions import Topology, TransitionModel
from asr.hmm.tree import ContextStats, ContextTree, build_tree
from asr.lexicon import Lexicon
from asr.system import AsrSystem
from asr.training import Utterance

log = logging.getLogger(__name__)


@dataclass
class HmmConfig:
    """HMM topology: emitting states per phone (silence separately), initial self-loop."""

    states_per_phone: int = 3
    silence_states: int = 5
    self_loop_prob: float = 0.75

    def __post_init__(self):
        if self.states_per_phone < 1 or self.silence_states < 1:
            raise ValueError("phones need at least one state")
        if not 0.0 < self.self_loop_prob < 1.0:
            raise ValueError("self_loop_prob must lie strictly between 0 and 1")


def system_view(system: AsrSystem) -> FeatureView:
    """Base features (an archive's) -> ``system``'s model input: its pipeline, then its
    feature transform (``AsrSystem.model_input``)."""
    return FeatureView(system.features, () if system.transform is None else (system.transform,))


def _source_and_view(utts, system_or_features, view: FeatureView | None
                     ) -> tuple[UtteranceSource, FeatureView]:
    """A list of utterances holds model features already (no view); a source holds base
    features, turned into the model's by ``system_or_features`` unless ``view`` says."""
    source = as_source(utts)
    if view is not None:
        return source, view
    if isinstance(source, MemorySource):
        return source, FeatureView()
    if isinstance(system_or_features, AsrSystem):
        return source, system_view(system_or_features)
    return source, FeatureView(system_or_features)


def _nj(executor) -> int:
    return executor.nj if executor is not None else 1


def feature_moments(source: UtteranceSource, view: FeatureView, executor=None
                    ) -> tuple[float, np.ndarray, np.ndarray]:
    """(frames, mean (D,), variance (D,)) of ``view``'s features of ``source``: one pass
    of jobs, exact sums."""
    parts = source.parts(_nj(executor))
    label = Labeller(None, view, None, None, None, "none")
    total = run_passes([PassTask(k, part, label, "", moments_view=view)
                        for k, part in enumerate(parts)], executor, "moments")
    return total.moments()


def train_monophone(utts: list[Utterance] | UtteranceSource, lexicon: Lexicon,
                    features: FeatureConfig, hmm: HmmConfig, cfg: GmmTrainConfig,
                    decoding: DecoderConfig | None = None, progress: bool = True,
                    executor=None, work_dir: str | Path | None = None
                    ) -> tuple[AsrSystem, TrainResult]:
    """Flat start (global mean and variance for every state), then ``cfg.num_iters`` passes.

    ``utts``: utterances with their model features, or a source of base features (e.g. an
    :class:`~asr.gmm.source.ArchiveSource`) that ``features``' pipeline turns into them.
    ``executor`` and ``work_dir``: see ``train_gmm_hmm``.
    """
    source, view = _source_and_view(utts, features, None)
    topo = Topology(len(lexicon.phones), hmm.states_per_phone, hmm.silence_states)
    tm = TransitionModel(topo, hmm.self_loop_prob)
    tree = ContextTree.monophone(topo, lexicon.shared_roots())
    _, mean, var = feature_moments(source, view, executor)
    gmm = flat_start_from(mean, var, tree.num_pdfs)
    result = train_gmm_hmm(source, lexicon, tree, tm, gmm, cfg, progress, desc="mono",
                           executor=executor, view=view, work_dir=work_dir)
    system = AsrSystem(features, lexicon, tree, result.tm, GmmAcousticModel(result.gmm),
                       decoding or DecoderConfig())
    return system, result


def align_utterances(system: AsrSystem, utts: list[Utterance], silence_prob: float = 0.5,
                     acoustic_scale: float = 0.1, beam: float = 10.0, retry_beam: float = 40.0,
                     progress: bool = False) -> dict[str, tuple[np.ndarray, object]]:
    """Forced alignment of every utterance: utt -> (node path (T,), its training graph).

    Works for any acoustic model; utterances with no path are left out (and logged). The
    features must be ``system``'s model input (``system.model_input``, or
    ``Experiment.utterances(name, system)``), its feature transform applied.
    """
    out = {}
    gmm = getattr(system.model, "gmm", None)
    for u in tqdm(utts, desc="align", disable=not progress, leave=False):
        graph = training_graph(u.words, system.lexicon, system.tree, system.tm, silence_prob)
        scored, loglik = ((graph, system.model.log_likelihoods(u.feats)) if gmm is None
                          else graph_log_likelihoods(gmm, graph, u.feats))  # its pdfs only
        path = align(scored, system.tm, loglik, acoustic_scale, beam, retry_beam)
        if path is None:
            log.warning("no alignment for %s", u.utt)
            continue
        out[u.utt] = (path, graph)
    return out


def previous_labeller(previous: AsrSystem, view: FeatureView, cfg: GmmTrainConfig,
                      mode: str = "align") -> Labeller:
    """Labels from ``previous``'s alignments of ``view``'s features (its model input)."""
    return Labeller(gmm_of(previous.model), view, previous.lexicon, previous.tree,
                    previous.tm, mode, cfg.silence_prob, cfg.align_acoustic_scale,
                    cfg.align_beam, cfg.align_retry_beam,
                    cross_word=new_tree_cross_word(previous, cfg))


def new_tree_cross_word(previous: AsrSystem, cfg: GmmTrainConfig) -> bool:
    """Whether the tree grown on ``previous``'s alignments spans word boundaries: as
    ``cfg.cross_word`` says, or as ``previous``'s tree (word-internal after a monophone).
    The alignments that gather its statistics use contexts of the same kind."""
    return previous.tree.cross_word if cfg.cross_word is None else cfg.cross_word


def train_triphone(utts: list[Utterance] | UtteranceSource, previous: AsrSystem,
                   cfg: GmmTrainConfig, decoding: DecoderConfig | None = None,
                   progress: bool = True, executor=None, work_dir: str | Path | None = None
                   ) -> tuple[AsrSystem, TrainResult]:
    """Grow a context tree on ``previous``'s alignments, then train a GMM per leaf.

    ``utts``: utterances with ``previous``'s model input, or a source of base features
    (``previous``'s front end applies). ``executor``, ``work_dir``: see ``train_gmm_hmm``.
    """
    if cfg.num_leaves <= 0:
        raise ValueError("a triphone system needs num_leaves > 0")
    source, view = _source_and_view(utts, previous, None)
    with _work_dir(work_dir) as work:
        tree, gmm = grow_triphone_tree(source, view, previous, cfg, executor, work)
        tm = copy.deepcopy(previous.tm)
        result = train_gmm_hmm(source, previous.lexicon, tree, tm, gmm, cfg, progress,
                               desc="tri", executor=executor, view=view, work_dir=work)
    system = AsrSystem(previous.features, previous.lexicon, tree, result.tm,
                       GmmAcousticModel(result.gmm), decoding or previous.decoding)
    return system, result


def grow_triphone_tree(source: UtteranceSource, view: FeatureView, previous: AsrSystem,
                       cfg: GmmTrainConfig, executor=None, work_dir: str | Path | None = None
                       ) -> tuple[ContextTree, DiagGmm]:
    """One pass of jobs aligning ``source`` with ``previous`` (``view``: its model input)
    and gathering tree statistics, then the tree and its one-Gaussian-per-leaf GMM."""
    with _work_dir(work_dir) as work:
        parts = source.parts(_nj(executor))
        label = previous_labeller(previous, view, cfg)
        total = run_passes([PassTask(k, part, label, str(work / "ali_prev"), tree_view=view,
                                     moments_view=view) for k, part in enumerate(parts)],
                           executor, "tree statistics")
    _warn_unaligned(total)
    return tree_from_stats(total, previous, cfg)


def _warn_unaligned(total: PassResult) -> None:
    for utt in sorted(total.failed):
        log.warning("no alignment for %s", utt)


def tree_from_stats(total: PassResult, previous: AsrSystem, cfg: GmmTrainConfig
                    ) -> tuple[ContextTree, DiagGmm]:
    """A context tree of ``cfg.num_leaves`` leaves from a pass's tree statistics and feature
    moments, and one Gaussian per leaf (see :func:`grow_triphone_tree`)."""
    return _build(total.context_stats(), total.moments()[2], previous, cfg)


def _build(stats: ContextStats, variance: np.ndarray, previous: AsrSystem,
           cfg: GmmTrainConfig) -> tuple[ContextTree, DiagGmm]:
    topo = previous.tm.topology
    named = previous.lexicon.questions()
    if cfg.questions == "data":
        named = named + derived_questions(stats, previous.lexicon)
    questions = [q for _, q in named]
    log.info("tree questions: %d (%s)", len(questions), cfg.questions)
    tree, leaf_stats = build_tree(stats, topo, questions, cfg.num_leaves, cfg.tree_min_count,
                                  var_floor=cfg.var_floor * float(variance.min()),
                                  shared=previous.lexicon.shared_roots())
    tree.cross_word = new_tree_cross_word(previous, cfg)
    log.info("tree: %d leaves from %d seen %s contexts", tree.num_pdfs, len(stats.stats),
             "cross-word" if tree.cross_word else "word-internal")
    return tree, _gmm_from_leaf_stats(leaf_stats, cfg.var_floor * variance)


def _gmm_from_leaf_stats(leaf_stats: np.ndarray, var_floor: np.ndarray) -> DiagGmm:
    """One Gaussian per leaf from pooled (count, sum, sum of squares) statistics."""
    dim = (leaf_stats.shape[1] - 1) // 2
    count = np.maximum(leaf_stats[:, :1], 1e-10)
    means = leaf_stats[:, 1:1 + dim] / count
    variances = np.maximum(leaf_stats[:, 1 + dim:] / count - means ** 2, var_floor)
    n = len(leaf_stats)
    return DiagGmm(means, variances, np.zeros(n), np.arange(n), n)
