"""MFCC extraction throughput on every FSDD recording: asr against three peers.

    python benchmarks/bench_features.py [--rounds N] [--corpus DIR]

All 2,500 recordings (8 kHz) are read into memory first; each round then computes 13 MFCCs
of every file with each extractor, one utterance per call as a recipe does. Every library
runs on ``--threads`` threads (default 1; with torch's default intra-op threads, each of
these small calls pays a thread hand-off, which on a busy machine made torchaudio many
times slower in a trial):

- ``asr``: ``asr.features.compute_features(wav, FeatureConfig(kind="mfcc"))``, wav in [-1, 1].
- ``kaldi-native-fbank``: ``OnlineMfcc`` with the same options (8 kHz, 23 bins, 13 cepstra,
  no energy, no dither, snip edges), fed ``wav * 32768``, every frame read back. Its
  ``accept_waveform`` takes a sequence of floats; a Python list converts much faster than a
  numpy array, so both inputs are timed and the faster is the peer.
- ``torchaudio``: ``torchaudio.compliance.kaldi.mfcc`` on ``wav * 32768`` with the same
  options, in ``torch.inference_mode()``.
- ``librosa``: ``librosa.feature.mfcc`` with 23 mel bands and 13 coefficients, a 200-sample
  (25 ms) window in a 256-point FFT, 80-sample (10 ms) hop, ``center=False``. Not Kaldi's
  numerics (Slaney mel, no pre-emphasis, Hann window), but the same amount of work.

Before timing, asr's features are checked against both Kaldi implementations.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import _harness as h

DEFAULT_CORPUS = Path("/work/shared/data/fsdd/recordings")
SAMPLE_RATE = 8000


def load(corpus: Path) -> list[np.ndarray]:
    import soundfile as sf

    files = sorted(corpus.glob("*.wav"))
    if not files:
        raise SystemExit(f"{corpus}: no .wav files; pass --corpus DIR with the FSDD recordings")
    wavs = []
    for path in files:
        wav, rate = sf.read(path, dtype="float32")
        if rate != SAMPLE_RATE or wav.ndim != 1:
            raise SystemExit(f"{path}: expected mono {SAMPLE_RATE} Hz, got {rate} Hz, "
                             f"shape {wav.shape}")
        wavs.append(wav)
    return wavs


def extractors() -> dict[str, callable]:
    import kaldi_native_fbank as knf
    import librosa
    import torch
    import torchaudio

    from asr.features import FeatureConfig, compute_features

    cfg = FeatureConfig(kind="mfcc")
    opts = knf.MfccOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = 23
    opts.num_ceps = 13
    opts.use_energy = False

    def ours(wav):
        return compute_features(wav, cfg)

    def knf_run(samples):
        mfcc = knf.OnlineMfcc(opts)
        mfcc.accept_waveform(SAMPLE_RATE, samples)
        mfcc.input_finished()
        n = mfcc.num_frames_ready
        if n == 0:
            return np.zeros((0, 13), dtype=np.float32)
        return np.stack([mfcc.get_frame(i) for i in range(n)])

    def knf_list(wav):
        return knf_run((wav * 32768.0).tolist())

    def knf_array(wav):
        return knf_run(wav * 32768.0)

    def ta(wav):
        with torch.inference_mode():
            return torchaudio.compliance.kaldi.mfcc(
                torch.from_numpy(wav * 32768.0)[None], sample_frequency=SAMPLE_RATE,
                num_mel_bins=23, num_ceps=13, use_energy=False, dither=0.0,
                snip_edges=True).numpy()

    def lr(wav):
        return librosa.feature.mfcc(y=wav, sr=SAMPLE_RATE, n_mfcc=13, n_mels=23, n_fft=256,
                                    win_length=200, hop_length=80, center=False).T

    return {"asr": ours, "kaldi-native-fbank (list input)": knf_list,
            "kaldi-native-fbank (ndarray input)": knf_array, "torchaudio": ta, "librosa": lr}


def check(fns, wavs) -> dict[str, float]:
    """Largest absolute difference of asr's MFCCs from each Kaldi implementation's."""
    worst = {}
    for name in ("kaldi-native-fbank (list input)", "torchaudio"):
        diff = 0.0
        for wav in wavs[::50]:
            a, b = fns["asr"](wav), fns[name](wav)
            if a.shape != b.shape:
                raise SystemExit(f"asr gives {a.shape} frames, {name} {b.shape}")
            diff = max(diff, float(np.abs(a - b).max()))
        if diff > 1e-2:
            raise SystemExit(f"asr's MFCCs differ from {name}'s by {diff}")
        worst[name] = diff
    return worst


def run(rounds: int, threads: int = 1, corpus: Path = DEFAULT_CORPUS) -> dict:
    h.log(f"features: loading {corpus}")
    wavs = load(corpus)
    fns = extractors()
    threads_used = h.limit_threads(threads)
    diffs = check(fns, wavs)
    frames = {name: sum(len(fn(w)) for w in wavs) for name, fn in fns.items()}   # also warms up
    contenders = {name: (lambda fn=fn: [fn(w) for w in wavs]) for name, fn in fns.items()}
    h.log(f"features: {len(wavs)} files, {rounds} rounds")
    t = h.interleave(contenders, rounds, h.log)

    knf_best = min(("kaldi-native-fbank (list input)", "kaldi-native-fbank (ndarray input)"),
                   key=t.median)
    rows, numbers = [], {}
    for name in fns:
        med, best = t.median(name), t.best(name)
        ratio = "1 (reference)" if name == "asr" else (
            f"**{t.paired_ratio(name, 'asr'):.2f}×** (best {t.best_ratio(name, 'asr'):.2f}×)")
        rows.append([name, h.si(len(wavs) / med), h.si(frames[name] / med), h.ms(med),
                     h.ms(best), ratio])
        numbers[name] = {"median_s": med, "best_s": best, "frames": frames[name],
                         "seconds": t.seconds[name]}
    goal = t.paired_ratio(knf_best, "asr")
    md = "\n".join([
        "### MFCC extraction (`benchmarks/bench_features.py`)",
        "",
        f"{len(wavs)} FSDD recordings ({sum(map(len, wavs)) / SAMPLE_RATE:.0f} s of 8 kHz "
        f"audio) held in memory; 13 MFCCs (23 mel bins, 25 ms / 10 ms) of every file, one call "
        f"per file; {rounds} interleaved rounds. Rates use the median round; the speed-up is "
        "the median over rounds of peer time / asr time (paired within a round). "
        f"Threads: {threads_used}.",
        "",
        h.table(["extractor", "files/s", "frames/s", "median ms / all files", "best ms",
                 "asr speed-up"], rows),
        "",
        f"Goal: asr ≥ 3× kaldi-native-fbank. Measured against its faster input path "
        f"({knf_best.split('(')[1].rstrip(')')}): **{goal:.2f}×** — "
        f"{'met' if goal >= 3 else 'missed'}.",
        "",
        "Agreement checked first (every 50th file): largest |asr − peer| = " + ", ".join(
            f"{d:.1e} ({n.split(' (')[0]})" for n, d in diffs.items()) + ". "
        "kaldi-native-fbank's `accept_waveform` converts its input element by element, "
        "faster from a Python list than from a numpy array, so both are shown. librosa computes "
        "Slaney-style MFCCs over a 256-sample frame (hence slightly fewer frames), so it is "
        "the same amount of work, not the same numbers.",
    ])
    return {"name": "features", "markdown": md, "numbers": numbers, "goal_ratio": goal,
            "goal": 3.0}


def main() -> None:
    args = h.cli(__doc__.splitlines()[0], default_rounds=5, extra=lambda p: p.add_argument(
        "--corpus", type=Path, default=DEFAULT_CORPUS,
        help=f"folder of FSDD .wav recordings (default {DEFAULT_CORPUS})"))
    info = h.machine()
    h.emit(args, run(args.rounds, args.threads, args.corpus), info)


if __name__ == "__main__":
    main()
