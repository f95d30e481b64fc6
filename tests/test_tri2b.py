"""tri2b (LDA+MLLT) on connected FSDD digits: trains, decodes as well as its tri1, and its
model directory (with ``transform.npz``) reloads and decodes identically through the library,
an ``Experiment`` and the ``asr`` command."""
import dataclasses
import json

import numpy as np
import pytest

from asr.cli import main as cli_main
from asr.errors import ModelError
from asr.system import AsrSystem
from conftest import train_fsdd_chain

TRAIN_STRINGS, TEST_STRINGS = 150, 50
MLLT_ITERS = [2, 4, 6]


@pytest.fixture(scope="module")
def systems(tmp_path_factory, shared_data):
    """mono -> tri -> tri2b on 150 connected-digit strings (about a minute on one core)."""
    chain = train_fsdd_chain(shared_data, tmp_path_factory.mktemp("tri2b"), TRAIN_STRINGS,
                             TEST_STRINGS, mllt_iters=MLLT_ITERS)
    chain["tri"].save(chain["root"] / "tri")
    chain["tri2b"].save(chain["root"] / "tri2b")
    return {**chain, "result": chain["lda_mllt"]}


def _wer(system, s):
    from asr.evaluate import decode_features
    from asr.scoring import compute_wer

    hyps = decode_features(system, system.model_input(s["test_raw"], s["test"].utt2spk),
                           progress=False)
    return compute_wer(s["test"].text, hyps), hyps


def test_tri2b_front_end_is_spliced_mfcc_through_lda_mllt(systems):
    tri2b, tri = systems["tri2b"], systems["tri"]
    assert (tri2b.features.deltas, tri2b.features.splice_left, tri2b.features.splice_right) \
        == (0, 3, 3)
    assert (tri2b.transform.dim, tri2b.transform.input_dim) == (40, 13 * 7)
    assert tri2b.model.gmm.dim == 40 and tri.transform is None
    result = systems["result"]
    assert result.transform is tri2b.transform
    # transform = A L with A (40, 40) the product of the MLLT matrices: rows in L's row space.
    lda = result.lda.linear
    mllt = result.transform.linear @ np.linalg.pinv(lda)
    np.testing.assert_allclose(mllt @ lda, result.transform.linear, atol=1e-8)
    assert abs(np.linalg.det(mllt)) > 1e-6 and not np.allclose(mllt, np.eye(40))


def test_mllt_auxiliary_never_decreases(systems):
    aux = systems["result"].mllt_aux
    assert sorted(aux) == MLLT_ITERS
    for it, values in aux.items():
        assert len(values) == 11 and np.all(np.isfinite(values))
        assert np.all(np.diff(values) >= -1e-9 * abs(values[0])), (it, values)
        assert values[-1] > values[0], (it, values)        # MLLT moved away from A = I


def test_tri2b_decodes_at_least_as_well_as_tri(systems):
    tri, _ = _wer(systems["tri"], systems)
    tri2b, _ = _wer(systems["tri2b"], systems)
    # 50 strings, ~200 words: one or two errors either way are noise.
    assert tri2b.wer <= max(tri.wer + 1.5, 5.0), (tri.line(), tri2b.line())


def test_model_directory_reloads_and_decodes_identically(systems, tmp_path):
    tri2b, root, test = systems["tri2b"], systems["root"], systems["test"]
    loaded = AsrSystem.load(root / "tri2b")
    np.testing.assert_array_equal(loaded.transform.linear, tri2b.transform.linear)
    feats = loaded.model_input(systems["test_raw"], test.utt2spk)
    again = tri2b.model_input(systems["test_raw"], test.utt2spk)
    utt = sorted(feats)[0]
    assert feats[utt].shape[1] == 40
    np.testing.assert_array_equal(loaded.model.log_likelihoods(feats[utt]),
                                  tri2b.model.log_likelihoods(again[utt]))
    _, expected = _wer(tri2b, systems)
    _, hyps = _wer(loaded, systems)
    assert hyps == expected
    out = tmp_path / "cli"
    assert cli_main(["decode", "--model", str(root / "tri2b"), "--data", str(root / "data/test"),
                     "--out", str(out), "--no-progress", "--graph-cache",
                     str(tmp_path / "graphs")]) == 0
    cli_hyps = dict(line.split(maxsplit=1) if " " in line else (line, "")
                    for line in (out / "hyp.txt").read_text().splitlines())
    assert {u: cli_hyps[u].split() for u in cli_hyps} == expected


def test_experiment_features_of_a_system_pass_through_its_transform(systems, tmp_path):
    from asr.experiment import Experiment

    root = systems["root"]
    (tmp_path / "data").mkdir()
    (tmp_path / "data/c").symlink_to(root / "data")
    ex = Experiment("c", tmp_path / "data", tmp_path / "exp", tmp_path / "results",
                    systems["tri"].features, progress=False)
    ex.make_features("test")
    tri2b = systems["tri2b"]
    feats = ex.load_features("test", tri2b)
    expected = tri2b.model_input(ex.raw_features("test"), systems["test"].utt2spk)
    assert all(np.array_equal(feats[u], expected[u]) and feats[u].shape[1] == 40
               for u in expected)
    assert ex.load_features("test")[sorted(feats)[0]].shape[1] == 39     # the tri pipeline


def test_altered_or_unlisted_transform_is_refused(systems, tmp_path):
    import shutil

    src = systems["root"] / "tri2b"
    altered = tmp_path / "altered"
    shutil.copytree(src, altered)
    arrays = dict(np.load(altered / "transform.npz"))
    arrays["linear"][0, 0] += 1e-3
    np.savez(altered / "transform.npz", **arrays)
    with pytest.raises(ModelError, match="checksum") as err:
        AsrSystem.load(altered)
    assert "transform.npz" in str(err.value.path)

    unlisted = tmp_path / "unlisted"
    shutil.copytree(src, unlisted)
    manifest = json.loads((unlisted / "manifest.json").read_text())
    del manifest["files"]["transform.npz"]
    (unlisted / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="not listed"):
        AsrSystem.load(unlisted)


def test_a_directory_without_a_transform_still_loads(systems):
    tri = AsrSystem.load(systems["root"] / "tri")
    assert tri.transform is None
    assert not (systems["root"] / "tri" / "transform.npz").exists()


def test_a_transform_must_fit_the_pipeline(systems):
    tri2b = systems["tri2b"]
    with pytest.raises(ValueError, match="cannot follow"):
        dataclasses.replace(tri2b, features=systems["tri"].features)


def test_a_tree_on_questions_clustered_from_the_data_decodes_as_well(systems, caplog):
    """questions = "data" adds Kaldi's cluster-phones sets to the phonetic classes."""
    import logging

    from asr.gmm.systems import train_triphone

    cfg = dataclasses.replace(systems["tri_cfg"], questions="data")
    with caplog.at_level(logging.INFO, logger="asr.gmm.systems"):
        tri, _ = train_triphone(systems["utts"], systems["mono"], cfg, systems["decoding"],
                                progress=False)
    counts = [int(r.getMessage().split()[2]) for r in caplog.records
              if r.getMessage().startswith("tree questions:")]
    classes = len(systems["mono"].lexicon.questions())
    assert counts and counts[0] > classes          # the clustered sets were added
    by_data, _ = _wer(tri, systems)
    by_classes, _ = _wer(systems["tri"], systems)
    assert by_data.errors <= by_classes.errors + 3, (by_data.line(), by_classes.line())
