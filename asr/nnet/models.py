"""The networks: frame windows (B, context, D) in, pdf logits (B, num_pdfs) out.

``MLP`` flattens the window (Kaldi nnet1's spliced-input DNN); ``TDNN`` slides dilated 1-D
convolutions along time (Kaldi nnet3's TDNN) whose receptive field is exactly the window.
The TDNN also runs over whole sequences (``over_sequences``): ``net(x, sequence=True)``
maps (B, left + W + right, D) to the logits (B, W, num_pdfs) of the W frames in the middle,
each layer computed once per frame instead of once per window that holds it, and
``sequence_logits`` scores a whole utterance that way, equal to scoring it window by window.
Each hidden layer is ``affine -> ReLU -> norm -> dropout``. Each network keeps its
constructor arguments as a plain dict, ``net.spec``; ``build_net(net.spec)`` builds the
same architecture again, which is how a saved acoustic model is loaded.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asr.nnet.config import ARCHITECTURE_FIELDS, NnetConfig


def net_spec(cfg: NnetConfig, input_dim: int, num_pdfs: int) -> dict:
    """Everything ``build_net`` needs, as plain data."""
    return {**cfg.architecture(), "input_dim": int(input_dim), "num_pdfs": int(num_pdfs)}


NETWORKS: dict[str, type[nn.Module]] = {}


def register_network(name: str):
    """Class decorator: make a network available as ``[dnn] model = "<name>"``.

    The class takes ``input_dim, num_pdfs`` and the architecture fields of ``NnetConfig``
    as keyword arguments, maps (B, context, input_dim) to (B, num_pdfs) logits, and keeps
    its arguments in ``self.spec`` (see ``_spec``). A class with ``over_sequences = True``
    also takes ``sequence=True``: (B, left + W + right, input_dim) -> (B, W, num_pdfs).
    """
    def wrap(cls):
        NETWORKS[name] = cls
        return cls
    return wrap


def build_net(spec: dict) -> nn.Module:
    """A fresh network from a ``net_spec`` dict (weights from torch's current RNG)."""
    missing = [k for k in (*ARCHITECTURE_FIELDS, "input_dim", "num_pdfs") if k not in spec]
    if missing:
        raise ValueError(f"network spec lacks {missing}")
    if spec["model"] not in NETWORKS:
        raise ValueError(f"unknown network {spec['model']!r}; expected one of {sorted(NETWORKS)}")
    kwargs = {k: spec[k] for k in (*ARCHITECTURE_FIELDS, "input_dim", "num_pdfs")
              if k != "model"}
    return NETWORKS[spec["model"]](**kwargs)


def _spec(model: str, args: dict) -> dict:
    return {"model": model, **{k: args[k] for k in (*ARCHITECTURE_FIELDS, "input_dim",
                                                    "num_pdfs") if k != "model"}}


class _ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of (B, channels, time)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _norm(kind: str, dim: int, sequence: bool) -> nn.Module:
    if kind == "layer":
        return _ChannelLayerNorm(dim) if sequence else nn.LayerNorm(dim)
    if kind == "batch":
        return nn.BatchNorm1d(dim)
    return nn.Identity()


@register_network("mlp")
class MLP(nn.Module):
    """Spliced frames -> ``num_layers`` dense hidden layers -> pdf logits.

    forward: (B, left + 1 + right, input_dim) -> (B, num_pdfs)
    """

    over_sequences = False

    def __init__(self, input_dim: int, num_pdfs: int, context_left: int = 5,
                 context_right: int = 5, hidden_dim: int = 512, num_layers: int = 4,
                 dropout: float = 0.1, norm: str = "layer"):
        super().__init__()
        self.spec = _spec("mlp", locals())
        self.context_left, self.context_right = context_left, context_right
        layers: list[nn.Module] = []
        width = input_dim * (context_left + 1 + context_right)
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU(), _norm(norm, hidden_dim, False),
                       nn.Dropout(dropout)]
            width = hidden_dim
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(width, num_pdfs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(x.flatten(1)))


