"""Every kind of bad input the toolkit meets, and the one error (or logged skip) each gives.

``BAD_INPUTS`` is the canonical list: one row per kind, each making the bad input in a fresh
folder and calling the code a recipe or the ``asr`` command would call on it. Each must raise
one documented exception (an ``asr.errors.AsrError`` subclass) whose message names the file,
``path:line:`` where the problem sits on a line, and says what was expected. Nothing half
written may be left where a good output would go.

Where skipping is what a user wants, the skip is logged and counted instead: utterances too
short for their HMM path (training goes on without them) and unusable audio under a recipe's
``--skip-bad-utts``.
"""
from __future__ import annotations

import dataclasses
import ast
import datetime
import io
import json
import logging
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

from asr.audio import read_wav, write_wav
from asr.data import DataDir, download, extract_archive
from asr.decoder import DecoderConfig
from asr.errors import AudioError, DataError, ModelError, SettingsError
from asr.experiment import Experiment
from asr.features import FeatureConfig, apply_pipeline, compute_archive, read_archive, write_archive
from asr.models import load_arrays
from asr.scoring import read_text
from asr.settings import load_settings
from asr.system import AsrSystem
from conftest import load_recipe

RATE = 8000
REPO = Path(__file__).resolve().parents[1]


def _tone(seconds: float = 0.3, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _sf_write(path: Path, samples, rate: int = RATE, subtype: str = "PCM_16") -> Path:
    sf.write(path, samples, rate, subtype=subtype)
    return path


def _data_dir(root: Path, utts=("a1", "a2", "b1"), wavs: dict[str, Path] | None = None) -> Path:
    """A valid data directory ``root/c/train`` (corpus c, data set train): speakers a and b."""
    wavs = dict(wavs or {})
    for utt in utts:
        if utt not in wavs:
            wavs[utt] = root / "wav" / f"{utt}.wav"
            write_wav(wavs[utt], _tone(0.2 + 0.05 * len(wavs)), RATE)
    text = {"a1": ["YES", "NO"], "a2": ["NO"], "b1": ["YES"]}
    DataDir(wavs=wavs, text={u: text.get(u, ["YES"]) for u in utts},
            utt2spk={u: u[0] for u in utts}).save(root / "c" / "train")
    return root / "c" / "train"


def _edit(path: Path, change: Callable[[list[str]], list[str]]) -> None:
    path.write_text("".join(f"{line}\n" for line in change(path.read_text().splitlines())))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A small, valid model directory (monophone GMM system over YES/NO)."""
    from asr.gmm import DiagGmm, GmmAcousticModel
    from asr.hmm import ContextTree, Topology, TransitionModel
    from asr.lexicon import Lexicon

    lexicon = Lexicon.from_entries([("YES", ["Y", "EH", "S"]), ("NO", ["N", "OW"])])
    topo = Topology(len(lexicon.phones), 3, 3)
    tree = ContextTree.monophone(topo)
    rng = np.random.default_rng(0)
    n, dim = tree.num_pdfs, 39
    gmm = DiagGmm(rng.normal(size=(n, dim)), np.ones((n, dim)), np.zeros(n), np.arange(n), n)
    directory = tmp_path_factory.mktemp("model") / "mono"
    AsrSystem(FeatureConfig(), lexicon, tree, TransitionModel(topo), GmmAcousticModel(gmm),
              DecoderConfig()).save(directory)
    return directory


# --------------------------------------------------------------------------- the cases
# Each returns (call, file the error must name, line it must name or None).

def _features_of(tmp: Path, path: Path):
    """The features stage on one file: what a recipe does with a wav.scp entry."""
    return lambda: compute_archive({"u1": str(path)}, FeatureConfig(), tmp / "feats",
                                   progress=False)


def wav_case(write: Callable[[Path], object]):
    def make(tmp: Path, _model: Path):
        path = tmp / "bad.wav"
        write(path)
        return _features_of(tmp, path), path, None
    return make


def _truncated(path):
    _sf_write(path, _tone())
    path.write_bytes(path.read_bytes()[:-500])


def _with_nan(path):
    x = _tone()
    x[7] = np.nan
    _sf_write(path, x, subtype="FLOAT")


def nan_features(tmp, _model):
    feats = {"u1": np.ones((5, 13), np.float32), "u2": np.ones((4, 13), np.float32)}
    feats["u2"][2, 3] = np.inf
    write_archive(tmp / "feats", feats, FeatureConfig())
    return lambda: read_archive(tmp / "feats"), tmp / "feats" / "feats.index", 2


def data_case(file: str, change: Callable[[list[str]], list[str]], named: str, line: int | None):
    def make(tmp: Path, _model: Path):
        data = _data_dir(tmp)
        _edit(data / file, change)
        return lambda: DataDir.load(data), data / named, line
    return make


def missing_data_file(tmp, _model):
    data = _data_dir(tmp)
    (data / "utt2spk").unlink()
    return lambda: DataDir.load(data), data / "utt2spk", None


def oov_word(tmp, _model):
    data = _data_dir(tmp)
    _edit(data / "text", lambda ls: [ls[0], "a2 MAYBE", ls[2]])
    ex = Experiment("c", tmp, tmp / "exp", tmp / "results", FeatureConfig(), progress=False)
    return lambda: ex.utterances("train", vocabulary={"YES", "NO"}), data / "text", 2


def settings_case(text: str, line: int | None, recipe: str = "yesno"):
    def make(tmp: Path, _model: Path):
        path = tmp / "settings.toml"
        path.write_text(text)
        settings = load_recipe(recipe).Settings
        return lambda: load_settings(path, settings), path, line
    return make


def model_case(change: Callable[[Path], Path]):
    def make(tmp: Path, model: Path):
        copy = tmp / "mono"
        shutil.copytree(model, copy)
        return lambda: AsrSystem.load(copy), change(copy), None
    return make


def _remove(name):
    def change(d: Path) -> Path:
        (d / name).unlink()
        return d / name
    return change


def _alter(name):
    def change(d: Path) -> Path:
        data = bytearray((d / name).read_bytes())
        data[len(data) // 2] ^= 0x01                      # one bit
        (d / name).write_bytes(bytes(data))
        return d / name
    return change


def _old_format(d: Path) -> Path:
    _edit(d / "manifest.json", lambda ls: [line.replace('"format_version": 1',
                                                        '"format_version": 99') for line in ls])
    return d / "manifest.json"


def _unlisted(d: Path) -> Path:
    """Drop tree.json from the manifest (as if the file were swapped in after saving)."""
    manifest = json.loads((d / "manifest.json").read_text())
    del manifest["files"]["tree.json"]
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d / "manifest.json"


def arrays_holding_objects(tmp, _model):
    path = tmp / "gmm.npz"
    np.savez(path, means=np.array([{"not": "numbers"}], dtype=object))
    return lambda: load_arrays(path), path, None


def checkpoint_case(write: Callable[[Path], object]):
    def make(tmp: Path, _model: Path):
        from asr.nnet.train import load_checkpoint

        path = tmp / "checkpoint.pt"
        write(path)
        return lambda: load_checkpoint(path), path, None
    return make


def _damaged_checkpoint(path: Path) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save({"format": 1, "weights": torch.ones(100)}, buffer)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def _checkpoint_with_object(path: Path) -> None:
    import torch

    torch.save({"format": 1, "written": datetime.date(2024, 1, 1)}, path)  # not plain tensors


def sha256_mismatch(tmp, _model):
    source = tmp / "corpus.tar.gz"
    source.write_bytes(b"altered corpus")
    dest = tmp / "downloads" / "corpus.tar.gz"
    return lambda: download(source.as_uri(), dest, "0" * 64, progress=False), dest, None


def unsafe_archive(member: str):
    def make(tmp: Path, _model: Path):
        archive = tmp / "corpus.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for name in ("corpus/ok.wav", member):
                info = tarfile.TarInfo(name)
                info.size = 3
                tar.addfile(info, io.BytesIO(b"abc"))
        return lambda: extract_archive(archive, tmp / "out"), archive, None
    return make


def bad_arpa(tmp, model):
    """A decode whose grammar is a broken ARPA file: the error names its line."""
    path = tmp / "lm.arpa"
    path.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-0.5 YES\nminus-one NO\n\\end\\\n")
    system = AsrSystem.load(model)
    cfg = dataclasses.replace(system.decoding, grammar=str(path))
    return lambda: system.decoder(cfg), path, 6


def bad_feature_index(tmp, _model):
    write_archive(tmp / "feats", {"u1": np.ones((3, 2)), "u2": np.ones((2, 2))}, FeatureConfig())
    _edit(tmp / "feats" / "feats.index", lambda ls: [ls[0], "u2 3 two"])
    return lambda: read_archive(tmp / "feats"), tmp / "feats" / "feats.index", 2


def hypothesis_not_utf8(tmp, _model):
    path = tmp / "hyp.txt"
    path.write_bytes(b"u1 YES\nu2 N\xffO\n")
    return lambda: read_text(path), path, 2


@dataclass
class Case:
    kind: str
    make: Callable[[Path, Path], tuple[Callable[[], object], Path, int | None]]
    error: type
    says: str          # text the message must hold


BAD_INPUTS = [
    # audio (through the features stage)
    Case("truncated WAV", wav_case(_truncated), AudioError, "truncated"),
    Case("WAV with no samples", wav_case(lambda p: _sf_write(p, np.zeros(0, np.float32))),
         AudioError, "empty"),
    Case("zero-byte WAV", wav_case(lambda p: p.write_bytes(b"")), AudioError,
         "not a readable audio file"),
    Case("non-audio file", wav_case(lambda p: p.write_text("<html>not found</html>\n" * 9)),
         AudioError, "not a readable audio file"),
    Case("stereo WAV", wav_case(lambda p: _sf_write(p, np.stack([_tone(), _tone()], 1))),
         AudioError, "expected mono audio, found 2 channels"),
    Case("float WAV beyond [-1, 1]",
         wav_case(lambda p: _sf_write(p, 4 * _tone(), subtype="FLOAT")),
         AudioError, "expected samples in [-1, 1]"),
    Case("wrong sample rate", wav_case(lambda p: _sf_write(p, _tone(rate=16000), 16000)),
         AudioError, "sample rate is 16000 Hz, expected 8000 Hz"),
    Case("all-zero WAV", wav_case(lambda p: _sf_write(p, np.zeros(2400, np.float32))),
         AudioError, "all 2400 samples are zero"),
    Case("NaN samples", wav_case(_with_nan), AudioError, "NaN or Inf"),
    Case("NaN/Inf features", nan_features, DataError, "hold 1 NaN or Inf values"),
    # data directories
    Case("unsorted ids", data_case("text", lambda ls: [ls[1], ls[0], ls[2]], "text", 2),
         DataError, "not sorted"),
    Case("duplicated id", data_case("utt2spk", lambda ls: ls[:2] + ls[1:], "utt2spk", 3),
         DataError, "duplicate id 'a2'"),
    Case("id missing from text", data_case("text", lambda ls: [ls[0], ls[2]], "wav.scp", 2),
         DataError, "'a2' has no line in text"),
    Case("extra id in utt2spk", data_case("utt2spk", lambda ls: ls + ["c1 c"], "utt2spk", 4),
         DataError, "'c1' is not in wav.scp"),
    Case("empty transcript", data_case("text", lambda ls: [ls[0], "a2", ls[2]], "text", 2),
         DataError, "empty transcript for utterance 'a2'"),
    Case("audio file missing", data_case("wav.scp", lambda ls: [ls[0], "a2 /no/such.wav", ls[2]],
                                         "wav.scp", 2), DataError, "does not exist"),
    Case("data file missing", missing_data_file, DataError, "missing"),
    Case("OOV word", oov_word, DataError,
         "word 'MAYBE' of utterance 'a2' is not in the vocabulary"),
    Case("hypothesis not UTF-8", hypothesis_not_utf8, DataError, "not valid UTF-8"),
    # settings
    Case("TOML unknown key", settings_case("seed = 0\n[mono]\nnum_iter = 3\n", 3), SettingsError,
         "unknown setting [mono] 'num_iter'"),
    Case("TOML wrong type", settings_case("[features]\nnum_ceps = \"13\"\n", 2), SettingsError,
         "'num_ceps' must be of type int"),
    Case("TOML syntax error", settings_case("[mono]\nnum_iters = = 3\n", 2), SettingsError,
         "not valid TOML"),
    Case("TOML bad value", settings_case("seed = 1\n[features]\nnum_mel_bins = 5000\n", 2),
         SettingsError, "num_mel_bins must be in [3, 128]"),
    Case("TOML NaN", settings_case("[decode]\nbeam = nan\n", 2), SettingsError, "is NaN"),
    Case("TOML bad speed factor", settings_case("seed = 1\n[augment]\nspeed_factors = [0.9, 3.0]\n",
                                                2, recipe="fsdd"),
         SettingsError, "speed factor must be in [0.5, 2]"),
    # models and checkpoints
    Case("model file missing", model_case(_remove("tree.json")), ModelError, "missing model file"),
    Case("model file altered", model_case(_alter("acoustic/gmm.npz")), ModelError,
         "checksum does not match"),
    Case("model of another format", model_case(_old_format), ModelError, "format version 99"),
    Case("manifest missing an entry", model_case(_unlisted), ModelError,
         "does not list tree.json"),
    Case("model arrays holding objects", arrays_holding_objects, ModelError, "unreadable array"),
    Case("corrupted checkpoint", checkpoint_case(_damaged_checkpoint), ModelError,
         "unreadable checkpoint"),
    Case("checkpoint holding an object", checkpoint_case(_checkpoint_with_object), ModelError,
         "unreadable checkpoint"),
    # downloads, archives, other files
    Case("download sha256 mismatch", sha256_mismatch, DataError, "sha256 mismatch"),
    Case("archive member with ../", unsafe_archive("corpus/../../evil.sh"), DataError,
         "points outside the destination"),
    Case("archive member with absolute path", unsafe_archive("/tmp/evil.sh"), DataError,
         "has an absolute path"),
    Case("malformed ARPA line", bad_arpa, DataError, "expected a log10 probability"),
    Case("malformed feature index", bad_feature_index, DataError, "non-negative integers"),
]


def test_the_suite_covers_at_least_twenty_kinds():
    kinds = [case.kind for case in BAD_INPUTS]
    assert len(set(kinds)) == len(kinds) >= 20


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.kind.replace(" ", "-") for c in BAD_INPUTS])
def test_bad_input_gives_one_clear_error(case, tmp_path, model_dir):
    call, path, line = case.make(tmp_path, model_dir)
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(case.error) as info:
        call()
    error, message = info.value, str(info.value)
    assert error.path == str(path), message
    assert error.line == line, message
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert message.startswith(where), message
    assert case.says in message, message
    written = {p for p in tmp_path.rglob("*")} - before
    assert all(p.is_dir() and not any(p.iterdir()) for p in written), (
        f"the failed call left files behind: {sorted(written)}")
    assert not Path("/tmp/evil.sh").exists()


# --------------------------------------------------------------------------- accepted as they are

@pytest.mark.parametrize("subtype", ["PCM_24", "PCM_32", "FLOAT", "PCM_U8"])
def test_other_sample_widths_are_read_not_refused(tmp_path, subtype):
    """24/32-bit, 8-bit and in-range float WAVs are converted to [-1, 1], not errors."""
    x = _tone()
    path = _sf_write(tmp_path / "x.wav", x, subtype=subtype)
    samples, rate = read_wav(path, expected_rate=RATE)
    assert rate == RATE
    np.testing.assert_allclose(samples, x, atol=1.0 / 128 if subtype == "PCM_U8" else 1e-4)


def test_a_silent_recording_is_read_when_asked(tmp_path):
    path = _sf_write(tmp_path / "silence.wav", np.zeros(800, np.float32))
    samples, _ = read_wav(path, allow_silent=True)
    assert samples.shape == (800,) and not samples.any()


def test_non_finite_features_in_memory_name_the_utterance():
    feats = {"u1": np.zeros((4, 3), np.float32), "u2": np.zeros((4, 3), np.float32)}
    feats["u2"][1, 0] = np.nan
    with pytest.raises(DataError, match=r"'u2' hold 1 NaN or Inf values \(first in frame 1\)"):
        apply_pipeline(feats, FeatureConfig(cmvn="utterance"))


# --------------------------------------------------------------------------- logged, counted skips

def _train_with_one_short_utterance(training: str):
    from asr.gmm.systems import HmmConfig, train_monophone
    from asr.gmm.train import GmmTrainConfig
    from asr.lexicon import Lexicon
    from asr.training import Utterance

    rng = np.random.default_rng(0)
    lexicon = Lexicon.from_entries([("YES", ["Y", "EH", "S"]), ("NO", ["N", "OW"])])
    utts = [Utterance(f"u{i}", rng.normal(size=(60, 4)).astype(np.float32), ["YES", "NO"])
            for i in range(4)]
    # YES NO needs at least 5 phones x 3 states = 15 frames; this one has 6.
    utts.append(Utterance("u9_short", rng.normal(size=(6, 4)).astype(np.float32), ["YES", "NO"]))
    cfg = GmmTrainConfig(training=training, num_iters=3, max_gaussians=20, mixup_iters=2)
    return train_monophone(utts, lexicon, FeatureConfig(), HmmConfig(), cfg, progress=False)[1]


@pytest.mark.parametrize("training", ["baum-welch", "viterbi"])
def test_utterance_shorter_than_its_hmm_path_is_a_logged_skip(caplog, training):
    caplog.set_level(logging.WARNING, logger="asr.gmm.train")
    result = _train_with_one_short_utterance(training)
    assert sorted(result.alignments) == ["u0", "u1", "u2", "u3"]
    assert all(np.isfinite(result.history))
    skips = [r.getMessage() for r in caplog.records if "had no path" in r.getMessage()]
    assert len(skips) == 3 and all("1 of 5 utterances" in s for s in skips)


def test_skip_bad_utts_leaves_out_logs_and_lists_unusable_audio(tmp_path, caplog):
    wavs = {"a2": tmp_path / "wav" / "a2.wav", "b1": tmp_path / "wav" / "b1.wav"}
    wavs["a2"].parent.mkdir(parents=True)
    _sf_write(wavs["a2"], np.stack([_tone(), _tone()], 1))          # stereo
    _sf_write(wavs["b1"], np.zeros(2400, np.float32))                # silent
    data = _data_dir(tmp_path, wavs=wavs)
    strict = Experiment("c", tmp_path, tmp_path / "exp", tmp_path / "results",
                        FeatureConfig(cmvn="speaker"), progress=False)
    with pytest.raises(AudioError, match="a2.wav: expected mono"):
        strict.make_features("train")
    assert not strict.feat_dir("train").exists()

    lenient = Experiment("c", tmp_path, tmp_path / "exp", tmp_path / "results",
                         FeatureConfig(cmvn="speaker"), progress=False, skip_bad=True)
    caplog.set_level(logging.WARNING)
    lenient.make_features("train")
    skipped = (lenient.feat_dir("train") / "skipped").read_text().splitlines()
    assert [line.split()[0] for line in skipped] == ["a2", "b1"]
    assert "expected mono" in skipped[0] and "are zero" in skipped[1]
    assert "skipping utterance a2" in caplog.text and "skipped 2 of 3 utterances" in caplog.text
    assert [u.utt for u in lenient.utterances("train")] == ["a1"]
    with pytest.raises(DataError, match=r"feats.index: lacks features of 2 utterance\(s\)"):
        strict.load_features("train")
    assert DataDir.load(data).utts == ["a1", "a2", "b1"]           # the data dir is untouched


def test_recipes_take_skip_bad_utts():
    from asr.recipe import recipe_arguments

    args = recipe_arguments("x", Path("settings.toml")).parse_args(["--skip-bad-utts"])
    assert args.skip_bad_utts is True


# --------------------------------------------------------------------------- nothing unpickled

def test_no_code_loads_pickles():
    """No module imports pickle, allows pickled numpy arrays, or calls torch.load unsafely."""
    for path in sorted((REPO / "asr").rglob("*.py")) + sorted((REPO / "recipes").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib",
                                                   "shelve", "marshal") for n in names), path
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert keywords.get("allow_pickle", "False") == "False", f"{path}:{node.lineno}"
                if name.endswith("torch.load"):
                    assert keywords.get("weights_only") == "True", f"{path}:{node.lineno}"
                if name.endswith("np.load") or name.endswith("numpy.load"):
                    assert keywords.get("allow_pickle") == "False", f"{path}:{node.lineno}"
