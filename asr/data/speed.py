"""Speed perturbation: copies of a data directory played faster or slower (Kaldi's
``perturb_data_dir_speed.sh``, Ko et al. 2015).

A factor of 1.1 shortens a recording by 1/1.1 and raises its pitch and formants by 10%,
as sox's ``speed`` effect does (resampling with ``torchaudio.functional.speed``). The copy
of utterance ``u`` of speaker ``s`` at factor 0.9 is ``sp0.9-u`` of speaker ``sp0.9-s``: a
changed voice counts as another speaker for CMVN. The copies have other lengths than the
originals, so their frame targets come from a new forced alignment.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from asr.audio import PCM16_PEAK, read_wav, write_wav
from asr.data.datadir import DataDir, copy_id
from asr.fileio import atomic_dir

__all__ = ["speed_perturb", "prepare_speed_perturbed"]


def speed_perturb(samples: np.ndarray, rate: int, factor: float) -> np.ndarray:
    """(N,) samples -> (about N / factor,) float32 samples at the same rate."""
    import torch   # imported here: the data code runs without torch until it is needed
    import torchaudio.functional as AF
    if not 0.5 <= factor <= 2.0:
        raise ValueError(f"speed factor must be in [0.5, 2], got {factor}")
    if factor == 1.0:
        return np.asarray(samples, dtype=np.float32).copy()
    x = torch.from_numpy(np.asarray(samples, dtype=np.float32))[None]
    y = AF.speed(x, rate, factor)[0][0].numpy()
    return np.clip(y, -PCM16_PEAK, PCM16_PEAK).astype(np.float32)


def prepare_speed_perturbed(data: str | Path | DataDir, out_dir: str | Path, name: str,
                            factors: Sequence[float] = (0.9, 1.1)) -> DataDir:
    """Write one copy of ``data`` per factor into one data directory ``out_dir/name``.

    Audio goes under ``out_dir/wav/name``; returns the saved data directory.
    """
    import torch
    data = data if isinstance(data, DataDir) else DataDir.load(data)
    if not factors or any(f == 1.0 for f in factors):
        raise ValueError(f"factors must be non-empty and leave out 1.0, got {list(factors)}")
    out_dir = Path(out_dir)
    copies = DataDir(wavs={}, text={}, utt2spk={})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # one short signal at a time: threads only add overhead
    try:
        with atomic_dir(out_dir / "wav" / name) as tmp:
            for utt in data.utts:
                samples, rate = read_wav(data.wavs[utt])
                for factor in factors:
                    prefix = f"sp{factor:g}"
                    copy = copy_id(prefix, utt)
                    write_wav(tmp / f"{copy}.wav", speed_perturb(samples, rate, factor), rate)
                    copies.wavs[copy] = out_dir / "wav" / name / f"{copy}.wav"
                    copies.text[copy] = list(data.text[utt])
                    copies.utt2spk[copy] = copy_id(prefix, data.utt2spk[utt])
    finally:
        torch.set_num_threads(threads)
    copies.save(out_dir / name)
    return copies