def tdnn_layout(span: int, num_layers: int) -> list[tuple[int, int]]:
    """(kernel, dilation) of each convolution so that together they see ``span + 1`` frames.

    Dilations grow 1, 2, 3, ... while the span allows (Kaldi's TDNN splicing pattern); the
    last layer takes whatever remains, and layers beyond the span are 1x1 (per frame).
    For span 10 and 4 layers: (3, 1), (3, 2), (3, 2), (1, 1).
    """
    layout, remaining, next_dilation = [], span, 1
    for i in range(num_layers):
        if remaining == 0:
            layout.append((1, 1))
        elif i == num_layers - 1 or remaining == 1:
            layout.append((remaining + 1, 1))
            remaining = 0
        else:
            dilation = min(next_dilation, remaining // 2)
            layout.append((3, dilation))
            remaining -= 2 * dilation
            next_dilation = dilation + 1
    return layout


@register_network("tdnn")
class TDNN(nn.Module):
    """Dilated 1-D convolutions over time, then a pdf layer applied at every frame.

    forward(x): (B, left + 1 + right, input_dim) windows -> (B, num_pdfs).
    forward(x, sequence=True): (B, left + W + right, input_dim) -> (B, W, num_pdfs), the
    logits of the W frames that have their whole context in ``x``. Each convolution is
    "valid", so every layer shortens the sequence by its (kernel - 1) * dilation frames and
    a window shrinks to its centre frame (see ``tdnn_layout``).

    The weights are ``nn.Conv1d``'s, but each convolution runs as Kaldi's TDNN layers do:
    the ``kernel`` frames it sees spliced side by side, times the kernel as one matrix, in
    a (B, time, channels) layout that LayerNorm takes as it is (on the CPU about a third
    faster than ``conv1d`` with its transposes around LayerNorm).
    """

    over_sequences = True

    def __init__(self, input_dim: int, num_pdfs: int, context_left: int = 5,
                 context_right: int = 5, hidden_dim: int = 512, num_layers: int = 4,
                 dropout: float = 0.1, norm: str = "layer"):
        super().__init__()
        self.spec = _spec("tdnn", locals())
        self.context_left, self.context_right = context_left, context_right
        self.layout = tdnn_layout(context_left + context_right, num_layers)
        layers: list[nn.Module] = []
        width = input_dim
        for kernel, dilation in self.layout:
            layers += [nn.Conv1d(width, hidden_dim, kernel, dilation=dilation), nn.ReLU(),
                       _norm(norm, hidden_dim, True), nn.Dropout(dropout)]
            width = hidden_dim
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(width, num_pdfs)

    def forward(self, x: torch.Tensor, sequence: bool = False) -> torch.Tensor:
        h = x                                       # (B, time, channels) throughout
        for module in self.hidden:
            if isinstance(module, nn.Conv1d):
                h = _spliced_conv(module, h)
            elif isinstance(module, nn.BatchNorm1d):
                h = module(h.transpose(1, 2)).transpose(1, 2)
            elif isinstance(module, _ChannelLayerNorm):
                h = nn.LayerNorm.forward(module, h)
            else:
                h = module(h)
        out = self.output(h)                        # (B, W, num_pdfs)
        if sequence:
            return out
        if out.shape[1] != 1:
            raise ValueError(f"a window has {self.context_left + 1 + self.context_right} "
                             f"frames, got {x.shape[1]}; pass sequence=True for sequences")
        return out[:, 0]


def _spliced_conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A valid dilated ``conv`` over (B, T, C_in) as one matrix product -> (B, T', C_out),
    T' = T - (kernel - 1) * dilation."""
    kernel, dilation = conv.kernel_size[0], conv.dilation[0]
    steps = x.shape[1] - (kernel - 1) * dilation
    spliced = (torch.cat([x[:, k * dilation:k * dilation + steps] for k in range(kernel)], 2)
               if kernel > 1 else x)                # (B, T', kernel * C_in)
    weight = conv.weight.permute(0, 2, 1).reshape(conv.out_channels, -1)
    return F.linear(spliced, weight, conv.bias)


def sequence_logits(net: nn.Module, feats: torch.Tensor, max_frames: int = 4096
                    ) -> torch.Tensor:
    """Logits of every frame of one utterance from a network that runs over sequences.

    The utterance is padded with ``context_left`` copies of its first frame and
    ``context_right`` of its last, as ``asr.nnet.data.window_index`` clamps windows, and
    run through the network in pieces of at most ``max_frames`` output frames, each with
    the ``context_left + context_right`` input frames around it (memory stays bounded on
    long utterances). In eval mode the result equals scoring every window separately.

    Parameters
    ----------
    net : a network with ``over_sequences`` (the TDNN), on the device of ``feats``.
    feats : (T, D) float, T >= 1.
    max_frames : output frames per forward pass.

    Returns
    -------
    (T, num_pdfs) logits.
    """
    left, right = net.context_left, net.context_right
    num = feats.shape[0]
    padded = torch.cat([feats[:1].expand(left, -1), feats, feats[-1:].expand(right, -1)])
    pieces = [net(padded[start:min(start + max_frames, num) + left + right][None],
                  sequence=True)[0]
              for start in range(0, num, max(int(max_frames), 1))]
    return torch.cat(pieces)
