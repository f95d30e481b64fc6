"""A reduced sotu run end to end: 3 speakers per subset, a 200-word bigram, small models.

Checks the large-vocabulary chain's plumbing on real (synthetic-voice) audio: lexicon and
OOV reports, LMs with perplexity, HCLG per tree, lattices, the dev-chosen weights applied
to test, rescoring with a higher-order LM, and the generated RESULTS.md.
"""
import dataclasses
import json
import logging
import shutil

import numpy as np
import pytest

from asr.data import DataDir
from asr.data.datadir import copy_source
from asr.lvcsr import LvcsrSettings
from asr.results import load_results
from conftest import load_recipe

REDUCED = ["--set", 'systems=["mono","tri","dnn"]', "--set", "vocab_size=200", "--set", "lm.order=2", "--set", "lm.rescore_order=3",
           "--set", "mono.num_iters=8", "--set", "mono.realign_iters=[1,2,3,5]",
           "--set", "mono.mixup_iters=6", "--set", "mono.max_gaussians=300",
           "--set", "tri.num_leaves=150", "--set", "tri.max_gaussians=600",
           "--set", "tri.num_iters=6", "--set", "tri.mixup_iters=4", "--set", "tri.realign_iters=[3]",
           "--set", "dnn.epochs=2", "--set", "dnn.hidden_dim=128", "--set", "dnn.num_layers=2",
           "--set", "decode.beam=10.0", "--set", "decode.max_active=1000",
           "--set", "decode.lattice_beam=4.0",
           "--set", "sweep.lm_weights=[8.0,12.0,16.0]", "--set", "sweep.word_penalties=[0.0,1.0]",
           "--set", "dnn_sweep.lm_weights=[3.0,4.0,6.0]", "--set", "dnn_sweep.word_penalties=[0.0,1.0]"]


@pytest.fixture(scope="module")
def sotu_run(tmp_path_factory, sotu_slice):
    root = tmp_path_factory.mktemp("sotu_run")
    args = ["--corpus", str(sotu_slice), "--data", str(root / "data"), "--exp", str(root / "exp"),
            "--results", str(root / "results"), "--no-progress", *REDUCED]
    assert load_recipe("sotu").main(args) == 0
    return root


def test_every_system_has_dev_and_test_rows_with_rescoring(sotu_run):
    results = load_results(sotu_run / "results/sotu/results.json")
    assert set(results) == {"mono", "tri", "dnn", "mono_3gram", "tri_3gram", "dnn_3gram"}
    for row in results.values():
        assert set(row) == {"dev", "test"}
        assert all(r["words"] > 1000 for r in row.values())    # 75 sentences per set
    # 120 training sentences and a 200-word vocabulary (a third of dev's words are OOV):
    # far from good, but every system finds words, and the best a fair share of them
    wers = {system: results[system]["dev"]["wer"] for system in ("mono", "tri", "dnn")}
    assert max(wers.values()) < 95.0 and min(wers.values()) < 85.0, wers


def test_test_is_scored_at_the_weights_dev_chose(sotu_run):
    exp = sotu_run / "exp/sotu"
    for system in ("mono", "tri", "dnn"):
        for suffix in ("", "_3gram"):
            dev = json.loads((exp / system / f"decode_dev{suffix}/choice.json").read_text())
            test = json.loads((exp / system / f"decode_test{suffix}/choice.json").read_text())
            assert dev == test
            sweep = sorted((exp / system / f"decode_dev{suffix}").glob("wer_*_*"))
            assert len(sweep) == 6
            best = min(int(p.read_text().split()[3]) for p in sweep)  # errors at each weight
            chosen = (exp / system / f"decode_dev{suffix}" /
                      f"wer_{dev['lm_weight']:g}_{dev['word_penalty']:g}").read_text()
            assert int(chosen.split()[3]) == best


def test_lang_lm_and_graph_reports(sotu_run):
    exp = sotu_run / "exp/sotu"
    lm = json.loads((exp / "lm/lm.json").read_text())
    assert set(lm["models"]) == {"2", "3"}
    for entry in lm["models"].values():
        for name in ("dev", "test"):
            assert 1.0 < entry["sets"][name]["perplexity"] < 2000.0
            assert 0.0 < entry["sets"][name]["oov_rate"] < 50.0    # a 200-word vocabulary
    assert (exp / "lang/oov_dev.txt").read_text().strip()
    for system in ("mono", "tri"):
        graph = json.loads((exp / system / "graph.json").read_text())
        assert graph["states"] > 1000 and graph["arcs"] > graph["states"]
    text = (sotu_run / "results/sotu/RESULTS.md").read_text()
    assert "synthetic" in text and "%WER" in text and "Decoding graphs" in text


