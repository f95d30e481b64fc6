"""End to end: the yesno recipe with a fixed seed recognises its test set (almost) perfectly."""
import json
from pathlib import Path

import pytest

from asr.cli import main as asr_main
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
    results = json.loads((root / "results/yesno/results.json").read_text())
    test = results["mono"]["test"]
    assert (test["errors"], test["words"]) == (0, 232)
    assert test["line"].startswith("%WER 0.00 [ 0 / 232, 0 ins, 0 del, 0 sub ]")
    md = (root / "results/yesno/RESULTS.md").read_text()
    assert "%WER 0.00 [ 0 / 232" in md


def test_yesno_hybrid_row(yesno_run):
    root, _ = yesno_run
    dnn = json.loads((root / "results/yesno/results.json").read_text())["dnn"]["test"]
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
