"""Fuzzing the readers of user input: random bytes and random valid-looking lines.

Whatever they are given, the WAV reader, the data-directory parser, the ARPA reader, the
TOML settings loader and the transcript reader either succeed or raise one of the project's
documented exceptions (``asr.errors.AsrError`` subclasses): never a bare ``ValueError``,
``IndexError``, ``OSError``, ``UnicodeDecodeError`` or ``MemoryError``. Examples are drawn
from a fixed seed and their number is bounded, so every run tests the same inputs.
"""
from __future__ import annotations

import dataclasses
import io
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings, strategies as st

from asr.audio import read_wav
from asr.data import DataDir
from asr.decoder import DecoderConfig
from asr.errors import AsrError
from asr.lm import read_arpa
from asr.features import FeatureConfig
from asr.gmm.systems import HmmConfig
from asr.gmm.train import GmmTrainConfig
from asr.scoring import read_text
from asr.settings import load_settings
from conftest import load_recipe

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """One folder the examples overwrite (hypothesis runs many examples per test)."""
    return tmp_path_factory.mktemp("fuzz")


def _only_documented_errors(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except AsrError as exc:
        assert str(exc), "an AsrError must say what went wrong"
        return exc


# ----------------------------------------------------------------------------- WAV reader

def _wav_bytes(samples: np.ndarray, rate: int = 8000, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, subtype=subtype, format="WAV")
    return buffer.getvalue()


_GOOD_WAV = _wav_bytes(0.1 * np.sin(np.arange(400) / 5.0).astype(np.float32))


@st.composite
def _mutated_wav(draw) -> bytes:
    """A valid WAV with some bytes overwritten (header ones most often), cut or extended."""
    data = bytearray(_GOOD_WAV)
    for _ in range(draw(st.integers(0, 6))):
        where = draw(st.one_of(st.integers(0, 43), st.integers(0, len(data) - 1)))
        data[where] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        field = draw(st.sampled_from([4, 16, 20, 22, 24, 28, 32, 34, 40]))   # sizes, format, rate
        width = 2 if field in (20, 22, 32, 34) else 4
        value = draw(st.integers(0, (1 << (8 * width)) - 1))
        data[field:field + width] = value.to_bytes(width, "little")
    cut = draw(st.one_of(st.just(len(data)), st.integers(0, len(data))))
    return bytes(data[:cut]) + draw(st.binary(max_size=64))


@FUZZ
@given(data=st.one_of(st.binary(max_size=512), _mutated_wav(),
                      st.builds(lambda tail: b"RIFF" + tail, st.binary(max_size=200))),
       rate=st.sampled_from([None, 8000]))
def test_read_wav_raises_only_audio_errors(scratch, data, rate):
    path = scratch / "fuzz.wav"
    path.write_bytes(data)
    result = _only_documented_errors(read_wav, path, expected_rate=rate)
    if not isinstance(result, AsrError):
        samples, file_rate = result
        assert samples.dtype == np.float32 and samples.ndim == 1 and samples.size > 0
        assert np.all(np.isfinite(samples)) and np.max(np.abs(samples)) <= 1.0
        assert rate is None or file_rate == rate
    else:
        assert result.path == str(path)


# ----------------------------------------------------------------------------- data directories

_ID = st.sampled_from(["a1", "a2", "b1", "b2", "c", "", "ü", "a\u00a0b", "\x1c", "a/b"])
_WORD = st.sampled_from(["YES", "NO", "", " ", "\t", "\u2028", "\x85", "é", "x" * 300])
_WAV_FIELD = st.sampled_from(["WAV", "/nonexistent/x.wav", "cmd |", "x" * 300, "a\x00b",
                              "WAV extra", ""])


@st.composite
def _line(draw, second) -> str:
    fields = [draw(_ID), *draw(st.lists(second, max_size=3))]
    return draw(st.sampled_from([" ", "\t", "  "])).join(fields)


_TRANSCRIPT = st.lists(st.sampled_from(["YES", "NO"]), min_size=1, max_size=3)


@st.composite
def _data_files(draw) -> dict[str, str]:
    """A consistent data directory (speaker = first letter of the id), then a few edits:
    lines dropped, repeated, swapped or replaced by valid-looking or random ones."""
    utts = sorted(draw(st.lists(st.sampled_from(["a1", "a2", "b1", "b2", "c1"]), min_size=1,
                                max_size=5, unique=True)))
    files = {"wav.scp": [f"{u} WAV" for u in utts],
             "text": [f"{u} {' '.join(draw(_TRANSCRIPT))}" for u in utts],
             "utt2spk": [f"{u} {u[0]}" for u in utts]}
    speakers = sorted({u[0] for u in utts})
    files["spk2utt"] = [f"{s} {' '.join(u for u in utts if u[0] == s)}" for s in speakers]
    others = {"wav.scp": _WAV_FIELD, "text": _WORD, "utt2spk": _ID, "spk2utt": _ID}
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(sorted(files)))
        lines = files[name]
        edit = draw(st.sampled_from(["drop", "repeat", "swap", "replace", "insert"]))
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if edit == "drop" and lines:
            del lines[i]
        elif edit == "repeat" and lines:
            lines.insert(i, lines[i])
        elif edit == "swap" and len(lines) > 1:
            lines[i], lines[-1] = lines[-1], lines[i]
        elif edit == "replace" and lines:
            lines[i] = draw(st.one_of(_line(others[name]), st.text(max_size=20)))
        else:
            lines.insert(i, draw(_line(others[name])))
    text = {name: "".join(f"{line}\n" for line in lines) for name, lines in files.items()}
    if draw(st.booleans()):
        del text["spk2utt"]
    return text


