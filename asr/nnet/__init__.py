"""Hybrid DNN-HMM acoustic models in PyTorch, trained on a GMM system's alignments.

Modules: ``config`` (NnetConfig), ``data`` (frames with context, windows or chunks cut
per batch), ``models`` (MLP, TDNN; the TDNN also runs over whole sequences), ``train``
(training loop, checkpoints, resume), ``distributed`` (the same loop on several processes
with torch DDP), ``model`` (``HybridAcousticModel``, registered as ``"dnn"``; priors),
``hybrid`` (a whole system, from arrays or from files).
Only this package imports torch; the decoder and the GMM code never do.
"""
from asr.nnet.config import NnetConfig
from asr.nnet.data import FrameDataset, splice_frames, window_index
from asr.nnet.hybrid import (hybrid_system, load_targets, pdf_targets, save_targets,
                            train_hybrid, train_hybrid_from_files)
from asr.nnet.model import HybridAcousticModel, estimate_priors
from asr.nnet.models import (MLP, TDNN, build_net, net_spec, sequence_logits,
                             tdnn_layout)
from asr.nnet.train import load_checkpoint, resolve_device, split_utterances, train_nnet

__all__ = ["FrameDataset", "HybridAcousticModel", "MLP", "NnetConfig", "TDNN", "build_net",
           "estimate_priors", "load_checkpoint", "load_targets", "net_spec", "pdf_targets",
           "resolve_device", "save_targets", "sequence_logits", "splice_frames",
           "split_utterances", "tdnn_layout", "hybrid_system", "train_hybrid", "train_hybrid_from_files",
           "train_nnet", "window_index"]
