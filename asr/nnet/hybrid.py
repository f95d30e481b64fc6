"""A hybrid DNN-HMM system from a GMM-HMM one, as Kaldi's hybrid recipes build it.

The GMM system supplies everything but the acoustic model: tree, transition model,
lexicon, decoding settings, and the frame targets (pdf ids along its forced alignments).
The network may see other features of the same audio (say 40 log-mel bins with speaker
CMVN where the GMM saw MFCC + deltas): both front ends frame the audio alike
(25 ms / 10 ms, ``snip_edges``), so frame ``t`` of one is frame ``t`` of the other::

    alignments = align_utterances(gmm_system, gmm_utts)            # on the GMM's features
    targets = pdf_targets(alignments)                              # utt -> (T,) pdf ids
    fbank = FeatureConfig(kind="fbank", num_mel_bins=40, deltas=0, cmvn="speaker")
    dnn_utts = experiment.utterances("train", fbank)               # the same utterances
    system = train_hybrid(dnn_utts, targets, gmm_system, fbank, NnetConfig(), "exp/dnn_train")
    system.save("exp/dnn")
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from asr.features import FeatureConfig
from asr.nnet.config import NnetConfig
from asr.nnet.model import HybridAcousticModel, estimate_priors
from asr.nnet.train import train_nnet
from asr.system import AsrSystem
from asr.training import Utterance

log = logging.getLogger(__name__)


def pdf_targets(alignments: dict[str, tuple[np.ndarray, object]]) -> dict[str, np.ndarray]:
    """utt -> (T,) int64 pdf ids, from ``align_utterances``' (node path, graph) pairs."""
    return {utt: np.asarray(graph.pdf[path], dtype=np.int64)
            for utt, (path, graph) in alignments.items()}


def train_hybrid(utts: list[Utterance], targets: dict[str, np.ndarray],
                 base_system: AsrSystem, nnet_features: FeatureConfig, cfg: NnetConfig,
                 out_dir: str | Path, progress: bool = True,
                 sources: dict[str, str] | None = None) -> AsrSystem:
    """Train a network on ``targets`` and wrap it as a system sharing ``base_system``'s HMMs.

    Parameters
    ----------
    utts : the training utterances, with features made by ``nnet_features``.
    targets : utt -> (T,) pdf ids of ``base_system``'s tree; utterances without targets
        (e.g. failed alignments) are left out.
    base_system : gives the lexicon, tree, transition model and decoding settings.
    nnet_features : the network's feature settings; they become the system's ``features``.
    cfg : network and training settings.
    out_dir : the training folder (settings, checkpoint, history; see ``train_nnet``).
        Save the returned system elsewhere: ``AsrSystem.save`` replaces its directory.
    sources : utt -> the recording an augmented copy was made from, so that the
        validation split keeps every copy of a recording on one side (see ``train_nnet``).

    Returns
    -------
    AsrSystem whose model is a ``HybridAcousticModel``.
    """
    feats = {u.utt: u.feats for u in utts}
    num_pdfs = base_system.tree.num_pdfs
    for utt in sorted(set(feats) & set(targets)):
        if len(targets[utt]) != len(feats[utt]):
            raise ValueError(
                f"utterance {utt!r}: {len(feats[utt])} frames of network features but "
                f"{len(targets[utt])} targets; both front ends must frame the audio alike "
                f"(frame_length_ms, frame_shift_ms, snip_edges)")
    used = {u: targets[u] for u in feats if u in targets}
    net, history = train_nnet(feats, used, num_pdfs, cfg, out_dir, progress, sources)
    priors = estimate_priors(used, num_pdfs, cfg.prior_floor)
    model = HybridAcousticModel(net, priors)
    if history:
        last = history[-1]
        log.info("hybrid: %d epochs, last train acc %.3f, valid acc %.3f", len(history),
                 last["train_acc"], last["valid_acc"])
    return AsrSystem(nnet_features, base_system.lexicon, base_system.tree, base_system.tm,
                     model, base_system.decoding)
