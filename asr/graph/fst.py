"""Moving WFSTs between numpy arrays and kaldifst, exactly and fast.

A graph in transit is an :class:`ArcTable`: the start state, one final cost per state and
one row per arc (source, destination, input label, output label, cost). Costs are tropical
weights (-log probability); ``inf`` means "not final".

- :func:`to_fst` writes the table in OpenFst's binary ``vector`` format with numpy and
  reads it with ``StdVectorFst.read``;
- :func:`from_fst` writes the FST in that format and reads the arcs back with numpy and
  a compiled scan over the states.

Both are exact (float32 weights are copied bit for bit) and take a few seconds for tens of
millions of arcs (text or Python arc iterators take minutes).

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
import numba
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
    src, dst : (A,) int -- source and destination state of each arc (int64 or int32)
    ilabel, olabel : (A,) int -- labels, 0 = epsilon (int64 or int32)
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
    (trailing states that no arc or final cost mentions are left out), and the arcs of each
    state keep their order in the table."""
    if not 0 <= table.start < len(table.final):
        fst = kaldifst.StdVectorFst()                   # nothing can be accepted
        fst.start = fst.add_state()
        return fst
    finals = np.flatnonzero(np.isfinite(table.final))
    n = max([int(table.start)] + [int(a.max()) for a in (table.src, table.dst) if len(a)]
            + [int(finals[-1]) if len(finals) else -1]) + 1
    fd, name = tempfile.mkstemp(suffix=".fst")
    try:
        with os.fdopen(fd, "wb") as fh:
            write_vector_fst(fh, table, n)
        return kaldifst.StdVectorFst.read(name)
    finally:
        os.unlink(name)


def _header(start: int, num_states: int, num_arcs: int) -> bytes:
    def string(text):
        return struct.pack("<i", len(text)) + text.encode("ascii")

    # Properties: expanded and mutable only (OpenFst computes the others when asked).
    return (struct.pack("<i", _MAGIC) + string("vector") + string("standard")
            + struct.pack("<iiQqqq", 2, 0, 3, start, num_states, num_arcs))


def write_vector_fst(fh, table: ArcTable, num_states: int | None = None) -> None:
    """Write ``table`` to the binary file ``fh`` in OpenFst's ``vector`` format (the first
    ``num_states`` states, all by default; arcs grouped by source, in table order)."""
    n = table.num_states if num_states is None else num_states
    order = np.argsort(table.src, kind="stable")
    counts = np.bincount(table.src, minlength=n).astype(np.int64)
    # Every field is 4 bytes: a state is (final, number of arcs as int64) = 3 words, then
    # 4 words per arc (ilabel, olabel, cost, nextstate).
    words = np.empty(3 * n + 4 * len(order), dtype=np.int32)
    head = 3 * np.arange(n, dtype=np.int64)
    head[1:] += 4 * np.cumsum(counts[:-1])
    is_arc = np.ones(len(words), dtype=bool)
    is_arc[head] = is_arc[head + 1] = is_arc[head + 2] = False
    final = np.full(n, np.inf, dtype=np.float32)
    final[:min(n, len(table.final))] = table.final[:n]
    words[head] = final.view(np.int32)
    words[head + 1] = counts & 0xFFFFFFFF
    words[head + 2] = counts >> 32
    arcs = np.empty((len(order), 4), dtype=np.int32)
    arcs[:, 0] = table.ilabel[order]
    arcs[:, 1] = table.olabel[order]
    arcs[:, 2] = table.cost[order].astype(np.float32).view(np.int32)
    arcs[:, 3] = table.dst[order]
    del order
    words[is_arc] = arcs.reshape(-1)
    del arcs, is_arc
    fh.write(_header(int(table.start), n, len(table.src)))
    words.tofile(fh)


def from_fst(fst: kaldifst.StdVectorFst) -> ArcTable:
    """Read every state and arc of a ``StdVectorFst`` (exactly) into an :class:`ArcTable`
    (arcs grouped by source state, in the FST's order)."""
    fd, name = tempfile.mkstemp(suffix=".fst")
    os.close(fd)
    try:
        fst.write(name)
        return read_vector_fst(name)
    finally:
        os.unlink(name)


def read_vector_fst(path: str | os.PathLike) -> ArcTable:
    """Read a file in OpenFst's binary ``vector`` format (standard arcs, no symbol
    tables)."""
    with open(path, "rb") as fh:
        head = fh.read(256)
    start, num_states, offset = _parse_header(head, str(path))
    words = np.fromfile(path, dtype=np.int32, offset=offset)
    return _parse_states(words, start, num_states, str(path))


def parse_vector_fst(data: bytes, where: str = "<fst>") -> ArcTable:
    """Parse OpenFst's binary ``vector`` format (standard arcs, no symbol tables)."""
    start, num_states, offset = _parse_header(data, where)
    body = np.frombuffer(data, dtype=np.uint8, offset=offset)
    words = body[:len(body) // 4 * 4].copy().view(np.int32)
    return _parse_states(words, start, num_states, where)


def _parse_header(data: bytes, where: str) -> tuple[int, int, int]:
    """(start, number of states, offset of the first state) of a vector FST file."""
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
        if not 0 <= n <= 64:
            fail("bad type name")
        return take(f"<{n}s")[0].decode("ascii", "replace")

    if take("<i")[0] != _MAGIC:
        fail("wrong magic number")
    fst_type, arc_type = string(), string()
    if fst_type != "vector" or arc_type != "standard":
        fail(f"type {fst_type}/{arc_type}")
    _version, flags, _props, start, num_states, _num_arcs = take("<iiQqqq")
    if flags & 3:
        fail("symbol tables are not supported here")
    return (int(start) if num_states else 0), int(num_states), pos


def _parse_states(words: np.ndarray, start: int, num_states: int, where: str) -> ArcTable:
    final = np.empty(num_states, dtype=np.float32)
    counts = np.empty(num_states, dtype=np.int64)
    end = _scan_states(words, final.view(np.int32), counts)
    if end < 0:
        raise ModelError(where, "not a binary standard vector FST: file ends inside a state")
    arcs = _gather_arcs(words, counts)
    src = np.repeat(np.arange(num_states, dtype=np.int64), counts)
    return ArcTable(start, final, src, arcs[:, 3].astype(np.int64),
                    arcs[:, 0].astype(np.int64), arcs[:, 1].astype(np.int64),
                    arcs[:, 2].copy().view(np.float32))


@numba.njit(cache=True)
def _scan_states(words, final_bits, counts):
    """Fill each state's final cost (as bits) and number of arcs; returns the number of
    words read, -1 if the data end early."""
    pos = 0
    for s in range(counts.shape[0]):
        if pos + 3 > words.shape[0]:
            return -1
        final_bits[s] = words[pos]
        n = np.int64(words[pos + 1]) & 0xFFFFFFFF | (np.int64(words[pos + 2]) << 32)
        counts[s] = n
        pos += 3 + 4 * n
        if pos > words.shape[0]:
            return -1
    return pos


@numba.njit(cache=True)
def _gather_arcs(words, counts):
    """(A, 4) int32: the arcs' (ilabel, olabel, cost bits, nextstate), in file order."""
    arcs = np.empty((counts.sum(), 4), dtype=np.int32)
    pos = 0
    k = 0
    for s in range(counts.shape[0]):
        pos += 3
        for _ in range(counts[s]):
            for j in range(4):
                arcs[k, j] = words[pos + j]
            pos += 4
            k += 1
    return arcs


__all__ = ["ArcTable", "from_fst", "parse_vector_fst", "read_vector_fst", "to_fst",
           "write_vector_fst"]
