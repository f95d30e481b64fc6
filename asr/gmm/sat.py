"""tri3b: speaker-adaptive training (SAT) with fMLLR, as Kaldi's ``steps/train_sat.sh``.

From the previous system (tri2b; its front end, LDA+MLLT, is kept as it is):

1. align the training data with the previous system on its own model input (the
   speaker-independent, "SI", features);
2. one fMLLR transform per speaker from those alignments under the previous GMM, silence
   frames weighted by ``silence_weight`` (Kaldi: 0);
3. grow a context tree on the adapted features from the same alignments;
4. train the GMM-HMM on adapted features (``train_gmm_hmm``); at each of ``fmllr_iters``
   (Kaldi: 2, 4, 6, 12), after that iteration's alignment, re-estimate every speaker's
   transform under the current model (Gaussian posteriors on the current adapted features,
   statistics on the SI ones, starting from the current transform) and re-adapt;
5. the "alignment model" (Kaldi's ``final.alimdl``): the final GMM re-estimated once on the
   SI features with the Gaussian posteriors of the adapted ones (``gmm-acc-stats-twofeats``),
   the first pass of adapted decoding.

The result is an :class:`~asr.system.AsrSystem` with the previous system's front end
(``transform.npz``), a ``SpeakerAdaptation`` (``adaptation.json``, ``si_acoustic/``), and
decoding through ``AsrSystem.adapt`` (``asr.adaptation``).

>>> cfg = SatConfig(num_leaves=2000, max_gaussians=10000)                   # doctest: +SKIP
>>> raw = ex.utterances("train", raw=True)                                  # doctest: +SKIP
>>> tri3b, res = train_sat(raw, ex.load_system("tri2b"), cfg, data.utt2spk)  # doctest: +SKIP
>>> res.fmllr_aux[4]["spk1"]     # Q per frame, then after each pass  # doctest: +SKIP
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr.adaptation import apply_speaker_transforms, gmm_of, speaker_transforms, spk2utt_of
from asr.decoder import DecoderConfig
from asr.gmm.diag_gmm import DiagGmm
from asr.gmm.accumulate import FmllrRequest, Labeller, PassResult, PassTask, run_passes
from asr.gmm.lda_mllt import silence_pdfs
from asr.gmm.model import GmmAcousticModel
from asr.gmm.source import FeatureView, MemorySource, UtteranceSource
from asr.gmm.systems import align_utterances, previous_labeller, system_view, tree_from_stats
from asr.gmm.train import (GmmTrainConfig, TrainResult, _views_for, _work_dir, as_source,
                           train_gmm_hmm)
from asr.gmm.update import mle_update
from asr.system import AsrSystem, SpeakerAdaptation
from asr.training import Utterance
from asr.transforms.fmllr import DEFAULT_ITERS, DEFAULT_MIN_COUNT

log = logging.getLogger(__name__)

KALDI_FMLLR_ITERS = (2, 4, 6, 12)


@dataclass
class SatConfig(GmmTrainConfig):
    """Settings of tri3b (a ``[tri3b]`` table): a triphone's, plus fMLLR's.

    Defaults follow ``steps/train_sat.sh`` and ``steps/decode_fmllr.sh``: 35 iterations,
    realignment at 10, 20, 30, fMLLR at 2, 4, 6, 12, silence weight 0 in training and 0.01
    when decoding, and at test time a second estimate of each transform from the adapted
    pass (``decode_refinements``, see ``asr.adaptation``).
    """

    num_iters: int = 35
    mixup_iters: int = 25
    realign_iters: list[int] = field(default_factory=lambda: [10, 20, 30])
    fmllr_iters: list[int] = field(default_factory=lambda: list(KALDI_FMLLR_ITERS))
    silence_weight: float = 0.0          # of silence frames in training's fMLLR statistics
    decode_silence_weight: float = 0.01  # the same at test time (first-pass best paths)
    decode_refinements: int = 1          # test-time re-estimates from the adapted pass
    fmllr_min_count: float = DEFAULT_MIN_COUNT   # frames; below it a speaker keeps identity
    fmllr_passes: int = DEFAULT_ITERS    # row-update passes of each estimate
    alignment_model: bool = True         # train the SI first-pass model (final.alimdl)

    def __post_init__(self):
        super().__post_init__()
        if self.fmllr_min_count < 0 or self.fmllr_passes < 1 or self.decode_refinements < 0:
            raise ValueError("fmllr_min_count and decode_refinements must be >= 0 and "
                             "fmllr_passes positive")
        for name in ("silence_weight", "decode_silence_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")


@dataclass
class SatResult(TrainResult):
    """``TrainResult`` plus the speakers' transforms and their history.

    Attributes
    ----------
    initial_transforms : speaker -> W (D, D+1) from the previous system's alignments.
    transforms : speaker -> W (D, D+1) after the last re-estimation (the training data's).
    fmllr_aux : iteration (0: the initial estimate) -> speaker -> Q per frame before the
        first row-update pass and after each (never decreasing; empty below min_count).
    si_gmm : the alignment model (None with ``alignment_model = false``).
    """

    initial_transforms: dict[str, np.ndarray] = field(default_factory=dict)
    transforms: dict[str, np.ndarray] = field(default_factory=dict)
    fmllr_aux: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    si_gmm: DiagGmm | None = None


def _as_sat_config(cfg: GmmTrainConfig) -> SatConfig:
    if isinstance(cfg, SatConfig):
        return cfg
    names = {f.name for f in dataclasses.fields(SatConfig)}
    return SatConfig(**{k: v for k, v in dataclasses.asdict(cfg).items() if k in names})


def train_sat(utts_raw: list[Utterance] | UtteranceSource, previous: AsrSystem,
              cfg: GmmTrainConfig, utt2spk: dict[str, str] | None = None,
              decoding: DecoderConfig | None = None, progress: bool = True, executor=None,
              work_dir: str | Path | None = None) -> tuple[AsrSystem, SatResult]:
    """Train tri3b on ``previous``'s alignments; see the module docstring.

    Parameters
    ----------
    utts_raw : utterances with their base features (T, base_dim), as in the archive (e.g.
        ``Experiment.utterances(name, raw=True)``), or a source of them (``ArchiveSource``).
    previous : a GMM system (tri2b); its model input is the SI features.
    cfg : a :class:`SatConfig` (a plain ``GmmTrainConfig`` gets the fMLLR defaults).
    utt2spk : utt -> speaker, for per-speaker CMVN and the transforms (a source knows its
        speakers).
    executor, work_dir : see ``train_gmm_hmm``: every pass (alignment, fMLLR per speaker,
        tree statistics, EM, the alignment model) runs as one job per part of the data.
    """
    cfg = _as_sat_config(cfg)
    if cfg.num_leaves <= 0:
        raise ValueError("a speaker-adapted system needs num_leaves > 0")
    if utt2spk is None and not isinstance(utts_raw, UtteranceSource):
        raise ValueError("speaker-adaptive training needs utt2spk")
    source = as_source(utts_raw, utt2spk)
    if isinstance(source, MemorySource):
        spk2utt_of(source.utt2spk, source.utt_ids())       # every utterance has a speaker
    si_view = system_view(previous)
    with _work_dir(work_dir) as work:
        parts = source.parts(executor.nj if executor is not None else 1)
        ali_dir = str(work / "ali_prev")
        label = previous_labeller(previous, si_view, cfg)
        request = FmllrRequest(si_view, silence_pdfs(previous.tree), cfg.silence_weight,
                               cfg.fmllr_min_count, cfg.fmllr_passes)
        first = run_passes([PassTask(k, part, label, ali_dir, fmllr=request)
                            for k, part in enumerate(parts)], executor, "fMLLR")
        if first.sums.total("label_frames") <= 0:
            raise ValueError("no training utterance could be aligned by the previous system")
        initial, aux0 = first.transforms, first.aux
        view = si_view.with_fmllr(initial)
        saved = dataclasses.replace(label, mode="saved")
        total = run_passes([PassTask(k, part, dataclasses.replace(saved, view=v), ali_dir,
                                     tree_view=v, moments_view=v)
                            for k, (part, v) in enumerate(zip(parts, _views_for(parts, view)))],
                           executor, "tree statistics")
        tree, gmm = tree_from_stats(total, previous, cfg)
        step = _FmllrStep(si_view, set(cfg.fmllr_iters), silence_pdfs(tree), cfg)
        step.transforms = dict(initial)
        step.aux[0] = aux0
        result = train_gmm_hmm(source, previous.lexicon, tree, copy.deepcopy(previous.tm), gmm,
                               cfg, progress, desc="tri3b", feature_step=step,
                               executor=executor, view=view, work_dir=work)
        si_gmm = (_alignment_model(result, si_view, cfg, executor, str(work / "ali_final"))
                  if cfg.alignment_model else None)
    adaptation = SpeakerAdaptation(
        min_count=cfg.fmllr_min_count, iters=cfg.fmllr_passes,
        silence_weight=cfg.decode_silence_weight, refinements=cfg.decode_refinements,
        si_model=None if si_gmm is None else GmmAcousticModel(si_gmm))
    system = AsrSystem(previous.features, previous.lexicon, tree, result.tm,
                       GmmAcousticModel(result.gmm), decoding or previous.decoding,
                       previous.transform, adaptation)
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(TrainResult)}
    return system, SatResult(**fields, initial_transforms=initial, transforms=step.transforms,
                             fmllr_aux=step.aux, si_gmm=si_gmm)


def align_adapted(system: AsrSystem, utts_raw: list[Utterance], utt2spk: dict[str, str],
                  progress: bool = False
                  ) -> tuple[dict[str, tuple[np.ndarray, object]], dict[str, np.ndarray]]:
    """Forced alignment with a speaker-adapted system, as Kaldi's ``steps/align_fmllr.sh``.

    The alignment model (or the final model without one) aligns the speaker-independent
    features; each speaker's fMLLR transform is estimated from those alignments (silence
    weighted by the system's decoding silence weight); the final model then aligns the
    adapted features. Any other system is aligned on its model input as it is.

    Parameters
    ----------
    system : a GMM system, speaker-adapted (tri3b) or not.
    utts_raw : utterances with their base features (T, base_dim).
    utt2spk : utt -> speaker.
    progress : show a progress bar per alignment pass.

    Returns
    -------
    alignments : utt -> (node path (T,), training graph), as ``align_utterances``.
    transforms : speaker -> W (D, D+1) (empty for a speaker-independent system).
    """
    si = system.model_input({u.utt: u.feats for u in utts_raw}, utt2spk)
    si_utts = [Utterance(u.utt, si[u.utt], u.words) for u in utts_raw]
    if system.adaptation is None:
        return align_utterances(system, si_utts, progress=progress), {}
    adaptation = system.adaptation
    first = dataclasses.replace(system, model=adaptation.si_model or system.model,
                                adaptation=None)
    first_pass = align_utterances(first, si_utts, progress=progress)
    silence = silence_pdfs(system.tree)
    targets = {utt: _alignment_targets(graph.pdf[path], silence, adaptation.silence_weight)
               for utt, (path, graph) in first_pass.items()}
    transforms, _ = speaker_transforms(gmm_of(adaptation.fmllr_model or system.model), si,
                                       targets, spk2utt_of(utt2spk, [u.utt for u in utts_raw]),
                                       adaptation.min_count, adaptation.iters)
    return (align_utterances(system, _adapted(si_utts, utt2spk, transforms), progress=progress),
            transforms)


def adapted_utterances(system: AsrSystem, utts_raw: list[Utterance], utt2spk: dict[str, str],
                       transforms: dict[str, np.ndarray]) -> list[Utterance]:
    """What a speaker-adapted system's model scores: the model input of each utterance
    (T, D) through its speaker's fMLLR transform (``align_adapted``'s). An utterance whose
    speaker has no transform is a DataError naming the speaker."""
    si = system.model_input({u.utt: u.feats for u in utts_raw}, utt2spk)
    return _adapted([Utterance(u.utt, si[u.utt], u.words) for u in utts_raw], utt2spk,
                    transforms)


def _adapted(si_utts: list[Utterance], utt2spk: dict[str, str],
             transforms: dict[str, np.ndarray]) -> list[Utterance]:
    adapted = apply_speaker_transforms({u.utt: u.feats for u in si_utts}, utt2spk, transforms)
    return [Utterance(u.utt, adapted[u.utt], u.words) for u in si_utts]


def _alignment_targets(pdfs: np.ndarray, silence: np.ndarray, silence_weight: float):
    pdfs = np.asarray(pdfs, dtype=np.int64)
    return np.arange(len(pdfs)), pdfs, np.where(silence[pdfs], silence_weight, 1.0)


class _FmllrStep:
    """The ``feature_step`` of ``train_gmm_hmm`` that re-estimates fMLLR at given iterations:
    each job estimates its own speakers' transforms (whole speakers are in one part)."""

    def __init__(self, si_view: FeatureView, iters: set[int], silence: np.ndarray,
                 cfg: SatConfig):
        self.si_view, self.iters, self.silence, self.cfg = si_view, iters, silence, cfg
        self.transforms: dict[str, np.ndarray] = {}
        self.aux: dict[int, dict[str, list[float]]] = {}

    def wants(self, it: int) -> bool:
        return it in self.iters

    def request(self, it: int, gmm: DiagGmm, view: FeatureView) -> dict:
        return {"fmllr": FmllrRequest(self.si_view, self.silence, self.cfg.silence_weight,
                                      self.cfg.fmllr_min_count, self.cfg.fmllr_passes,
                                      dict(view.fmllr or {}))}

    def update(self, it: int, gmm: DiagGmm, view: FeatureView, total: PassResult
               ) -> tuple[DiagGmm, FeatureView]:
        self.transforms = {**(view.fmllr or {}), **total.transforms}
        self.aux[it] = total.aux
        gains = [a[-1] - a[0] for a in self.aux[it].values() if a]
        log.info("fMLLR at iteration %d: %d speakers, auxiliary per frame up %.4f on average",
                 it, len(self.aux[it]), float(np.mean(gains)) if gains else 0.0)
        return gmm, view.with_fmllr(self.transforms)


