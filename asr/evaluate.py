"""Decode a data directory with any system and score it: ``hyp.txt``, ``per_utt``, ``wer``.

A speaker-adapted system (tri3b) adapts first (``AsrSystem.adapt``: a first pass, fMLLR
per speaker, its refinement); its per-speaker transforms are written as ``trans.npz``
beside the hypotheses.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Collection

import numpy as np
from tqdm import tqdm

from asr.decoder import Decoder, DecoderConfig
from asr.fileio import atomic_dir, write_text
from asr.scoring import WerResult, compute_wer, per_utterance, write_details, write_text_file
from asr.system import AsrSystem

log = logging.getLogger(__name__)

TRANSFORMS_FILE = "trans.npz"      # per-speaker fMLLR transforms of an adapted decode


def decode_features(system: AsrSystem, feats: dict[str, np.ndarray],
                    cfg: DecoderConfig | None = None, progress: bool = True,
                    graph_cache: Path | None = None, utt2spk: dict[str, str] | None = None,
                    transforms_out: Path | None = None) -> dict[str, list[str]]:
    """utt -> recognised words, for features already through ``system.model_input``
    (the pipeline and the system's feature transform).

    ``graph_cache``: where decoding graphs are kept between runs (see ``AsrSystem.graph``).
    ``utt2spk``: the speakers a speaker-adapted system adapts to (None: each utterance its
    own); ``transforms_out``: where its transforms are written (``save_transforms``).
    """
    transforms: dict[str, np.ndarray] = {}
    hyps = decode_with(system, system.decoder(cfg, cache=graph_cache), feats, progress,
                       utt2spk, transforms)
    if transforms and transforms_out is not None:
        from asr.transforms.fmllr import save_transforms
        save_transforms(transforms_out, transforms)
    return hyps


def decode_with(system: AsrSystem, decoder: Decoder, feats: dict[str, np.ndarray],
                progress: bool = True, utt2spk: dict[str, str] | None = None,
                transforms: dict[str, np.ndarray] | None = None,
                only: Collection[str] | None = None) -> dict[str, list[str]]:
    """utt -> recognised words by ``decoder``, scoring each utterance with the system's model.

    A speaker-adapted system first adapts ``feats`` (``AsrSystem.adapt``: a first pass by the
    same decoder, fMLLR per speaker of ``utt2spk``, refined from an adapted pass); its
    transforms are added to ``transforms`` when given. ``only``: decode only these
    utterances (a job's share), the others of ``feats`` serving only the adaptation to
    their speakers.
    """
    feats, estimated = system.adapt(feats, utt2spk, decoder, progress)
    if transforms is not None:
        transforms.update(estimated)
    utts = sorted(feats) if only is None else sorted(set(only) & set(feats))
    hyps = {}
    for utt in tqdm(utts, desc="decode", disable=not progress, leave=False):
        hyps[utt] = decoder.decode(system.model.log_likelihoods(feats[utt])).words
    return hyps


def decode_and_score(system: AsrSystem, feats: dict[str, np.ndarray],
                     refs: dict[str, list[str]], out_dir: Path, name: str,
                     cfg: DecoderConfig | None = None, progress: bool = True,
                     graph_cache: Path | None = None, utt2spk: dict[str, str] | None = None
                     ) -> WerResult:
    """Decode, score against ``refs`` and write ``out_dir/{hyp.txt,per_utt,wer,timing}``
    atomically (and ``trans.npz`` for a speaker-adapted system, speakers from ``utt2spk``).
    ``timing`` holds the graph's build (or cache read) time apart from the decoding time,
    which includes the acoustic model's scoring (both passes of an adapted system)."""
    start = time.perf_counter()
    decoder = system.decoder(cfg, cache=graph_cache)
    graph_seconds = time.perf_counter() - start
    start = time.perf_counter()
    transforms: dict[str, np.ndarray] = {}
    hyps = decode_with(system, decoder, feats, progress, utt2spk, transforms)
    seconds = time.perf_counter() - start
    return write_decode(out_dir, name, refs, hyps, transforms, graph_seconds, seconds,
                        sum(len(f) for f in feats.values()))


def write_decode(out_dir: Path, name: str, refs: dict[str, list[str]],
                 hyps: dict[str, list[str]], transforms: dict[str, np.ndarray],
                 graph_seconds: float, decode_seconds: float, frames: int) -> WerResult:
    """Score ``hyps`` against ``refs`` and write ``out_dir/{hyp.txt,per_utt,wer,timing}``
    (and ``trans.npz`` when there are speaker ``transforms``) atomically: the output of
    ``decode_and_score``, also for hypotheses gathered from several jobs."""
    result = compute_wer(refs, hyps, name=name)
    with atomic_dir(out_dir) as tmp:
        write_text_file(tmp / "hyp.txt", hyps)
        write_details(tmp / "per_utt", per_utterance(refs, hyps))
        write_text(tmp / "wer", result.line() + "\n")
        if transforms:
            from asr.transforms.fmllr import save_transforms
            save_transforms(tmp / TRANSFORMS_FILE, transforms)
        write_text(tmp / "timing", f"graph_seconds {graph_seconds:.3f}\n"
                                   f"decode_seconds {decode_seconds:.3f}\nframes {frames}\n")
    log.info("%s", result.line())
    return result
