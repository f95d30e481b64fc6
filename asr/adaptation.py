"""Speaker adaptation with fMLLR: per-speaker transforms, and adapted decoding.

Kaldi's ``steps/decode_fmllr.sh`` in one function, :func:`adapt_features`, which
``AsrSystem.adapt`` calls for a speaker-adapted system (tri3b), so that every decoding path
(``asr.evaluate``, ``Experiment.decode``, ``asr.lvcsr.decode_lattices``, ``asr decode``,
``asr transcribe``) adapts the same way:

1. first pass: decode the unadapted model input with the system's speaker-independent
   "alignment model" (``SpeakerAdaptation.si_model``; the system's own model without one),
   at its own acoustic scale (``si_acoustic_scale``) when that differs from the decoder's;
2. per speaker, fMLLR statistics from the best paths' pdfs (silence frames weighted by
   ``silence_weight``) under the speaker-adapted GMM (``fmllr_model``, or the system's own),
   one transform W (D, D+1) each;
3. ``refinements`` times (Kaldi's second estimate, once by default): the system's own
   model decodes the adapted features, and each transform is re-estimated from those best
   paths, starting from the current one (a hybrid on fMLLR features refines its transforms
   with its network's best paths);
4. the adapted features ``A x + b``, which the caller decodes again (the final pass; a
   hybrid on fMLLR features scores them with its network).

:func:`speaker_transforms` is shared with SAT training (``asr.gmm.sat``): it pools each
speaker's utterances into one set of statistics and returns the auxiliary history too.

>>> feats = system.model_input(raw, data.utt2spk)                        # doctest: +SKIP
>>> adapted, transforms = system.adapt(feats, data.utt2spk, system.decoder())  # doctest: +SKIP

Glossary of ids: pdf ids are the system's tree's (the first pass shares the tree);
frames count from 0 within an utterance.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from asr.errors import DataError

if TYPE_CHECKING:
    from asr.decoder import Decoder
    from asr.gmm.diag_gmm import DiagGmm
    from asr.system import AsrSystem

log = logging.getLogger(__name__)

Targets = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(frames (K,), pdfs (K,), weights (K,)) of one utterance: frame ``frames[k]`` belongs to
pdf ``pdfs[k]`` with weight ``weights[k]``."""


def speaker_transforms(gmm: "DiagGmm", feats_by_utt: Mapping[str, np.ndarray],
                       targets_by_utt: Mapping[str, Targets],
                       spk2utt: Mapping[str, Sequence[str]], min_count: float, iters: int,
                       previous: Mapping[str, np.ndarray] | None = None
                       ) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    """One fMLLR transform per speaker, and its auxiliary function per frame.

    Parameters
    ----------
    gmm : the model the transforms adapt to (D dimensions).
    feats_by_utt : utt -> (T, D) unadapted features.
    targets_by_utt : utt -> :data:`Targets`; utterances without any are skipped.
    spk2utt : speaker -> its utterances.
    min_count : a speaker with less count keeps ``previous``'s transform, or the identity,
        with a logged warning naming the speaker.
    iters : row-update passes of ``estimate_fmllr``.
    previous : speaker -> an earlier transform: Gaussian posteriors are computed on the
        features it adapts and the estimate starts from it (Kaldi's re-estimation in SAT).

    Returns
    -------
    transforms : speaker -> W (D, D+1) float64.
    aux : speaker -> Q per frame before the first pass and after each (never decreasing);
        empty for a speaker that kept its transform.
    """
    from asr.transforms.fmllr import (FmllrStats, apply_fmllr, estimate_fmllr,
                                      identity_transform)

    transforms, aux = {}, {}
    for spk, utts in spk2utt.items():
        utts = [u for u in utts if u in feats_by_utt and u in targets_by_utt]
        start = None if previous is None else previous.get(spk)
        stats = FmllrStats(gmm.dim)
        if utts:
            feats = np.concatenate([np.asarray(feats_by_utt[u], dtype=np.float64)
                                    for u in utts])
            offsets = np.cumsum([0] + [len(feats_by_utt[u]) for u in utts[:-1]])
            frames = np.concatenate([targets_by_utt[u][0] + o for u, o in zip(utts, offsets)])
            pdfs = np.concatenate([targets_by_utt[u][1] for u in utts])
            weights = np.concatenate([targets_by_utt[u][2] for u in utts])
            keep = weights > 0
            stats.accumulate(gmm, feats, frames[keep], pdfs[keep], weights[keep],
                             None if start is None else apply_fmllr(start, feats))
        if stats.beta < min_count or stats.beta <= 0:
            log.warning("speaker %s: fMLLR count %.1f is below min_count %.1f; %s transform",
                        spk, stats.beta, min_count, "identity" if start is None else "previous")
            transforms[spk] = identity_transform(gmm.dim) if start is None else start
            aux[spk] = []
            continue
        W, history = estimate_fmllr(stats, start, iters=iters, min_count=min_count)
        transforms[spk] = W
        aux[spk] = [q / stats.beta for q in history]
        log.info("speaker %s: fMLLR auxiliary per frame %.4f -> %.4f over %.0f frames", spk,
                 aux[spk][0], aux[spk][-1], stats.beta)
    return transforms, aux


