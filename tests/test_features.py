"""asr.features: Kaldi numerics (against torchaudio's Kaldi port), post-processing, archives."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tomllib

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi

from asr.errors import AudioError, DataError
from asr.features import (FeatureConfig, add_deltas, apply_cmvn, apply_pipeline, cmvn_stats,
                          compute_archive, compute_archive_in_memory, compute_features,
                          dct_matrix, frame_signal, mel_banks, num_frames, read_archive,
                          read_archive_config, splice, write_archive)
from asr.features.frontend import librosa_mel_banks
from asr.settings import from_dict

TOLERANCE = 1e-3  # max abs difference from torchaudio (both float32)


@pytest.fixture(scope="module")
def wavs(shared_data):
    """Three yesno utterances (6 s) and three FSDD digits (< 1 s), 8 kHz mono 16-bit."""
    yesno = sorted((shared_data / "yesno" / "waves_yesno").glob("*.wav"))[:3]
    fsdd = [shared_data / "fsdd" / "recordings" / name
            for name in ("0_jackson_0.wav", "5_theo_12.wav", "9_yweweler_49.wav")]
    out = {}
    for path in yesno + fsdd:
        samples, rate = sf.read(path, dtype="float32")
        assert rate == 8000 and samples.ndim == 1
        out[path.name] = samples
    return out


def torchaudio_features(samples: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The same features from torchaudio's port of Kaldi, on int16-scale samples."""
    common = dict(sample_frequency=cfg.sample_rate, frame_length=cfg.frame_length_ms,
                  frame_shift=cfg.frame_shift_ms, dither=0.0,
                  preemphasis_coefficient=cfg.preemphasis, remove_dc_offset=cfg.remove_dc_offset,
                  window_type=cfg.window, round_to_power_of_two=cfg.round_to_power_of_two,
                  snip_edges=cfg.snip_edges, num_mel_bins=cfg.num_mel_bins,
                  low_freq=cfg.low_freq, high_freq=cfg.high_freq, use_energy=cfg.use_energy,
                  raw_energy=cfg.raw_energy, energy_floor=cfg.energy_floor)
    waveform = torch.from_numpy(samples * 32768.0)[None]
    if cfg.kind == "mfcc":
        out = kaldi.mfcc(waveform, num_ceps=cfg.num_ceps, cepstral_lifter=cfg.cepstral_lifter,
                         **common)
    else:
        out = kaldi.fbank(waveform, use_log_fbank=cfg.use_log_fbank, **common)
    return out.numpy()


# --- the front end ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mfcc", "fbank"])
@pytest.mark.parametrize("use_energy", [False, True])
@pytest.mark.parametrize("snip_edges", [True, False])
def test_matches_torchaudio_kaldi(wavs, kind, use_energy, snip_edges):
    cfg = FeatureConfig(kind=kind, use_energy=use_energy, snip_edges=snip_edges)
    for name, samples in wavs.items():
        ours = compute_features(samples, cfg)
        ref = torchaudio_features(samples, cfg)
        assert ours.dtype == np.float32
        assert ours.shape == ref.shape == (num_frames(len(samples), 200, 80, snip_edges),
                                           cfg.base_dim), name
        assert np.abs(ours - ref).max() < TOLERANCE, name


@pytest.mark.parametrize("changes", [
    dict(window="hamming"), dict(window="hanning"), dict(window="rectangular"),
    dict(window="blackman"),
    dict(use_energy=True, raw_energy=False), dict(use_energy=True, energy_floor=1e6),
    dict(kind="fbank", use_energy=True, raw_energy=False, energy_floor=1e6),
    dict(preemphasis=0.0, remove_dc_offset=False),
    dict(round_to_power_of_two=False, frame_length_ms=20.0, frame_shift_ms=12.5),
    dict(num_mel_bins=40, num_ceps=20, low_freq=100.0, high_freq=-400.0, cepstral_lifter=0.0),
    dict(kind="fbank", num_mel_bins=30, low_freq=0.0, high_freq=3500.0),
])
def test_matches_torchaudio_kaldi_with_other_settings(wavs, changes):
    cfg = FeatureConfig(**changes)
    for name in ("0_0_0_0_1_1_1_1.wav", "0_jackson_0.wav"):
        ours, ref = compute_features(wavs[name], cfg), torchaudio_features(wavs[name], cfg)
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() < TOLERANCE, name


