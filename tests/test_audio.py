"""asr.audio: reading and writing WAVs, resampling, noise and mixing at an SNR."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from asr.audio import (active_power, babble_noise, mix_at_snr, pink_noise, read_wav, resample,
                       signal_power, white_noise, write_wav)
from asr.errors import AudioError

RATE = 8000


def tone(seconds: float = 0.5, hz: float = 440.0, rate: int = RATE,
         amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def snr_db(speech: np.ndarray, mixed: np.ndarray, active: bool = True) -> float:
    noise = mixed.astype(np.float64) - speech
    level = active_power(speech) if active else signal_power(speech)
    return 10 * np.log10(level / signal_power(noise))


def test_16_bit_round_trip_is_exact(tmp_path):
    pcm = np.random.default_rng(0).integers(-32768, 32768, size=1000).astype(np.int16)
    sf.write(tmp_path / "a.wav", pcm, RATE, subtype="PCM_16")
    x, rate = read_wav(tmp_path / "a.wav", expected_rate=RATE)
    assert rate == RATE and x.dtype == np.float32 and x.shape == (1000,)
    write_wav(tmp_path / "b.wav", x, rate)
    assert np.array_equal(sf.read(tmp_path / "b.wav", dtype="int16")[0], pcm)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav"]  # no temporary left


def test_write_wav_clips_and_is_16_bit(tmp_path):
    write_wav(tmp_path / "a.wav", np.array([2.0, -2.0, 0.25]), RATE)
    assert sf.info(tmp_path / "a.wav").subtype == "PCM_16"
    assert sf.read(tmp_path / "a.wav", dtype="int16")[0].tolist() == [32767, -32768, 8192]
    with pytest.raises(AudioError, match="b.wav: cannot write NaN"):
        write_wav(tmp_path / "b.wav", np.array([0.0, np.nan]), RATE)
    assert not (tmp_path / "b.wav").exists()


@pytest.mark.parametrize("subtype", ["PCM_24", "PCM_32", "FLOAT", "DOUBLE", "PCM_U8"])
def test_other_sample_formats_are_converted(tmp_path, subtype):
    x = tone()
    sf.write(tmp_path / "a.wav", x, RATE, subtype=subtype)
    y, _ = read_wav(tmp_path / "a.wav")
    assert y.dtype == np.float32
    assert np.max(np.abs(y - x)) < (1e-2 if subtype == "PCM_U8" else 1e-6)


def test_resample_keeps_a_tone():
    y = resample(tone(1.0, 440.0, 16000), 16000, RATE)
    assert y.shape == (RATE,) and y.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) == 440  # 1 Hz bins
    assert np.array_equal(resample(y, RATE, RATE), y)


@pytest.mark.parametrize("active", [True, False])
@pytest.mark.parametrize("snr", [20.0, 5.0, 0.0, -5.0])
def test_mix_at_snr_measures_back(snr, active):
    rng = np.random.default_rng(1)
    speech = np.concatenate([np.zeros(2000, np.float32), tone(1.0), np.zeros(3000, np.float32)])
    mixed = mix_at_snr(speech, pink_noise(5000, rng), snr, active=active)  # noise is tiled
    assert mixed.shape == speech.shape
    assert abs(snr_db(speech, mixed, active) - snr) < 0.1


def test_active_level_ignores_silence():
    speech = tone(1.0)
    padded = np.concatenate([speech, np.zeros(3 * speech.size, np.float32)])
    assert active_power(padded) == pytest.approx(signal_power(speech), rel=1e-6)
    assert signal_power(padded) == pytest.approx(signal_power(speech) / 4, rel=1e-6)


def test_noise_is_seeded_and_unit_power():
    for make in (white_noise, pink_noise):
        a, b = make(4000, np.random.default_rng(3)), make(4000, np.random.default_rng(3))
        assert a.dtype == np.float32 and np.array_equal(a, b)
        assert signal_power(a) == pytest.approx(1.0, rel=1e-4)


def test_pink_noise_falls_3_db_per_octave():
    x = pink_noise(2**16, np.random.default_rng(0))
    power = np.abs(np.fft.rfft(x)) ** 2
    bins = np.arange(power.size)
    band = (bins > 10) & (bins < power.size - 10)
    slope = np.polyfit(np.log10(bins[band]), np.log10(power[band]), 1)[0]
    assert -1.1 < slope < -0.9


def test_babble_is_a_sum_of_recordings():
    rng = np.random.default_rng(0)
    recordings = [tone(0.3, hz) for hz in (200.0, 300.0, 500.0)]
    x = babble_noise(5000, recordings, np.random.default_rng(7), talkers=4)
    assert x.shape == (5000,) and signal_power(x) == pytest.approx(1.0, rel=1e-4)
    assert np.array_equal(x, babble_noise(5000, recordings, np.random.default_rng(7), talkers=4))
    peaks = np.argsort(np.abs(np.fft.rfft(x)))[-20:] * RATE / 5000
    assert set(np.round(peaks, -2)) <= {200.0, 300.0, 500.0}
    with pytest.raises(ValueError):
        babble_noise(10, [], rng)


def _wav(x, rate=RATE, subtype="PCM_16"):
    return lambda p: sf.write(p, x, rate, subtype=subtype)


def _truncated(p):
    sf.write(p, tone(), RATE, subtype="PCM_16")
    p.write_bytes(p.read_bytes()[:-1000])


def _cut_header(p):
    sf.write(p, tone(), RATE, subtype="PCM_16")
    p.write_bytes(p.read_bytes()[:30])


def _with(index, value):
    x = tone()
    x[index] = value
    return x


BAD_FILES = [  # (file name, how to write it, text expected in the error)
    ("missing.wav", None, "no such audio file"),
    ("empty.wav", _wav(np.zeros(0, np.float32)), "empty"),
    ("zero_bytes.wav", lambda p: p.write_bytes(b""), "not a readable audio file"),
    ("truncated.wav", _truncated, "truncated"),
    ("cut_header.wav", _cut_header, "not a readable audio file"),
    ("text.wav", lambda p: p.write_text("this is not audio\n" * 20), "not a readable audio file"),
    ("stereo.wav", _wav(np.stack([tone(), tone()], axis=1)), "expected mono"),
    ("rate.wav", _wav(tone(rate=16000), rate=16000), "expected 8000 Hz"),
    ("nan.wav", _wav(_with(10, np.nan), subtype="FLOAT"), "NaN or Inf"),
    ("inf.wav", _wav(_with(20, np.inf), subtype="FLOAT"), "NaN or Inf"),
    ("loud.wav", _wav(3 * tone(), subtype="FLOAT"), "expected samples in [-1, 1]"),
]


@pytest.mark.parametrize("name, writer, expected", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_audio_raises_naming_the_file(tmp_path, name, writer, expected):
    path = tmp_path / name
    if writer is not None:
        writer(path)
    with pytest.raises(AudioError) as info:
        read_wav(path, expected_rate=RATE)
    assert str(path) in str(info.value) and expected in str(info.value)
