"""The GMM acoustic model: exact log-likelihoods of each pdf's diagonal mixture."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from asr.errors import ModelError
from asr.fileio import write_json
from asr.gmm.diag_gmm import DiagGmm
from asr.models import load_arrays, read_json, save_arrays


class GmmAcousticModel:
    """Wraps a ``DiagGmm`` behind the ``AcousticModel`` interface.

    Registered as ``"gmm"`` through the ``asr.acoustic_models`` entry point (``setup.cfg``).
    """

    model_type = "gmm"

    def __init__(self, gmm: DiagGmm):
        self.gmm = gmm
        self.num_pdfs = gmm.num_pdfs

    def log_likelihoods(self, feats: np.ndarray) -> np.ndarray:
        """(T, num_pdfs) float32."""
        return self.gmm.log_likelihoods(feats).astype(np.float32, copy=False)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        save_arrays(directory / "gmm.npz", self.gmm.to_arrays())
        write_json(directory / "model.json", {"type": "gmm", "num_pdfs": self.num_pdfs,
                                              "num_gauss": self.gmm.num_gauss,
                                              "dim": self.gmm.dim})

    @classmethod
    def load(cls, directory: Path) -> "GmmAcousticModel":
        directory = Path(directory)
        meta = read_json(directory / "model.json")
        arrays = load_arrays(directory / "gmm.npz")
        try:
            gmm = DiagGmm.from_arrays(arrays, int(meta["num_pdfs"]))
        except (KeyError, ValueError, IndexError) as exc:
            raise ModelError(directory / "gmm.npz", f"inconsistent GMM arrays: {exc}") from None
        return cls(gmm)