def test_two_dask_jobs_give_the_same_models_and_results(sotu_run, sotu_slice, tmp_path):
    """The reduced run again with --nj 2 on a Dask LocalCluster: every model manifest
    (the sha256 of each file) and every WER entry of results.json, its own --exp folder
    masked, are the same bytes."""
    pytest.importorskip("distributed")
    args = ["--corpus", str(sotu_slice), "--data", str(tmp_path / "data"),
            "--exp", str(tmp_path / "exp"), "--results", str(tmp_path / "results"),
            "--no-progress", "--nj", "2", "--cluster", "dask", *REDUCED]
    assert load_recipe("sotu").main(args) == 0
    for system in ("mono", "tri", "dnn"):
        one = (sotu_run / "exp/sotu" / system / "manifest.json").read_bytes()
        two = (tmp_path / "exp/sotu" / system / "manifest.json").read_bytes()
        assert one == two, system

    def entries(root):      # the %WER lines name the run's own --exp folder
        text = (root / "results/sotu/results.json").read_text()
        return json.loads(text.replace(str(root / "exp"), "EXP"))["systems"]

    one, two = entries(sotu_run), entries(tmp_path)
    assert sorted(one) == sorted(two)
    for name in one:
        assert one[name]["test_sets"] == two[name]["test_sets"], name


CHAIN = [*REDUCED, "--set", 'systems=["mono","tri","tri2b","tri3b","dnn","dnn_fmllr"]',
         *[arg for name in ("tri2b", "tri3b") for arg in (
             "--set", f"{name}.num_leaves=150", "--set", f"{name}.max_gaussians=600",
             "--set", f"{name}.num_iters=6", "--set", f"{name}.mixup_iters=4",
             "--set", f"{name}.realign_iters=[3]")],
         "--set", "tri2b.mllt_iters=[2,4]", "--set", "tri3b.fmllr_iters=[2,4]",
         "--set", 'dnn_fmllr.model="tdnn"', "--set", "dnn_fmllr.num_layers=3"]


def test_the_fmllr_hybrid_network_is_dnn_with_its_own_changes():
    s = LvcsrSettings(dnn_fmllr={"model": "tdnn", "num_layers": 4})
    assert s.network("dnn") == s.dnn
    assert s.network("dnn_fmllr") == dataclasses.replace(s.dnn, model="tdnn", num_layers=4)
    assert LvcsrSettings().network("dnn_fmllr") == LvcsrSettings().dnn
    with pytest.raises(ValueError, match=r"unknown setting \[dnn_fmllr\] 'layers'"):
        LvcsrSettings(dnn_fmllr={"layers": 4})
    with pytest.raises(ValueError, match=r"\[dnn_fmllr\] 'num_layers' must be of type int"):
        LvcsrSettings(dnn_fmllr={"num_layers": "4"})


