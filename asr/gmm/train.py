"""GMM-HMM training: flat start, embedded Baum-Welch or Viterbi re-estimation, mixture growth.

One function trains both systems: a monophone (monophone tree, flat-start GMM) and a
triphone (a grown tree, GMM initialised from the tree's leaf statistics). Statistics come
either from forward-backward posteriors over each utterance's training graph ("baum-welch")
or from forced alignments, refreshed on ``realign_iters`` ("viterbi", Kaldi's schedule).
The first pass from a flat start is always Baum-Welch: equal Gaussians give a Viterbi path
nothing to choose by.

Each iteration is a pass of jobs (``asr.gmm.accumulate``), one per part of the data split
by speaker, run in this process or through an ``asr.jobs.Executor``: each job reads its own
utterances (``asr.gmm.source``), labels them, and returns exact sums of its statistics;
the driver adds them (the same bits for any number of jobs) and updates the model. The
driver holds the model and the statistics, never the features; alignments are saved per
part in the run's folder.

A ``feature_step`` (:class:`FeatureStep`) may change the feature space at some iterations
(tri2b's MLLT, tri3b's fMLLR): a first pass gathers its statistics under the current
model, the step returns a new model and :class:`~asr.gmm.source.FeatureView`, and a second
pass gathers the GMM statistics on the new features with the same frame labels.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from asr.errors import DataError
from asr.gmm.accumulate import (Labeller, PassResult, PassTask, load_alignments,
                                path_transition_counts, run_passes)
from asr.gmm.diag_gmm import DiagGmm
from asr.gmm.source import FeatureView, MemorySource, UtteranceSource
from asr.gmm.update import mle_update, split_gaussians
from asr.hmm.graph import Graph, training_graph
from asr.hmm.transitions import TransitionModel
from asr.hmm.tree import ContextTree
from asr.lexicon import Lexicon
from asr.training import Utterance

log = logging.getLogger(__name__)

__all__ = ["FeatureStep", "GmmTrainConfig", "TrainResult", "path_transition_counts",
           "train_gmm_hmm", "as_source", "KALDI_MONO_REALIGN"]


class FeatureStep(Protocol):
    """A change of feature space during training (see the module docstring)."""

    def wants(self, iteration: int) -> bool:
        """Whether this iteration changes the features."""

    def request(self, iteration: int, gmm: DiagGmm, view: FeatureView) -> dict[str, Any]:
        """What the first pass's jobs accumulate: ``PassTask`` fields (``mllt`` or
        ``fmllr``)."""

    def update(self, iteration: int, gmm: DiagGmm, view: FeatureView, stats: PassResult
               ) -> tuple[DiagGmm, FeatureView]:
        """The model and features in the new space, from the first pass's statistics."""


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
    cross_word: bool | None = None       # a new tree's contexts span word boundaries
                                         # (Kaldi's); None: as the previous tree's
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
    """A trained GMM-HMM and how it was trained.

    Attributes
    ----------
    gmm, tm : the final model and transitions.
    history : average log-likelihood per frame, per iteration.
    cfg : the settings.
    source, view : the training utterances and the final features' view (after any
        feature step).
    lexicon, tree : the HMMs' lexicon and tree.
    """

    gmm: DiagGmm
    tm: TransitionModel
    history: list[float]
    cfg: GmmTrainConfig
    source: UtteranceSource
    view: FeatureView
    lexicon: Lexicon
    tree: ContextTree

    @functools.cached_property
    def utts(self) -> list[Utterance]:
        """The training utterances with their final features (read on first use)."""
        out = []
        for spk, utts in self.source.speakers():
            feats = self.view.apply(spk, {u: f for u, f, _ in utts})
            out += [Utterance(u, feats[u], words) for u, _, words in utts]
        return sorted(out, key=lambda u: u.utt)

    @functools.cached_property
    def graphs(self) -> dict[str, Graph]:
        """utt -> training graph (built on first use)."""
        return {u.utt: training_graph(u.words, self.lexicon, self.tree, self.tm,
                                      self.cfg.silence_prob) for u in self.utts}

    @functools.cached_property
    def alignments(self) -> dict[str, np.ndarray]:
        """utt -> (T,) node path in its training graph, by the final model.

        Computed on first use (one alignment pass, in this process): recipes that align
        later from the saved system do not pay for it.
        """
        with tempfile.TemporaryDirectory() as tmp:
            return final_alignments(self, tmp)


def final_alignments(result: TrainResult, ali_dir: str | Path, executor=None
                     ) -> dict[str, np.ndarray]:
    """Align ``result``'s training data with its final model into ``ali_dir`` (one
    ``ali.<k>.npz`` per part); returns utt -> (T,) node path."""
    parts = result.source.parts(executor.nj if executor is not None else 1)
    label = _labeller(result.gmm, result.view, result.lexicon, result.tree, result.tm,
                      result.cfg, "align")
    run_passes([PassTask(k, part, label, str(ali_dir)) for k, part in enumerate(parts)],
               executor, "align")
    out = {}
    for k in range(len(parts)):
        out.update(load_alignments(ali_dir, k))
    return out


def as_source(utts: list[Utterance] | UtteranceSource,
              utt2spk: dict[str, str] | None = None) -> UtteranceSource:
    """A list of utterances as a :class:`MemorySource`; a source as it is."""
    if isinstance(utts, UtteranceSource):
        return utts
    return MemorySource(list(utts), utt2spk)


