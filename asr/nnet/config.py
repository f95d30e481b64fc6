"""Settings of a hybrid network: architecture, training schedule and where it runs.

Plain types only, so a recipe fills them from a ``[dnn]`` table of its TOML file::

    [dnn]
    model = "tdnn"
    hidden_dim = 256
    epochs = 10

The acoustic scale is a decoding setting (``asr.decoder.DecoderConfig``), not one of these.
"""
from __future__ import annotations

from dataclasses import dataclass

NORMS = ("layer", "batch", "none")
SCHEDULES = ("plateau", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")

#: Fields that decide the network's shape (saved with the model, checked on resume).
ARCHITECTURE_FIELDS = ("model", "hidden_dim", "num_layers", "dropout", "norm",
                       "context_left", "context_right")


@dataclass
class NnetConfig:
    """Settings of one network training run.

    Architecture
    ------------
    model : ``"mlp"`` (spliced frames -> dense layers) or ``"tdnn"`` (dilated 1-D
        convolutions over time with the same receptive field).
    hidden_dim, num_layers : width and number of hidden layers.
    dropout : dropout probability after every hidden layer.
    norm : ``"layer"`` (LayerNorm), ``"batch"`` (BatchNorm) or ``"none"`` after each ReLU.
    context_left, context_right : frames of context on each side of the frame classified;
        windows are cut from the features on the fly, edge frames replicated.

    Training
    --------
    epochs : most passes over the training frames.
    batch_size : frames per minibatch (the MLP's windows, or the TDNN's chunks times
        ``chunk_width``), so the learning rate means the same for both networks.
    chunk_width : frames of one training chunk of the TDNN: ``chunk_width`` consecutive
        frames of one utterance (the last chunk of an utterance may be shorter) with their
        context, run through the convolutions as one sequence; a minibatch holds
        ``batch_size // chunk_width`` chunks, shuffled. 1 trains the TDNN on single
        windows, as the MLP. The MLP, whose windows are independent, ignores it.
    lr, weight_decay : AdamW's learning rate and decoupled weight decay.
    lr_schedule : ``"plateau"`` (multiply the rate by ``lr_factor`` when the validation loss
        stops falling; once an epoch), ``"cosine"`` (cosine decay to 0 over ``epochs``, a
        little after every training step) or ``"constant"``.
    lr_factor : the plateau schedule's factor.
    freq_mask : SpecAugment's frequency masking: each training window gets one band of
        0..``freq_mask`` consecutive feature bins set to 0 (the mean after CMVN); 0 = off.
    valid_fraction : fraction of utterances held out (seeded) for validation; 0 = none, and
        then the training loss drives the schedule and early stopping.
    patience : stop after this many epochs without a lower validation loss; the weights
        of the best epoch are kept.
    seed : seeds the split, the initial weights, the shuffling and dropout.

    Where it runs
    -------------
    device : ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
    amp : bf16 autocast on CUDA (ignored on the CPU).
    num_threads : CPU threads torch may use while training.
    prior_floor : floor on the pdf priors that turn posteriors into scaled likelihoods.
    """

    model: str = "mlp"
    hidden_dim: int = 512
    num_layers: int = 4
    dropout: float = 0.1
    norm: str = "layer"
    context_left: int = 5
    context_right: int = 5
    epochs: int = 15
    batch_size: int = 512
    chunk_width: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5
    lr_schedule: str = "plateau"
    lr_factor: float = 0.5
    freq_mask: int = 0
    valid_fraction: float = 0.1
    patience: int = 3
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_threads: int = 2
    prior_floor: float = 1e-8

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        from asr.nnet.models import NETWORKS  # the registry of network classes
        check(self.model in NETWORKS,
              f"model must be one of {sorted(NETWORKS)}, got {self.model!r}")
        check(self.norm in NORMS, f"norm must be one of {NORMS}, got {self.norm!r}")
        check(self.lr_schedule in SCHEDULES,
              f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        check(self.device in DEVICES, f"device must be one of {DEVICES}, got {self.device!r}")
        check(self.hidden_dim >= 1 and self.num_layers >= 1,
              f"hidden_dim and num_layers must be >= 1, got {self.hidden_dim} and "
              f"{self.num_layers}")
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        check(self.context_left >= 0 and self.context_right >= 0,
              f"context_left and context_right must be >= 0, got {self.context_left} and "
              f"{self.context_right}")
        check(self.epochs >= 1 and self.batch_size >= 1,
              f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        check(self.chunk_width >= 1, f"chunk_width must be >= 1, got {self.chunk_width}")
        check(self.training_chunk() is None or self.chunk_width <= self.batch_size,
              f"chunk_width ({self.chunk_width}) must not exceed batch_size "
              f"({self.batch_size}): a minibatch holds batch_size // chunk_width chunks")
        check(self.lr > 0 and self.weight_decay >= 0,
              f"lr must be > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}")
        check(self.freq_mask >= 0, f"freq_mask must be >= 0, got {self.freq_mask}")
        check(0.0 < self.lr_factor < 1.0, f"lr_factor must be in (0, 1), got {self.lr_factor}")
        check(0.0 <= self.valid_fraction < 1.0,
              f"valid_fraction must be in [0, 1), got {self.valid_fraction}")
        check(self.patience >= 1, f"patience must be >= 1, got {self.patience}")
        check(self.num_threads >= 1, f"num_threads must be >= 1, got {self.num_threads}")
        check(0.0 < self.prior_floor < 1.0,
              f"prior_floor must be in (0, 1), got {self.prior_floor}")

    @property
    def context(self) -> int:
        """Frames in one input window: ``context_left + 1 + context_right``."""
        return self.context_left + 1 + self.context_right

    def training_chunk(self) -> int | None:
        """Frames per training chunk: ``chunk_width`` for a network that runs over sequences
        (the TDNN), None for one that classifies independent windows (the MLP)."""
        from asr.nnet.models import NETWORKS
        sequences = getattr(NETWORKS[self.model], "over_sequences", False)
        return self.chunk_width if sequences else None

    def architecture(self) -> dict:
        """The fields that decide the network's shape, as plain data."""
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}
