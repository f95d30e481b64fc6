"""asr.data: data directories, downloads, archives and corpus preparation on the real corpora."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.audio import active_power, read_wav, signal_power, write_wav
from asr.data import (DataDir, copy_source, download, extract_archive, extract_tar, fix_data_dir,
                      load_manifest, locate_corpus, plan_fsdd_connected, prepare_fsdd_connected,
                      prepare_fsdd_isolated, prepare_noisy, prepare_noisy_copies,
                      prepare_speed_perturbed, prepare_yesno, render_string, speed_perturb)
from asr.data import corpora
from asr.data.corpora import find_corpora
from asr.errors import DataError, error_line
from conftest import serving


# ----------------------------------------------------------------------------- data directories

@pytest.fixture
def small_dir(tmp_path) -> Path:
    """A valid data directory: utterances a1 a2 (speaker a) and b1 (speaker b)."""
    wavs = {}
    for utt in ("a1", "a2", "b1"):
        wavs[utt] = tmp_path / "wav" / f"{utt}.wav"
        write_wav(wavs[utt], np.zeros(80, np.float32), 8000)
    data = DataDir(wavs=wavs, text={"a1": ["YES", "NO"], "a2": ["NO"], "b1": ["YES"]},
                   utt2spk={"a1": "a", "a2": "a", "b1": "b"})
    data.save(tmp_path / "data")
    return tmp_path / "data"


def test_save_and_load_round_trip(small_dir):
    data = DataDir.load(small_dir)
    assert data.utts == ["a1", "a2", "b1"]
    assert data.text["a1"] == ["YES", "NO"]
    assert data.spk2utt == {"a": ["a1", "a2"], "b": ["b1"]}
    assert all(p.is_absolute() and p.is_file() for p in data.wavs.values())
    assert (small_dir / "spk2utt").read_text() == "a a1 a2\nb b1\n"
    assert data.subset(["b1"]).utts == ["b1"]
    with pytest.raises(DataError, match="'zz' is not in"):
        data.subset(["zz"])


def _edit(name: str, lines: callable):
    """A change to one file of the data directory, given as a function of its lines."""
    def apply(directory: Path):
        path = directory / name
        path.write_text("".join(line + "\n" for line in lines(path.read_text().splitlines())))
    return apply


BAD_DIRS = [  # (what is wrong, change, "file:line" expected in the error, text expected in it)
    ("unsorted", _edit("text", lambda ls: [ls[1], ls[0], ls[2]]), "text:2:", "not sorted"),
    ("duplicated id", _edit("utt2spk", lambda ls: ls[:2] + [ls[1]] + ls[2:]), "utt2spk:3:",
     "duplicate id 'a2'"),
    ("missing id", _edit("text", lambda ls: ls[:1] + ls[2:]), "wav.scp:2:", "no line in text"),
    ("extra id", _edit("utt2spk", lambda ls: ls + ["c1 c"]), "utt2spk:4:", "'c1' is not in wav.scp"),
    ("empty transcript", _edit("text", lambda ls: [ls[0], "a2", ls[2]]), "text:2:",
     "empty transcript for utterance 'a2'"),
    ("missing wav", _edit("wav.scp", lambda ls: [ls[0], "a2 /nonexistent/a2.wav", ls[2]]),
     "wav.scp:2:", "does not exist"),
    ("two speakers", _edit("utt2spk", lambda ls: [ls[0], "a2 a extra", ls[2]]), "utt2spk:2:",
     "expected '<utterance-id> <speaker-id>'"),
    ("speaker order", _edit("utt2spk", lambda ls: ["a1 b", "a2 a", "b1 b"]), "utt2spk:2:",
     "sorted by speaker"),
    ("spk2utt differs", _edit("spk2utt", lambda ls: ["a a1", "b a2 b1"]), "spk2utt:1:",
     "utterances of speaker 'a' differ"),
    ("blank line", _edit("text", lambda ls: [ls[0], "", *ls[1:]]), "text:2:", "empty line"),
]


@pytest.mark.parametrize("what, change, where, expected", BAD_DIRS, ids=[c[0] for c in BAD_DIRS])
def test_bad_data_dir_raises_one_error_naming_file_and_line(small_dir, what, change, where, expected):
    change(small_dir)
    with pytest.raises(DataError) as info:
        DataDir.load(small_dir)
    message = str(info.value)
    assert f"{small_dir}/{where}" in message and expected in message


def test_missing_file_is_named(small_dir):
    (small_dir / "utt2spk").unlink()
    with pytest.raises(DataError, match=r"data/utt2spk: missing"):
        DataDir.load(small_dir)


def test_save_refuses_an_inconsistent_data_dir(small_dir, tmp_path):
    data = DataDir.load(small_dir)
    del data.text["b1"]
    with pytest.raises(DataError, match="wav.scp: utterance 'b1' has no line in text"):
        data.save(tmp_path / "other")
    data.text["b1"] = []
    with pytest.raises(DataError, match="text: empty transcript for utterance 'b1'"):
        data.save(tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_oov_word_names_text_file_and_line(small_dir):
    data = DataDir.load(small_dir)
    data.check_vocabulary({"YES", "NO"})
    with pytest.raises(DataError) as info:
        data.check_vocabulary({"YES"})
    assert f"{small_dir}/text:1:" in str(info.value) and "word 'NO'" in str(info.value)


def test_fix_data_dir_drops_bad_utterances(small_dir):
    _edit("text", lambda ls: ls[:2])(small_dir)                    # b1 has no transcript
    (small_dir.parent / "wav" / "a2.wav").unlink()                # a2 has no audio
    assert fix_data_dir(small_dir) == 2
    assert DataDir.load(small_dir).utts == ["a1"]


# ----------------------------------------------------------------------------- downloads, archives

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_file_url_checks_sha256(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"corpus bytes" * 1000)
    dest = tmp_path / "dl" / "corpus.tar.gz"
    assert download(source.as_uri(), dest, _sha(source.read_bytes()), progress=False) == dest
    assert dest.read_bytes() == source.read_bytes()
    source.unlink()                                   # already there: not fetched again
    assert download(source.as_uri(), dest, _sha(dest.read_bytes()), progress=False) == dest


def test_download_mismatch_removes_the_file(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"altered")
    dest = tmp_path / "dl" / "corpus.tar.gz"
    with pytest.raises(DataError) as info:
        download(source.as_uri(), dest, "0" * 64, progress=False)
    assert str(dest) in str(info.value) and "sha256 mismatch" in str(info.value)
    assert list((tmp_path / "dl").iterdir()) == []


def test_download_refuses_without_checksum(tmp_path):
    with pytest.raises(DataError, match="refusing to download unverified data"):
        download("file:///nonexistent", tmp_path / "x", None, progress=False)


def test_download_over_http(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "a.bin").write_bytes(bytes(range(256)) * 500)
    with serving(served) as base:
        sha = _sha((served / "a.bin").read_bytes())
        dest = download(f"{base}/a.bin", tmp_path / "a.bin", sha, progress=False, timeout=5)
        assert dest.read_bytes() == (served / "a.bin").read_bytes()
        with pytest.raises(DataError, match="cannot download"):
            download(f"{base}/missing.bin", tmp_path / "m.bin", "0" * 64, progress=False,
                     timeout=5)
        with pytest.raises(DataError, match="sha256 mismatch"):
            download(f"{base}/a.bin", tmp_path / "b.bin", "1" * 64, progress=False, timeout=5)
        assert not (tmp_path / "b.bin").exists()


def _tar(path: Path, members: dict[str, bytes], links: dict[str, str] = {}) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


@pytest.mark.parametrize("member, links", [
    ("../evil", {}), ("/abs/evil", {}), ("a/../../evil", {}),
    ("ok", {"link": "/etc/passwd"}), ("ok", {"link": "../../x"})])
def test_extract_tar_refuses_members_outside(tmp_path, member, links):
    archive = _tar(tmp_path / "bad.tar.gz", {"fine.txt": b"1", member: b"2"}, links)
    with pytest.raises(DataError) as info:
        extract_tar(archive, tmp_path / "out")
    assert str(archive) in str(info.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil").exists()


def test_extract_archives(tmp_path):
    archive = _tar(tmp_path / "good.tar.gz", {"top/a.txt": b"a", "top/sub/b.txt": b"b"})
    assert (extract_archive(archive, tmp_path / "t") / "top" / "sub" / "b.txt").read_bytes() == b"b"
    with zipfile.ZipFile(tmp_path / "good.zip", "w") as zf:
        zf.writestr("top/a.txt", "a")
    unpacked = extract_archive(tmp_path / "good.zip", tmp_path / "z")
    assert (unpacked / "top" / "a.txt").read_text() == "a"
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
        zf.writestr("../evil", "x")
    with pytest.raises(DataError, match="bad.zip: member '../evil' points outside"):
        extract_archive(tmp_path / "bad.zip", tmp_path / "zz")
    (tmp_path / "junk.tar").write_bytes(b"junk" * 100)
    with pytest.raises(DataError, match="junk.tar: not a readable tar archive"):
        extract_archive(tmp_path / "junk.tar", tmp_path / "j")


def test_manifest_lists_verified_archives():
    manifest = load_manifest()
    assert set(manifest) == {"yesno", "fsdd", "train-clean-5", "dev-clean-2", "librispeech-lexicon",
                             "librispeech-3gram-pruned", "librispeech-4gram"}
    for entry in manifest.values():
        assert entry["url"].startswith("https://")
        assert entry.get("sha256") or entry.get("md5")     # every file is verified
        for name, digits in (("sha256", 64), ("md5", 32)):
            if entry.get(name) is not None:
                assert re.fullmatch(f"[0-9a-f]{{{digits}}}", entry[name])
                assert entry[f"{name}_source"]               # and says where it comes from


# ----------------------------------------------------------------------------- locating corpora

def test_locate_corpus_checks_a_local_copy(shared_data, tmp_path):
    assert locate_corpus("yesno", shared_data / "yesno") == shared_data / "yesno"
    assert locate_corpus("fsdd", shared_data / "fsdd") == shared_data / "fsdd"
    few = tmp_path / "yesno"
    few.mkdir()
    for wav in sorted((shared_data / "yesno" / "waves_yesno").glob("*.wav"))[:3]:
        (few / wav.name).symlink_to(wav)
    with pytest.raises(DataError, match=f"{few}: found 3 recordings"):
        locate_corpus("yesno", few)
    fsdd = tmp_path / "fsdd"
    fsdd.mkdir()
    for wav in (shared_data / "fsdd" / "recordings").glob("*.wav"):
        if wav.name != "3_lucas_7.wav":
            (fsdd / wav.name).symlink_to(wav)
    with pytest.raises(DataError, match=f"{fsdd}: missing 1 of 2500 recordings, e.g. 3_lucas_7.wav"):
        locate_corpus("fsdd", fsdd)


def test_locate_corpus_downloads_and_unpacks(shared_data, tmp_path):
    wavs = sorted((shared_data / "yesno" / "waves_yesno").glob("*.wav"))
    archive = tmp_path / "waves_yesno.tar"
    with tarfile.open(archive, "w") as tar:
        for wav in wavs:
            tar.add(wav, arcname=f"waves_yesno/{wav.name}")
    manifest = tmp_path / "corpora.json"
    manifest.write_text(json.dumps({"yesno": {
        "url": archive.as_uri(), "sha256": _sha(archive.read_bytes()),
        "archive": "waves_yesno.tar", "corpus_dir": "."}}))
    corpus = locate_corpus("yesno", download_dir=tmp_path / "dl", manifest=manifest, progress=False)
    assert corpus == tmp_path / "dl" / "yesno" and len(list(corpus.glob("waves_yesno/*.wav"))) == 60
    archive.unlink()                      # unpacked already: nothing is fetched again
    assert locate_corpus("yesno", download_dir=tmp_path / "dl", manifest=manifest) == corpus


# The names each corpus check looks for; the checks read names only, so the bytes are stand-ins.
_YESNO_NAMES = [f"{i:08b}".replace("", "_")[1:-1] + ".wav" for i in range(60)]
_FSDD_NAMES = [f"{d}_{spk}_{i}.wav" for spk in ("jackson", "nicolas", "theo", "yweweler", "lucas")
               for d in range(10) for i in range(50)]


def _corpus_archives(folder: Path) -> dict[str, dict]:
    """Archives shaped like the published ones (a tar.gz and a zip) and their manifest entries."""
    folder.mkdir(parents=True, exist_ok=True)
    yesno = _tar(folder / "waves_yesno.tar.gz",
                 {f"waves_yesno/{n}": b"RIFF" for n in _YESNO_NAMES} | {"README": b"yesno"})
    with zipfile.ZipFile(folder / "fsdd.zip", "w") as zf:
        for name in _FSDD_NAMES:
            zf.writestr(f"free-spoken-digit-dataset-1.0.10/recordings/{name}", b"RIFF")
        zf.writestr("free-spoken-digit-dataset-1.0.10/README.md", "fsdd")
    return {"yesno": {"archive": "waves_yesno.tar.gz", "corpus_dir": ".",
                      "sha256": _sha(yesno.read_bytes())},
            "fsdd": {"archive": "fsdd.zip", "corpus_dir": "free-spoken-digit-dataset-1.0.10",
                     "sha256": _sha((folder / "fsdd.zip").read_bytes())}}


def _manifest(path: Path, entries: dict[str, dict], base_url: str) -> Path:
    path.write_text(json.dumps({name: {**e, "url": f"{base_url}/{e['archive']}"}
                                for name, e in entries.items()}))
    return path


def _unreachable_url() -> str:
    with socket.socket() as s:             # a port nobody listens on: refused at once
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def no_local_corpora(tmp_path, monkeypatch):
    """Neither $ASR_SHARED_DATA nor shared/data beside the repository."""
    monkeypatch.delenv("ASR_SHARED_DATA", raising=False)
    monkeypatch.setattr(corpora, "_SIBLING", tmp_path / "no-shared-data")


def test_find_corpora_downloads_into_the_cache_like_shared_data(tmp_path, no_local_corpora):
    entries = _corpus_archives(tmp_path / "served")
    cache = tmp_path / "cache"
    with serving(tmp_path / "served") as base:
        manifest = _manifest(tmp_path / "corpora.json", entries, base)
        root = find_corpora(cache_dir=cache, manifest=manifest, progress=False, timeout=5)
    assert root == cache
    assert sorted(p.name for p in (root / "yesno" / "waves_yesno").iterdir()) == sorted(_YESNO_NAMES)
    assert len(list((root / "fsdd" / "recordings").glob("*.wav"))) == 2500
    assert sorted(p.name for p in cache.iterdir()) == ["fsdd", "fsdd.zip", "waves_yesno.tar.gz",
                                                        "yesno"]     # no temporaries left
    # The server is gone: a second call finds the unpacked copies and fetches nothing.
    assert find_corpora(cache_dir=cache, manifest=manifest, progress=False, timeout=5) == cache


def test_find_corpora_prefers_the_variable_then_shared_data(tmp_path, monkeypatch,
                                                            no_local_corpora):
    local = tmp_path / "local"
    for name in _YESNO_NAMES:
        (local / "yesno" / "waves_yesno").mkdir(parents=True, exist_ok=True)
        (local / "yesno" / "waves_yesno" / name).write_bytes(b"RIFF")
    for name in _FSDD_NAMES:
        (local / "fsdd" / "recordings").mkdir(parents=True, exist_ok=True)
        (local / "fsdd" / "recordings" / name).write_bytes(b"RIFF")
    offline = _manifest(tmp_path / "corpora.json", _corpus_archives(tmp_path / "a"),
                        _unreachable_url())
    kwargs = dict(cache_dir=tmp_path / "cache", manifest=offline, progress=False, timeout=5)
    monkeypatch.setattr(corpora, "_SIBLING", local)
    assert find_corpora(**kwargs) == local
    monkeypatch.setenv("ASR_SHARED_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match=f"ASR_SHARED_DATA is set to {tmp_path / 'elsewhere'}"):
        find_corpora(**kwargs)                           # set, so it is not passed over
    monkeypatch.setenv("ASR_SHARED_DATA", str(local))
    monkeypatch.setattr(corpora, "_SIBLING", tmp_path / "no-shared-data")
    assert find_corpora(**kwargs) == local
    assert not (tmp_path / "cache").exists()


def test_find_corpora_offline_is_one_error_saying_what_to_set(tmp_path, no_local_corpora):
    manifest = _manifest(tmp_path / "corpora.json", _corpus_archives(tmp_path / "a"),
                         _unreachable_url())
    with pytest.raises(DataError) as info:
        find_corpora(cache_dir=tmp_path / "cache", manifest=manifest, progress=False, timeout=5)
    line = error_line(info.value, "pytest")
    assert "\n" not in line and "cannot download http://127.0.0.1:" in line
    assert "set ASR_SHARED_DATA=/path/with/yesno-and-fsdd" in line
    assert "connect to the network" in line
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def test_archive_without_the_whole_corpus_leaves_nothing(tmp_path, no_local_corpora):
    entries = _corpus_archives(tmp_path / "served")
    _tar(tmp_path / "served" / "waves_yesno.tar.gz", {f"waves_yesno/{_YESNO_NAMES[0]}": b"x"})
    entries["yesno"]["sha256"] = _sha((tmp_path / "served" / "waves_yesno.tar.gz").read_bytes())
    manifest = _manifest(tmp_path / "corpora.json", entries, (tmp_path / "served").as_uri())
    with pytest.raises(DataError, match="waves_yesno.tar.gz: does not hold the whole corpus"):
        locate_corpus("yesno", download_dir=tmp_path / "dl", manifest=manifest, progress=False)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["waves_yesno.tar.gz"]


def test_a_test_run_without_corpora_stops_with_one_message(tmp_path):
    """No copy and no network: pytest stops before any test, with one line saying what to set."""
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    (tests / "test_needs_corpora.py").write_text(
        "def test_a(shared_data):\n    assert False\n\ndef test_b(shared_data):\n    assert False\n")
    manifest = _manifest(tmp_path / "corpora.json", _corpus_archives(tmp_path / "a"),
                         _unreachable_url())
    script = ("import sys; from pathlib import Path; import pytest; import asr.data.corpora as c; "
              "c._SIBLING = Path(sys.argv[1]); c.MANIFEST = Path(sys.argv[2]); "
              "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', sys.argv[3]]))")
    env = {k: v for k, v in os.environ.items() if k != "ASR_SHARED_DATA"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "none"), str(manifest),
                          str(tests)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 4, out
    assert out.count("no test corpora:") == 1 and "Traceback" not in out, out
    assert "set ASR_SHARED_DATA=/path/with/yesno-and-fsdd" in out
    assert "passed" not in out and "failed" not in out, out


# ----------------------------------------------------------------------------- corpus preparation

def test_prepare_yesno(shared_data, tmp_path):
    prepare_yesno(shared_data / "yesno", tmp_path)
    train, test = DataDir.load(tmp_path / "train"), DataDir.load(tmp_path / "test")
    assert (len(train), len(test)) == (31, 29) and not set(train.utts) & set(test.utts)
    assert train.utts[0] == "0_0_0_0_1_1_1_1"
    assert train.text["0_0_0_0_1_1_1_1"] == "NO NO NO NO YES YES YES YES".split()
    assert set(test.utt2spk.values()) == {"global"}
    train.check_vocabulary({"YES", "NO"})


def test_prepare_fsdd_isolated(shared_data, tmp_path):
    prepare_fsdd_isolated(shared_data / "fsdd", tmp_path / "conv")
    train, test = DataDir.load(tmp_path / "conv" / "train"), DataDir.load(tmp_path / "conv" / "test")
    assert (len(train), len(test)) == (2250, 250)
    assert test.text["jackson_7_03"] == ["SEVEN"]
    assert test.wavs["jackson_7_03"] == (shared_data / "fsdd/recordings/7_jackson_3.wav").absolute()
    assert all(int(u[-2:]) < 5 for u in test.utts) and all(int(u[-2:]) >= 5 for u in train.utts)
    prepare_fsdd_isolated(shared_data / "fsdd", tmp_path / "si", heldout_speaker="lucas")
    train, test = DataDir.load(tmp_path / "si" / "train"), DataDir.load(tmp_path / "si" / "test")
    assert (len(train), len(test)) == (2000, 500)
    assert set(test.spk2utt) == {"lucas"} and "lucas" not in train.spk2utt


def _files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by relative name, with ``directory`` itself blanked out."""
    return {str(p.relative_to(directory)): p.read_bytes().replace(str(directory).encode(), b"")
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_connected_is_reproducible_and_keeps_splits_apart(shared_data, tmp_path):
    fsdd = shared_data / "fsdd"
    for out in ("a", "b"):
        prepare_fsdd_connected(fsdd, tmp_path / out, num_train=8, num_test=4, seed=3)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    train, test = DataDir.load(tmp_path / "a" / "train"), DataDir.load(tmp_path / "a" / "test")
    assert (len(train), len(test)) == (8, 4)
    x, rate = read_wav(test.wavs[test.utts[0]], expected_rate=8000)
    assert sf.info(test.wavs[test.utts[0]]).subtype == "PCM_16"

    plan = plan_fsdd_connected(fsdd, num_train=200, num_test=50, seed=3)
    used = {split: {r.path for s in strings for r in s.recordings} for split, strings in plan.items()}
    assert not used["train"] & used["test"]
    assert all(r.index < 5 for s in plan["test"] for r in s.recordings)
    assert all({r.speaker for r in s.recordings} == {s.speaker} for s in plan["train"])
    assert {len(s.recordings) for s in plan["train"]} == set(range(1, 8))
    assert plan_fsdd_connected(fsdd, num_train=3, num_test=50, seed=3)["test"] == plan["test"]
    assert plan_fsdd_connected(fsdd, num_train=3, num_test=50, seed=4)["test"] != plan["test"]

    string = plan["test"][0]
    samples = render_string(string, {})
    lengths = sum(sf.info(r.path).frames for r in string.recordings) + sum(string.pauses)
    assert samples.shape == (lengths,)
    floor = 10 * np.log10(active_power(samples) / signal_power(samples[: string.pauses[0]]))
    assert 48 < floor < 62

    heldout = plan_fsdd_connected(fsdd, num_train=100, num_test=20, seed=0, heldout_speaker="theo")
    assert {s.speaker for s in heldout["test"]} == {"theo"}
    assert "theo" not in {s.speaker for s in heldout["train"]}


def test_prepare_noisy(shared_data, tmp_path):
    prepare_fsdd_connected(shared_data / "fsdd", tmp_path, num_train=1, num_test=3, seed=1)
    isolated = prepare_fsdd_isolated(shared_data / "fsdd", tmp_path / "isolated")
    babble = isolated["train"].subset(u for u in isolated["train"].utts if u.endswith("_05"))
    sets = prepare_noisy(tmp_path / "test", tmp_path, babble, snrs=(20, 5), seed=0)
    kinds = ("white", "pink", "babble")
    assert sorted(sets) == sorted(f"test_{k}_snr{s}" for k in kinds for s in (20, 5))
    clean = DataDir.load(tmp_path / "test")
    for name in sets:
        noisy = DataDir.load(tmp_path / name)
        assert noisy.text == clean.text and noisy.utt2spk == clean.utt2spk
        assert noisy.wavs[noisy.utts[0]].parent == tmp_path / "wav" / name
    for utt in clean.utts:
        speech = read_wav(clean.wavs[utt])[0].astype(np.float64)
        noise = {}
        for kind in kinds:
            for snr in (20, 5):
                mixed = read_wav(sets[f"test_{kind}_snr{snr}"].wavs[utt])[0]
                noise[kind, snr] = mixed - speech
                measured = 10 * np.log10(active_power(speech) / signal_power(noise[kind, snr]))
                assert abs(measured - snr) < 0.1, (utt, kind, snr, measured)
            # the same noise at every SNR, only scaled
            assert np.corrcoef(noise[kind, 20], noise[kind, 5])[0, 1] > 0.999
    speaker = clean.utt2spk[clean.utts[0]]
    one = clean.subset(u for u in clean.utts if clean.utt2spk[u] == speaker)
    own = babble.subset(u for u in babble.utts if babble.utt2spk[u] == speaker)
    with pytest.raises(DataError, match=f"no recordings of speakers other than '{speaker}'"):
        prepare_noisy(one, tmp_path / "again", own, kinds=("babble",), snrs=(5,))


def test_speed_perturbation_scales_time_and_frequency(tmp_path):
    rate = 8000
    tone = np.sin(2 * np.pi * 440 * np.arange(rate) / rate).astype(np.float32) * 0.5
    for factor in (0.9, 1.1):
        fast = speed_perturb(tone, rate, factor)
        assert abs(fast.size - rate / factor) <= 2
        spectrum = np.abs(np.fft.rfft(fast * np.hanning(fast.size)))
        peak_hz = np.argmax(spectrum) * rate / fast.size
        assert abs(peak_hz - 440 * factor) < 3, (factor, peak_hz)
    with pytest.raises(ValueError, match="speed factor"):
        speed_perturb(tone, rate, 3.0)

    write_wav(tmp_path / "a.wav", tone, rate)
    write_wav(tmp_path / "b.wav", tone[:4000], rate)
    clean = DataDir(wavs={"spk1_a": tmp_path / "a.wav", "spk2_b": tmp_path / "b.wav"},
                    text={"spk1_a": ["ONE"], "spk2_b": ["TWO", "SIX"]},
                    utt2spk={"spk1_a": "spk1", "spk2_b": "spk2"})
    copies = prepare_speed_perturbed(clean, tmp_path / "out", "sp", (0.9, 1.1))
    assert copies.utts == ["sp0.9-spk1_a", "sp0.9-spk2_b", "sp1.1-spk1_a", "sp1.1-spk2_b"]
    assert DataDir.load(tmp_path / "out/sp").utt2spk == copies.utt2spk
    assert copies.utt2spk["sp1.1-spk2_b"] == "sp1.1-spk2"
    assert copies.text["sp0.9-spk2_b"] == ["TWO", "SIX"]
    assert [copy_source(u) for u in copies.utts] == ["spk1_a", "spk2_b"] * 2
    assert read_wav(copies.wavs["sp1.1-spk2_b"])[0].size == pytest.approx(4000 / 1.1, abs=2)
    with pytest.raises(ValueError, match="leave out 1.0"):
        prepare_speed_perturbed(clean, tmp_path / "out", "again", (0.9, 1.0))
    with pytest.raises(ValueError, match="not the id of an augmented copy"):
        copy_source("spk1_a")


def test_prepare_noisy_copies(shared_data, tmp_path):
    isolated = prepare_fsdd_isolated(shared_data / "fsdd", tmp_path / "isolated")
    train = isolated["train"]
    clean = train.subset(u for u in train.utts if u.endswith(("_0_05", "_3_07", "_9_11")))
    snrs = (20, 10, 0)
    copies = prepare_noisy_copies(clean, tmp_path, "noisy", train, snrs=snrs, seed=3)
    assert sorted(copy_source(u) for u in copies.utts) == clean.utts
    conditions = set()
    for copy in copies.utts:
        utt = copy_source(copy)
        prefix = copy.split("-")[0]
        kind, snr = prefix.rstrip("0123456789"), int(prefix.lstrip("abcdefghijklmnopqrstuvwxyz"))
        assert kind in ("white", "pink", "babble") and snr in snrs
        assert copies.utt2spk[copy] == f"{prefix}-{clean.utt2spk[utt]}"
        assert copies.text[copy] == clean.text[utt]
        speech = read_wav(clean.wavs[utt])[0].astype(np.float64)
        mixed = read_wav(copies.wavs[copy])[0]
        assert mixed.shape == speech.shape   # frame targets carry over
        measured = 10 * np.log10(active_power(speech) / signal_power(mixed - speech))
        assert abs(measured - snr) < 0.2, (copy, measured)
        conditions.add(prefix)
    assert len(conditions) > 3   # conditions are drawn per utterance
    again = prepare_noisy_copies(clean, tmp_path / "again", "noisy", train, snrs=snrs, seed=3)
    assert again.utts == copies.utts
    assert all(np.array_equal(read_wav(again.wavs[u])[0], read_wav(copies.wavs[u])[0])
               for u in copies.utts)
