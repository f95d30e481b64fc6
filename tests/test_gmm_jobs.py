"""GMM training as jobs: the same bits for any number of jobs and any engine, scores of a
graph's pdfs only, exact sums, and a driver that never reads a feature.

A small synthetic corpus (4 speakers, 3 words, speaker-shifted features) in a Kaldi data
directory and a feature archive trains the whole chain (mono -> tri -> tri2b -> tri3b) from
the archive, in this process and as 2 or 3 jobs on a local pool or a Dask LocalCluster.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asr.data import DataDir
from asr.exact import ExactSum
from asr.features import FeatureConfig
from asr.features.archive import write_archive
from asr.gmm import DiagGmm
from asr.gmm.lda_mllt import LdaMlltConfig, train_lda_mllt
from asr.gmm.sat import SatConfig, train_sat
from asr.gmm.source import ArchiveSource
from asr.gmm.systems import HmmConfig, train_monophone, train_triphone
from asr.gmm.train import GmmTrainConfig
from asr.jobs import make_executor
from asr.lexicon import Lexicon

LEXICON = [("A", ["AA"]), ("B", ["B"]), ("C", ["K", "AA"])]
FEATURES = FeatureConfig(kind="mfcc", deltas=1, cmvn="speaker")
MONO = GmmTrainConfig(num_iters=4, max_gaussians=40, mixup_iters=3, realign_iters=[1, 2, 3])
TRI = dict(num_leaves=10, max_gaussians=50, num_iters=3, mixup_iters=2, realign_iters=[2],
           tree_min_count=20.0)


def _corpus(root: Path, speakers: int = 4, per_speaker: int = 5, seed: int = 0) -> ArchiveSource:
    """A data directory and a 13-dim feature archive: each phone state a Gaussian, each
    speaker a shift and scale of every feature."""
    rng = np.random.default_rng(seed)
    lexicon = Lexicon.from_entries(LEXICON)
    centres = rng.normal(0, 3, size=(len(lexicon.phones), 3, 13))
    wavs, text, utt2spk, feats = {}, {}, {}, {}
    (root / "wav").mkdir(parents=True)
    for s in range(speakers):
        spk = f"spk{s}"
        shift, scale = rng.normal(0, 1, 13), rng.uniform(0.8, 1.2, 13)
        for i in range(per_speaker):
            utt = f"{spk}-u{i}"
            words = list(rng.choice(["A", "B", "C"], size=rng.integers(2, 5)))
            phones = [0] + [lexicon.phones.index(p) for w in words for p in dict(LEXICON)[w]]
            segments = [rng.normal(centres[p, k], 1.0, size=(rng.integers(3, 7), 13))
                        for p in phones + [0] for k in range(3)]
            feats[utt] = (np.vstack(segments) * scale + shift).astype(np.float32)
            wavs[utt], text[utt], utt2spk[utt] = root / "wav" / f"{utt}.wav", words, spk
            wavs[utt].touch()          # the data directory lists audio; jobs read features
    DataDir(wavs, text, utt2spk).save(root / "data")
    write_archive(root / "feats", feats, FEATURES)
    return ArchiveSource(str(root / "feats"), str(root / "data"))


def _chain(source: ArchiveSource, executor, work: Path) -> dict:
    """mono -> tri -> tri2b -> tri3b from the archive; every array each system holds."""
    lexicon = Lexicon.from_entries(LEXICON)
    mono, _ = train_monophone(source, lexicon, FEATURES, HmmConfig(), MONO, progress=False,
                              executor=executor, work_dir=work / "mono")
    tri, tri_res = train_triphone(source, mono, GmmTrainConfig(**TRI), progress=False,
                                  executor=executor, work_dir=work / "tri")
    tri2b, _ = train_lda_mllt(source, tri, LdaMlltConfig(**TRI, lda_dim=8, mllt_iters=[1, 2]),
                              progress=False, executor=executor, work_dir=work / "tri2b")
    tri3b, sat = train_sat(source, tri2b, SatConfig(**TRI, fmllr_iters=[1, 2],
                                                    fmllr_min_count=10.0),
                           progress=False, executor=executor, work_dir=work / "tri3b")
    out = {"tri_history": np.array(tri_res.history), "tri3b_history": np.array(sat.history)}
    for name, system in (("mono", mono), ("tri", tri), ("tri2b", tri2b), ("tri3b", tri3b)):
        for key, value in system.model.gmm.to_arrays().items():
            out[f"{name}.{key}"] = value
        out[f"{name}.tm"] = system.tm.log_probs
        if system.transform is not None:
            out[f"{name}.transform"] = system.transform.linear
    out["tri3b.si_means"] = sat.si_gmm.means
    for spk, W in sorted(sat.transforms.items()):
        out[f"fmllr.{spk}"] = W
    out["tri3b.tree"] = np.array(str(tri3b.tree.to_dict()))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> ArchiveSource:
    return _corpus(tmp_path_factory.mktemp("gmm_jobs"))


@pytest.fixture(scope="module")
def in_process(corpus, tmp_path_factory) -> dict:
    return _chain(corpus, None, tmp_path_factory.mktemp("nj1"))


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].shape == b[key].shape, key
        assert np.array_equal(a[key], b[key]), f"{key} differs"


def test_the_chain_learns_and_adapts(in_process):
    assert in_process["tri.means"].shape[0] > 10          # mixtures grew
    assert in_process["tri2b.transform"].shape == (8, 13 * 7)
    assert len([k for k in in_process if k.startswith("fmllr.")]) == 4
    assert not np.allclose(in_process["fmllr.spk0"][:, :-1], np.eye(8))   # adapted
    assert in_process["tri3b_history"][-1] > in_process["tri3b_history"][0]


@pytest.mark.parametrize("nj", [1, 2, 3])
def test_local_jobs_give_the_same_bits_for_any_nj(corpus, in_process, tmp_path, nj):
    with make_executor(nj, "local", progress=False) as executor:
        _assert_identical(in_process, _chain(corpus, executor, tmp_path))


def test_a_dask_cluster_gives_the_same_bits(corpus, in_process, tmp_path):
    pytest.importorskip("distributed")
    with make_executor(2, "dask", progress=False) as executor:
        _assert_identical(in_process, _chain(corpus, executor, tmp_path))


def test_utterances_without_speakers_train_the_same_bits_in_parts_of_whole_blocks(
        corpus, tmp_path):
    """Utterances in memory without speakers (as the FSDD folds train) are rounded in blocks
    of ``block_utts``: parts hold whole blocks, so 1 to 3 jobs give the same monophone."""
    from asr.features import apply_pipeline, read_archive
    from asr.gmm.source import MemorySource
    from asr.training import Utterance

    data = DataDir.load(corpus.data_dir)
    feats = apply_pipeline(read_archive(corpus.feat_dir), FEATURES, data.utt2spk)
    source = MemorySource([Utterance(u, feats[u], data.text[u]) for u in reversed(data.utts)],
                          block_utts=3)
    assert [len(p.utts) for p in source.parts(3)] == [9, 6, 5]     # blocks of 3 (the last 2)
    lexicon = Lexicon.from_entries(LEXICON)
    models = []
    for nj in (1, 2, 3):
        with make_executor(nj, "local", progress=False) as executor:
            mono, _ = train_monophone(source, lexicon, FEATURES, HmmConfig(), MONO,
                                      progress=False, executor=executor,
                                      work_dir=tmp_path / str(nj))
        models.append(mono.model.gmm.to_arrays())
    for other in models[1:]:
        _assert_identical(models[0], other)


def test_the_driver_never_reads_a_feature(corpus, tmp_path, monkeypatch):
    """With a process pool, features are read in the workers only: in the driver, reading
    the archive or a source's utterances fails, and training still succeeds."""
    import asr.features.archive
    import asr.gmm.source

    def refuse(*args, **kwargs):
        raise AssertionError("the driver read features")

    monkeypatch.setattr(asr.features.archive, "read_archive", refuse)
    monkeypatch.setattr(asr.gmm.source.ArchiveSource, "speakers", refuse)
    lexicon = Lexicon.from_entries(LEXICON)
    with make_executor(2, "local", progress=False) as executor:
        mono, result = train_monophone(corpus, lexicon, FEATURES, HmmConfig(), MONO,
                                       progress=False, executor=executor, work_dir=tmp_path)
    assert np.isfinite(result.history).all() and mono.model.gmm.num_gauss > mono.tree.num_pdfs
    assert sorted(p.name for p in (tmp_path / "ali").glob("ali.*.npz")) == ["ali.0.npz",
                                                                             "ali.1.npz"]


