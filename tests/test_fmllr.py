"""fMLLR: statistics, the row-by-row update, per-speaker estimation, save/load."""
import logging

import numpy as np
import pytest

from asr.errors import ModelError
from asr.gmm import DiagGmm
from asr.transforms.fmllr import (FmllrStats, apply_fmllr, estimate_fmllr,
                                  estimate_speaker_transforms, fmllr_auxf, fmllr_logdet,
                                  identity_transform, load_transforms, save_transforms)


def _gmm(rng, pdfs=8, per=2, dim=4, spread=3.0):
    g = pdfs * per
    weights = rng.dirichlet(np.full(per, 5.0), size=pdfs).ravel()
    return DiagGmm(rng.normal(scale=spread, size=(g, dim)), rng.uniform(0.3, 1.5, size=(g, dim)),
                   np.log(weights), np.repeat(np.arange(pdfs), per), pdfs)


def _sample(gmm, rng, frames):
    """Frames drawn from the GMM: (T, D) features and the (T,) pdf each came from."""
    per = gmm.num_gauss // gmm.num_pdfs
    pdfs = rng.integers(gmm.num_pdfs, size=frames)
    cum = np.cumsum(np.exp(gmm.log_weights).reshape(gmm.num_pdfs, per), axis=1)
    within = np.minimum((rng.random(frames)[:, None] > cum[pdfs]).sum(axis=1), per - 1)
    g = gmm.offsets[pdfs] + within
    x = gmm.means[g] + np.sqrt(gmm.variances[g]) * rng.standard_normal((frames, gmm.dim))
    return x, pdfs


def _distortion(rng, dim, scale=0.3):
    """A well-conditioned planted affine map y = x @ M.T + c."""
    return np.eye(dim) + scale * rng.normal(size=(dim, dim)) / np.sqrt(dim), rng.normal(size=dim)


