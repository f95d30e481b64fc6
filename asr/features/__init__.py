"""Features: Kaldi-compatible MFCC / log-mel filterbanks, CMVN, deltas, splicing, archives.

The whole chain, from audio files to what an acoustic model sees::

    from asr.features import FeatureConfig, compute_archive, read_archive, apply_pipeline

    cfg = FeatureConfig(kind="mfcc", sample_rate=8000, cmvn="utterance", deltas=2)
    compute_archive({"u1": "u1.wav", "u2": "u2.wav"}, cfg, "exp/feats/train")
    raw = read_archive("exp/feats/train")          # {"u1": (T1, 13), "u2": (T2, 13)}
    feats = apply_pipeline(raw, cfg)               # CMVN -> deltas -> splice: (T, 39)

One utterance at a time, step by step (each step is also a public function)::

    mfcc = compute_features(waveform, cfg)         # (T, 13) float32, waveform in [-1, 1]
    mfcc = apply_cmvn(mfcc, cmvn_stats(mfcc))      # zero mean per dimension
    mfcc = add_deltas(mfcc, order=2, window=2)     # (T, 39): [c, Δc, ΔΔc]
    mfcc = splice(mfcc, left=3, right=3)           # (T, 273)

Training and decoding both call ``apply_pipeline`` with the settings saved in the archive
(``read_archive_config``), so they can never disagree about the features.

Modules: ``config`` (FeatureConfig), ``frontend`` (framing, windows, spectrum, mel banks,
DCT, ``compute_features``), ``postprocess`` (CMVN, deltas, splicing, ``apply_pipeline``),
``archive`` (``feats.npy`` + ``feats.index`` + ``config.json``).
"""
from asr.features.archive import (compute_archive, compute_archive_in_memory, merge_archives,
                                  read_archive, read_archive_config, write_archive)
from asr.features.config import FeatureConfig
from asr.features.frontend import (compute_features, dct_matrix, frame_signal, lifter_coeffs,
                                   mel_banks, mel_scale, num_frames, power_spectrum,
                                   window_function)
from asr.features.postprocess import add_deltas, apply_cmvn, apply_pipeline, cmvn_stats, splice

__all__ = [
    "FeatureConfig",
    "compute_features",
    "frame_signal", "num_frames", "window_function", "power_spectrum", "mel_scale", "mel_banks",
    "dct_matrix", "lifter_coeffs",
    "add_deltas", "cmvn_stats", "apply_cmvn", "splice", "apply_pipeline",
    "write_archive", "merge_archives", "read_archive", "read_archive_config", "compute_archive",
    "compute_archive_in_memory",
]
