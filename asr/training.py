"""Types shared by the training of every acoustic model family.

``asr.gmm`` and ``asr.nnet`` are peers: both train on the same utterances, and neither
imports the other. What they share lives here, beside the model seam (``asr.models``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Utterance:
    """One training utterance: id, features (T, D) and transcript."""

    utt: str
    feats: np.ndarray
    words: list[str]
