"""Where a training job's utterances come from, and what is done to their features.

A job never receives feature matrices from the driver: it gets a *source* (a part of the
training data) and a :class:`FeatureView` (what turns the source's features into the ones
a model scores), and reads its utterances speaker by speaker.

* :class:`ArchiveSource`: a Kaldi data directory (transcripts, speakers) and the feature
  archive of its base features, read memory-mapped, only the part's utterances; a recipe's
  jobs use it, so that the driver never holds the corpus.
* :class:`MemorySource`: utterances already in memory (a library user's, or a test's); a
  process pool receives its part of them with the task.

A view applies, in order: the feature pipeline (CMVN per speaker, deltas, splicing; none
for features that are already the model's), feature transforms (LDA, each MLLT), and one
fMLLR transform per speaker.

>>> source = ArchiveSource("exp/sotu/feats/train", "data/sotu/train")        # doctest: +SKIP
>>> view = FeatureView(pipeline=FeatureConfig(deltas=2, cmvn="speaker"))    # doctest: +SKIP
>>> for spk, utts in source.speakers():                                      # doctest: +SKIP
...     feats = view.apply(spk, {u: f for u, f, _ in utts}, source)          # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from asr.features import FeatureConfig, apply_pipeline
from asr.training import Utterance
from asr.transforms import FeatureTransform

SpeakerUtts = list[tuple[str, np.ndarray, list[str]]]
"""One speaker's utterances: (utt id, features (T, D), words), in sorted id order."""