@FUZZ
@given(files=st.one_of(_data_files(), _data_files(), st.fixed_dictionaries(
           {name: st.lists(_line(field), max_size=4).map(lambda ls: "\n".join(ls) + "\n")
            for name, field in (("wav.scp", _WAV_FIELD), ("text", _WORD), ("utt2spk", _ID))})),
       raw=st.one_of(st.none(), st.none(), st.tuples(
           st.sampled_from(["wav.scp", "text", "utt2spk"]), st.binary(max_size=64))))
def test_data_dir_load_raises_only_data_errors(scratch, files, raw):
    folder = scratch / "data"
    folder.mkdir(exist_ok=True)
    wav = scratch / "a.wav"
    if not wav.exists():
        wav.write_bytes(_GOOD_WAV)
    (folder / "spk2utt").unlink(missing_ok=True)
    for name, content in files.items():
        (folder / name).write_text(content.replace("WAV", str(wav)), encoding="utf-8")
    if raw is not None:
        (folder / raw[0]).write_bytes(raw[1])
    result = _only_documented_errors(DataDir.load, folder)
    if not isinstance(result, AsrError):
        assert result.utts == sorted(result.text) == sorted(result.utt2spk)
        assert all(result.text[u] for u in result.utts)
        result.validate()


# ----------------------------------------------------------------------------- ARPA reader

_ARPA_LINE = st.one_of(
    st.sampled_from(["\\data\\", "\\end\\", "\\1-grams:", "\\2-grams:", "\\3-grams:", "",
                     "ngram 1=2", "ngram 2=1", "ngram 1 = 3", "ngram 3=1", "ngram x=1",
                     "-0.5 ALPHA -0.1", "-1.0 </s>", "-99 <s> -0.5", "-0.2 ALPHA BRAVO",
                     "-inf ALPHA", "nan ALPHA", "-0.1 <unk>", "1e400 ALPHA", "x ALPHA",
                     "-0.3 ALPHA BRAVO CHARLIE -0.1"]),
    st.builds("{} {}".format, st.floats(allow_nan=True, allow_infinity=True),
              st.sampled_from(["ALPHA", "BRAVO", "<s>", "</s>", "ALPHA BRAVO"])),
    st.text(max_size=20))


