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
   the first pass of two-pass decoding.

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

import numpy as np

from asr.adaptation import gmm_of, speaker_transforms, spk2utt_of
from asr.decoder import DecoderConfig
from asr.gmm.diag_gmm import DiagGmm
from asr.gmm.lda_mllt import silence_pdfs
from asr.gmm.model import GmmAcousticModel
from asr.gmm.stats import GmmStats
from asr.gmm.systems import align_utterances, grow_tree
from asr.gmm.train import GmmTrainConfig, TrainResult, train_gmm_hmm
from asr.gmm.update import mle_update
from asr.system import AsrSystem, SpeakerAdaptation
from asr.training import Utterance
from asr.transforms.fmllr import DEFAULT_ITERS, DEFAULT_MIN_COUNT, apply_fmllr

log = logging.getLogger(__name__)

KALDI_FMLLR_ITERS = (2, 4, 6, 12)


@dataclass
class SatConfig(GmmTrainConfig):
    """Settings of tri3b (a ``[tri3b]`` table): a triphone's, plus fMLLR's.

    Defaults follow ``steps/train_sat.sh`` and ``steps/decode_fmllr.sh``: 35 iterations,
    realignment at 10, 20, 30, fMLLR at 2, 4, 6, 12, silence weight 0 in training and 0.01
    when decoding.
    """

    num_iters: int = 35
    mixup_iters: int = 25
    realign_iters: list[int] = field(default_factory=lambda: [10, 20, 30])
    fmllr_iters: list[int] = field(default_factory=lambda: list(KALDI_FMLLR_ITERS))
    silence_weight: float = 0.0          # of silence frames in training's fMLLR statistics
    decode_silence_weight: float = 0.01  # the same at test time (first-pass best paths)
    fmllr_min_count: float = DEFAULT_MIN_COUNT   # frames; below it a speaker keeps identity
    fmllr_passes: int = DEFAULT_ITERS    # row-update passes of each estimate
    alignment_model: bool = True         # train the SI first-pass model (final.alimdl)

    def __post_init__(self):
        super().__post_init__()
        if self.fmllr_min_count < 0 or self.fmllr_passes < 1:
            raise ValueError("fmllr_min_count must be >= 0 and fmllr_passes positive")
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


def train_sat(utts_raw: list[Utterance], previous: AsrSystem, cfg: GmmTrainConfig,
              utt2spk: dict[str, str], decoding: DecoderConfig | None = None,
              progress: bool = True) -> tuple[AsrSystem, SatResult]:
    """Train tri3b on ``previous``'s alignments; see the module docstring.

    Parameters
    ----------
    utts_raw : utterances with their base features (T, base_dim), as in the archive (e.g.
        ``Experiment.utterances(name, raw=True)``).
    previous : a GMM system (tri2b); its model input is the SI features.
    cfg : a :class:`SatConfig` (a plain ``GmmTrainConfig`` gets the fMLLR defaults).
    utt2spk : utt -> speaker, for per-speaker CMVN and the transforms.
    """
    cfg = _as_sat_config(cfg)
    if cfg.num_leaves <= 0:
        raise ValueError("a speaker-adapted system needs num_leaves > 0")
    prev_gmm = gmm_of(previous.model)
    si = previous.model_input({u.utt: u.feats for u in utts_raw}, utt2spk)
    si_utts = [Utterance(u.utt, si[u.utt], u.words) for u in utts_raw]
    spk2utt = spk2utt_of(utt2spk, [u.utt for u in utts_raw])
    alignments = align_utterances(previous, si_utts, cfg.silence_prob,
                                  cfg.align_acoustic_scale, cfg.align_beam,
                                  cfg.align_retry_beam)
    if not alignments:
        raise ValueError("no training utterance could be aligned by the previous system")
    silence = silence_pdfs(previous.tree)
    targets = {utt: _alignment_targets(graph.pdf[path], silence, cfg.silence_weight)
               for utt, (path, graph) in alignments.items()}
    initial, aux0 = speaker_transforms(prev_gmm, si, targets, spk2utt, cfg.fmllr_min_count,
                                       cfg.fmllr_passes)
    utts = [Utterance(u.utt, apply_fmllr(initial[utt2spk[u.utt]], u.feats), u.words)
            for u in si_utts]
    tree, gmm = grow_tree(utts, alignments, previous, cfg)
    step = _FmllrStep(si_utts, utt2spk, spk2utt, initial, set(cfg.fmllr_iters),
                      silence_pdfs(tree), cfg)
    step.aux[0] = aux0
    result = train_gmm_hmm(utts, previous.lexicon, tree, copy.deepcopy(previous.tm), gmm, cfg,
                           progress, desc="tri3b", feature_step=step)
    si_gmm = _alignment_model(result, si_utts, cfg) if cfg.alignment_model else None
    adaptation = SpeakerAdaptation(
        min_count=cfg.fmllr_min_count, iters=cfg.fmllr_passes,
        silence_weight=cfg.decode_silence_weight,
        si_model=None if si_gmm is None else GmmAcousticModel(si_gmm))
    system = AsrSystem(previous.features, previous.lexicon, tree, result.tm,
                       GmmAcousticModel(result.gmm), decoding or previous.decoding,
                       previous.transform, adaptation)
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(TrainResult)}
    return system, SatResult(**fields, initial_transforms=initial, transforms=step.transforms,
                             fmllr_aux=step.aux, si_gmm=si_gmm)


