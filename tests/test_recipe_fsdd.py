"""A reduced FSDD recipe run (fewer strings, folds and iterations) that still asserts WER bounds."""
import json

import pytest

from conftest import load_recipe

REDUCED = ["--set", "corpus.connected_train=60", "--set", "corpus.connected_test=20",
           "--set", 'corpus.heldout_folds=["theo"]', "--set", 'corpus.connected_heldout_speaker="theo"',
           "--set", 'corpus.noise_kinds=["white"]', "--set", "corpus.snrs=[10]",
           "--set", "mono.num_iters=8", "--set", "mono.mixup_iters=6",
           "--set", "mono.max_gaussians=300",
           "--set", "tri.num_iters=6", "--set", "tri.realign_iters=[3]", "--set", "tri.mixup_iters=4",
           "--set", "tri.max_gaussians=400", "--set", "tri.num_leaves=100",
           "--set", "hmmlearn.n_iter=3", "--set", 'systems=["mono","tri","hmmlearn"]']


@pytest.fixture(scope="module")
def fsdd_run(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("fsdd")
    args = ["--corpus", str(shared_data / "fsdd" / "recordings"), "--exp", str(root / "exp"),
            "--data", str(root / "data"), "--results", str(root / "results"), "--no-progress"]
    assert load_recipe("fsdd").main(args + REDUCED) == 0
    return root


def test_reduced_fsdd_recipe_bounds(fsdd_run):
    results = json.loads((fsdd_run / "results/fsdd/results.json").read_text())
    assert set(results) == {"mono", "tri", "hmmlearn"}
    assert set(results["mono"]) == {"isolated", "connected", "white_10dB", "heldout_theo",
                                    "connected_heldout_theo"}
    assert set(results["hmmlearn"]) == {"isolated", "heldout_theo"}
    assert results["mono"]["isolated"]["words"] == 250
    assert results["mono"]["isolated"]["wer"] <= 4.0
    assert results["tri"]["isolated"]["wer"] <= 4.0
    assert results["tri"]["connected"]["wer"] <= 20.0  # the monophone sees isolated digits only
    md = (fsdd_run / "results/fsdd/RESULTS.md").read_text()
    assert "| mono |" in md and "%WER" in md
    assert (fsdd_run / "results/fsdd/wer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
