"""Frames with context: every frame of a set of utterances in one tensor.

A network classifies one frame at a time from a window of ``left + 1 + right`` frames
around it. Windows are never stored: each batch gathers them from the frame matrix by index
arithmetic, replicating an utterance's first and last frame where a window runs past an
edge (Kaldi's ``splice-feats``), so windows never mix two utterances::

    data = FrameDataset([feats_a, feats_b], [pdfs_a, pdfs_b], left=5, right=5)
    for index in data.batches(512, generator):      # (B,) frame numbers, shuffled
        x, y = data.batch(index)                     # (B, 11, D) float32, (B,) int64

A network that runs over sequences (the TDNN) trains on chunks instead: ``W`` consecutive
frames of one utterance with ``left`` frames before and ``right`` after, edges replicated
as for windows; an utterance's last chunk may hold fewer than ``W`` frames, and its
positions past the end get the target ``PAD`` (which the loss ignores)::

    for starts in data.chunk_batches(32, 16, generator):  # (B,) first frames, shuffled
        x, y = data.chunk_batch(starts, 32)                # (B, 5 + 32 + 5, D), (B, 32)

Frame numbers count from 0 over the concatenation of the utterances, in the order given;
a chunk is named by the number of its first frame.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

#: Target of a chunk position past its utterance's end: ``F.cross_entropy``'s ignore_index.
PAD = -100


def window_index(centres: torch.Tensor, first: torch.Tensor, last: torch.Tensor,
                 left: int, right: int) -> torch.Tensor:
    """Frame numbers of the windows around ``centres``, clamped to each utterance.

    Parameters
    ----------
    centres, first, last : (B,) int64
        The frames classified and the first and last frame of each one's utterance.
    left, right : frames of context on each side.

    Returns
    -------
    (B, left + 1 + right) int64
    """
    offsets = torch.arange(-left, right + 1, device=centres.device)
    index = centres[:, None] + offsets[None, :]
    return torch.minimum(torch.maximum(index, first[:, None]), last[:, None])


def splice_frames(feats: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Every window of one utterance: (T, D) -> (T, left + 1 + right, D), edges replicated."""
    num = feats.shape[0]
    centres = torch.arange(num, device=feats.device)
    first = torch.zeros_like(centres)
    last = torch.full_like(centres, num - 1)
    return feats[window_index(centres, first, last, left, right)]


def mask_frequencies(x: torch.Tensor, max_width: int) -> torch.Tensor:
    """SpecAugment's frequency mask: zero one band of 0..max_width bins in each window.

    (B, C, D) -> (B, C, D); the band is the same for every frame of a window. Draws from
    torch's global generator (seeded and checkpointed by training).
    """
    batch, _, dim = x.shape
    width = torch.randint(0, min(max_width, dim) + 1, (batch,))
    start = (torch.rand(batch) * (dim - width + 1)).long()
    bins = torch.arange(dim)
    keep = (bins < start[:, None]) | (bins >= (start + width)[:, None])
    return x * keep[:, None, :].to(x.device, x.dtype)


