"""A weighted finite-state transducer as flat arrays, the form the decoder searches.

Glossary of the id spaces (every id counts from 0, label 0 is epsilon):

==============  ==========================================================================
state           ``0 .. num_states-1``; ``start`` is one of them
arc             ``0 .. num_arcs-1``; the arcs leaving state ``s`` are
                ``arc_offsets[s]:arc_offsets[s+1]`` (CSR order: sorted by source state)
input label     0 = epsilon (no frame consumed); ``k > 0`` consumes one frame and is scored
                by pdf ``label_pdf[k]`` (e.g. label = transition id + 1 in an HCLG)
output label    0 = epsilon; ``k > 0`` is word id ``k`` of the graph's ``words.txt``
cost            tropical weight: -log probability, lower is better (``inf`` = impossible)
==============  ==========================================================================

>>> g = FstArrays.from_arcs(num_states=2, start=0, final={1: 0.0},
...                         arcs=[(0, 1, 1, 3, 0.5)])       # src, dst, ilabel, olabel, cost
>>> g.num_arcs, int(g.nextstate[0]), float(g.final_cost[1])
(1, 1, 0.0)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from asr.errors import ModelError

_FIELDS = ("arc_offsets", "ilabel", "olabel", "cost", "nextstate", "final_cost")


@dataclass(frozen=True)
class FstArrays:
    """A WFST in CSR layout (S states, A arcs).

    Attributes
    ----------
    start : int
    final_cost : (S,) float32 -- cost of ending in each state; ``inf`` where it is not final
    arc_offsets : (S + 1,) int64 -- arcs of state ``s`` are ``arc_offsets[s]:arc_offsets[s+1]``
    ilabel, olabel : (A,) int32 -- input and output labels (0 = epsilon)
    cost : (A,) float32 -- arc costs (-log probability)
    nextstate : (A,) int32 -- destination state of each arc
    """

    start: int
    final_cost: np.ndarray
    arc_offsets: np.ndarray
    ilabel: np.ndarray
    olabel: np.ndarray
    cost: np.ndarray
    nextstate: np.ndarray

    def __post_init__(self):
        self.check()

    @property
    def num_states(self) -> int:
        return len(self.final_cost)

    @property
    def num_arcs(self) -> int:
        return len(self.ilabel)

    def check(self, path: Path | None = None) -> None:
        """Raise ModelError (naming ``path``) unless the arrays form a valid CSR graph."""
        s, a = len(self.final_cost), len(self.ilabel)
        problems = []
        if self.arc_offsets.shape != (s + 1,):
            problems.append(f"arc_offsets has shape {self.arc_offsets.shape}, expected ({s + 1},)")
        elif s and (self.arc_offsets[0] != 0 or self.arc_offsets[-1] != a
                    or np.any(np.diff(self.arc_offsets) < 0)):
            problems.append("arc_offsets must rise from 0 to the number of arcs")
        for name in ("olabel", "cost", "nextstate"):
            if getattr(self, name).shape != (a,):
                problems.append(f"{name} has shape {getattr(self, name).shape}, expected ({a},)")
        if not problems and a and (self.nextstate.min() < 0 or self.nextstate.max() >= s):
            problems.append("an arc leads to a state that does not exist")
        if not problems and a and (self.ilabel.min() < 0 or self.olabel.min() < 0):
            problems.append("labels must be >= 0 (0 = epsilon)")
        if s and not 0 <= self.start < s:
            problems.append(f"start state {self.start} does not exist ({s} states)")
        if problems:
            raise ModelError(path, "not a valid graph: " + "; ".join(problems))

    @classmethod
    def from_arcs(cls, num_states: int, start: int, final: Mapping[int, float],
                  arcs: Iterable[tuple[int, int, int, int, float]]) -> "FstArrays":
        """Build from ``(src, dst, ilabel, olabel, cost)`` tuples and ``{state: final cost}``;
        arcs keep their given order within each source state."""
        table = np.array(list(arcs), dtype=np.float64).reshape(-1, 5)
        order = np.argsort(table[:, 0], kind="stable")
        table = table[order]
        src = table[:, 0].astype(np.int64)
        offsets = np.zeros(num_states + 1, dtype=np.int64)
        np.add.at(offsets, src + 1, 1)
        final_cost = np.full(num_states, np.inf, dtype=np.float32)
        for state, value in final.items():
            final_cost[state] = value
        return cls(int(start), final_cost, np.cumsum(offsets),
                   table[:, 2].astype(np.int32), table[:, 3].astype(np.int32),
                   table[:, 4].astype(np.float32), table[:, 1].astype(np.int32))

    @classmethod
    def from_kaldifst(cls, fst) -> "FstArrays":
        """Convert a ``kaldifst.StdVectorFst`` (exactly; see ``asr.graph.fst``), arcs of each
        state sorted by input label."""
        from asr.graph.fst import from_fst

        table = from_fst(fst)
        order = np.lexsort((table.ilabel, table.src))
        offsets = np.zeros(table.num_states + 1, dtype=np.int64)
        np.add.at(offsets, table.src + 1, 1)
        return cls(table.start, table.final.astype(np.float32), np.cumsum(offsets),
                   table.ilabel[order].astype(np.int32), table.olabel[order].astype(np.int32),
                   table.cost[order].astype(np.float32), table.dst[order].astype(np.int32))

    def to_kaldifst(self):
        """The same graph as a ``kaldifst.StdVectorFst`` (e.g. for Kaldi's own search)."""
        from asr.graph.fst import ArcTable, to_fst

        return to_fst(ArcTable.from_arrays(self))

    def save(self, path: str | Path) -> None:
        """Write as an uncompressed ``.npz`` (no pickle), atomically."""
        from asr.models import save_arrays

        save_arrays(Path(path), {"start": np.array([self.start], dtype=np.int64),
                                 **{name: getattr(self, name) for name in _FIELDS}})

    @classmethod
    def load(cls, path: str | Path) -> "FstArrays":
        """Read a graph written by :meth:`save`; a damaged file is a ModelError naming it."""
        from asr.models import load_arrays

        path = Path(path)
        arrays = load_arrays(path)
        missing = [name for name in ("start", *_FIELDS) if name not in arrays]
        if missing:
            raise ModelError(path, f"graph file lacks {', '.join(missing)}")
        dtypes = {"arc_offsets": np.int64, "ilabel": np.int32, "olabel": np.int32,
                  "cost": np.float32, "nextstate": np.int32, "final_cost": np.float32}
        graph = cls.__new__(cls)
        for name, dtype in dtypes.items():
            object.__setattr__(graph, name, np.ascontiguousarray(arrays[name], dtype=dtype))
        if arrays["start"].shape != (1,):
            raise ModelError(path, f"graph file's start has shape {arrays['start'].shape}, "
                                   "expected (1,)")
        object.__setattr__(graph, "start", int(arrays["start"][0]))
        graph.check(path)
        return graph


__all__ = ["FstArrays"]
