"""tri2b: a triphone system on LDA+MLLT features, as Kaldi's ``steps/train_lda_mllt.sh``.

From the previous system (tri1) and the base features (MFCC with CMN, no deltas):

1. align the training data with the previous system (its own model input);
2. splice the base features +-``splice`` frames and accumulate LDA statistics with the
   previous system's pdfs as classes (``acc-lda`` on the old alignment), silence frames
   weighted by ``silence_weight`` (Kaldi: 0); LDA to ``lda_dim`` dimensions (``est-lda``);
3. grow a context tree on the LDA features from the same alignments, one Gaussian per leaf;
4. train the GMM-HMM (``train_gmm_hmm``); at each of ``mllt_iters``, after that iteration's
   alignment, MLLT statistics from the current model and features (``gmm-acc-mllt``),
   ``A`` by Gales' update (``est-mllt``), means ``A mu`` (``gmm-transform-means``), features
   ``A y`` and the transform ``A @ previous`` (``compose-transforms``).

The result is an :class:`~asr.system.AsrSystem` whose ``features`` are the spliced base
features (deltas 0) and whose ``transform`` is the composed (lda_dim, 7 D) matrix, saved as
``transform.npz`` in the model directory; ``AsrSystem.model_input`` applies both.

>>> cfg = LdaMlltConfig(num_leaves=2000, max_gaussians=10000)               # doctest: +SKIP
>>> raw = ex.utterances("train", raw=True)                                  # doctest: +SKIP
>>> tri2b, res = train_lda_mllt(raw, ex.load_system("tri"), cfg, data.utt2spk)  # doctest: +SKIP
>>> res.mllt_aux[2]      # Q(A) per frame after each est-mllt pass  # doctest: +SKIP
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
import numpy as np

from pathlib import Path

from asr.decoder import DecoderConfig
from asr.gmm.accumulate import LdaRequest, MlltRequest, PassResult, PassTask, run_passes
from asr.gmm.diag_gmm import DiagGmm
from asr.gmm.model import GmmAcousticModel
from asr.gmm.source import FeatureView, UtteranceSource
from asr.gmm.systems import previous_labeller, system_view, tree_from_stats
from asr.gmm.train import GmmTrainConfig, TrainResult, _work_dir, as_source, train_gmm_hmm
from asr.hmm.tree import ContextTree
from asr.lexicon import SILENCE
from asr.system import AsrSystem
from asr.training import Utterance
from asr.transforms import (FeatureTransform, LdaStats, MlltStats, estimate_lda, estimate_mllt,
                            transform_means)

log = logging.getLogger(__name__)

KALDI_MLLT_ITERS = (2, 4, 6, 12)


@dataclass
class LdaMlltConfig(GmmTrainConfig):
    """Settings of tri2b (a ``[tri2b]`` table): a triphone's, plus the front end's.

    Defaults follow ``steps/train_lda_mllt.sh``: 35 iterations, realignment at 10, 20, 30,
    MLLT at 2, 4, 6, 12, +-3 frames spliced, LDA to 40 dimensions, silence weight 0.
    """

    num_iters: int = 35
    mixup_iters: int = 25
    realign_iters: list[int] = field(default_factory=lambda: [10, 20, 30])
    lda_dim: int = 40                    # at most the previous system's pdfs minus one
    mllt_iters: list[int] = field(default_factory=lambda: list(KALDI_MLLT_ITERS))
    splice: int = 3                      # frames of context each side (7 frames in all)
    silence_weight: float = 0.0          # of silence frames in the LDA and MLLT statistics
    mllt_passes: int = 10                # row-update passes of each estimate_mllt

    def __post_init__(self):
        super().__post_init__()
        if self.lda_dim < 1 or self.splice < 0 or self.mllt_passes < 1:
            raise ValueError("lda_dim and mllt_passes must be positive, splice >= 0")
        if not 0.0 <= self.silence_weight <= 1.0:
            raise ValueError(f"silence_weight must lie in [0, 1], got {self.silence_weight}")


@dataclass
class LdaMlltResult(TrainResult):
    """``TrainResult`` plus the front end's history.

    Attributes
    ----------
    lda : the LDA transform alone, (lda_dim, 7 D).
    transform : the final LDA+MLLT transform (the system's), (lda_dim, 7 D).
    mllt_aux : iteration -> Q(A) per frame at A = I, then after each row-update pass of
        ``estimate_mllt`` (never decreasing).
    """

    lda: FeatureTransform | None = None
    transform: FeatureTransform | None = None
    mllt_aux: dict[int, list[float]] = field(default_factory=dict)


def silence_pdfs(tree: ContextTree, phone: int = 0) -> np.ndarray:
    """(num_pdfs,) bool: the pdfs under ``phone``'s roots (0 is the silence phone)."""
    mask = np.zeros(tree.num_pdfs, dtype=bool)
    todo = [node for (p, _), node in tree.roots.items() if p == phone]
    while todo:
        node = tree.nodes[todo.pop()]
        if node.pdf >= 0:
            mask[node.pdf] = True
        else:
            todo += [node.yes, node.no]
    return mask


def train_lda_mllt(utts_raw: list[Utterance] | UtteranceSource, previous: AsrSystem,
                   cfg: GmmTrainConfig, utt2spk: dict[str, str] | None = None,
                   decoding: DecoderConfig | None = None, progress: bool = True,
                   executor=None, work_dir: str | Path | None = None
                   ) -> tuple[AsrSystem, LdaMlltResult]:
    """Train tri2b on ``previous``'s alignments; see the module docstring.

    Parameters
    ----------
    utts_raw : utterances with their base features (T, base_dim), as in the archive (e.g.
        ``Experiment.utterances(name, raw=True)``), or a source of them (an
        ``ArchiveSource``); CMVN is applied here, by ``previous``'s settings, with
        ``utt2spk`` (or the source's speakers) for per-speaker CMVN.
    previous : the system whose alignments give the LDA classes and the tree's statistics.
    cfg : an :class:`LdaMlltConfig` (a plain ``GmmTrainConfig`` gets its front-end defaults).
    executor, work_dir : see ``train_gmm_hmm``: every pass (alignment, LDA, tree and MLLT
        statistics, EM) runs as one job per part of the data.
    """
    if not isinstance(cfg, LdaMlltConfig):
        cfg = LdaMlltConfig(**dataclasses.asdict(cfg))
    if cfg.num_leaves <= 0:
        raise ValueError("an LDA+MLLT system needs num_leaves > 0")
    features = dataclasses.replace(previous.features, deltas=0, splice_left=cfg.splice,
                                   splice_right=cfg.splice)
    source = as_source(utts_raw, utt2spk)
    spliced = FeatureView(features)
    with _work_dir(work_dir) as work:
        parts = source.parts(executor.nj if executor is not None else 1)
        ali_dir = str(work / "ali_prev")
        label = previous_labeller(previous, system_view(previous), cfg)
        lda_req = LdaRequest(spliced, previous.tree.num_pdfs,
                             previous.lexicon.phones.index(SILENCE), cfg.silence_weight)
        total = run_passes([PassTask(k, part, label, ali_dir, lda=lda_req)
                            for k, part in enumerate(parts)], executor, "LDA statistics")
        if total.sums.total("label_frames") <= 0:
            raise ValueError("no training utterance could be aligned by the previous system")
        stats = LdaStats(*(total.sums.total(k) for k in ("lda_counts", "lda_first",
                                                          "lda_second")))
        lda = FeatureTransform(estimate_lda(stats, cfg.lda_dim))
        log.info("LDA: %d -> %d dimensions from %d classes, %.0f frames", lda.input_dim,
                 lda.dim, int(np.count_nonzero(stats.counts)), stats.total_count)
        view = spliced.followed_by(lda)
        saved = dataclasses.replace(label, mode="saved")
        total = run_passes([PassTask(k, part, saved, ali_dir, tree_view=view, moments_view=view)
                            for k, part in enumerate(parts)], executor, "tree statistics")
        tree, gmm = tree_from_stats(total, previous, cfg)
        step = _MlltStep(lda, set(cfg.mllt_iters), silence_pdfs(tree), cfg.silence_weight,
                         cfg.mllt_passes)
        result = train_gmm_hmm(source, previous.lexicon, tree, copy.deepcopy(previous.tm), gmm,
                               cfg, progress, desc="tri2b", feature_step=step,
                               executor=executor, view=view, work_dir=work)
    system = AsrSystem(features, previous.lexicon, tree, result.tm,
                       GmmAcousticModel(result.gmm), decoding or previous.decoding,
                       step.transform)
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(TrainResult)}
    return system, LdaMlltResult(**fields, lda=lda, transform=step.transform,
                                 mllt_aux=step.aux)


