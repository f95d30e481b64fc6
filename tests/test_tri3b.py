"""tri3b (SAT with fMLLR) on connected FSDD digits with a speaker held out of training:
it trains, each speaker's fMLLR auxiliary never falls, adapted likelihoods beat unadapted
ones, two-pass decoding runs the same through the library, a reloaded model directory and
the ``asr`` command, a speaker with too little data keeps the identity, and the held-out
speaker's WER is no worse than tri2b's."""
import dataclasses
import json
import logging

import numpy as np
import pytest

from asr.cli import main as cli_main
from asr.system import AsrSystem
from conftest import train_fsdd_chain

TRAIN_STRINGS, TEST_STRINGS = 150, 50
HELDOUT = "nicolas"
FMLLR_ITERS = [2, 4, 6]


@pytest.fixture(scope="module")
def systems(tmp_path_factory, shared_data):
    """mono -> tri -> tri2b -> tri3b on 150 strings of four speakers (about two minutes)."""
    from asr.gmm.sat import SatConfig, train_sat

    chain = train_fsdd_chain(shared_data, tmp_path_factory.mktemp("tri3b"), TRAIN_STRINGS,
                             TEST_STRINGS, heldout_speaker=HELDOUT)
    train, tri2b = chain["train"], chain["tri2b"]
    sat_cfg = SatConfig(**dataclasses.asdict(chain["tri_cfg"]), fmllr_iters=FMLLR_ITERS)
    tri3b, result = train_sat(chain["raw_utts"], tri2b, sat_cfg, train.utt2spk, progress=False)
    tri2b.save(chain["root"] / "tri2b")
    tri3b.save(chain["root"] / "tri3b")
    return {**chain, "tri3b": tri3b, "result": result}


def _decode(system, s, utt2spk=None, transforms_out=None):
    from asr.evaluate import decode_features
    from asr.scoring import compute_wer

    test = s["test"]
    hyps = decode_features(system, system.model_input(s["test_raw"], test.utt2spk),
                           progress=False, utt2spk=utt2spk or test.utt2spk,
                           transforms_out=transforms_out)
    return compute_wer(test.text, hyps), hyps


def test_tri3b_keeps_tri2b_front_end_and_is_speaker_adapted(systems):
    tri3b, tri2b = systems["tri3b"], systems["tri2b"]
    assert tri3b.features == tri2b.features
    np.testing.assert_array_equal(tri3b.transform.linear, tri2b.transform.linear)
    assert tri3b.adaptation is not None and tri3b.adaptation.silence_weight == 0.01
    assert tri3b.adaptation.si_model.num_pdfs == tri3b.model.num_pdfs
    assert tri2b.adaptation is None
    manifest = json.loads((systems["root"] / "tri3b/manifest.json").read_text())
    assert "adaptation.json" in manifest["files"]
    assert any(name.startswith("si_acoustic/") for name in manifest["files"])
    result = systems["result"]
    speakers = set(systems["train"].utt2spk.values())
    assert HELDOUT not in speakers and set(result.transforms) == speakers
    for W in result.transforms.values():
        assert W.shape == (40, 41) and not np.allclose(W, np.hstack([np.eye(40),
                                                                     np.zeros((40, 1))]))


def test_fmllr_auxiliary_never_decreases_for_any_speaker(systems):
    aux = systems["result"].fmllr_aux
    assert sorted(aux) == [0] + FMLLR_ITERS
    for it, by_speaker in aux.items():
        assert set(by_speaker) == set(systems["result"].transforms)
        for spk, values in by_speaker.items():
            assert len(values) > 1 and np.all(np.isfinite(values)), (it, spk)
            assert np.all(np.diff(values) >= -1e-9 * abs(values[0])), (it, spk, values)
            if it == 0:
                assert values[-1] > values[0], (spk, values)


def test_adapted_likelihoods_beat_unadapted_ones_per_speaker(systems):
    """Aligned log-likelihood per frame of the SAT model on each speaker's training data:
    adapted (Jacobian log|det A| included) above unadapted."""
    from asr.transforms.fmllr import apply_fmllr, fmllr_logdet

    result, tri3b, train = systems["result"], systems["tri3b"], systems["train"]
    si = tri3b.model_input(systems["raw"], train.utt2spk)
    gmm = tri3b.model.gmm
    for spk, utts in train.spk2utt.items():
        W = result.transforms[spk]
        adapted = unadapted = frames = 0.0
        for utt in utts:
            path = result.alignments.get(utt)
            if path is None:
                continue
            pdfs = result.graphs[utt].pdf[path]
            rows = np.arange(len(pdfs))
            adapted += gmm.log_likelihoods(apply_fmllr(W, si[utt]))[rows, pdfs].sum()
            unadapted += gmm.log_likelihoods(si[utt])[rows, pdfs].sum()
            frames += len(pdfs)
        adapted = adapted / frames + fmllr_logdet(W)
        assert adapted > unadapted / frames, (spk, adapted, unadapted / frames)