def test_the_whole_chain_with_both_hybrids_and_a_decode_that_resumes(
        sotu_slice, tmp_path, caplog):
    """mono -> tri -> tri2b -> tri3b, the hybrid on fbank and the hybrid on tri3b's fMLLR
    features: every system has dev and test rows; the fMLLR hybrid keeps tri3b's GMMs and
    adapts to each test speaker; its network is [dnn]'s with ``dnn_fmllr``'s changes (a
    TDNN here, the fbank hybrid an MLP). A decode stage run again (say after an interruption)
    decodes no system whose model and settings are unchanged, and leaves the results as
    they were; decoding again as two jobs per set (``--nj 2``) gives the same results and
    the same speaker transforms; aligning the training set for the hybrids as two jobs
    gives the same targets and transforms, and so the same networks."""
    args = ["--corpus", str(sotu_slice), "--data", str(tmp_path / "data"),
            "--exp", str(tmp_path / "exp"), "--results", str(tmp_path / "results"),
            "--no-progress", *CHAIN]
    assert load_recipe("sotu").main(args) == 0
    exp, results_json = tmp_path / "exp/sotu", tmp_path / "results/sotu/results.json"
    results = load_results(results_json)
    systems = ["mono", "tri", "tri2b", "tri3b", "dnn", "dnn_fmllr"]
    assert set(results) == set(systems) | {f"{s}_3gram" for s in systems}
    for system in systems:
        assert results[system]["dev"]["wer"] < 95.0, system
    manifest = json.loads((exp / "dnn_fmllr/manifest.json").read_text())
    assert manifest["model_type"] != "gmm"
    assert any(f.startswith("fmllr_acoustic/") for f in manifest["files"])
    assert (exp / "dnn_fmllr/decode_test/trans.npz").is_file()
    specs = {h: json.loads((exp / h / "acoustic/model.json").read_text())["spec"]
             for h in ("dnn", "dnn_fmllr")}
    assert [specs["dnn"][k] for k in ("model", "num_layers", "hidden_dim")] == ["mlp", 2, 128]
    assert [specs["dnn_fmllr"][k] for k in ("model", "num_layers", "hidden_dim")] == [
        "tdnn", 3, 128]
    assert (exp / "tri3b/ali_train/targets.npz").is_file()   # aligned once for both hybrids
    # the hybrids also train on train's copies at speeds 0.9 and 1.1 (settings.toml), each
    # aligned by tri3b, and validate on whole recordings: a copy never validates its source
    assert (exp / "tri3b/ali_train_sp/targets.npz").is_file()
    for hybrid in ("dnn", "dnn_fmllr"):
        train = (exp / f"{hybrid}_train/train_utts").read_text().split()
        valid = (exp / f"{hybrid}_train/valid_utts").read_text().split()
        assert {u.split("-")[0] for u in train} >= {"sp0.9", "sp1.1"}, hybrid
        sources = {copy_source(u) if u.startswith("sp") else u for u in valid}
        assert not any(u.startswith("sp") and copy_source(u) in sources for u in train)
        originals = len(DataDir.load(tmp_path / "data/sotu/train"))   # copies that failed
        assert 2 * originals < len(train) + len(valid) <= 3 * originals   # to align are out
    text = (tmp_path / "results/sotu/RESULTS.md").read_text()
    assert "dnn: the hybrid (MLP, 2 layers of 128, 2 epochs, fbank input)" in text
    assert "dnn_fmllr: the hybrid (TDNN, 3 layers of 128, 2 epochs) on tri3b's fMLLR" in text
    assert "its copies at speed ×0.9, ×1.1" in text
    assert "## Hybrid input, chosen on dev" in text

    before = results_json.read_text()
    markers = {s: (exp / s / "decoded.json").read_text() for s in systems}
    (exp / ".done/07-decode").unlink()        # as if the decode stage had been interrupted
    with caplog.at_level(logging.INFO, logger="asr.lvcsr"):
        assert load_recipe("sotu").main(args + ["--stage", "7"]) == 0
    kept = [r.getMessage() for r in caplog.records if "decoded before" in r.getMessage()]
    assert len(kept) == len(systems), kept
    assert {s: (exp / s / "decoded.json").read_text() for s in systems} == markers
    after = json.loads(results_json.read_text())["systems"]
    assert {k: v["test_sets"] for k, v in after.items()} == {
        k: v["test_sets"] for k, v in json.loads(before)["systems"].items()}

    with np.load(exp / "tri3b/decode_test/trans.npz") as one_job:
        transforms = {k: one_job[k] for k in one_job.files}
    assert load_recipe("sotu").main(args + ["--stage", "7", "--force", "--nj", "2"]) == 0
    again = json.loads(results_json.read_text())["systems"]
    assert {k: v["test_sets"] for k, v in again.items()} == {
        k: v["test_sets"] for k, v in json.loads(before)["systems"].items()}
    with np.load(exp / "tri3b/decode_test/trans.npz") as two_jobs:
        assert sorted(two_jobs.files) == sorted(transforms)
        for k in two_jobs.files:
            np.testing.assert_array_equal(two_jobs[k], transforms[k])

    ali = exp / "tri3b/ali_train"
    one_job = {name: dict(np.load(ali / name)) for name in ("targets.npz", "trans.npz")}
    networks = {s: (exp / s / "manifest.json").read_bytes() for s in ("dnn", "dnn_fmllr")}
    shutil.rmtree(ali)
    assert load_recipe("sotu").main(args + ["--stage", "5", "--stop-stage", "5", "--force",
                                            "--nj", "2"]) == 0
    for name, arrays in one_job.items():
        with np.load(ali / name) as two_jobs:
            assert sorted(two_jobs.files) == sorted(arrays), name
            for k in two_jobs.files:
                np.testing.assert_array_equal(two_jobs[k], arrays[k])
    assert {s: (exp / s / "manifest.json").read_bytes() for s in networks} == networks