def align_adapted(system: AsrSystem, utts_raw: list[Utterance], utt2spk: dict[str, str]
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

    Returns
    -------
    alignments : utt -> (node path (T,), training graph), as ``align_utterances``.
    transforms : speaker -> W (D, D+1) (empty for a speaker-independent system).
    """
    si = system.model_input({u.utt: u.feats for u in utts_raw}, utt2spk)
    si_utts = [Utterance(u.utt, si[u.utt], u.words) for u in utts_raw]
    if system.adaptation is None:
        return align_utterances(system, si_utts), {}
    adaptation = system.adaptation
    first = dataclasses.replace(system, model=adaptation.si_model or system.model,
                                adaptation=None)
    first_pass = align_utterances(first, si_utts)
    silence = silence_pdfs(system.tree)
    targets = {utt: _alignment_targets(graph.pdf[path], silence, adaptation.silence_weight)
               for utt, (path, graph) in first_pass.items()}
    transforms, _ = speaker_transforms(gmm_of(system.model), si, targets,
                                       spk2utt_of(utt2spk, [u.utt for u in utts_raw]),
                                       adaptation.min_count, adaptation.iters)
    adapted = [Utterance(u.utt, apply_fmllr(transforms[utt2spk[u.utt]], u.feats), u.words)
               for u in si_utts]
    return align_utterances(system, adapted), transforms


def _alignment_targets(pdfs: np.ndarray, silence: np.ndarray, silence_weight: float):
    pdfs = np.asarray(pdfs, dtype=np.int64)
    return np.arange(len(pdfs)), pdfs, np.where(silence[pdfs], silence_weight, 1.0)


class _FmllrStep:
    """The ``feature_step`` of ``train_gmm_hmm`` that re-estimates fMLLR at given iterations.

    Frames of the concatenated features follow ``si_utts``' order (as ``train_gmm_hmm``
    concatenates them).
    """

    def __init__(self, si_utts: list[Utterance], utt2spk: dict[str, str],
                 spk2utt: dict[str, list[str]], transforms: dict[str, np.ndarray],
                 iters: set[int], silence: np.ndarray, cfg: SatConfig):
        self.si = {u.utt: u.feats for u in si_utts}
        self.order = [u.utt for u in si_utts]
        self.offsets = np.concatenate([[0], np.cumsum([len(u.feats) for u in si_utts])])
        self.utt2spk, self.spk2utt = utt2spk, spk2utt
        self.transforms, self.iters, self.silence, self.cfg = transforms, iters, silence, cfg
        self.aux: dict[int, dict[str, list[float]]] = {}

    def __call__(self, it: int, gmm: DiagGmm, feats: np.ndarray, frames: np.ndarray,
                 pdfs: np.ndarray, weights: np.ndarray) -> tuple[DiagGmm, np.ndarray] | None:
        if it not in self.iters:
            return None
        weights = weights * np.where(self.silence[pdfs], self.cfg.silence_weight, 1.0)
        order = np.argsort(frames, kind="stable")
        frames, pdfs, weights = frames[order], pdfs[order], weights[order]
        bounds = np.searchsorted(frames, self.offsets)
        targets = {}
        for i, utt in enumerate(self.order):
            lo, hi = bounds[i], bounds[i + 1]
            if hi > lo:
                targets[utt] = (frames[lo:hi] - self.offsets[i], pdfs[lo:hi], weights[lo:hi])
        self.transforms, self.aux[it] = speaker_transforms(
            gmm, self.si, targets, self.spk2utt, self.cfg.fmllr_min_count,
            self.cfg.fmllr_passes, previous=self.transforms)
        gains = [a[-1] - a[0] for a in self.aux[it].values() if a]
        log.info("fMLLR at iteration %d: %d speakers, auxiliary per frame up %.4f on average",
                 it, len(self.aux[it]), float(np.mean(gains)) if gains else 0.0)
        adapted = np.concatenate([apply_fmllr(self.transforms[self.utt2spk[u]], self.si[u])
                                  for u in self.order])
        return gmm, adapted


def _alignment_model(result: TrainResult, si_utts: list[Utterance], cfg: SatConfig
                     ) -> DiagGmm:
    """The final GMM re-estimated on SI features, Gaussian posteriors from the adapted ones
    along the final alignments (Kaldi's ``gmm-acc-stats-twofeats`` + ``gmm-est``)."""
    gmm = result.gmm
    adapted = {u.utt: u.feats for u in result.utts}
    stats = GmmStats(gmm.num_gauss, gmm.dim)
    for u in si_utts:
        path = result.alignments.get(u.utt)
        if path is None:
            continue
        pdfs = result.graphs[u.utt].pdf[path]
        _accumulate_two_feats(stats, gmm, adapted[u.utt], u.feats, pdfs)
    var_floor = cfg.var_floor * np.concatenate([u.feats for u in si_utts]).astype(
        np.float64).var(axis=0)
    si_gmm = mle_update(gmm, stats, var_floor, cfg.min_gaussian_occ)
    log.info("alignment model: %.0f frames, SI log-likelihood per frame %.4f",
             stats.frames, stats.log_likelihood / max(stats.frames, 1.0))
    return si_gmm


def _accumulate_two_feats(stats: GmmStats, gmm: DiagGmm, post_feats: np.ndarray,
                          feats: np.ndarray, pdfs: np.ndarray) -> None:
    """Add an aligned utterance: Gaussian posteriors within each frame's pdf on
    ``post_feats`` (T, D), statistics of ``feats`` (T, D)."""
    pdfs = np.asarray(pdfs, dtype=np.int64)
    order = np.argsort(pdfs, kind="stable")
    for idx in np.split(order, np.flatnonzero(np.diff(pdfs[order])) + 1):
        if len(idx) == 0:
            continue
        p = int(pdfs[idx[0]])
        g = slice(gmm.offsets[p], gmm.offsets[p + 1])
        ll = gmm.gaussian_log_likelihoods(np.asarray(post_feats[idx], dtype=np.float64),
                                          g).astype(np.float64)
        post = np.exp(ll - ll.max(axis=1, keepdims=True))
        post /= post.sum(axis=1, keepdims=True)
        x = np.asarray(feats[idx], dtype=np.float64)
        stats.occ[g] += post.sum(axis=0)
        stats.first[g] += post.T @ x
        stats.second[g] += post.T @ (x * x)
        # SI log-likelihood of the frames under the final model, for the log line only
        si_ll = gmm.gaussian_log_likelihoods(x, g).astype(np.float64)
        peak = si_ll.max(axis=1)
        stats.log_likelihood += float(np.sum(peak + np.log(np.exp(si_ll - peak[:, None])
                                                           .sum(axis=1))))
    stats.frames += float(len(pdfs))
