"""Linear and affine feature transforms estimated from data (Kaldi's LDA, MLLT, fMLLR).

A :class:`FeatureTransform` maps spliced features ``x`` (T, D) to ``y = x @ linear.T + offset``
(T, dim), as Kaldi's ``transform-feats`` does with a (dim, D) or (dim, D+1) matrix. Kaldi's
tri2b front end is ``lda.followed_by(FeatureTransform(A))``: LDA to 40 dimensions, then a
square MLLT matrix ``A`` (40, 40), i.e. the one matrix ``A @ L``.

>>> stats = accumulate_lda(spliced, pdfs)                               # doctest: +SKIP
>>> lda = FeatureTransform(estimate_lda(stats, dim=40))                 # doctest: +SKIP
>>> A, aux = estimate_mllt(accumulate_mllt(gmm, lda.apply(spliced), pdfs))  # doctest: +SKIP
>>> tri2b = lda.followed_by(FeatureTransform(A)); gmm = transform_means(gmm, A)  # doctest: +SKIP
>>> tri2b.save(model_dir / "final.mat.npz")                            # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr.errors import ModelError
from asr.models import load_arrays, save_arrays
from asr.transforms.lda import LdaStats, accumulate_lda, estimate_lda, lda_eigensystem
from asr.transforms.mllt import (MlltStats, accumulate_mllt, estimate_mllt, mllt_auxiliary,
                                 transform_means)

__all__ = ["FeatureTransform", "LdaStats", "accumulate_lda", "estimate_lda", "lda_eigensystem",
           "MlltStats", "accumulate_mllt", "estimate_mllt", "mllt_auxiliary", "transform_means"]


@dataclass(frozen=True, eq=False)
class FeatureTransform:
    """``y = x @ linear.T + offset``: an affine map from D input to ``dim`` output dimensions.

    Attributes
    ----------
    linear : (dim, D) float64 matrix.
    offset : (dim,) float64 vector; zeros (the default) for a purely linear transform.
    """

    linear: np.ndarray
    offset: np.ndarray | None = None

    def __post_init__(self) -> None:
        linear = np.array(self.linear, dtype=np.float64)
        if linear.ndim != 2 or 0 in linear.shape:
            raise ValueError(f"a transform's matrix must be 2-D and non-empty, got shape "
                             f"{linear.shape}")
        offset = np.zeros(linear.shape[0]) if self.offset is None \
            else np.array(self.offset, dtype=np.float64)
        if offset.shape != (linear.shape[0],):
            raise ValueError(f"offset of shape {offset.shape} does not match a matrix of "
                             f"shape {linear.shape}; expected ({linear.shape[0]},)")
        if not (np.isfinite(linear).all() and np.isfinite(offset).all()):
            raise ValueError("a transform holds NaN or Inf")
        object.__setattr__(self, "linear", linear)
        object.__setattr__(self, "offset", offset)

    @classmethod
    def from_kaldi(cls, matrix: np.ndarray, input_dim: int) -> "FeatureTransform":
        """Read Kaldi's convention: (dim, D) is linear, (dim, D+1) has the offset last."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim == 2 and matrix.shape[1] == input_dim:
            return cls(matrix)
        if matrix.ndim == 2 and matrix.shape[1] == input_dim + 1:
            return cls(matrix[:, :-1], matrix[:, -1])
        raise ValueError(f"a matrix of shape {matrix.shape} cannot transform {input_dim}-dim "
                         f"features; expected {input_dim} or {input_dim + 1} columns")

    @property
    def input_dim(self) -> int:
        return self.linear.shape[1]

    @property
    def dim(self) -> int:
        """Output dimension."""
        return self.linear.shape[0]

    @property
    def affine_matrix(self) -> np.ndarray:
        """(dim, D+1) ``[linear, offset]``, Kaldi's affine form."""
        return np.hstack([self.linear, self.offset[:, None]])

    def apply(self, feats: np.ndarray) -> np.ndarray:
        """(T, D) features -> (T, dim); float32 stays float32, float64 stays float64."""
        feats = np.asarray(feats)
        if feats.ndim != 2 or feats.shape[1] != self.input_dim:
            raise ValueError(f"features of shape {feats.shape} given to a transform from "
                             f"{self.input_dim} dimensions; expected (T, {self.input_dim})")
        dtype = np.result_type(feats.dtype, np.float32)
        out = feats.astype(dtype, copy=False) @ self.linear.T.astype(dtype)
        out += self.offset.astype(dtype)
        return out

    def followed_by(self, other: "FeatureTransform") -> "FeatureTransform":
        """The transform that applies ``self`` and then ``other`` (Kaldi's
        ``compose-transforms other self``): linear ``other.linear @ self.linear``."""
        if other.input_dim != self.dim:
            raise ValueError(f"cannot follow a transform to {self.dim} dimensions with one "
                             f"from {other.input_dim}")
        return FeatureTransform(other.linear @ self.linear,
                                other.linear @ self.offset + other.offset)

    def save(self, path: Path) -> None:
        """Write ``linear`` and ``offset`` to an ``.npz`` (no pickle), atomically."""
        save_arrays(Path(path), {"linear": self.linear, "offset": self.offset})

    @classmethod
    def load(cls, path: Path, input_dim: int | None = None,
             dim: int | None = None) -> "FeatureTransform":
        """Read a transform written by :meth:`save`, checking its shapes.

        Raises
        ------
        ModelError
            naming ``path`` when it is missing, unreadable, lacks an array, has the wrong
            shapes (including ``input_dim`` or output ``dim`` when given) or holds NaN/Inf.
        """
        arrays = load_arrays(Path(path))
        missing = [k for k in ("linear", "offset") if k not in arrays]
        if missing:
            raise ModelError(path, f"feature transform lacks array(s) {missing}; expected "
                             "'linear' (dim, D) and 'offset' (dim,)")
        linear, offset = arrays["linear"], arrays["offset"]
        if linear.ndim != 2 or 0 in linear.shape or offset.shape != linear.shape[:1]:
            raise ModelError(path, f"feature transform has linear {linear.shape} and offset "
                             f"{offset.shape}; expected (dim, D) and (dim,)")
        if input_dim is not None and linear.shape[1] != input_dim:
            raise ModelError(path, f"feature transform takes {linear.shape[1]}-dim features; "
                             f"expected {input_dim}")
        if dim is not None and linear.shape[0] != dim:
            raise ModelError(path, f"feature transform gives {linear.shape[0]} dimensions; "
                             f"expected {dim}")
        if not (np.issubdtype(linear.dtype, np.floating)
                and np.issubdtype(offset.dtype, np.floating)):
            raise ModelError(path, f"feature transform arrays are {linear.dtype} and "
                             f"{offset.dtype}; expected floating point")
        if not (np.isfinite(linear).all() and np.isfinite(offset).all()):
            raise ModelError(path, "feature transform holds NaN or Inf")
        return cls(linear, offset)
