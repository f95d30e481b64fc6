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

On tri3b's fMLLR features instead (Kaldi's DNN on fMLLR features): the network reads what
tri3b's GMM scores, each training speaker's features through the transform ``align_adapted``
estimated, and the hybrid adapts as tri3b does (its speaker-independent GMM, then fMLLR
per test speaker, re-estimated from the network's own adapted pass, then the network)::

    alignments, transforms = align_adapted(tri3b, raw_utts, utt2spk)
    utts = adapted_utterances(tri3b, raw_utts, utt2spk, transforms)
    system = train_hybrid(utts, pdf_targets(alignments), tri3b, None, NnetConfig(), "exp/dnn_train")

From files, on one process or several (``torchrun``; see ``asr.nnet.distributed``): a data
directory (for ``utt2spk``), the network's feature archive, the targets saved with
``save_targets`` and the GMM system's directory::

    save_targets("exp/tri_ali/targets.npz", targets)
    train_hybrid_from_files("data/train", "exp/feats_dnn/train", "exp/tri_ali/targets.npz",
                            "exp/tri", NnetConfig(), "exp/dnn_train", "exp/dnn")
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from asr.errors import DataError, ModelError
from asr.features import FeatureConfig
from asr.models import load_arrays, save_arrays
from asr.nnet import distributed as ddp
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
                 base_system: AsrSystem, nnet_features: FeatureConfig | None, cfg: NnetConfig,
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
        None: the network reads ``base_system``'s speaker-adapted model input (a tri3b
        system's fMLLR features, see ``asr.gmm.sat.adapted_utterances``) and the hybrid
        adapts as it does (see :func:`hybrid_system`).
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
    return hybrid_system(base_system, model, nnet_features)


def hybrid_system(base_system: AsrSystem, model: HybridAcousticModel,
                  nnet_features: FeatureConfig | None) -> AsrSystem:
    """The network ``model`` as a system sharing ``base_system``'s lexicon, tree,
    transitions and decoding settings.

    With ``nnet_features`` the network reads those features and nothing else is kept. With
    None it reads the base system's model input, speaker-adapted as the base system adapts:
    the system keeps the base's front end and transform, and its adaptation decodes the
    first pass with the base's speaker-independent GMM at the base's acoustic scale and
    estimates each speaker's fMLLR transform with the base's GMM (its refinements decode
    with the network).
    """
    b = base_system
    if nnet_features is not None:
        return AsrSystem(nnet_features, b.lexicon, b.tree, b.tm, model, b.decoding)
    if b.adaptation is None:
        return AsrSystem(b.features, b.lexicon, b.tree, b.tm, model, b.decoding, b.transform)
    adaptation = dataclasses.replace(
        b.adaptation, si_model=b.adaptation.si_model or b.model,
        fmllr_model=b.adaptation.fmllr_model or b.model,
        si_acoustic_scale=b.adaptation.si_acoustic_scale or b.decoding.acoustic_scale)
    return AsrSystem(b.features, b.lexicon, b.tree, b.tm, model, b.decoding, b.transform,
                     adaptation)


def save_targets(path: str | Path, targets: dict[str, np.ndarray]) -> None:
    """Write utt -> (T,) pdf ids as an uncompressed ``.npz``, one int64 array per
    utterance id (no pickle; ``np.load(path)["utt"]`` reads one), atomically."""
    save_arrays(Path(path), {utt: np.asarray(t, dtype=np.int64) for utt, t in targets.items()})


def load_targets(path: str | Path) -> dict[str, np.ndarray]:
    """Targets written by ``save_targets``: utt -> (T,) int64 pdf ids, sorted by id."""
    path = Path(path)
    try:
        arrays = load_arrays(path)
    except ModelError as exc:
        raise DataError(path, f"not an .npz of per-utterance pdf ids (save_targets writes "
                        f"one): {exc.message}") from None
    for utt, t in arrays.items():
        if t.ndim != 1 or not np.issubdtype(t.dtype, np.integer):
            raise DataError(path, f"targets of {utt!r} are a {t.ndim}-D {t.dtype} array; "
                            "expected one integer pdf id per frame")
    return {utt: arrays[utt].astype(np.int64, copy=False) for utt in sorted(arrays)}


def train_hybrid_from_files(data_dir: str | Path, feats_dir: str | Path,
                            targets_path: str | Path, base_dir: str | Path, cfg: NnetConfig,
                            train_dir: str | Path, out_dir: str | Path,
                            progress: bool = True,
                            transforms_path: str | Path | None = None) -> AsrSystem:
    """``train_hybrid`` on files; rank 0 saves the system into ``out_dir``.

    Parameters
    ----------
    data_dir : the training data directory (its ``utt2spk`` serves per-speaker CMVN).
    feats_dir : the network's feature archive (``asr.features.write_archive``); its
        ``config.json`` becomes the hybrid system's feature settings.
    targets_path : utt -> pdf ids of the base system's tree (``save_targets``).
    base_dir : the GMM system whose tree, transitions, lexicon and decoding are reused.
    train_dir : settings, checkpoint and history of the training (see ``train_nnet``).
    out_dir : where the hybrid system is saved (replaced).
    transforms_path : speaker -> fMLLR transform of the base system (a tri3b), as
        ``save_transforms`` writes them (``Experiment.alignments`` keeps them beside the
        targets): the network then reads the base system's fMLLR features, ``feats_dir``
        holds the base system's features, and the hybrid adapts as the base does.

    Under ``torchrun`` every process trains its shard and returns the same system; rank 0
    alone writes into ``train_dir`` and ``out_dir``.
    """
    from asr.data import DataDir
    from asr.features import apply_pipeline, read_archive, read_archive_config
    from asr.training import Utterance

    data = DataDir.load(data_dir)
    features = read_archive_config(feats_dir)
    raw = {u: f for u, f in read_archive(feats_dir).items() if u in data.utt2spk}
    targets = load_targets(targets_path)
    base = AsrSystem.load(base_dir)
    if transforms_path is None:
        feats = apply_pipeline(raw, features, data.utt2spk)
    else:
        feats = _fmllr_features(base, features, raw, data.utt2spk, feats_dir, transforms_path)
        features = None
    utts = [Utterance(u, feats[u], data.text[u]) for u in sorted(feats)]
    system = train_hybrid(utts, targets, base, features, cfg, train_dir, progress)
    if ddp.process_rank() == 0:
        system.save(out_dir)
        log.info("hybrid system saved in %s", out_dir)
    return system


def _fmllr_features(base: AsrSystem, archive_features: FeatureConfig,
                    raw: dict[str, np.ndarray], utt2spk: dict[str, str], feats_dir,
                    transforms_path) -> dict[str, np.ndarray]:
    """The base system's model input of ``raw`` through each speaker's fMLLR transform."""
    from asr.adaptation import apply_speaker_transforms
    from asr.transforms.fmllr import load_transforms

    if base.adaptation is None:
        raise ModelError(None, "fMLLR transforms given for a base system that does not adapt "
                         "to speakers (no adaptation.json); use a tri3b system")
    if archive_features.base_dim != base.features.base_dim or \
            archive_features.kind != base.features.kind:
        raise DataError(Path(feats_dir), f"holds {archive_features.kind} features of "
                        f"{archive_features.base_dim} dimensions; the base system reads "
                        f"{base.features.kind} of {base.features.base_dim}")
    return apply_speaker_transforms(base.model_input(raw, utt2spk), utt2spk,
                                    load_transforms(transforms_path), Path(transforms_path))
