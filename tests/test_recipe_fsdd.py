"""A reduced FSDD recipe run (fewer strings, folds and iterations) that still asserts WER bounds."""
import re

import numpy as np
import pytest

from asr.results import load_results, load_runs
from conftest import load_recipe

REDUCED = ["--set", "corpus.connected_train=60", "--set", "corpus.connected_test=20",
           "--set", "corpus.connected_dev=20",
           "--set", 'corpus.heldout_folds=["theo"]', "--set", 'corpus.connected_heldout_speaker="theo"',
           "--set", 'corpus.noise_kinds=["white"]', "--set", "corpus.snrs=[10]",
           "--set", "mono.num_iters=8", "--set", "mono.mixup_iters=6",
           "--set", "mono.max_gaussians=300",
           "--set", "tri.num_iters=6", "--set", "tri.realign_iters=[3]", "--set", "tri.mixup_iters=4",
           "--set", "tri.max_gaussians=400", "--set", "tri.num_leaves=100",
           *[arg for name in ("tri2b", "tri3b") for arg in (
               "--set", f"{name}.num_iters=6", "--set", f"{name}.realign_iters=[3]",
               "--set", f"{name}.mixup_iters=4", "--set", f"{name}.max_gaussians=400",
               "--set", f"{name}.num_leaves=100")],
           "--set", "tri2b.mllt_iters=[2,4]", "--set", "tri3b.fmllr_iters=[2,4]",
           "--set", "hmmlearn.n_iter=3",
           "--set", 'systems=["mono","tri","tri2b","tri3b","hmmlearn","dnn","dnn_fmllr"]',
           "--set", "dnn.epochs=2", "--set", "dnn.hidden_dim=64", "--set", "dnn.num_layers=2",
           "--set", "augment.speed_factors=[1.1]", "--set", "augment.noise_snrs=[10]",
           "--set", "augment.gmm_noisy=true", "--set", "dnn_extra_seeds=[1]",
           "--set", "dnn_dropouts=[0.1,0.2]", "--set", "tri3b_budgets=[]"]