@FUZZ
@given(lines=st.lists(_ARPA_LINE, max_size=14), raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_read_arpa_raises_only_data_errors(scratch, lines, raw):
    path = scratch / "lm.arpa"
    if raw is None:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        path.write_bytes(raw)
    result = _only_documented_errors(read_arpa, path)
    if not isinstance(result, AsrError):
        assert result.order >= 1


# ----------------------------------------------------------------------------- TOML settings

_SECTIONS = {"": ["seed", "lexicon"],
             "features": [f.name for f in dataclasses.fields(FeatureConfig)],
             "hmm": [f.name for f in dataclasses.fields(HmmConfig)],
             "mono": [f.name for f in dataclasses.fields(GmmTrainConfig)],
             "decode": [f.name for f in dataclasses.fields(DecoderConfig)],
             "unknown": ["x"]}
_VALUE = st.one_of(
    st.integers(-(1 << 70), 1 << 70).map(str),
    st.integers(-3, 40).map(str),
    st.sampled_from(["0", "-1", "1", "13", "8000", "25.0", "0.5", "1e300", "1e-300", "inf",
                     "-inf", "nan", "true", "false", '"mfcc"', '"fbank"', '"speaker"',
                     '"viterbi"', '"loop"', '"single"', '"nonexistent.arpa"', '""', "[1, 2, 3]",
                     "[]", '["a"]', "[nan]", "{}", "{ x = 1 }", "1979-05-27", "[1, \"a\"]"]),
    st.floats().map(repr), st.text(max_size=8).map(lambda t: '"' + t.replace('"', "").replace(
        "\\", "") + '"'))


@st.composite
def _settings_document(draw) -> str:
    """Sections of known (and a few unknown) keys, each set to a valid-looking value."""
    lines = []
    for section in draw(st.lists(st.sampled_from(sorted(_SECTIONS)), unique=True, max_size=4)):
        keys = draw(st.lists(st.sampled_from(_SECTIONS[section] + ["unknown"]), unique=True,
                             min_size=1, max_size=4))
        body = [f"{key} = {draw(_VALUE)}" for key in keys]
        lines = body + lines if section == "" else lines + [f"[{section}]", *body]
    return "\n".join(lines) + "\n"


_TOML_LINE = st.one_of(
    st.sampled_from(["[features]", "[mono]", "[hmm]", "[decode]", "[unknown]", "[features.x]",
                     "[[mono]]", "", "# comment", "[features", "features = 3", "seed = 1"]),
    st.builds("{} = {}".format, st.sampled_from(_SECTIONS["features"] + ["a.b", "\"q\""]),
              _VALUE),
    st.text(max_size=20))


@pytest.fixture(scope="module")
def settings_class():
    return load_recipe("yesno").Settings


@FUZZ
@given(text=st.one_of(_settings_document(), _settings_document(),
                      st.lists(_TOML_LINE, max_size=12).map(lambda ls: "\n".join(ls) + "\n")),
       raw=st.one_of(st.none(), st.none(), st.binary(max_size=64)))
def test_load_settings_raises_only_settings_errors(scratch, settings_class, text, raw):
    path = scratch / "settings.toml"
    if raw is None:
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(raw)
    result = _only_documented_errors(load_settings, path, settings_class)
    if not isinstance(result, AsrError):
        assert isinstance(result, settings_class)
        assert math.isfinite(result.features.frame_length_ms)
        assert not math.isnan(result.decode.beam)


# ----------------------------------------------------------------------------- transcripts

_TEXT_LINE = st.one_of(_line(_WORD), st.text(max_size=20))


@FUZZ
@given(lines=st.lists(_TEXT_LINE, max_size=8), raw=st.one_of(st.none(), st.binary(max_size=64)),
       allow_empty=st.booleans())
def test_read_text_raises_only_data_errors(scratch, lines, raw, allow_empty):
    path = scratch / "text"
    if raw is None:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        path.write_bytes(raw)
    result = _only_documented_errors(read_text, path, allow_empty=allow_empty)
    if not isinstance(result, AsrError):
        assert all(u and u.split() == [u] for u in result)
        assert allow_empty or all(result.values())


def test_a_huge_declared_wav_size_is_not_allocated(tmp_path):
    """A header that claims gigabytes of samples is refused, not allocated."""
    data = bytearray(_GOOD_WAV)
    data[40:44] = struct.pack("<I", 0x7FFFFFF0)
    path = tmp_path / "huge.wav"
    path.write_bytes(bytes(data))
    with pytest.raises(AsrError, match="truncated"):
        read_wav(path)