class _MlltStep:
    """The ``feature_step`` of ``train_gmm_hmm`` that re-estimates MLLT at given iterations."""

    def __init__(self, lda: FeatureTransform, iters: set[int], silence: np.ndarray,
                 silence_weight: float, passes: int):
        self.transform, self.iters, self.silence = lda, iters, silence
        self.silence_weight, self.passes = silence_weight, passes
        self.aux: dict[int, list[float]] = {}

    def wants(self, it: int) -> bool:
        return it in self.iters

    def request(self, it: int, gmm: DiagGmm, view: FeatureView) -> dict:
        return {"mllt": MlltRequest(self.silence, self.silence_weight)}

    def update(self, it: int, gmm: DiagGmm, view: FeatureView, total: PassResult
               ) -> tuple[DiagGmm, FeatureView]:
        stats = MlltStats(float(total.sums.total("mllt_beta")), total.sums.total("mllt_G"))
        A, aux = estimate_mllt(stats, iters=self.passes)
        self.aux[it] = [q / stats.beta for q in aux]
        log.info("MLLT at iteration %d: auxiliary per frame %.4f -> %.4f over %.0f frames", it,
                 self.aux[it][0], self.aux[it][-1], stats.beta)
        mllt = FeatureTransform(A)
        self.transform = self.transform.followed_by(mllt)
        return transform_means(gmm, A), view.followed_by(mllt)