def _labeller(gmm, view, lexicon, tree, tm, cfg: GmmTrainConfig, mode: str) -> Labeller:
    return Labeller(gmm, view, lexicon, tree, tm, mode, cfg.silence_prob,
                    cfg.align_acoustic_scale, cfg.align_beam, cfg.align_retry_beam,
                    cfg.min_posterior)


@contextlib.contextmanager
def _work_dir(work_dir: str | Path | None):
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        yield Path(work_dir).resolve()
        return
    with tempfile.TemporaryDirectory(prefix="asr-gmm-") as tmp:
        yield Path(tmp)


def _views_for(parts: list[UtteranceSource], view: FeatureView) -> list[FeatureView]:
    """Each part's view, carrying only its own speakers' fMLLR transforms."""
    if view.fmllr is None:
        return [view] * len(parts)
    return [view.for_speakers(set(part.speaker_ids())) for part in parts]


def train_gmm_hmm(utts: list[Utterance] | UtteranceSource, lexicon: Lexicon,
                  tree: ContextTree, tm: TransitionModel, gmm: DiagGmm, cfg: GmmTrainConfig,
                  progress: bool = True, desc: str = "train",
                  feature_step: FeatureStep | None = None, executor=None,
                  view: FeatureView | None = None, work_dir: str | Path | None = None
                  ) -> TrainResult:
    """Re-estimate ``gmm`` and ``tm`` on ``utts`` for ``cfg.num_iters`` iterations.

    Parameters
    ----------
    utts : utterances in memory (features (T, D) as the model sees them), or a source
        (``asr.gmm.source``) whose features ``view`` turns into the model's.
    executor : runs each pass's jobs, one per part of the data (``executor.nj`` parts);
        None: one job in this process. The model is the same for every ``nj``.
    view : the features' view (default: none, the features as they are).
    work_dir : where each part's alignments are kept (default: a temporary folder).
    feature_step : see :class:`FeatureStep`.
    """
    source = as_source(utts)
    view = view or FeatureView()
    parts = source.parts(executor.nj if executor is not None else 1)
    mixup_step = max(0, cfg.max_gaussians - gmm.num_gauss) / max(1, cfg.mixup_iters)
    target = float(gmm.num_gauss)
    history: list[float] = []
    flat = np.allclose(gmm.means, gmm.means[:1])
    var_floor = None
    aligned = False
    bar = tqdm(range(1, cfg.num_iters + 1), desc=desc, disable=not progress, leave=False)
    with _work_dir(work_dir) as work:
        ali_dir = str(work / "ali")
        for it in bar:
            baum_welch = cfg.training == "baum-welch" or (flat and it == 1)
            realign = not baum_welch and (not aligned or it in cfg.realign_iters)
            mode = "baum-welch" if baum_welch else "align" if realign else "saved"
            label = _labeller(gmm, view, lexicon, tree, tm, cfg, mode)
            failed: list[str] = []
            stats_gmm, stats_view = gmm, view
            if feature_step is not None and feature_step.wants(it):
                extra = feature_step.request(it, gmm, view)
                first = run_passes([PassTask(k, part, replace(label, view=v), ali_dir, **extra)
                                    for k, (part, v) in enumerate(zip(parts,
                                                                      _views_for(parts, view)))],
                                   executor, f"{desc} {it} features")
                failed += first.failed
                stats_gmm, stats_view = feature_step.update(it, gmm, view, first)
                if mode == "align":
                    label = replace(label, mode="saved")
            changed = var_floor is None or stats_view is not view
            label_views = _views_for(parts, view)
            stats_views = _views_for(parts, stats_view)
            tasks = [PassTask(k, part, replace(label, view=lv), ali_dir, gmm=stats_gmm,
                              gmm_view=lv if stats_view is view else sv,
                              moments_view=(lv if stats_view is view else sv) if changed
                              else None)
                     for k, (part, lv, sv) in enumerate(zip(parts, label_views, stats_views))]
            total = run_passes(tasks, executor, f"{desc} {it}")
            failed += total.failed
            aligned = aligned or mode == "align"
            gmm, view = stats_gmm, stats_view
            if changed:
                var_floor = cfg.var_floor * total.moments()[2]
            stats = total.gmm_stats(gmm.num_gauss, gmm.dim)
            if stats.frames <= 0:
                raise DataError(None, f"no training utterance fits its graph (e.g. "
                                f"{', '.join(sorted(failed)[:3])}): utterances shorter than "
                                "their HMM paths, or features that do not match the model")
            if baum_welch:
                history.append(float(total.sums.total("label_ll")) / max(stats.frames, 1.0))
            else:
                history.append(stats.log_likelihood / max(stats.frames, 1.0))
            if failed:
                failed = sorted(set(failed))
                log.warning("iteration %d: %d of %d utterances had no path through their "
                            "graph and were skipped (%s)", it, len(failed), total.utts,
                            ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else ""))
            gmm = mle_update(gmm, stats, var_floor, cfg.min_gaussian_occ)
            tm.update(total.sums.total("tcounts"))
            if it <= cfg.mixup_iters and mixup_step > 0:
                target += mixup_step
                pdf_occ = np.bincount(gmm.gauss_pdf, weights=stats.occ, minlength=gmm.num_pdfs)
                gmm = split_gaussians(gmm, pdf_occ, int(round(target)))
            log.info("%s iteration %d: %s log-likelihood per frame %.4f, %d Gaussians", desc,
                     it, "Baum-Welch" if baum_welch else "Viterbi", history[-1], gmm.num_gauss)
            bar.set_postfix(ll=f"{history[-1]:.3f}", gauss=gmm.num_gauss)
    return TrainResult(gmm, tm, history, cfg, source, view, lexicon, tree)