@dataclass(frozen=True, eq=False)
class FeatureView:
    """Source features -> model features: pipeline, then transforms, then fMLLR.

    Attributes
    ----------
    pipeline : CMVN, deltas and splicing (``apply_pipeline``), or None for none.
    transforms : applied one after another, each output kept as float32 (LDA, then MLLTs).
    fmllr : speaker -> W (D, D+1), or None; a speaker without one is left unadapted.
    """

    pipeline: FeatureConfig | None = None
    transforms: tuple[FeatureTransform, ...] = ()
    fmllr: Mapping[str, np.ndarray] | None = None

    def followed_by(self, transform: FeatureTransform) -> "FeatureView":
        return dataclasses.replace(self, transforms=self.transforms + (transform,))

    def with_fmllr(self, fmllr: Mapping[str, np.ndarray] | None) -> "FeatureView":
        return dataclasses.replace(self, fmllr=None if fmllr is None else dict(fmllr))

    def for_speakers(self, speakers: set[str]) -> "FeatureView":
        """The same view carrying only ``speakers``' fMLLR transforms (a job's share)."""
        if self.fmllr is None:
            return self
        return self.with_fmllr({s: w for s, w in self.fmllr.items() if s in speakers})

    def unadapted(self) -> "FeatureView":
        return self.with_fmllr(None)

    def apply(self, speaker: str, feats: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """utt -> (T, D_in) source features of one speaker -> utt -> (T, D) float32."""
        from asr.transforms.fmllr import apply_fmllr

        if self.pipeline is not None:
            out = apply_pipeline(dict(feats), self.pipeline, {u: speaker for u in feats})
        else:
            out = {u: np.asarray(f, dtype=np.float32) for u, f in feats.items()}
        for t in self.transforms:
            out = {u: t.apply(f).astype(np.float32, copy=False) for u, f in out.items()}
        if self.fmllr is not None and speaker in self.fmllr:
            W = self.fmllr[speaker]
            out = {u: apply_fmllr(W, f).astype(np.float32, copy=False) for u, f in out.items()}
        return {u: np.ascontiguousarray(f, dtype=np.float32) for u, f in out.items()}


class UtteranceSource:
    """A set of training utterances that splits into parts by speaker (see the module)."""

    def parts(self, nj: int) -> list["UtteranceSource"]:
        """``nj`` parts holding whole speakers, contiguous in sorted speaker order."""
        raise NotImplementedError

    def speakers(self) -> Iterator[tuple[str, SpeakerUtts]]:
        """(speaker, its utterances) one speaker at a time, in a fixed order."""
        raise NotImplementedError

    def blocks(self) -> Iterator[list[tuple[str, SpeakerUtts]]]:
        """The speakers whose statistics are rounded together, as one block of the exact
        sums (``asr.exact``); the same blocks for any split into parts. Default: each
        speaker alone."""
        for item in self.speakers():
            yield [item]

    def utt_ids(self) -> list[str]:
        raise NotImplementedError

    def speaker_ids(self) -> list[str]:
        raise NotImplementedError


@dataclass(eq=False)
class MemorySource(UtteranceSource):
    """Utterances in memory. Without ``utt2spk`` each utterance is its own speaker, and
    ``block_utts`` of them in sorted id order make one block of the exact sums (a short
    utterance is too small a block: rounding and batching cost per block); parts then
    hold whole blocks."""

    utts: list[Utterance]
    utt2spk: Mapping[str, str] | None = None
    block_utts: int = 64

    def _speaker(self, utt: str) -> str:
        return utt if self.utt2spk is None else self.utt2spk[utt]

    def _groups(self) -> list[tuple[str, list[Utterance]]]:
        groups: dict[str, list[Utterance]] = {}
        for u in self.utts:
            groups.setdefault(self._speaker(u.utt), []).append(u)
        return list(groups.items())

    def parts(self, nj: int) -> list["MemorySource"]:
        from asr.jobs import split_points

        groups = (sorted(self._groups(), key=lambda g: g[0]) if self.utt2spk is not None
                  else [(str(i), b) for i, b in enumerate(self._utterance_blocks())])
        if nj <= 1 or len(groups) <= 1:
            return [self]
        points = [p for p in split_points([len(g[1]) for g in groups], min(nj, len(groups)))
                  if p]
        return [MemorySource([u for i in part for u in groups[i][1]],
                             None if self.utt2spk is None else
                             {u.utt: groups[i][0] for i in part for u in groups[i][1]},
                             self.block_utts)
                for part in points]

    def speakers(self) -> Iterator[tuple[str, SpeakerUtts]]:
        for spk, utts in self._groups():
            yield spk, [(u.utt, u.feats, u.words) for u in utts]

    def blocks(self) -> Iterator[list[tuple[str, SpeakerUtts]]]:
        if self.utt2spk is not None:
            yield from super().blocks()
            return
        for block in self._utterance_blocks():
            yield [(u.utt, [(u.utt, u.feats, u.words)]) for u in block]

    def _utterance_blocks(self) -> list[list[Utterance]]:
        """Without speakers: ``block_utts`` utterances at a time, in sorted id order (a
        part's blocks are the whole set's, as parts hold whole blocks)."""
        ordered = sorted(self.utts, key=lambda u: u.utt)
        return [ordered[i:i + self.block_utts]
                for i in range(0, len(ordered), max(1, self.block_utts))]

    def utt_ids(self) -> list[str]:
        return [u.utt for u in self.utts]

    def speaker_ids(self) -> list[str]:
        return [spk for spk, _ in self._groups()]


@dataclass(eq=False)
class ArchiveSource(UtteranceSource):
    """A data directory's utterances with features from an archive (paths, absolute).

    ``utts`` (optional) narrows the data directory to those utterances (e.g. the ones a
    features stage did not skip).
    """

    feat_dir: str
    data_dir: str
    utts: frozenset[str] | None = field(default=None)

    def __post_init__(self):
        self.feat_dir = str(Path(self.feat_dir).resolve())
        self.data_dir = str(Path(self.data_dir).resolve())

    def _data(self):
        from asr.data import DataDir

        return DataDir.load(self.data_dir)

    def parts(self, nj: int) -> list["ArchiveSource"]:
        from asr.jobs import split_data

        if nj <= 1:
            return [self]
        return [ArchiveSource(self.feat_dir, str(part.path), self.utts)
                for part in split_data(self.data_dir, nj)]

    def utt_ids(self) -> list[str]:
        data = self._data()
        return [u for u in data.utts if self.utts is None or u in self.utts]

    def speaker_ids(self) -> list[str]:
        return list(self._data().spk2utt)

    def speakers(self) -> Iterator[tuple[str, SpeakerUtts]]:
        from asr.features.archive import read_archive

        data = self._data()
        wanted = [u for u in data.utts if self.utts is None or u in self.utts]
        feats = read_archive(self.feat_dir, mmap=True, utts=wanted)
        for spk, utts in data.spk2utt.items():
            mine = [u for u in utts if u in feats]
            if mine:
                yield spk, [(u, feats[u], data.text[u]) for u in mine]
