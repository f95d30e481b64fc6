"""Moving WFSTs between numpy arrays and kaldifst, exactly and fast.

A graph in transit is an :class:`ArcTable`: the start state, one final cost per state and
one row per arc (source, destination, input label, output label, cost). Costs are tropical
weights (-log probability); ``inf`` means "not final".

- :func:`to_fst` compiles a table with ``kaldifst.compile`` from text whose floats are
  printed with 9 significant digits, so every float32 weight survives the trip;
- :func:`from_fst` writes the FST in OpenFst's binary ``vector`` format and reads the
  arcs back with numpy (exact, and about 5x faster than Python arc iterators).

>>> t = ArcTable.from_arcs(2, 0, {1: 0.5}, [(0, 1, 3, 4, 1.25)])
>>> back = from_fst(to_fst(t))
>>> back.ilabel.tolist(), back.cost.tolist(), back.final.tolist()
([3], [1.25], [inf, 0.5])
"""
from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

import kaldifst
import numpy as np

from asr.errors import ModelError

if TYPE_CHECKING:
    from asr.graph.arrays import FstArrays

_MAGIC = 2125659606
_ARC = np.dtype([("ilabel", "<i4"), ("olabel", "<i4"), ("cost", "<f4"), ("nextstate", "<i4")])


@dataclass
class ArcTable:
    """A WFST as flat arrays (S states, A arcs, arcs in any order).

    Attributes
    ----------
    start : int
    final : (S,) float32 -- final cost per state, ``inf`` where not final
    src, dst : (A,) int64 -- source and destination state of each arc
    ilabel, olabel : (A,) int64 -- labels, 0 = epsilon
    cost : (A,) float32
    """

    start: int
    final: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    ilabel: np.ndarray
    olabel: np.ndarray
    cost: np.ndarray

    @property
    def num_states(self) -> int:
        return len(self.final)

    @property
    def num_arcs(self) -> int:
        return len(self.src)

    @classmethod
    def from_arcs(cls, num_states: int, start: int, final: Mapping[int, float],
                  arcs: Iterable[tuple[int, int, int, int, float]]) -> "ArcTable":
        """From ``(src, dst, ilabel, olabel, cost)`` tuples and ``{state: final cost}``."""
        table = np.array(list(arcs), dtype=np.float64).reshape(-1, 5)
        fin = np.full(num_states, np.inf, dtype=np.float32)
        for state, value in final.items():
            fin[state] = value
        ints = table[:, :4].astype(np.int64)
        return cls(int(start), fin, ints[:, 0], ints[:, 1], ints[:, 2], ints[:, 3],
                   table[:, 4].astype(np.float32))

    @classmethod
    def from_arrays(cls, graph: "FstArrays") -> "ArcTable":
        """The arcs of a searchable graph (``asr.graph.arrays.FstArrays``)."""
        src = np.repeat(np.arange(graph.num_states, dtype=np.int64),
                        np.diff(graph.arc_offsets))
        return cls(graph.start, graph.final_cost.copy(), src,
                   graph.nextstate.astype(np.int64), graph.ilabel.astype(np.int64),
                   graph.olabel.astype(np.int64), graph.cost.copy())

    def select(self, keep: np.ndarray) -> "ArcTable":
        """The same states with only the arcs where ``keep`` (A,) bool is true."""
        return ArcTable(self.start, self.final, self.src[keep], self.dst[keep],
                        self.ilabel[keep], self.olabel[keep], self.cost[keep])


def to_fst(table: ArcTable) -> kaldifst.StdVectorFst:
    """A ``kaldifst.StdVectorFst`` with the table's arcs and costs; state numbers are kept
    (trailing states that no arc or final cost mentions are left out)."""
    order = np.argsort(table.src != table.start, kind="stable")   # start state's arcs first
    lines = [f"{s} {d} {i} {o} {c:.9g}" for s, d, i, o, c in zip(
        table.src[order].tolist(), table.dst[order].tolist(), table.ilabel[order].tolist(),
        table.olabel[order].tolist(), table.cost[order].tolist())]
    finals = np.flatnonzero(np.isfinite(table.final))
    finals = finals[np.argsort(finals != table.start, kind="stable")]
    final_lines = [f"{s} {c:.9g}" for s, c in zip(finals.tolist(),
                                                  table.final[finals].tolist())]
    if not lines or table.src[order][0] != table.start:   # the first line names the start
        if not len(finals) or finals[0] != table.start:
            fst = kaldifst.StdVectorFst()                   # nothing can be accepted
            fst.start = fst.add_state()
            return fst
        lines, final_lines = final_lines[:1] + lines, final_lines[1:]
    return kaldifst.compile("\n".join(lines + final_lines) + "\n", keep_state_numbering=True)


def from_fst(fst: kaldifst.StdVectorFst) -> ArcTable:
    """Read every state and arc of a ``StdVectorFst`` (exactly) into an :class:`ArcTable`."""
    fd, name = tempfile.mkstemp(suffix=".fst")
    os.close(fd)
    try:
        fst.write(name)
        with open(name, "rb") as fh:
            data = fh.read()
    finally:
        os.unlink(name)
    return parse_vector_fst(data, name)


def parse_vector_fst(data: bytes, where: str = "<fst>") -> ArcTable:
    """Parse OpenFst's binary ``vector`` format (standard arcs, no symbol tables)."""
    def fail(message):
        raise ModelError(where, f"not a binary standard vector FST: {message}")

    pos = 0

    def take(fmt):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            fail("file ends inside the header")
        values = struct.unpack_from(fmt, data, pos)
        pos += size
        return values

    def string():
        (n,) = take("<i")
        return take(f"<{n}s")[0].decode("ascii", "replace")

    if take("<i")[0] != _MAGIC:
        fail("wrong magic number")
    fst_type, arc_type = string(), string()
    if fst_type != "vector" or arc_type != "standard":
        fail(f"type {fst_type}/{arc_type}")
    _version, flags, _props, start, num_states, _num_arcs = take("<iiQqqq")
    if flags & 3:
        fail("symbol tables are not supported here")
    final = np.empty(num_states, dtype=np.float32)
    counts = np.empty(num_states, dtype=np.int64)
    chunks = []
    view = memoryview(data)
    for s in range(num_states):
        final[s], counts[s] = struct.unpack_from("<fq", data, pos)
        pos += 12
        size = 16 * int(counts[s])
        chunks.append(view[pos:pos + size])
        pos += size
    arcs = np.frombuffer(b"".join(chunks), dtype=_ARC)
    src = np.repeat(np.arange(num_states, dtype=np.int64), counts)
    return ArcTable(int(start) if num_states else 0, final, src,
                    arcs["nextstate"].astype(np.int64), arcs["ilabel"].astype(np.int64),
                    arcs["olabel"].astype(np.int64), arcs["cost"].copy())


__all__ = ["ArcTable", "from_fst", "parse_vector_fst", "to_fst"]