@pytest.fixture(scope="module")
def fsdd_run(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("fsdd")
    args = ["--corpus", str(shared_data / "fsdd" / "recordings"), "--exp", str(root / "exp"),
            "--data", str(root / "data"), "--results", str(root / "results"), "--no-progress"]
    assert load_recipe("fsdd").main(args + REDUCED) == 0
    return root


def test_reduced_fsdd_recipe_bounds(fsdd_run):
    results = load_results(fsdd_run / "results/fsdd/results.json")
    assert set(results) == {"mono", "tri", "tri2b", "tri3b", "hmmlearn", "dnn", "dnn_seed1",
                            "dnn_fmllr", "dnn_fmllr_seed1"}
    for seeded in ("dnn_seed1", "dnn_fmllr_seed1"):
        assert set(results[seeded]) == {"dev_heldout_theo", "heldout_theo",
                                        "dev_connected_heldout_theo", "connected_heldout_theo"}
    columns = {"dev", "isolated", "dev_connected", "connected", "white_10dB",
               "dev_heldout_theo", "heldout_theo", "dev_connected_heldout_theo",
               "connected_heldout_theo"}
    for system in ("mono", "tri", "tri2b", "tri3b", "dnn", "dnn_fmllr"):   # dev and test
        assert set(results[system]) == columns, system
        assert results[system]["dev"]["words"] == 250          # 5 per digit of 5 speakers
        assert results[system]["dev_heldout_theo"]["words"] == 200
        assert results[system]["dev"]["wer"] <= 10.0, system
    assert results["tri3b"]["isolated"]["wer"] <= 4.0
    assert results["tri3b"]["connected"]["wer"] <= 20.0
    assert set(results["hmmlearn"]) == {"isolated", "heldout_theo"}
    assert results["mono"]["isolated"]["words"] == 250
    assert results["mono"]["isolated"]["wer"] <= 4.0
    assert results["tri"]["isolated"]["wer"] <= 4.0
    assert results["tri"]["connected"]["wer"] <= 20.0  # the monophone sees isolated digits only
    md = (fsdd_run / "results/fsdd/RESULTS.md").read_text()
    assert "| mono |" in md and "| tri3b |" in md and "%WER" in md
    assert "## Chosen on dev" in md
    assert "## Hybrid `dnn` over 2 seeds" in md and "| heldout mean |" in md
    assert "## Hybrid `dnn_fmllr` over 2 seeds" in md and "## Hybrid input, chosen on dev" in md
    # only what was tuned on dev gets a column: dropout, not tri3b's budget (none listed)
    assert "## Dropout, chosen on dev" in md and "tri3b Gaussians" not in md
    runs = load_runs(fsdd_run / "results/fsdd/results.json")
    assert runs["mono"]["settings"]["mono"]["num_iters"] == 8          # overrides recorded
    assert "--set mono.num_iters=8" in runs["mono"]["command"]
    assert runs["mono"]["skipped_utts"] == 0 and runs["mono"]["commit"]
    assert (fsdd_run / "results/fsdd/wer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(results["dnn"]) == set(results["mono"])
    assert results["dnn"]["isolated"]["wer"] <= 10.0
    assert results["dnn_fmllr"]["isolated"]["wer"] <= 10.0
    assert (fsdd_run / "results/fsdd/dnn_learning_curve.png").exists()


def test_dev_is_kept_out_of_training(fsdd_run, shared_data):
    """No dev recording trains any system of its fold, alone or inside a connected string;
    test is scored at the weights chosen on the fold's dev set."""
    import json

    from asr.data import DataDir
    from asr.data.connected import plan_fsdd_connected
    data, exp = fsdd_run / "data/fsdd", fsdd_run / "exp/fsdd"
    for fold, iso, con, heldout in (
            ("main", "isolated", "connected", None),
            ("heldout_theo", "isolated_heldout_theo", "connected_heldout_theo", "theo")):
        dev = DataDir.load(data / iso / "dev")
        train = DataDir.load(data / fold / "train")
        assert not set(dev.utts) & set(train.utts)
        assert len(dev) == 10 * 5 * len(set(dev.utt2spk.values()))
        first = 0 if heldout else 5                           # the first training indices
        assert {int(u.rsplit("_", 1)[1]) for u in dev.utts} == set(range(first, first + 5))
        plan = {x.utt: x for x in plan_fsdd_connected(shared_data / "fsdd", 240, 20, seed=0,
                                                      heldout_speaker=heldout)["train"]}
        strings = DataDir.load(data / con / "train")
        assert len(strings) == 60
        for utt in strings.utts:                              # the recordings inside
            assert strings.text[utt] == plan[utt].words
            assert not {r.utt for r in plan[utt].recordings} & set(dev.utts)
        assert len(DataDir.load(data / con / "dev")) == 20
    choices = json.loads((exp / "decode_choices.json").read_text())
    for system in ("tri", "tri3b", "dnn"):
        assert choices[system]["isolated"] == choices[system]["dev"]
        assert choices[system]["white_10dB"] == choices[system]["dev_connected"]
        assert choices[system]["heldout_theo"] == choices[system]["dev_heldout_theo"]
    results = load_results(fsdd_run / "results/fsdd/results.json")
    chosen = choices["tri"]["dev"]
    line = (exp / "main/tri/decode_dev" / f"wer_{chosen[0]:g}_{chosen[1]:g}").read_text()
    assert line.split()[1] == f"{results['tri']['dev']['wer']:.2f}"


def test_tri3b_adapts_to_each_test_speaker(fsdd_run):
    from asr.transforms.fmllr import load_transforms
    exp = fsdd_run / "exp/fsdd"
    heldout = load_transforms(exp / "heldout_theo/tri3b/decode_heldout_theo/trans.npz")
    assert set(heldout) == {"theo"}                 # its 500 recordings adapt one transform
    W, identity = heldout["theo"], np.hstack([np.eye(40), np.zeros((40, 1))])
    assert W.shape == (40, 41) and not np.allclose(W, identity)
    # the hybrid on fMLLR features adapts with tri3b's GMMs from tri3b's first estimate (see
    # tests/test_tri3b.py), then refines it with its own network's best paths: a transform of
    # its own, nearer tri3b's than tri3b's is to the identity
    hybrid = load_transforms(exp / "heldout_theo/dnn_fmllr/decode_heldout_theo/trans.npz")
    assert set(hybrid) == {"theo"} and not np.allclose(hybrid["theo"], W)
    assert np.linalg.norm(hybrid["theo"] - W) < np.linalg.norm(W - identity)
    # its training features: every training set aligned once, each with its own transforms
    for name in ("heldout_theo_train", "heldout_theo_train_sp"):
        assert (exp / "heldout_theo/tri3b" / f"ali_{name}" / "trans.npz").is_file()
    assert (exp / "main/tri3b/ali_main_train_noisy/trans.npz").is_file()


def test_validation_never_holds_a_copy_of_a_training_recording(fsdd_run):
    import json

    from asr.data import DataDir, copy_source
    exp, data = fsdd_run / "exp/fsdd", fsdd_run / "data/fsdd"
    for fold, copies, hybrid in (("main", "train_noisy", "dnn"),
                                 ("heldout_theo", "train_sp", "dnn"),
                                 ("heldout_theo", "train_sp", "dnn_fmllr")):
        choice = json.loads((exp / fold / f"{hybrid}_dropout.json").read_text())   # on dev
        assert set(choice["dev_errors"]) == {"0.1", "0.2"}
        assert choice["dev_errors"][f"{choice['dropout']:g}"] == min(choice["dev_errors"].values())
        train_dir = exp / fold / f"{hybrid}_dropout{choice['dropout']:g}_train"
        train, valid = (set((train_dir / name).read_text().split())
                        for name in ("train_utts", "valid_utts"))
        source = {u: u for u in DataDir.load(data / fold / "train").utts}
        source.update({u: copy_source(u) for u in DataDir.load(data / fold / copies).utts})
        assert valid and train and (train | valid) <= set(source)
        assert any(u != source[u] for u in valid)                  # copies do validate
        assert not {source[u] for u in valid} & {source[u] for u in train}


def test_a_rerun_rewrites_the_rows_of_its_systems_whole(fsdd_run, shared_data):
    """Decode again with one system and no held-out fold: that row loses its old columns."""
    path = fsdd_run / "results/fsdd/results.json"
    before = load_results(path)
    args = ["--corpus", str(shared_data / "fsdd" / "recordings"), "--exp", str(fsdd_run / "exp"),
            "--data", str(fsdd_run / "data"), "--results", str(fsdd_run / "results"),
            "--no-progress", "--stage", "6", "--stop-stage", "7", "--force"]
    rerun = REDUCED + ["--set", 'systems=["mono"]', "--set", "corpus.heldout_folds=[]"]
    assert load_recipe("fsdd").main(args + rerun) == 0
    after, runs = load_results(path), load_runs(path)
    assert set(after["mono"]) == {"dev", "isolated", "dev_connected", "connected",
                                  "white_10dB"}                            # no stale columns
    assert after["mono"]["isolated"] == before["mono"]["isolated"]
    assert after["tri"] == before["tri"]                                   # untouched rows stay
    assert "corpus.heldout_folds=[]" in runs["mono"]["command"]
    assert "corpus.heldout_folds=[]" not in runs["tri"]["command"]
    md = (fsdd_run / "results/fsdd/RESULTS.md").read_text()
    assert md.count("(run `") == 2                                          # two runs named


def test_hybrid_trains_on_augmented_copies(fsdd_run):
    from asr.data import DataDir, copy_source
    data = fsdd_run / "data/fsdd"
    clean = DataDir.load(data / "heldout_theo/train")
    speed = DataDir.load(data / "heldout_theo/train_sp")
    isolated = {u for u in clean.utts if not clean.utt2spk[u].endswith("-connected")}
    assert {copy_source(u) for u in speed.utts} == isolated
    assert all(u.startswith("sp1.1-") and speed.utt2spk[u].startswith("sp1.1-")
               for u in speed.utts)
    assert not (data / "main/train_sp").exists()           # speed copies: held-out folds
    assert (fsdd_run / "exp/fsdd/feats/main/train_noisy").is_dir()   # gmm_noisy: MFCC too
    assert not (data / "heldout_theo/train_noisy").exists()  # noisy copies: the main fold
    noisy = DataDir.load(data / "main/train_noisy")
    main = DataDir.load(data / "main/train")
    assert sorted(copy_source(u) for u in noisy.utts) == main.utts
    for u in noisy.utts:
        prefix, _, source = u.partition("-")
        assert prefix == "white10"
        assert noisy.utt2spk[u] == f"white10-{main.utt2spk[source]}"   # "-connected" kept
    log = (fsdd_run / "exp/fsdd/run.log").read_text()
    sizes = {int(a) + int(b) for a, b in
             re.findall(r"training on (\d+) utterances .*validating on (\d+)", log)}
    # the copies are trained on (less any whose alignment failed)
    assert any(len(main) < n <= len(main) + len(noisy) for n in sizes)
    assert any(len(clean) < n <= len(clean) + len(speed) for n in sizes)