class FrameDataset:
    """The frames (and pdf targets) of several utterances, with windows cut per batch.

    Parameters
    ----------
    feats : sequence of (T_u, D) arrays, one per utterance.
    targets : sequence of (T_u,) integer arrays (pdf ids), or None (scoring only).
    left, right : frames of context on each side of a window's centre.
    pin_memory : keep the frames in page-locked memory, for non-blocking copies to a GPU.

    Attributes
    ----------
    frames : (N, D) float32 tensor, the utterances one after another.
    targets : (N,) int64 tensor or None.
    offsets : (U + 1,) int64 tensor; utterance ``u`` holds frames ``offsets[u]:offsets[u+1]``.
    """

    def __init__(self, feats: Sequence[np.ndarray], targets: Sequence[np.ndarray] | None,
                 left: int, right: int, pin_memory: bool = False):
        if len(feats) == 0:
            raise ValueError("a frame dataset needs at least one utterance")
        dims = {np.shape(f)[1] if np.ndim(f) == 2 else None for f in feats}
        if len(dims) != 1 or None in dims:
            raise ValueError(f"features must be 2-D arrays of one width, got widths {dims}")
        lengths = [len(f) for f in feats]
        if min(lengths) == 0:
            raise ValueError("an utterance has no frames")
        self.left, self.right = int(left), int(right)
        self.frames = torch.from_numpy(np.concatenate(feats).astype(np.float32, copy=False))
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        self.targets = None
        if targets is not None:
            if [len(t) for t in targets] != lengths:
                raise ValueError("every utterance needs one target per frame")
            self.targets = torch.from_numpy(np.concatenate(targets).astype(np.int64))
        if pin_memory:
            self.pin_memory()

    def __len__(self) -> int:
        return self.frames.shape[0]

    @property
    def dim(self) -> int:
        return self.frames.shape[1]

    @property
    def num_utts(self) -> int:
        return len(self.offsets) - 1

    @property
    def device(self) -> torch.device:
        return self.frames.device

    def pin_memory(self) -> "FrameDataset":
        """Move frames and targets to page-locked host memory (in place); returns self."""
        self.frames = self.frames.pin_memory()
        if self.targets is not None:
            self.targets = self.targets.pin_memory()
        return self

    def to(self, device: torch.device) -> "FrameDataset":
        """Move frames, targets and offsets to ``device`` (in place); returns self."""
        self.frames = self.frames.to(device)
        self.offsets = self.offsets.to(device)
        if self.targets is not None:
            self.targets = self.targets.to(device)
        return self

    def windows(self, index: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) frame numbers -> (B, left + 1 + right, D) windows (into ``out`` if given)."""
        index = index.to(self.device)
        utt = torch.searchsorted(self.offsets, index, right=True) - 1
        rows = window_index(index, self.offsets[utt], self.offsets[utt + 1] - 1,
                            self.left, self.right)
        shape = (*rows.shape, self.dim)
        if out is None:
            return self.frames[rows]
        torch.index_select(self.frames, 0, rows.reshape(-1), out=out.view(-1, self.dim))
        return out.view(shape)

    def batch(self, index: torch.Tensor, out: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Windows (B, C, D) and targets (B,) (None without targets) of frames ``index``."""
        index = index.to(self.device)
        y = None if self.targets is None else self.targets[index]
        return self.windows(index, out), y

    def _bounds(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """First and last frame (B,) of the utterance of each frame number in ``index``."""
        utt = torch.searchsorted(self.offsets, index, right=True) - 1
        return self.offsets[utt], self.offsets[utt + 1] - 1

    def chunk_starts(self, width: int) -> torch.Tensor:
        """(K,) int64 CPU tensor: the first frame of every chunk of ``width`` frames, each
        utterance cut from its first frame on, in order."""
        offsets = self.offsets.cpu()
        lengths = offsets[1:] - offsets[:-1]
        counts = (lengths + width - 1) // width
        first_chunk = torch.cumsum(counts, 0) - counts
        k = torch.arange(int(counts.sum())) - torch.repeat_interleave(first_chunk, counts)
        return torch.repeat_interleave(offsets[:-1], counts) + k * width

    def chunk_frames(self, starts: torch.Tensor, width: int) -> torch.Tensor:
        """(B,) int64: frames of each chunk that lie in its utterance (``width`` but at the
        end of an utterance)."""
        starts = starts.to(self.device)
        _, last = self._bounds(starts)
        return torch.clamp(last - starts + 1, max=width)

    def chunk_batch(self, starts: torch.Tensor, width: int, out: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Chunks of ``width`` frames starting at frame numbers ``starts`` (B,).

        Returns
        -------
        x : (B, left + width + right, D) float32 frames, clamped to each utterance (into
            ``out`` if given).
        y : (B, width) int64 targets, ``PAD`` past an utterance's end; None without targets.
        """
        starts = starts.to(self.device)
        first, last = self._bounds(starts)
        steps = torch.arange(-self.left, width + self.right, device=self.device)
        rows = torch.minimum(torch.maximum(starts[:, None] + steps, first[:, None]),
                             last[:, None])
        if out is None:
            x = self.frames[rows]
        else:
            torch.index_select(self.frames, 0, rows.reshape(-1), out=out.view(-1, self.dim))
            x = out.view(*rows.shape, self.dim)
        y = None
        if self.targets is not None:
            frames = starts[:, None] + torch.arange(width, device=self.device)
            inside = frames <= last[:, None]
            y = torch.where(inside, self.targets[torch.minimum(frames, last[:, None])],
                            torch.full_like(frames, PAD))
        return x, y

    def chunk_batches(self, width: int, chunks: int, generator: torch.Generator | None = None
                      ) -> Iterator[torch.Tensor]:
        """(B,) int64 CPU tensors of chunk starts, ``chunks`` a batch, covering every frame once.

        Shuffled with ``generator`` when one is given, in order otherwise; the last batch
        may be shorter.
        """
        starts = self.chunk_starts(width)
        order = (torch.randperm(len(starts), generator=generator) if generator is not None
                 else torch.arange(len(starts)))
        yield from (starts[part] for part in torch.split(order, chunks))

    def batches(self, batch_size: int, generator: torch.Generator | None = None
                ) -> Iterator[torch.Tensor]:
        """(B,) int64 CPU tensors of frame numbers covering every frame once.

        Shuffled with ``generator`` when one is given, in order otherwise; the last batch
        may be shorter.
        """
        n = len(self)
        order = (torch.randperm(n, generator=generator) if generator is not None
                 else torch.arange(n))
        yield from torch.split(order, batch_size)