def test_two_pass_decoding_beats_tri2b_on_a_held_out_speaker(systems, tmp_path):
    tri2b, _ = _decode(systems["tri2b"], systems)
    tri3b, _ = _decode(systems["tri3b"], systems, transforms_out=tmp_path / "trans.npz")
    print(f"held-out speaker {HELDOUT}: tri2b {tri2b.line()}; tri3b {tri3b.line()}")
    from asr.transforms.fmllr import load_transforms
    assert set(load_transforms(tmp_path / "trans.npz")) == {HELDOUT}
    # 50 strings, ~200 words: a couple of errors either way are noise.
    assert tri3b.wer <= tri2b.wer + 1.5, (tri2b.line(), tri3b.line())


def test_refinement_re_estimates_each_transform_from_the_adapted_pass(systems):
    """decode_fmllr.sh's second estimate: the adapted pass's best paths give each speaker a
    new transform, started from the first; the fMLLR objective on those paths (GMM
    log-likelihood per frame plus log|det A|) does not fall, and without refinements the
    first estimate is what decodes."""
    from asr.adaptation import speaker_transforms, spk2utt_of
    from asr.gmm.lda_mllt import silence_pdfs
    from asr.transforms.fmllr import apply_fmllr, fmllr_logdet

    tri3b, test = systems["tri3b"], systems["test"]
    assert tri3b.adaptation.refinements == 1
    feats = tri3b.model_input(systems["test_raw"], test.utt2spk)
    once = dataclasses.replace(tri3b, adaptation=dataclasses.replace(tri3b.adaptation,
                                                                     refinements=0))
    decoder = tri3b.decoder()
    _, first = once.adapt(feats, test.utt2spk, decoder)
    _, refined = tri3b.adapt(feats, test.utt2spk, decoder)
    assert set(first) == set(refined) == {HELDOUT}
    assert not np.allclose(first[HELDOUT], refined[HELDOUT])

    gmm, silence = tri3b.model.gmm, silence_pdfs(tri3b.tree)
    targets = {}
    for utt, mat in feats.items():
        pdfs = np.asarray(decoder.decode(tri3b.model.log_likelihoods(
            apply_fmllr(first[HELDOUT], mat).astype(np.float32))).pdfs)
        targets[utt] = (np.arange(len(pdfs)), pdfs, np.where(silence[pdfs], 0.01, 1.0))
    again, _ = speaker_transforms(gmm, feats, targets, spk2utt_of(test.utt2spk, sorted(feats)),
                                  tri3b.adaptation.min_count, tri3b.adaptation.iters,
                                  previous=first)
    np.testing.assert_allclose(again[HELDOUT], refined[HELDOUT], rtol=1e-6, atol=1e-6)

    def objective(W):
        total = frames = 0.0
        for utt, (rows, pdfs, weights) in targets.items():
            ll = gmm.log_likelihoods(apply_fmllr(W, feats[utt]))[rows, pdfs]
            total += float(np.sum(weights * ll))
            frames += float(weights.sum())
        return total / frames + fmllr_logdet(W)

    assert objective(refined[HELDOUT]) >= objective(first[HELDOUT]) - 1e-4


def test_reloaded_model_decodes_identically_through_library_experiment_and_cli(
        systems, tmp_path):
    from asr.experiment import Experiment
    from asr.transforms.fmllr import load_transforms

    root = systems["root"]
    loaded = AsrSystem.load(root / "tri3b")
    assert loaded.adaptation == systems["tri3b"].adaptation
    _, expected = _decode(systems["tri3b"], systems, transforms_out=tmp_path / "a.npz")
    _, hyps = _decode(loaded, systems, transforms_out=tmp_path / "b.npz")
    assert hyps == expected
    a, b = load_transforms(tmp_path / "a.npz"), load_transforms(tmp_path / "b.npz")
    np.testing.assert_array_equal(a[HELDOUT], b[HELDOUT])

    out = tmp_path / "cli"
    assert cli_main(["decode", "--model", str(root / "tri3b"), "--data", str(root / "data/test"),
                     "--out", str(out), "--no-progress", "--graph-cache",
                     str(tmp_path / "graphs")]) == 0
    cli_hyps = dict(line.split(maxsplit=1) if " " in line else (line, "")
                    for line in (out / "hyp.txt").read_text().splitlines())
    assert {u: cli_hyps[u].split() for u in cli_hyps} == expected
    np.testing.assert_allclose(load_transforms(out / "trans.npz")[HELDOUT], a[HELDOUT],
                               rtol=1e-6, atol=1e-6)

    (tmp_path / "data").mkdir()
    (tmp_path / "data/c").symlink_to(root / "data")
    ex = Experiment("c", tmp_path / "data", tmp_path / "exp", tmp_path / "results",
                    loaded.features, progress=False)
    ex.make_features("test")
    (tmp_path / "exp/c/tri3b").symlink_to(root / "tri3b")
    _, result = ex.decode("tri3b", "test")
    decoded = ex.system_dir("tri3b") / "decode_test"
    assert (decoded / "trans.npz").is_file()
    ex_hyps = dict(line.split(maxsplit=1) if " " in line else (line, "")
                   for line in (decoded / "hyp.txt").read_text().splitlines())
    assert {u: ex_hyps[u].split() for u in ex_hyps} == expected