def _aligned_loglik(gmm, feats, pdfs):
    return float(gmm.log_likelihoods(feats)[np.arange(len(pdfs)), pdfs].astype(np.float64).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dim", [1, 3, 8])
def test_auxiliary_function_never_decreases(seed, dim):
    rng = np.random.default_rng(seed)
    gmm = _gmm(rng, pdfs=6, per=3, dim=dim)
    x, pdfs = _sample(gmm, rng, 600)
    M, c = _distortion(rng, dim, scale=0.6)
    stats = FmllrStats(dim)
    stats.accumulate_alignment(gmm, x @ M.T + c, pdfs)
    W, aux = estimate_fmllr(stats, iters=12)
    assert len(aux) == 13
    assert np.all(np.diff(aux) >= -1e-9 * abs(aux[0]))
    assert aux[-1] > aux[0]
    assert aux[-1] == pytest.approx(fmllr_auxf(stats, W))
    # Started from a random non-singular transform the updates still only climb.
    W0 = np.hstack([np.eye(dim) + 0.5 * rng.normal(size=(dim, dim)), rng.normal(size=(dim, 1))])
    _, aux0 = estimate_fmllr(stats, W0, iters=12)
    assert np.all(np.diff(aux0) >= -1e-9 * abs(aux0[0]))


def test_auxiliary_function_is_the_weighted_log_likelihood_with_jacobian():
    """Q(W1) - Q(W2) equals the change in sum_t,m gamma_tm [log N(W xi_t; m) + log|det A|]."""
    rng = np.random.default_rng(3)
    gmm = _gmm(rng, pdfs=3, per=2, dim=3)
    x, pdfs = _sample(gmm, rng, 50)
    frames = np.repeat(np.arange(50), 2)
    soft = np.stack([pdfs, (pdfs + 1) % 3], axis=1).ravel()
    weights = np.tile([0.7, 0.3], 50)
    stats = FmllrStats(3)
    stats.accumulate(gmm, x, frames, soft, weights)

    def expected(W):
        y = apply_fmllr(W, x)
        total = 0.0
        for t, p, w in zip(frames, soft, weights):
            g = slice(gmm.offsets[p], gmm.offsets[p + 1])
            ll = gmm.gaussian_log_likelihoods(x[t:t + 1], g)[0].astype(np.float64)
            post = np.exp(ll - ll.max())
            post /= post.sum()
            dens = -0.5 * (np.log(2 * np.pi * gmm.variances[g])
                           + (y[t] - gmm.means[g]) ** 2 / gmm.variances[g]).sum(axis=1)
            total += w * float(post @ (dens + fmllr_logdet(W)))
        return total

    W1 = identity_transform(3)
    W2 = np.hstack([np.eye(3) + 0.2 * rng.normal(size=(3, 3)), rng.normal(size=(3, 1))])
    assert fmllr_auxf(stats, W2) - fmllr_auxf(stats, W1) == pytest.approx(
        expected(W2) - expected(W1), rel=1e-6)
    assert stats.beta == pytest.approx(weights.sum())


def test_recovers_the_inverse_of_a_planted_affine_transform():
    rng = np.random.default_rng(7)
    dim = 5
    gmm = _gmm(rng, pdfs=12, per=2, dim=dim)
    x, pdfs = _sample(gmm, rng, 4000)
    M, c = _distortion(rng, dim)
    y = x @ M.T + c
    feats, targets = {"u1": y[:2000], "u2": y[2000:]}, {"u1": pdfs[:2000], "u2": pdfs[2000:]}
    spk2utt = {"s1": ["u1", "u2"]}
    first = estimate_speaker_transforms(gmm, feats, targets, spk2utt)
    # Second pass: Gaussian posteriors on the adapted features, as Kaldi does.
    W = estimate_speaker_transforms(gmm, feats, targets, spk2utt, previous=first)["s1"]
    M_inv = np.linalg.inv(M)
    np.testing.assert_allclose(W[:, :dim], M_inv, atol=0.05)
    np.testing.assert_allclose(W[:, dim], -M_inv @ c, atol=0.1)
    before = np.sqrt(np.mean((y - x) ** 2))
    after = np.sqrt(np.mean((apply_fmllr(W, y) - x) ** 2))
    assert after < 0.1 * before
    adapted = _aligned_loglik(gmm, apply_fmllr(W, y), pdfs) + len(y) * fmllr_logdet(W)
    unadapted = _aligned_loglik(gmm, y, pdfs)
    assert (adapted - unadapted) / len(y) > 0.5
    assert adapted >= _aligned_loglik(gmm, apply_fmllr(first["s1"], y), pdfs) \
        + len(y) * fmllr_logdet(first["s1"]) - 1e-3 * len(y)


def test_statistics_merge_equals_joint_accumulation():
    rng = np.random.default_rng(4)
    gmm = _gmm(rng, pdfs=5, per=3, dim=4)
    x, pdfs = _sample(gmm, rng, 300)
    joint = FmllrStats(4)
    joint.accumulate_alignment(gmm, x, pdfs)
    a, b = FmllrStats(4), FmllrStats(4)
    a.accumulate_alignment(gmm, x[:120], pdfs[:120])
    b.accumulate_alignment(gmm, x[120:], pdfs[120:])
    merged = FmllrStats.from_arrays(a.to_arrays()).merge(b)
    assert merged.beta == joint.beta == 300
    np.testing.assert_allclose(merged.K, joint.K, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(merged.G, joint.G, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(joint.G, joint.G.transpose(0, 2, 1))
    # An alignment is the posterior triple with weight one on the aligned pdf.
    triples = FmllrStats(4)
    triples.accumulate(gmm, x, np.arange(300), pdfs, np.ones(300))
    np.testing.assert_allclose(triples.G, joint.G)
    # Two half-weighted copies of every frame add up to the frame.
    halves = FmllrStats(4)
    halves.accumulate(gmm, x, np.repeat(np.arange(300), 2), np.repeat(pdfs, 2), np.full(600, .5))
    np.testing.assert_allclose(halves.K, joint.K, rtol=1e-10, atol=1e-9)
    with pytest.raises(ValueError, match="merge"):
        joint.merge(FmllrStats(3))


def test_speaker_below_min_count_gets_identity_with_a_warning(caplog):
    rng = np.random.default_rng(5)
    gmm = _gmm(rng, dim=3)
    x, pdfs = _sample(gmm, rng, 400)
    M, c = _distortion(rng, 3)
    y = x @ M.T + c
    feats = {"a1": y[:390], "b1": y[390:], "b2": y[:5]}
    targets = {"a1": pdfs[:390], "b1": pdfs[390:]}             # b2 has no alignment
    with caplog.at_level(logging.WARNING, logger="asr.transforms.fmllr"):
        out = estimate_speaker_transforms(gmm, feats, targets,
                                          {"spkA": ["a1"], "spkB": ["b1", "b2"]}, min_count=20)
    np.testing.assert_array_equal(out["spkB"], identity_transform(3))
    assert not np.allclose(out["spkA"], identity_transform(3))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("spkB" in m and "min_count" in m for m in warnings)
    assert any("spkB" in m and "b2" in m for m in warnings)
    assert not any("spkA" in m for m in warnings)
    # Posteriors over pdfs given as (frames, pdfs, weights): one-hot ones match the alignment.
    onehot = {"a1": (np.arange(390), pdfs[:390], np.ones(390))}
    same = estimate_speaker_transforms(gmm, feats, onehot, {"spkA": ["a1"]}, min_count=20)
    np.testing.assert_allclose(same["spkA"], out["spkA"], atol=1e-9)


def test_apply_fmllr_identity_and_dtype():
    x = np.random.default_rng(6).normal(size=(10, 4)).astype(np.float32)
    out = apply_fmllr(identity_transform(4), x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x)
    with pytest.raises(ValueError, match="expected W"):
        apply_fmllr(identity_transform(3), x)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    table = {"spk2": rng.normal(size=(3, 4)), "spk1": identity_transform(3)}
    path = tmp_path / "trans.npz"
    save_transforms(path, table)
    loaded = load_transforms(path)
    assert list(loaded) == ["spk1", "spk2"]
    for spk in table:
        np.testing.assert_array_equal(loaded[spk], table[spk])
    save_transforms(tmp_path / "empty.npz", {})
    assert load_transforms(tmp_path / "empty.npz") == {}


def test_damaged_or_wrong_files_raise_model_errors_naming_them(tmp_path):
    path = tmp_path / "trans.npz"
    save_transforms(path, {"s": identity_transform(2)})
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ModelError, match="trans.npz"):
        load_transforms(path)
    with pytest.raises(ModelError, match="missing.npz"):
        load_transforms(tmp_path / "missing.npz")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, speakers=np.array(["a", "b"]), transforms=np.zeros((2, 2, 2)))
    with pytest.raises(ModelError, match="wrong.npz.*D, D\\+1"):
        load_transforms(wrong)
    other = tmp_path / "other.npz"
    np.savez(other, linear=np.eye(2))
    with pytest.raises(ModelError, match="other.npz.*not an fMLLR"):
        load_transforms(other)