def test_linear_fbank_matches_torchaudio_relatively(wavs):
    cfg = FeatureConfig(kind="fbank", use_log_fbank=False)
    ours = compute_features(wavs["0_jackson_0.wav"], cfg)
    ref = torchaudio_features(wavs["0_jackson_0.wav"], cfg)
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3)


def test_dither_is_seeded(wavs):
    samples = wavs["0_jackson_0.wav"]
    cfg = FeatureConfig(dither=1.0, seed=3)
    first, again = compute_features(samples, cfg), compute_features(samples, cfg)
    np.testing.assert_array_equal(first, again)
    other = compute_features(samples, dataclasses.replace(cfg, seed=4))
    plain = compute_features(samples, dataclasses.replace(cfg, dither=0.0))
    assert not np.array_equal(first, other)
    assert 0 < np.abs(first - plain).max() < 5.0  # noise of one int16 step: a small change


def test_reflected_frames_follow_kaldi():
    signal = np.arange(5.0)
    for size, shift in [(4, 2), (8, 3), (12, 1)]:  # the last reflects more than once
        frames = frame_signal(signal, size, shift, snip_edges=False)
        assert frames.shape == ((5 + shift // 2) // shift, size)
        for t, frame in enumerate(frames):
            for i, value in enumerate(frame):  # feature-window.cc, ExtractWindow
                s = t * shift + shift // 2 - size // 2 + i
                while s < 0 or s >= 5:
                    s = -s - 1 if s < 0 else 2 * 5 - 1 - s
                assert value == signal[s]
    np.testing.assert_array_equal(frame_signal(signal, 2, 2), [[0, 1], [2, 3]])
    assert frame_signal(signal, 8, 2).shape == (0, 8)


def test_mel_banks_and_dct_match_kaldi():
    banks = mel_banks(23, 256, 8000.0, 20.0, 0.0)
    ref, _ = kaldi.get_mel_banks(23, 256, 8000.0, 20.0, 0.0, 100.0, -500.0, 1.0)
    assert banks.shape == (129, 23)
    np.testing.assert_allclose(banks[:-1].T, ref.numpy(), atol=1e-5)
    assert not banks[-1].any()  # the Nyquist bin has no weight, as in Kaldi
    dct = dct_matrix(23, 23)
    np.testing.assert_allclose(dct @ dct.T, np.eye(23), atol=1e-12)
    np.testing.assert_allclose(dct[:13], kaldi._get_dct_matrix(13, 23).numpy().T, atol=1e-6)


def librosa_features(samples: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The same features from ``librosa.feature``, framed as ``cfg`` frames them.

    librosa centres a window shorter than ``n_fft`` in its frame, so the signal is delayed by
    the difference to give frame ``t`` the samples of ours. Log and DCT as in our front end:
    natural log floored at float32 eps, orthonormal DCT-II.
    """
    import librosa
    import scipy.signal

    size, win, hop = cfg.padded_size, cfg.window_size, cfg.window_shift
    delayed = np.concatenate([np.zeros((size - win) // 2), samples * 32768.0])
    mel = librosa.feature.melspectrogram(
        y=delayed, sr=cfg.sample_rate, n_fft=size, hop_length=hop, win_length=win,
        window=scipy.signal.windows.hann(win, sym=True), center=False, power=2.0,
        n_mels=cfg.num_mel_bins, fmin=cfg.low_freq, fmax=cfg.high_freq_hz,
        htk=cfg.mel_convention == "htk", norm=None if cfg.mel_convention == "htk" else "slaney")
    log_mel = np.log(np.maximum(mel, np.finfo(np.float32).eps))
    if cfg.kind == "fbank":
        return log_mel.T
    return librosa.feature.mfcc(S=log_mel, n_mfcc=cfg.num_ceps, dct_type=2, norm="ortho",
                                lifter=0).T


@pytest.mark.parametrize("convention", ["htk", "slaney"])
@pytest.mark.parametrize("kind", ["mfcc", "fbank"])
def test_librosa_mel_conventions_match_librosa_feature(wavs, convention, kind):
    # librosa frames and windows plainly: no pre-emphasis, no DC removal, a Hann window; its
    # lifter counts from 1 where Kaldi's counts from 0, so the lifter is off.
    cfg = FeatureConfig(kind=kind, mel_convention=convention, preemphasis=0.0,
                        remove_dc_offset=False, window="hanning", cepstral_lifter=0.0,
                        low_freq=64.0, high_freq=-200.0)
    for name in ("0_0_0_0_1_1_1_1.wav", "5_theo_12.wav"):
        ours, ref = compute_features(wavs[name], cfg), librosa_features(wavs[name], cfg)
        assert ours.shape == ref.shape == (num_frames(len(wavs[name]), 200, 80, True),
                                           cfg.base_dim)
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=2e-4, err_msg=name)


def test_librosa_mel_banks_differ_from_kaldis_as_documented():
    kaldi_banks = mel_banks(23, 256, 8000.0, 20.0, 0.0)
    htk = librosa_mel_banks("htk", 23, 256, 8000.0, 20.0, 0.0)
    slaney = librosa_mel_banks("slaney", 23, 256, 8000.0, 20.0, 0.0)
    assert htk.shape == slaney.shape == kaldi_banks.shape == (129, 23)
    assert not htk.flags.writeable
    # Same mel scale and edges, so HTK's peaks sit where Kaldi's do; only the shape between
    # edges differs (linear in Hz, not in mel).
    assert (htk.argmax(axis=0) == kaldi_banks.argmax(axis=0)).all()
    assert 0 < np.abs(htk - kaldi_banks).max() < 0.1
    # Slaney's scale is linear below 1 kHz, and each triangle has unit area: its peak is
    # 2 / (its width in Hz), which the FFT bins sample from below.
    import librosa
    edges = librosa.mel_frequencies(25, fmin=20.0, fmax=4000.0)
    np.testing.assert_allclose(np.diff(edges[edges < 1000.0]), edges[1] - edges[0])
    peak = 2.0 / (edges[2:] - edges[:-2])
    assert (slaney.max(axis=0) <= peak * (1 + 1e-9)).all()
    assert (slaney.max(axis=0) >= 0.5 * peak).all()
    cfg = FeatureConfig(mel_convention="slaney")
    assert FeatureConfig(**json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg


def test_kaldi_front_end_does_not_load_librosa():
    code = ("import sys, numpy as np; from asr.features import FeatureConfig, compute_features; "
            "compute_features(np.zeros(800, np.float32), FeatureConfig()); "
            "assert 'librosa' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_front_end_handles_short_and_multichannel_input():
    cfg = FeatureConfig()
    assert compute_features(np.zeros(199, dtype=np.float32), cfg).shape == (0, 13)
    no_snip = dataclasses.replace(cfg, snip_edges=False)
    assert compute_features(np.zeros(0), no_snip).shape == (0, 13)
    silence = compute_features(np.zeros(800), cfg)
    assert np.isfinite(silence).all()
    with pytest.raises(ValueError, match="1-D"):
        compute_features(np.zeros((800, 2)), cfg)


# --- settings -----------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    (dict(kind="plp"), "kind"), (dict(window="kaiser"), "window"), (dict(cmvn="global"), "cmvn"),
    (dict(frame_length_ms=0.1), "frame_length_ms"), (dict(frame_shift_ms=0.0), "positive"),
    (dict(round_to_power_of_two=False, frame_length_ms=25.125), "odd"),
    (dict(dither=-1.0), "dither"), (dict(preemphasis=1.5), "preemphasis"),
    (dict(num_mel_bins=2), "num_mel_bins"), (dict(num_mel_bins=200), "no FFT bin"),
    (dict(low_freq=4000.0), "low_freq"), (dict(high_freq=5000.0), "high_freq"),
    (dict(num_ceps=24), "num_ceps"), (dict(cepstral_lifter=-1.0), "cepstral_lifter"),
    (dict(energy_floor=-1.0), "energy_floor"), (dict(deltas=-1), "deltas"),
    (dict(delta_window=0), "delta_window"), (dict(splice_left=-1), "splice"),
    (dict(mel_convention="mel"), "mel_convention must be one of"),
    (dict(mel_convention="htk", num_mel_bins=100), "no FFT bin"),
    (dict(mel_convention="slaney", high_freq=300.0), "no FFT bin"),
])
def test_config_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        FeatureConfig(**changes)


def test_config_round_trips_through_json_and_toml():
    cfg = FeatureConfig(kind="fbank", num_mel_bins=40, splice_left=3, splice_right=3)
    assert FeatureConfig(**json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    table = tomllib.loads('kind = "fbank"\nnum_mel_bins = 40\nsplice_left = 3\nsplice_right = 3')
    assert from_dict(FeatureConfig, table) == cfg
    assert cfg.dim == 40 * 3 * 7
    assert FeatureConfig(kind="fbank", num_mel_bins=10).base_dim == 10  # num_ceps: MFCC only


# --- post-processing ----------------------------------------------------------------------

def deltas_by_formula(feats: np.ndarray, order: int, window: int) -> np.ndarray:
    """Kaldi's add-deltas written out: Δ of Δ of the sequence extended by edge frames."""
    reach = order * window
    seq = [feats[min(max(t, 0), len(feats) - 1)].astype(np.float64)
           for t in range(-reach, len(feats) + reach)]
    norm = 2 * sum(n * n for n in range(1, window + 1))
    blocks = [feats.astype(np.float64)]
    for level in range(1, order + 1):
        seq = [sum(n * (seq[t + n] - seq[t - n]) for n in range(1, window + 1)) / norm
               for t in range(window, len(seq) - window)]
        margin = (len(seq) - len(feats)) // 2
        blocks.append(np.array(seq[margin:margin + len(feats)]))
    return np.concatenate(blocks, axis=1)


def test_deltas_follow_the_formula():
    feats = np.random.default_rng(0).standard_normal((17, 4)).astype(np.float32)
    for order, window in [(1, 2), (2, 2), (2, 1), (3, 1)]:
        out = add_deltas(feats, order, window)
        assert out.shape == (17, 4 * (order + 1))
        np.testing.assert_allclose(out, deltas_by_formula(feats, order, window), atol=1e-5)
    np.testing.assert_array_equal(add_deltas(feats, 0, 2), feats)
    assert add_deltas(np.zeros((0, 4)), 2, 2).shape == (0, 12)
    # The worked example in kaldi-native-fbank's documentation of add-deltas.
    np.testing.assert_allclose(add_deltas(np.array([[1.0], [2.0], [4.0]]), 2, 1),
                               [[1, 0.5, 0.75], [2, 1.5, 0.25], [4, 1.0, -0.75]], atol=1e-6)


def test_post_processing_matches_kaldi_native_fbank():
    knf = pytest.importorskip("kaldi_native_fbank")  # the [bench] extra: Kaldi's code, ported
    feats = np.random.default_rng(4).standard_normal((23, 5)).astype(np.float32)
    for order, window in [(1, 2), (2, 2), (3, 1)]:
        ref = knf.compute_deltas(knf.DeltaOptions(order=order, window=window), feats)
        np.testing.assert_allclose(add_deltas(feats, order, window), ref, atol=1e-5)
    ref = knf.splice_frames(feats, knf.SpliceOptions(left_context=3, right_context=2))
    np.testing.assert_array_equal(splice(feats, 3, 2), ref)
    stats = knf.compute_cmvn_stats(feats)
    np.testing.assert_allclose(cmvn_stats(feats), stats, atol=1e-9)
    ref = knf.apply_cmvn(stats, knf.CmvnOptions(norm_vars=True), feats)
    np.testing.assert_allclose(apply_cmvn(feats, stats, variance=True), ref, atol=1e-5)


def test_cmvn_gives_zero_mean_and_unit_variance():
    rng = np.random.default_rng(1)
    a, b = rng.normal(5.0, 3.0, (40, 6)), rng.normal(-2.0, 0.5, (25, 6))
    stats = cmvn_stats(a)
    assert stats.shape == (2, 7) and stats[0, -1] == 40
    np.testing.assert_allclose(cmvn_stats(a) + cmvn_stats(b), cmvn_stats(np.vstack([a, b])))
    np.testing.assert_allclose(apply_cmvn(a, stats).mean(axis=0), 0.0, atol=1e-5)
    normed = apply_cmvn(a, stats, variance=True)
    np.testing.assert_allclose(normed.std(axis=0), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="dimension"):
        apply_cmvn(a, cmvn_stats(b[:, :5]))


def test_splice_stacks_context_with_edge_frames_replicated():
    feats = np.arange(12.0).reshape(6, 2)
    out = splice(feats, 2, 1)
    assert out.shape == (6, 2 * 4)
    np.testing.assert_array_equal(out[0], [0, 1, 0, 1, 0, 1, 2, 3])   # frames 0 0 0 1
    np.testing.assert_array_equal(out[3], [2, 3, 4, 5, 6, 7, 8, 9])   # frames 1 2 3 4
    np.testing.assert_array_equal(out[5], [6, 7, 8, 9, 10, 11, 10, 11])  # frames 3 4 5 5
    np.testing.assert_array_equal(splice(feats, 0, 0), feats)


def test_pipeline_chains_cmvn_deltas_and_splicing():
    rng = np.random.default_rng(2)
    feats = {"a1": rng.normal(3, 1, (30, 13)), "a2": rng.normal(1, 1, (20, 13)),
             "b1": rng.normal(-4, 1, (25, 13))}
    utt2spk = {"a1": "a", "a2": "a", "b1": "b"}
    cfg = FeatureConfig(cmvn="speaker", deltas=2, splice_left=1, splice_right=1)
    out = apply_pipeline(feats, cfg, utt2spk)
    assert list(out) == list(feats)
    assert all(m.shape == (len(feats[u]), cfg.dim) and m.dtype == np.float32
               for u, m in out.items())
    centre = slice(39, 39 + 13)  # the static cepstra of the middle frame of each splice
    speaker_a = np.vstack([out["a1"][:, centre], out["a2"][:, centre]])
    np.testing.assert_allclose(speaker_a.mean(axis=0), 0.0, atol=1e-4)
    assert abs(out["a1"][:, centre].mean()) > 0.5  # speaker, not utterance, statistics
    by_hand = splice(add_deltas(apply_cmvn(feats["b1"], cmvn_stats(feats["b1"])), 2, 2), 1, 1)
    np.testing.assert_allclose(out["b1"], by_hand, atol=1e-5)
    per_utt = apply_pipeline(feats, dataclasses.replace(cfg, cmvn="utterance"))
    np.testing.assert_allclose(per_utt["a1"][:, centre].mean(axis=0), 0.0, atol=1e-4)
    with pytest.raises(ValueError, match="utt2spk"):
        apply_pipeline(feats, cfg)
    with pytest.raises(DataError, match="b1"):
        apply_pipeline(feats, cfg, {"a1": "a", "a2": "a"})


# --- archives -----------------------------------------------------------------------------

def test_archive_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    feats = {"u2": rng.standard_normal((7, 13)), "u1": rng.standard_normal((3, 13)),
             "u3": np.zeros((0, 13))}
    cfg = FeatureConfig(num_ceps=13, cmvn="none")
    write_archive(tmp_path / "feats", feats, cfg)
    assert (tmp_path / "feats" / "feats.index").read_text() == "u1 0 3\nu2 3 7\nu3 10 0\n"
    back = read_archive(tmp_path / "feats")
    assert list(back) == ["u1", "u2", "u3"]
    for utt in feats:
        assert back[utt].dtype == np.float32
        np.testing.assert_allclose(back[utt], feats[utt], rtol=1e-6)
    assert read_archive_config(tmp_path / "feats") == cfg
    write_archive(tmp_path / "feats", {"x": np.ones((2, 5))}, cfg)  # replaces the old one
    assert list(read_archive(tmp_path / "feats", mmap=False)) == ["x"]
    with pytest.raises(ValueError, match="whitespace"):
        write_archive(tmp_path / "bad", {"a b": np.ones((2, 5))}, cfg)


@pytest.mark.parametrize("line, message", [
    ("u2 3", "expected 'utt_id offset num_frames'"), ("u2 x 7", "integers"),
    ("u2 -1 7", "integers"), ("u2 3 8", "outside feats.npy"), ("u0 3 7", "sorted"),
])
def test_malformed_index_names_file_and_line(tmp_path, line, message):
    write_archive(tmp_path, {"u1": np.ones((3, 2)), "u2": np.ones((7, 2))}, FeatureConfig())
    index = tmp_path / "feats.index"
    index.write_text(index.read_text().replace("u2 3 7", line))
    with pytest.raises(DataError, match=message) as caught:
        read_archive(tmp_path)
    assert caught.value.path == str(index) and caught.value.line == 2
    assert str(caught.value).startswith(f"{index}:2: ")


def test_missing_or_bad_archive_files(tmp_path):
    with pytest.raises(DataError, match="feats.index"):
        read_archive(tmp_path)
    write_archive(tmp_path, {"u1": np.ones((3, 2))}, FeatureConfig())
    np.save(tmp_path / "feats.npy", np.ones((3, 2)))  # float64
    with pytest.raises(DataError, match="float32"):
        read_archive(tmp_path)
    (tmp_path / "config.json").write_text('{"kind": "mfcc", "frame_rate": 3}')
    with pytest.raises(DataError, match="frame_rate"):
        read_archive_config(tmp_path)


def test_compute_archive_from_wav_files(shared_data, tmp_path):
    recordings = shared_data / "fsdd" / "recordings"
    wav_paths = {f"jackson_{i}": str(recordings / f"{i}_jackson_{i}.wav") for i in range(4)}
    cfg = FeatureConfig()
    compute_archive(wav_paths, cfg, tmp_path / "feats", progress=False)
    feats = read_archive(tmp_path / "feats")
    assert list(feats) == sorted(wav_paths)
    for utt, path in wav_paths.items():
        samples, _ = sf.read(path, dtype="float32")
        np.testing.assert_allclose(feats[utt], compute_features(samples, cfg), atol=1e-4)
    assert read_archive_config(tmp_path / "feats") == cfg
    in_memory = compute_archive_in_memory(wav_paths, cfg, progress=False)
    assert all(np.array_equal(in_memory[u], feats[u]) for u in feats)


@pytest.mark.parametrize("problem, message", [
    ("stereo", "mono"), ("rate", "16000 Hz"), ("missing", "no such"), ("corrupt", "cannot read"),
])
def test_bad_audio_names_the_file(shared_data, tmp_path, problem, message):
    good = shared_data / "fsdd" / "recordings" / "0_jackson_0.wav"
    bad = tmp_path / f"{problem}.wav"
    if problem == "stereo":
        sf.write(bad, np.zeros((800, 2)), 8000, subtype="PCM_16")
    elif problem == "rate":
        sf.write(bad, np.zeros(1600), 16000, subtype="PCM_16")
    elif problem == "corrupt":
        bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    with pytest.raises(AudioError, match=message) as caught:
        compute_archive({"a": str(good), "b": str(bad)}, FeatureConfig(), tmp_path / "feats",
                        progress=False)
    assert caught.value.path == str(bad)
    assert not (tmp_path / "feats").exists()