def _alignment_model(result: TrainResult, si_view: FeatureView, cfg: SatConfig, executor,
                     ali_dir: str) -> DiagGmm:
    """The final GMM re-estimated on SI features, Gaussian posteriors from the adapted ones
    along the final alignments (Kaldi's ``gmm-acc-stats-twofeats`` + ``gmm-est``)."""
    gmm = result.gmm
    parts = result.source.parts(executor.nj if executor is not None else 1)
    label = Labeller(gmm, result.view, result.lexicon, result.tree, result.tm, "align",
                     cfg.silence_prob, cfg.align_acoustic_scale, cfg.align_beam,
                     cfg.align_retry_beam)
    total = run_passes([PassTask(k, part, dataclasses.replace(label, view=v), ali_dir, gmm=gmm,
                                 gmm_view=v, two_feats_view=si_view, moments_view=si_view)
                        for k, (part, v) in enumerate(zip(parts, _views_for(parts,
                                                                             result.view)))],
                       executor, "alignment model")
    stats = total.gmm_stats(gmm.num_gauss, gmm.dim)
    si_gmm = mle_update(gmm, stats, cfg.var_floor * total.moments()[2], cfg.min_gaussian_occ)
    log.info("alignment model: %.0f frames, SI log-likelihood per frame %.4f",
             stats.frames, stats.log_likelihood / max(stats.frames, 1.0))
    return si_gmm
