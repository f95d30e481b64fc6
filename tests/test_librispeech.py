"""Data preparation for corpora in LibriSpeech's layout (<subset>/<speaker>/<chapter>/)."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.audio import read_wav
from asr.data.datadir import DataDir
from asr.data.librispeech import prepare_librispeech, read_librispeech
from asr.errors import AudioError, DataError


# speaker -> chapter -> transcripts
LAYOUT = {"19": {"198": ["NORTHANGER ABBEY", "CHAPTER ONE"]},
          "103": {"1240": ["CHAPTER ONE MISSUS RACHEL LYNDE IS SURPRISED"],
                  "1241": ["CHAPTER TWO", "MATTHEW CUTHBERT IS SURPRISED"]}}


def _flac(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(1600)).astype(np.float32), 16000,
             subtype="PCM_16", format="FLAC")


def _trans(speaker, chapter):
    return f"{speaker}-{chapter}.trans.txt"


@pytest.fixture
def subset(tmp_path):
    root = tmp_path / "LibriSpeech" / "dev-clean-2"
    for speaker, chapters in LAYOUT.items():
        for chapter, lines in chapters.items():
            folder = root / speaker / chapter
            folder.mkdir(parents=True)
            rows = []
            for n, words in enumerate(lines):
                utt = f"{speaker}-{chapter}-{n:04d}"
                _flac(folder / f"{utt}.flac", n)
                rows.append(f"{utt} {words}\n")
            (folder / _trans(speaker, chapter)).write_text("".join(rows), encoding="utf-8")
    return root


def test_prepare_writes_a_sorted_kaldi_data_dir(subset, tmp_path):
    out = tmp_path / "data" / "dev_clean_2"
    prepare_librispeech(subset, out)
    data = DataDir.load(out)
    assert data.utts == ["103-1240-0000", "103-1241-0000", "103-1241-0001",
                         "19-198-0000", "19-198-0001"]
    assert data.utt2spk["103-1241-0001"] == "103" and data.spk2utt["19"] == ["19-198-0000",
                                                                            "19-198-0001"]
    assert data.text["103-1241-0001"] == ["MATTHEW", "CUTHBERT", "IS", "SURPRISED"]
    assert data.wavs["19-198-0001"] == subset / "19" / "198" / "19-198-0001.flac"
    assert (out / "spk2utt").read_text().splitlines()[0] == "103 103-1240-0000 103-1241-0000 " \
                                                            "103-1241-0001"
    samples, rate = read_wav(data.wavs["19-198-0000"], expected_rate=16000)
    assert rate == 16000 and samples.shape == (1600,) and samples.dtype == np.float32


def _edit(path: Path, line: int, text: str | None) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if text is None:
        del lines[line - 1]
    else:
        lines[line - 1] = text
    path.write_text("".join(lines), encoding="utf-8")


@pytest.mark.parametrize("line, text, message", [
    (2, "103-1240-0001 CHAPTER TWO\n", "does not belong in folder 103/1241"),
    (2, "103-1241-0001\n", "empty transcript"),
    (1, "103-1241-0007 CHAPTER TWO\n", "103-1241-0007.flac .* does not exist"),
    (2, "103-1241-0000 AGAIN\n", "listed twice"),
    (2, "\n", "empty line"),
])
def test_bad_transcript_line_names_file_and_line(subset, line, text, message):
    trans = subset / "103" / "1241" / _trans("103", "1241")
    _edit(trans, line, text)
    with pytest.raises(DataError, match=message) as info:
        read_librispeech(subset)
    assert info.value.path == str(trans) and info.value.line == line


def test_missing_and_unlisted_audio(subset):
    trans = subset / "19" / "198" / _trans("19", "198")
    (subset / "19" / "198" / "19-198-0001.flac").unlink()
    with pytest.raises(DataError, match="19-198-0001.flac .* does not exist") as info:
        read_librispeech(subset)
    assert info.value.path == str(trans) and info.value.line == 2
    _flac(subset / "19" / "198" / "19-198-0001.flac", 0)
    _edit(trans, 2, None)
    with pytest.raises(DataError, match="19-198-0001.flac has no line") as info:
        read_librispeech(subset)
    assert info.value.path == str(trans)


def test_layout_errors_name_the_folder(subset, tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        read_librispeech(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no recordings found"):
        read_librispeech(tmp_path / "empty")
    chapter = subset / "19" / "198"
    (chapter / _trans("19", "198")).rename(chapter / "notes.trans.txt")
    with pytest.raises(DataError, match="not named 19-198.trans.txt"):
        read_librispeech(subset)
    (chapter / "notes.trans.txt").unlink()
    with pytest.raises(DataError, match="no transcript 19-198.trans.txt") as info:
        read_librispeech(subset)
    assert info.value.path == str(chapter)


def test_truncated_flac_is_an_audio_error(subset, tmp_path):
    flac = subset / "19" / "198" / "19-198-0000.flac"
    cut = tmp_path / "cut.flac"
    cut.write_bytes(flac.read_bytes()[:40])
    with pytest.raises(AudioError, match="cut.flac"):
        read_wav(cut)


def test_sotu_slice_prepares_and_reads_at_16k(sotu_slice, tmp_path):
    data = prepare_librispeech(sotu_slice / "LibriSpeech" / "dev", tmp_path / "dev")
    assert len(data) == 75 and sorted(data.spk2utt) == ["1041", "1042", "1043"]
    assert all(utt.startswith(spk + "-") for utt, spk in data.utt2spk.items())
    samples, rate = read_wav(data.wavs[data.utts[0]], expected_rate=16000)
    assert rate == 16000 and samples.size > 16000
    assert DataDir.load(tmp_path / "dev").text == data.text
