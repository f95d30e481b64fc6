"""Exact sums of floating-point statistics: the same bits however the data is split.

Floating-point addition is not associative: statistics summed over 4 jobs differ in their
last bits from the same statistics summed over 1, and EM amplifies such differences over
its iterations. Here every block of statistics (one speaker's, or a fixed group of
utterances) is rounded once to a fixed-point grid of ``2**-FRACTION_BITS`` and kept as
integers, whose sums are exact: any grouping and any order of the blocks gives the same
integers, hence the same float64 totals.

A value ``v`` is held as three int64 "limbs" ``(hi, mid, lo)`` with
``v * 2**FRACTION_BITS = hi * 2**64 + mid * 2**32 + lo`` and ``|mid|, |lo| <= 2**32`` after
rounding; sums of up to 2**31 blocks cannot overflow ``mid`` or ``lo``. The grid
(2**-40, about 1e-12) is finer than float64's own rounding of any statistic above 1e4.

>>> acc = ExactSum({"occ": (3,), "first": (3, 2)})
>>> acc.add("occ", np.array([0.5, 0.25]), rows=np.array([0, 2]))
>>> acc.add("first", np.ones((3, 2)))
>>> acc.total("occ")
array([0.5 , 0.  , 0.25])
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

FRACTION_BITS = 40
_SCALE = float(2.0 ** FRACTION_BITS)
_B32 = float(2.0 ** 32)
_B64 = float(2.0 ** 64)
_HALF = 1 << 31


def to_fixed(values: np.ndarray) -> np.ndarray:
    """float64 values of any shape S -> (3, *S) int64 limbs (``hi, mid, lo``).

    Rounds each value once to the nearest multiple of ``2**-FRACTION_BITS``; the limbs of a
    negative value are those of its magnitude, negated. Values must be finite and below
    2**60 in magnitude.
    """
    q = np.asarray(values, dtype=np.float64) * _SCALE       # exact: a power of two
    a = np.abs(q)
    hi = np.floor(a / _B64)
    rest = a - hi * _B64                                    # exact, in [0, 2**64)
    mid = np.floor(rest / _B32)
    lo = np.rint(rest - mid * _B32)                         # the only rounding
    return (np.stack([hi, mid, lo]) * np.sign(q)).astype(np.int64)


def from_fixed(limbs: np.ndarray) -> np.ndarray:
    """(3, *S) int64 limbs (any sums of :func:`to_fixed`'s) -> float64 values of shape S.

    The limbs are first brought to balanced digits (``mid, lo`` in [-2**31, 2**31)) by exact
    integer carries, so that a small total is not the difference of two large floats.
    """
    hi, mid, lo = (np.array(limbs[i], dtype=np.int64) for i in range(3))
    carry = (lo + _HALF) >> 32
    lo -= carry << 32
    mid += carry
    carry = (mid + _HALF) >> 32
    mid -= carry << 32
    hi += carry
    return ((hi.astype(np.float64) * (_B64 / _SCALE) + mid.astype(np.float64) * (_B32 / _SCALE))
            + lo.astype(np.float64) / _SCALE)


class ExactSum:
    """Named arrays of statistics summed exactly (see the module docstring).

    Parameters
    ----------
    shapes : name -> shape of that statistic, e.g. ``{"occ": (G,), "first": (G, D)}``.

    Attributes
    ----------
    limbs : name -> (3, *shape) int64, the running sums. Plain arrays: the object pickles
        small and travels from a job to the driver as it is.
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]):
        self.limbs = {name: np.zeros((3, *shape), dtype=np.int64)
                      for name, shape in shapes.items()}
        self._staged: dict[str, np.ndarray] = {}
        self._touched: dict[str, list[np.ndarray]] = {}

    def __getstate__(self) -> dict:
        self.flush()
        return {"limbs": self.limbs}

    def __setstate__(self, state: dict) -> None:
        self.limbs, self._staged, self._touched = state["limbs"], {}, {}

    def stage(self, name: str, values: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Add to the current block in float64 (in a fixed order, so deterministic); the
        block joins the exact sums at :meth:`flush`. Cheaper than :meth:`add` when a block
        (a speaker) is made of many small parts (its utterances)."""
        staged = self._staged.get(name)
        if staged is None:
            staged = self._staged[name] = np.zeros(self.limbs[name].shape[1:])
            self._touched[name] = []
        if rows is None:
            staged += values
            self._touched[name].append(np.zeros(0, dtype=np.int64))
        else:
            staged[rows] += values
            self._touched[name].append(np.asarray(rows, dtype=np.int64))

    def flush(self) -> None:
        """End the current block: round what :meth:`stage` gathered, add it exactly.
        All statistics of the block are rounded in one call (a block may be one short
        utterance, so the per-call cost counts)."""
        blocks = []                            # (name, rows or None, values)
        for name, staged in self._staged.items():
            touched = self._touched[name]
            if not touched:
                continue
            if staged.ndim == 0 or any(len(t) == 0 for t in touched):
                blocks.append((name, None, staged.copy()))
                staged[...] = 0.0
            else:
                rows = np.unique(np.concatenate(touched))
                blocks.append((name, rows, staged[rows]))
                staged[rows] = 0.0
            touched.clear()
        if not blocks:
            return
        fixed = to_fixed(np.concatenate([values.ravel() for _, _, values in blocks]))
        start = 0
        for name, rows, values in blocks:
            limbs = fixed[:, start:start + values.size].reshape(3, *values.shape)
            start += values.size
            if rows is None:
                self.limbs[name] += limbs
            else:
                self.limbs[name][:, rows] += limbs

    def add(self, name: str, values: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Add one block: ``values`` (shape of the statistic), or with ``rows`` (K,) unique
        indices, ``values`` (K, ...) to those rows of the first axis."""
        fixed = to_fixed(values)
        if rows is None:
            self.limbs[name] += fixed
        else:
            self.limbs[name][:, rows] += fixed

    def merge(self, other: "ExactSum") -> "ExactSum":
        """Add ``other``'s sums in place (exact: the order of merges does not matter)."""
        self.flush()
        other.flush()
        if other.limbs.keys() != self.limbs.keys():
            raise ValueError(f"cannot merge sums of {sorted(other.limbs)} into "
                             f"{sorted(self.limbs)}")
        for name, limbs in other.limbs.items():
            self.limbs[name] += limbs
        return self

    def total(self, name: str) -> np.ndarray:
        """float64 array of the statistic's shape (0-d for a scalar)."""
        self.flush()
        return from_fixed(self.limbs[name])