def test_scores_of_some_pdfs_equal_those_columns_of_all():
    rng = np.random.default_rng(0)
    owner = np.concatenate([np.arange(50), rng.integers(0, 50, 200)])
    gmm = DiagGmm(rng.normal(size=(250, 20)), rng.uniform(0.5, 2.0, size=(250, 20)),
                  rng.normal(size=250), owner, 50)
    feats = rng.normal(size=(5000, 20)).astype(np.float32)        # more than one chunk
    pdfs = np.array([3, 7, 8, 20, 49])
    some = gmm.log_likelihoods(feats, pdfs=pdfs)
    assert some.shape == (5000, 5) and some.dtype == np.float32
    np.testing.assert_allclose(some, gmm.log_likelihoods(feats)[:, pdfs], rtol=1e-6, atol=1e-5)


def test_exact_sums_do_not_depend_on_grouping_or_order():
    rng = np.random.default_rng(1)
    blocks = [rng.normal(size=(6, 3)) * 10.0 ** rng.integers(-4, 6) for _ in range(60)]
    parts = []
    for groups in ([blocks], [blocks[:17], blocks[17:40], blocks[40:]], [blocks[::-1]]):
        totals = []
        for group in groups:
            acc = ExactSum({"x": (6, 3)})
            for b in group:
                acc.add("x", b)
            totals.append(acc)
        for acc in totals[1:]:
            totals[0].merge(acc)
        parts.append(totals[0].total("x"))
    assert np.array_equal(parts[0], parts[1]) and np.array_equal(parts[0], parts[2])
    import math
    exact = np.array([[math.fsum(b[i, j] for b in blocks) for j in range(3)] for i in range(6)])
    np.testing.assert_allclose(parts[0], exact, rtol=1e-12, atol=1e-9)
