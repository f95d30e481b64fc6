"""End to end: the yesno recipe with a fixed seed recognises its test set (almost) perfectly."""
import json
from pathlib import Path

import pytest

from asr.cli import main as asr_main
from asr.results import load_results
from conftest import load_recipe


def _recipe():
    return load_recipe("yesno")


@pytest.fixture(scope="module")
def yesno_run(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("yesno")
    args = ["--corpus", str(shared_data / "yesno"), "--exp", str(root / "exp"),
            "--data", str(root / "data"), "--results", str(root / "results"), "--no-progress"]
    assert _recipe().main(args) == 0
    return root, args


def test_yesno_recipe_gets_zero_wer(yesno_run):
    root, _ = yesno_run
    test = load_results(root / "results/yesno/results.json")["mono"]["test"]
    assert (test["errors"], test["words"]) == (0, 232)
    assert test["line"].startswith("%WER 0.00 [ 0 / 232, 0 ins, 0 del, 0 sub ]")
    md = (root / "results/yesno/RESULTS.md").read_text()
    assert "%WER 0.00 [ 0 / 232" in md


def test_yesno_hybrid_row(yesno_run):
    root, _ = yesno_run
    dnn = load_results(root / "results/yesno/results.json")["dnn"]["test"]
    assert dnn["words"] == 232 and dnn["wer"] <= 2.0
    assert "| dnn |" in (root / "results/yesno/RESULTS.md").read_text()
    history = json.loads((root / "exp/yesno/dnn_train/history.json").read_text())
    assert history[-1]["valid_acc"] > 0.8


def test_rerun_skips_finished_stages(yesno_run, capsys):
    root, args = yesno_run
    model = root / "exp/yesno/mono/acoustic/gmm.npz"
    before = model.stat().st_mtime_ns
    assert _recipe().main(args) == 0
    assert model.stat().st_mtime_ns == before


def test_cli_decode_score_transcribe(yesno_run, capsys, shared_data):
    root, _ = yesno_run
    model, data, out = root / "exp/yesno/mono", root / "data/yesno/test", root / "cli_decode"
    assert asr_main(["decode", "--model", str(model), "--data", str(data), "--out", str(out),
                     "--no-progress"]) == 0
    assert "%WER 0.00 [ 0 / 232" in capsys.readouterr().out
    assert len((out / "hyp.txt").read_text().splitlines()) == 29
    assert asr_main(["score", str(data / "text"), str(out / "hyp.txt")]) == 0
    assert capsys.readouterr().out.startswith("%WER 0.00 [ 0 / 232")
    wav = shared_data / "yesno/waves_yesno/1_1_0_0_1_0_1_0.wav"
    assert asr_main(["transcribe", "--model", str(model), str(wav)]) == 0
    assert capsys.readouterr().out.strip().endswith("YES YES NO NO YES NO YES NO")


def test_altered_model_file_is_refused(yesno_run, tmp_path, capsys):
    import shutil
    root, _ = yesno_run
    copy = tmp_path / "mono"
    shutil.copytree(root / "exp/yesno/mono", copy)
    (copy / "tree.json").write_text((copy / "tree.json").read_text() + " ")
    assert asr_main(["info", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "tree.json" in err and "checksum" in err


def test_device_flag_sets_where_the_network_trains():
    from asr.recipe import recipe_arguments, resolve_settings
    recipe = _recipe()
    parser = recipe_arguments("yesno", Path(recipe.__file__).with_name("settings.toml"))
    assert resolve_settings(parser.parse_args([]), recipe.Settings).dnn.device == "auto"
    for device in ("cpu", "cuda"):
        settings = resolve_settings(parser.parse_args(["--device", device]), recipe.Settings)
        assert settings.dnn.device == device
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "tpu"])


# ----------------------------------------------------------------------------- errors end in one line

_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "yesno" / "run.py"


def _run_offline(tmp_path: Path, *extra: str):
    """The recipe as a script, no --corpus, its download pointed at a port nobody serves."""
    import json
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/waves_yesno.tar.gz"
    manifest = tmp_path / "corpora.json"
    manifest.write_text(json.dumps({"yesno": {"url": url, "sha256": "0" * 64,
                                              "archive": "waves_yesno.tar.gz", "corpus_dir": "."}}))
    script = ("import runpy, sys; from pathlib import Path; import asr.data.corpora as c; "
              "c.MANIFEST = Path(sys.argv[1]); sys.argv = sys.argv[2:]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')")
    env = {k: v for k, v in os.environ.items() if k != "ASR_QUIET"}
    return subprocess.run([sys.executable, "-c", script, str(manifest), str(_RECIPE), *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_recipe_without_corpus_offline_ends_with_one_line(tmp_path):
    run = _run_offline(tmp_path)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    *logged, last = run.stderr.strip().splitlines()      # the stage log, then the error
    assert all(" INFO asr.recipe: Stage " in line for line in logged), run.stderr
    assert "run.py: error: data/downloads/waves_yesno.tar.gz: cannot download http://127.0.0.1:" \
        in last
    assert last.endswith("; pass --corpus DIR with a local copy of the corpus")
    assert not (tmp_path / "data" / "yesno").exists()


def test_recipe_debug_shows_the_traceback(tmp_path):
    run = _run_offline(tmp_path, "--debug")
    assert run.returncode not in (0, 2)
    assert "Traceback" in run.stderr and "asr.errors.DataError" in run.stderr


def test_run_recipe_turns_an_asr_error_into_one_line(capsys):
    from asr.errors import SettingsError
    from asr.recipe import run_recipe

    def main(argv):
        raise SettingsError("settings.toml", "unknown key 'mono.num_iter'\nexpected num_iters",
                            line=3, hint="see the [mono] section")

    assert run_recipe(main, ["--stage", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.strip().endswith(": error: settings.toml:3: unknown key 'mono.num_iter' expected "
                                "num_iters; see the [mono] section")
    with pytest.raises(SettingsError):
        run_recipe(main, ["--debug"])
    assert run_recipe(lambda argv: 0, []) == 0


def test_asr_errors_cross_process_boundaries_whole():
    """Fold workers return their errors to the recipe by pickling them."""
    import pickle

    from asr.errors import DataError, ModelError

    for error in (DataError("a/text", "empty transcript", 12, hint="fix it"),
                  ModelError(None, "no model")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert (copy.path, copy.line, copy.message, copy.hint) == (
            error.path, error.line, error.message, error.hint)


def test_cli_debug_shows_the_traceback(tmp_path, capsys):
    from asr.errors import AsrError

    assert asr_main(["info", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith(f"asr: error: {tmp_path / 'missing'}")
    with pytest.raises(AsrError):
        asr_main(["--debug", "info", str(tmp_path / "missing")])
