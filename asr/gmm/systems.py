"""Building GMM-HMM systems: a monophone from a flat start, a triphone on its alignments.

>>> mono, res = train_monophone(utts, lexicon, feature_cfg, HmmConfig(), GmmTrainConfig())  # doctest: +SKIP
>>> tri, res = train_triphone(utts, mono, GmmTrainConfig(num_leaves=200, num_iters=35))   # doctest: +SKIP
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np

from asr.decoder import DecoderConfig, align
from asr.features import FeatureConfig
from asr.gmm.diag_gmm import DiagGmm, flat_start
from asr.gmm.model import GmmAcousticModel
from asr.gmm.train import GmmTrainConfig, TrainResult, train_gmm_hmm
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


def train_monophone(utts: list[Utterance], lexicon: Lexicon, features: FeatureConfig,
                    hmm: HmmConfig, cfg: GmmTrainConfig, decoding: DecoderConfig | None = None,
                    progress: bool = True) -> tuple[AsrSystem, TrainResult]:
    """Flat start (global mean and variance for every state), then ``cfg.num_iters`` passes."""
    topo = Topology(len(lexicon.phones), hmm.states_per_phone, hmm.silence_states)
    tm = TransitionModel(topo, hmm.self_loop_prob)
    tree = ContextTree.monophone(topo)
    gmm = flat_start(np.concatenate([u.feats for u in utts]), tree.num_pdfs)
    result = train_gmm_hmm(utts, lexicon, tree, tm, gmm, cfg, progress, desc="mono")
    system = AsrSystem(features, lexicon, tree, result.tm, GmmAcousticModel(result.gmm),
                       decoding or DecoderConfig())
    return system, result


def align_utterances(system: AsrSystem, utts: list[Utterance], silence_prob: float = 0.5,
                     acoustic_scale: float = 0.1, beam: float = 10.0, retry_beam: float = 40.0
                     ) -> dict[str, tuple[np.ndarray, object]]:
    """Forced alignment of every utterance: utt -> (node path (T,), its training graph).

    Works for any acoustic model; utterances with no path are left out (and logged). The
    features must be ``system``'s model input (``system.model_input``, or
    ``Experiment.utterances(name, system)``), its feature transform applied.
    """
    out = {}
    for u in utts:
        graph = training_graph(u.words, system.lexicon, system.tree, system.tm, silence_prob)
        path = align(graph, system.tm, system.model.log_likelihoods(u.feats), acoustic_scale,
                     beam, retry_beam)
        if path is None:
            log.warning("no alignment for %s", u.utt)
            continue
        out[u.utt] = (path, graph)
    return out


def train_triphone(utts: list[Utterance], previous: AsrSystem, cfg: GmmTrainConfig,
                   decoding: DecoderConfig | None = None, progress: bool = True
                   ) -> tuple[AsrSystem, TrainResult]:
    """Grow a context tree on ``previous``'s alignments, then train a GMM per leaf."""
    if cfg.num_leaves <= 0:
        raise ValueError("a triphone system needs num_leaves > 0")
    alignments = align_utterances(previous, utts, cfg.silence_prob, cfg.align_acoustic_scale,
                                  cfg.align_beam, cfg.align_retry_beam)
    tree, gmm = grow_tree(utts, alignments, previous, cfg)
    tm = copy.deepcopy(previous.tm)
    result = train_gmm_hmm(utts, previous.lexicon, tree, tm, gmm, cfg, progress, desc="tri")
    system = AsrSystem(previous.features, previous.lexicon, tree, result.tm,
                       GmmAcousticModel(result.gmm), decoding or previous.decoding)
    return system, result


def grow_tree(utts: list[Utterance], alignments: dict[str, tuple[np.ndarray, object]],
              previous: AsrSystem, cfg: GmmTrainConfig) -> tuple[ContextTree, DiagGmm]:
    """A context tree of ``cfg.num_leaves`` leaves grown on ``utts``' features (T, D) labelled
    by ``previous``'s alignments (``align_utterances``), and one Gaussian per leaf."""
    dim = utts[0].feats.shape[1]
    stats = ContextStats(dim)
    for u in utts:
        if u.utt in alignments:
            path, graph = alignments[u.utt]
            stats.accumulate(graph.context[path], u.feats)
    topo = previous.tm.topology
    named = previous.lexicon.questions()
    if cfg.questions == "data":
        named = named + derived_questions(stats, previous.lexicon)
    questions = [q for _, q in named]
    log.info("tree questions: %d (%s)", len(questions), cfg.questions)
    variance = np.concatenate([u.feats for u in utts]).var(axis=0)
    tree, leaf_stats = build_tree(stats, topo, questions, cfg.num_leaves, cfg.tree_min_count,
                                  var_floor=cfg.var_floor * float(variance.min()))
    log.info("tree: %d leaves from %d seen contexts", tree.num_pdfs, len(stats.stats))
    return tree, _gmm_from_leaf_stats(leaf_stats, cfg.var_floor * variance)


def _gmm_from_leaf_stats(leaf_stats: np.ndarray, var_floor: np.ndarray) -> DiagGmm:
    """One Gaussian per leaf from pooled (count, sum, sum of squares) statistics."""
    dim = (leaf_stats.shape[1] - 1) // 2
    count = np.maximum(leaf_stats[:, :1], 1e-10)
    means = leaf_stats[:, 1:1 + dim] / count
    variances = np.maximum(leaf_stats[:, 1 + dim:] / count - means ** 2, var_floor)
    n = len(leaf_stats)
    return DiagGmm(means, variances, np.zeros(n), np.arange(n), n)