def test_transcribe_adapts_each_file_as_its_own_speaker(systems, capsys, tmp_path):
    test = systems["test"]
    utts = sorted(test.utts)[:2]
    assert cli_main(["transcribe", "--model", str(systems["root"] / "tri3b"), "--graph-cache",
                     str(tmp_path / "graphs")] + [str(test.wavs[u]) for u in utts]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    # The same as the library with each utterance its own speaker.
    from asr.evaluate import decode_features
    tri3b = systems["tri3b"]
    feats = tri3b.model_input({u: systems["test_raw"][u] for u in utts}, {u: u for u in utts})
    hyps = decode_features(tri3b, feats, progress=False, utt2spk={u: u for u in utts})
    for line, utt in zip(lines, utts):
        assert line.split()[1:] == hyps[utt]


def test_a_speaker_with_too_little_data_keeps_the_identity(systems, caplog):
    from asr.transforms.fmllr import identity_transform

    tri3b, test = systems["tri3b"], systems["test"]
    utts = sorted(test.utts)
    short = min(utts, key=lambda u: len(systems["test_raw"][u]))
    utt2spk = {u: ("tiny" if u == short else HELDOUT) for u in utts}
    feats = tri3b.model_input({u: systems["test_raw"][u] for u in utts}, test.utt2spk)
    system = dataclasses.replace(tri3b, adaptation=dataclasses.replace(
        tri3b.adaptation, min_count=len(feats[short]) + 1.0))
    with caplog.at_level(logging.WARNING, logger="asr.adaptation"):
        adapted, transforms = system.adapt(feats, utt2spk, system.decoder())
    np.testing.assert_array_equal(transforms["tiny"], identity_transform(40))
    assert not np.allclose(transforms[HELDOUT], identity_transform(40))
    np.testing.assert_allclose(adapted[short], feats[short], rtol=1e-6, atol=1e-5)
    assert any("tiny" in r.getMessage() and "identity" in r.getMessage()
               for r in caplog.records)


def test_align_adapted_aligns_training_speakers_on_their_fmllr_features(systems):
    """Kaldi's align_fmllr: SI first pass, fMLLR per speaker, adapted second pass. The
    transforms come out near the ones SAT trained, and the alignments cover the utterances
    that training aligned, frame for frame."""
    from asr.gmm.sat import align_adapted

    train = systems["train"]
    alignments, transforms = align_adapted(systems["tri3b"], systems["raw_utts"],
                                           train.utt2spk)
    assert set(transforms) == set(train.utt2spk.values())
    trained = systems["result"]
    assert len(alignments) >= 0.95 * len(trained.alignments)
    agree = total = 0
    for utt, (path, graph) in alignments.items():
        assert len(path) == len(next(u for u in systems["raw_utts"] if u.utt == utt).feats)
        if utt in trained.alignments:
            ref = trained.graphs[utt].pdf[trained.alignments[utt]]
            agree += int(np.sum(graph.pdf[path] == ref))
            total += len(ref)
    assert agree / total > 0.9, agree / total
    si_only, none = align_adapted(systems["tri2b"], systems["raw_utts"][:5], train.utt2spk)
    assert none == {} and len(si_only) == 5


def test_hybrid_on_fmllr_features_decodes_in_tri3b_passes(systems, tmp_path, capsys):
    """The network trains on each training speaker's fMLLR features (align_adapted's
    transforms); the saved system keeps tri3b's front end, transform and both GMMs (first
    pass at the GMM's acoustic scale), reloads with their types, and decodes the held-out
    speaker the same before and after saving: first tri3b's first estimate of the
    transform, then its refinement from the network's own adapted pass."""
    from asr.gmm.sat import adapted_utterances, align_adapted
    from asr.nnet import NnetConfig, pdf_targets, train_hybrid
    from asr.transforms.fmllr import load_transforms

    tri3b, train = systems["tri3b"], systems["train"]
    alignments, transforms = align_adapted(tri3b, systems["raw_utts"], train.utt2spk)
    utts = adapted_utterances(tri3b, systems["raw_utts"], train.utt2spk, transforms)
    cfg = NnetConfig(hidden_dim=64, num_layers=2, context_left=3, context_right=3, epochs=3,
                     seed=0, num_threads=1)
    hybrid = train_hybrid(utts, pdf_targets(alignments), tri3b, None, cfg,
                          tmp_path / "train", progress=False)
    assert hybrid.features == tri3b.features and hybrid.transform is tri3b.transform
    adaptation = hybrid.adaptation
    assert adaptation.si_model is tri3b.adaptation.si_model
    assert adaptation.fmllr_model is tri3b.model
    assert adaptation.si_acoustic_scale == tri3b.decoding.acoustic_scale

    hybrid.save(tmp_path / "dnn")
    settings = json.loads((tmp_path / "dnn/adaptation.json").read_text())
    assert settings["model_types"] == {"si_acoustic": "gmm", "fmllr_acoustic": "gmm"}
    loaded = AsrSystem.load(tmp_path / "dnn")
    assert loaded.model.model_type != "gmm"
    capsys.readouterr()
    assert cli_main(["info", str(tmp_path / "dnn")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["adaptation"]["models"] == {"si_acoustic": "gmm", "fmllr_acoustic": "gmm"}
    assert info["cross_word"] is False and info["transform"] == [40, 91]
    assert loaded.adaptation.fmllr_model.model_type == "gmm"
    np.testing.assert_array_equal(loaded.adaptation.fmllr_model.gmm.means,
                                  tri3b.model.gmm.means)

    # From files (asr train-hybrid --transforms): the same network, bit for bit.
    from asr.features import write_archive
    from asr.nnet import save_targets
    from asr.transforms.fmllr import save_transforms
    write_archive(tmp_path / "feats", systems["raw"], tri3b.features)
    save_targets(tmp_path / "targets.npz", pdf_targets(alignments))
    save_transforms(tmp_path / "trans.npz", transforms)
    assert cli_main(["train-hybrid", "--data", str(systems["root"] / "data/train"),
                     "--feats", str(tmp_path / "feats"), "--targets",
                     str(tmp_path / "targets.npz"), "--base", str(systems["root"] / "tri3b"),
                     "--transforms", str(tmp_path / "trans.npz"), "--out",
                     str(tmp_path / "cli_dnn"), "--no-progress", "--set", "hidden_dim=64",
                     "--set", "num_layers=2", "--set", "context_left=3", "--set",
                     "context_right=3", "--set", "epochs=3", "--set", "num_threads=1"]) == 0
    files = [json.loads((tmp_path / d / "manifest.json").read_text())["files"]
             for d in ("dnn", "cli_dnn")]
    assert files[0] == files[1]

    result, hyps = _decode(hybrid, systems, transforms_out=tmp_path / "a.npz")
    again, loaded_hyps = _decode(loaded, systems, transforms_out=tmp_path / "b.npz")
    assert loaded_hyps == hyps
    print(f"hybrid on fMLLR features, held-out {HELDOUT}: {result.line()}")
    assert result.wer < 50.0, result.line()

    # The first estimate is tri3b's (its first pass, its GMM); the refinement decodes with
    # the network, so the final transform is the hybrid's own.
    def first_estimate(system):
        return dataclasses.replace(system, adaptation=dataclasses.replace(
            system.adaptation, refinements=0))

    _decode(first_estimate(tri3b), systems, transforms_out=tmp_path / "tri3b.npz")
    _decode(first_estimate(loaded), systems, transforms_out=tmp_path / "first.npz")
    first = load_transforms(tmp_path / "first.npz")[HELDOUT]
    np.testing.assert_allclose(first, load_transforms(tmp_path / "tri3b.npz")[HELDOUT],
                               rtol=1e-6, atol=1e-6)
    assert not np.allclose(first, load_transforms(tmp_path / "b.npz")[HELDOUT])

    # The first pass runs at the GMM's scale whatever the network's decoder uses.
    decoder = loaded.decoder(dataclasses.replace(loaded.decoding, acoustic_scale=0.2))
    feats = loaded.model_input(systems["test_raw"], systems["test"].utt2spk)
    _, at_02 = first_estimate(loaded).adapt(feats, systems["test"].utt2spk, decoder)
    np.testing.assert_allclose(at_02[HELDOUT], first, rtol=1e-6, atol=1e-6)
