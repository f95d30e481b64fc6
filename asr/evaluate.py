"""Decode a data directory with any system and score it: ``hyp.txt``, ``per_utt``, ``wer``."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asr.decoder import DecoderConfig
from asr.fileio import atomic_dir, write_text
from asr.scoring import WerResult, compute_wer, per_utterance, write_details, write_text_file
from asr.system import AsrSystem

log = logging.getLogger(__name__)


def decode_features(system: AsrSystem, feats: dict[str, np.ndarray],
                    cfg: DecoderConfig | None = None, progress: bool = True
                    ) -> dict[str, list[str]]:
    """utt -> recognised words, for features already through the system's pipeline."""
    decoder = system.decoder(cfg)
    hyps = {}
    for utt in tqdm(sorted(feats), desc="decode", disable=not progress, leave=False):
        hyps[utt] = decoder.decode(system.model.log_likelihoods(feats[utt])).words
    return hyps


def decode_and_score(system: AsrSystem, feats: dict[str, np.ndarray],
                     refs: dict[str, list[str]], out_dir: Path, name: str,
                     cfg: DecoderConfig | None = None, progress: bool = True) -> WerResult:
    """Decode, score against ``refs`` and write ``out_dir/{hyp.txt,per_utt,wer}`` atomically."""
    start = time.perf_counter()
    hyps = decode_features(system, feats, cfg, progress)
    seconds = time.perf_counter() - start
    result = compute_wer(refs, hyps, name=name)
    with atomic_dir(out_dir) as tmp:
        write_text_file(tmp / "hyp.txt", hyps)
        write_details(tmp / "per_utt", per_utterance(refs, hyps))
        write_text(tmp / "wer", result.line() + "\n")
        frames = sum(len(f) for f in feats.values())
        write_text(tmp / "timing", f"decode_seconds {seconds:.3f}\nframes {frames}\n")
    log.info("%s", result.line())
    return result