def apply_speaker_transforms(feats: Mapping[str, np.ndarray], utt2spk: Mapping[str, str],
                             transforms: Mapping[str, np.ndarray], source=None
                             ) -> dict[str, np.ndarray]:
    """utt -> (T, D) features through their speaker's fMLLR W (D, D+1), as float32. A
    speaker without a transform is a DataError naming ``source`` (the transforms' file)."""
    from asr.transforms.fmllr import apply_fmllr

    missing = sorted({utt2spk.get(u) for u in feats} - set(transforms), key=str)
    if missing:
        raise DataError(source, f"no fMLLR transform for speaker {missing[0]!r} "
                        f"({len(missing)} speaker(s) of the data have none)")
    return {utt: apply_fmllr(transforms[utt2spk[utt]], mat).astype(np.float32, copy=False)
            for utt, mat in feats.items()}


def spk2utt_of(utt2spk: Mapping[str, str], utts: Sequence[str]) -> dict[str, list[str]]:
    """speaker -> its utterances among ``utts`` (in their order); a DataError names an
    utterance without a speaker."""
    out: dict[str, list[str]] = {}
    for utt in utts:
        if utt not in utt2spk:
            raise DataError(None, f"utterance {utt!r} has no speaker in utt2spk; a "
                            "speaker-adapted system needs every utterance's speaker")
        out.setdefault(utt2spk[utt], []).append(utt)
    return out


def gmm_of(model) -> "DiagGmm":
    """The DiagGmm behind an acoustic model; fMLLR needs one."""
    gmm = getattr(model, "gmm", None)
    if gmm is None:
        raise ValueError(f"fMLLR adapts a GMM; a {getattr(model, 'model_type', 'model')!r} "
                         "acoustic model has none")
    return gmm


def adapt_features(system: "AsrSystem", feats: dict[str, np.ndarray],
                   utt2spk: Mapping[str, str] | None, decoder: "Decoder",
                   progress: bool = False
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """First pass, fMLLR per speaker and its refinements; see the module docstring.

    Parameters
    ----------
    system : a speaker-adapted system (``system.adaptation`` set).
    feats : utt -> (T, D) its model input (``system.model_input``), unadapted.
    utt2spk : utt -> speaker; None makes each utterance its own speaker (logged).
    decoder : the search of the first pass (the second pass's, typically).

    Returns
    -------
    adapted : utt -> (T, D) float32, same keys.
    transforms : speaker -> W (D, D+1) float64 (``save_transforms`` writes ``trans.npz``).
    """
    from asr.gmm.lda_mllt import silence_pdfs

    cfg = system.adaptation
    if cfg is None:
        raise ValueError("adapt_features needs a speaker-adapted system (adaptation set)")
    gmm = gmm_of(cfg.fmllr_model if cfg.fmllr_model is not None else system.model)
    first = cfg.si_model if cfg.si_model is not None else system.model
    # cost = scale * (-loglik): scaling the scores decodes at si_acoustic_scale
    rescale = (1.0 if cfg.si_acoustic_scale is None
               else cfg.si_acoustic_scale / decoder.cfg.acoustic_scale)
    if utt2spk is None:
        log.warning("no utt2spk given: each utterance is adapted as its own speaker")
        utt2spk = {u: u for u in feats}
    spk2utt = spk2utt_of(utt2spk, sorted(feats))
    silence = silence_pdfs(system.tree)
    targets = _best_path_targets(first, feats, decoder, rescale, silence, cfg.silence_weight,
                                 "decode pass 1", progress)
    transforms, _ = speaker_transforms(gmm, feats, targets, spk2utt, cfg.min_count, cfg.iters)
    for k in range(cfg.refinements):
        adapted = apply_speaker_transforms(feats, utt2spk, transforms)
        targets = _best_path_targets(system.model, adapted, decoder, 1.0, silence,
                                     cfg.silence_weight, f"decode pass {k + 2}", progress)
        transforms, _ = speaker_transforms(gmm, feats, targets, spk2utt, cfg.min_count,
                                           cfg.iters, previous=transforms)
    return apply_speaker_transforms(feats, utt2spk, transforms), transforms


def _best_path_targets(model, feats: dict[str, np.ndarray], decoder: "Decoder",
                       rescale: float, silence: np.ndarray, silence_weight: float,
                       desc: str, progress: bool) -> dict[str, Targets]:
    """utt -> :data:`Targets` of its best path by ``model`` (scores times ``rescale``),
    silence frames weighted by ``silence_weight``; an utterance without a path is left out
    (logged)."""
    targets = {}
    for utt in tqdm(sorted(feats), desc=desc, disable=not progress, leave=False):
        scores = model.log_likelihoods(feats[utt])
        result = decoder.decode(scores if rescale == 1.0 else scores * np.float32(rescale))
        pdfs = np.asarray(result.pdfs, dtype=np.int64)
        if len(pdfs) != len(feats[utt]) or not np.isfinite(result.cost):
            log.warning("%s: %s found no path; left out of its speaker's fMLLR statistics",
                        utt, desc)
            continue
        targets[utt] = (np.arange(len(pdfs)), pdfs,
                        np.where(silence[pdfs], silence_weight, 1.0))
    return targets
