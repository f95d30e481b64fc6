"""The hybrid acoustic model: a network's pdf posteriors turned into scaled likelihoods.

    log p(x | pdf) + const = log P(pdf | x) - log P(pdf)

The priors ``P(pdf)`` are the pdfs' relative frequencies in the training targets, floored.
A pdf never seen in the targets (e.g. the spoken-noise phone of a corpus without noise)
gets the uniform prior 1 / num_pdfs instead: its posterior is tiny, and dividing it by a
tiny floor would make it the best-scoring pdf of every frame. Files written by ``save``::

    model.json     type, network spec (architecture, input dim, num_pdfs), priors
    weights.npz    the network's state dict as arrays (no pickle)
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from asr.errors import ModelError
from asr.fileio import write_json
from asr.models import load_arrays, read_json, save_arrays
from asr.nnet.data import FrameDataset
from asr.nnet.models import build_net, sequence_logits

WEIGHTS_NAME = "weights.npz"
META_NAME = "model.json"


def estimate_priors(targets: Iterable[np.ndarray], num_pdfs: int,
                    floor: float = 1e-8) -> np.ndarray:
    """Relative frequency of each pdf over all target frames, floored and renormalised;
    a pdf with no frame gets 1 / num_pdfs (see the module docstring).

    Parameters
    ----------
    targets : (T_u,) integer arrays of pdf ids (a dict's values, a list, ...).
    num_pdfs : length of the result.
    floor : smallest prior any pdf gets (before renormalising).

    Returns
    -------
    (num_pdfs,) float64, positive, summing to 1.
    """
    if isinstance(targets, dict):
        targets = targets.values()
    counts = np.zeros(num_pdfs, dtype=np.float64)
    for t in targets:
        t = np.asarray(t, dtype=np.int64)
        if len(t) and (t.min() < 0 or t.max() >= num_pdfs):
            raise ValueError(f"pdf ids must lie in [0, {num_pdfs}), got {t.min()}..{t.max()}")
        counts += np.bincount(t, minlength=num_pdfs)
    total = counts.sum()
    priors = counts / total if total > 0 else np.full(num_pdfs, 1.0 / num_pdfs)
    priors = np.where(counts > 0, np.maximum(priors, floor), 1.0 / num_pdfs)
    return priors / priors.sum()


class HybridAcousticModel:
    """A network (``asr.nnet.models``) and pdf priors behind the ``AcousticModel`` interface.

    Registered as ``"dnn"`` through the ``asr.acoustic_models`` entry point (``setup.cfg``).

    Parameters
    ----------
    net : an ``MLP`` or ``TDNN``: windows (B, context, D) -> logits (B, num_pdfs). Its
        ``spec`` is saved so that ``load`` can build it again. A network that runs over
        sequences (the TDNN) scores each utterance as one sequence (``sequence_logits``),
        the MLP window by window; both give every frame the same edge-replicated context.
    priors : (num_pdfs,) pdf priors (see ``estimate_priors``).

    Attributes
    ----------
    device : where ``log_likelihoods`` runs (default the CPU; set e.g. ``"cuda"``).
    batch_frames : frames scored per forward pass (windows, or output frames of one
        piece of a sequence).
    """

    model_type = "dnn"

    def __init__(self, net: nn.Module, priors: np.ndarray):
        spec = net.spec
        priors = np.asarray(priors, dtype=np.float64)
        if priors.shape != (spec["num_pdfs"],) or not np.all(priors > 0):
            raise ValueError(f"priors must be {spec['num_pdfs']} positive numbers, got shape "
                             f"{priors.shape}")
        self.net = net.eval()
        self.spec = dict(spec)
        self.priors = priors
        self.num_pdfs = int(spec["num_pdfs"])
        self.device = "cpu"
        self.batch_frames = 4096
        self._log_priors = torch.from_numpy(np.log(priors).astype(np.float32))

    @property
    def input_dim(self) -> int:
        return int(self.spec["input_dim"])

    def log_posteriors(self, feats: np.ndarray) -> np.ndarray:
        """(T, num_pdfs) float32 log P(pdf | frame) of features (T, input_dim)."""
        feats = np.asarray(feats, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[1] != self.input_dim:
            raise ValueError(f"features must have shape (T, {self.input_dim}), got "
                             f"{feats.shape}; is the model's feature config applied?")
        if len(feats) == 0:
            return np.zeros((0, self.num_pdfs), dtype=np.float32)
        device = torch.device(self.device)
        net = self.net.to(device).eval()
        if getattr(net, "over_sequences", False):
            with torch.inference_mode():
                logits = sequence_logits(net, torch.from_numpy(feats).to(device),
                                         self.batch_frames)
                return torch.log_softmax(logits.float(), dim=1).cpu().numpy()
        data = FrameDataset([feats], None, self.spec["context_left"],
                            self.spec["context_right"]).to(device)
        out = []
        with torch.inference_mode():
            for index in data.batches(self.batch_frames):
                out.append(torch.log_softmax(net(data.windows(index)).float(), dim=1).cpu())
        return torch.cat(out).numpy()

    def log_likelihoods(self, feats: np.ndarray) -> np.ndarray:
        """(T, num_pdfs) float32 scaled log-likelihoods: log posterior - log prior."""
        return self.log_posteriors(feats) - self._log_priors.numpy()[None, :]

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        state = {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        save_arrays(directory / WEIGHTS_NAME, state)
        write_json(directory / META_NAME, {"type": "dnn", "num_pdfs": self.num_pdfs,
                                           "spec": self.spec, "priors": self.priors.tolist()})

    @classmethod
    def load(cls, directory: Path) -> "HybridAcousticModel":
        directory = Path(directory)
        meta = read_json(directory / META_NAME)
        arrays = load_arrays(directory / WEIGHTS_NAME)
        try:
            spec = meta["spec"]
            net = build_net(spec)
            net.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
            return cls(net, np.asarray(meta["priors"], dtype=np.float64))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelError(directory, f"inconsistent network files: {exc}") from None
