"""LDA and MLLT feature transforms: properties on planted data, statistics that add up, files."""
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ortho_group

from asr.errors import ModelError
from asr.gmm import DiagGmm
from asr.models import save_arrays
from asr.transforms import (FeatureTransform, LdaStats, MlltStats, accumulate_lda,
                            accumulate_mllt, estimate_lda, estimate_mllt, lda_eigensystem,
                            mllt_auxiliary, transform_means)


# ---------------------------------------------------------------------------------- LDA

def _lda_data(seed, num_classes=6, dim=8, informative=2, per_class=600, within=None):
    """Classes whose means differ only along ``informative`` random orthonormal directions.

    Returns feats (N, D), labels (N,), the directions U (D, informative), the within-class
    covariance used (D, D).
    """
    rng = np.random.default_rng(seed)
    basis = ortho_group.rvs(dim, random_state=seed)
    directions = basis[:, :informative]
    centres = rng.normal(scale=4.0, size=(num_classes, informative)) @ directions.T + 3.0
    if within is None:
        within = np.eye(dim)
    chol = np.linalg.cholesky(within)
    labels = np.repeat(np.arange(num_classes), per_class)
    feats = centres[labels] + rng.normal(size=(len(labels), dim)) @ chol.T
    perm = rng.permutation(len(labels))
    return feats[perm], labels[perm], directions, within


def _row_space_overlap(rows, directions):
    """Cosines of the principal angles between span(rows.T) and span(directions)."""
    q, _ = np.linalg.qr(rows.T)
    return np.linalg.svd(directions.T @ q, compute_uv=False)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lda_recovers_the_discriminating_directions(seed):
    feats, labels, directions, _ = _lda_data(seed)
    stats = accumulate_lda(feats, labels)
    full, eigvals = lda_eigensystem(stats)
    assert np.all(np.diff(eigvals) <= 1e-12)                  # sorted, decreasing
    assert eigvals[1] > 1.0 and eigvals[2] < 0.05 * eigvals[1]
    lda = estimate_lda(stats, dim=2)
    assert lda.shape == (2, 8)
    np.testing.assert_allclose(lda, full[:2])
    assert _row_space_overlap(lda, directions).min() > 0.99


@pytest.mark.parametrize("seed", [0, 3])
def test_lda_normalises_the_within_class_covariance(seed):
    rng = np.random.default_rng(100 + seed)
    mix = rng.normal(size=(8, 8))
    feats, labels, _, within = _lda_data(seed, within=mix @ mix.T + 0.5 * np.eye(8))
    stats = accumulate_lda(feats, labels)
    lda = estimate_lda(stats, dim=5)
    full, eigvals = lda_eigensystem(stats)
    # Exactly, on the statistics: M W M^T = I and M B M^T = diag(lambda).
    _, w_hat, b_hat = stats.covariances()
    np.testing.assert_allclose(full @ w_hat @ full.T, np.eye(8), atol=1e-9)
    np.testing.assert_allclose(full @ b_hat @ full.T, np.diag(eigvals), atol=1e-9)
    # Independently, on the transformed data: per-class centred covariance is the identity.
    out = FeatureTransform(lda).apply(feats)
    centred = out - np.vstack([out[labels == c].mean(0) for c in range(6)])[labels]
    np.testing.assert_allclose(centred.T @ centred / len(out), np.eye(5), atol=1e-9)
    # And approximately for the true within-class covariance, seen through the estimate.
    np.testing.assert_allclose(lda @ within @ lda.T, np.eye(5), atol=0.15)


def test_lda_offset_removes_the_mean_kaldi_affine_form():
    feats, labels, _, _ = _lda_data(4)
    stats = accumulate_lda(feats, labels)
    affine = estimate_lda(stats, dim=3, remove_offset=True)
    assert affine.shape == (3, 9)
    np.testing.assert_allclose(affine[:, :8], estimate_lda(stats, dim=3))
    transform = FeatureTransform.from_kaldi(affine, input_dim=8)
    np.testing.assert_allclose(transform.apply(feats).mean(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(transform.affine_matrix, affine)


def test_lda_statistics_merge_equals_one_pass_over_all_frames():
    feats, labels, _, _ = _lda_data(5)
    weights = np.random.default_rng(5).uniform(0.1, 1.0, size=len(labels))
    half = len(labels) // 2
    low = labels < 3                      # first part sees only classes 0-2: fewer rows
    a = accumulate_lda(feats[low], labels[low], weights=weights[low])
    b = accumulate_lda(feats[~low], labels[~low], weights=weights[~low])
    assert a.num_classes == 3 and b.num_classes == 6
    whole = accumulate_lda(feats, labels, weights=weights)
    for merged in (a.merge(b), b + a):
        for name, array in whole.to_arrays().items():
            np.testing.assert_allclose(merged.to_arrays()[name], array, rtol=1e-10)
    # Accumulating utterance by utterance into one object gives the same too.
    running = accumulate_lda(feats[:half], labels[:half], weights=weights[:half])
    running = accumulate_lda(feats[half:], labels[half:], running, weights=weights[half:])
    np.testing.assert_allclose(running.second, whole.second, rtol=1e-10)
    again = LdaStats.from_arrays(whole.to_arrays())
    np.testing.assert_allclose(estimate_lda(again, 4), estimate_lda(whole, 4))
    # A weight of 2 is the same as the frame seen twice.
    twice = accumulate_lda(np.vstack([feats, feats]), np.concatenate([labels, labels]))
    doubled = accumulate_lda(feats, labels, weights=np.full(len(labels), 2.0))
    np.testing.assert_allclose(doubled.second, twice.second, rtol=1e-10)


def test_lda_refuses_bad_input():
    feats, labels, _, _ = _lda_data(6)
    stats = accumulate_lda(feats, labels)
    with pytest.raises(ValueError, match="classes seen"):
        estimate_lda(stats, dim=6)                             # 6 classes: at most 5
    assert estimate_lda(stats, dim=6, allow_large_dim=True).shape == (6, 8)
    with pytest.raises(ValueError, match="expected"):
        accumulate_lda(feats, labels[:-1])
    with pytest.raises(ValueError, match="dim"):
        accumulate_lda(feats[:, :4], labels, stats)
    constant = feats.copy()
    constant[:, 2] = 1.0
    with pytest.raises(ValueError, match="positive definite"):
        estimate_lda(accumulate_lda(constant, labels), dim=3)


# --------------------------------------------------------------------------------- MLLT

def _rotated_classes(seed, num_classes=6, dim=5, per_class=800):
    """Diagonal-covariance classes in a hidden space z, seen through one rotation: x = R^T z.

    Returns feats (N, D), labels (N,), R (D, D), and the true log-likelihood per frame.
    """
    rng = np.random.default_rng(seed)
    rotation = ortho_group.rvs(dim, random_state=seed)
    means = rng.normal(scale=2.0, size=(num_classes, dim))
    variances = np.exp(rng.uniform(np.log(0.05), np.log(5.0), size=(num_classes, dim)))
    labels = np.repeat(np.arange(num_classes), per_class)
    z = means[labels] + rng.normal(size=(len(labels), dim)) * np.sqrt(variances[labels])
    true_ll = -0.5 * (np.log(2 * np.pi * variances[labels])
                      + (z - means[labels]) ** 2 / variances[labels]).sum(1)
    return z @ rotation, labels, rotation, float(true_ll.mean())


def _ml_gmm(feats, labels, num_classes):
    """One Gaussian per class: maximum-likelihood means and diagonal variances."""
    means = np.vstack([feats[labels == c].mean(0) for c in range(num_classes)])
    variances = np.vstack([feats[labels == c].var(0) for c in range(num_classes)])
    return DiagGmm(means, variances, np.zeros(num_classes), np.arange(num_classes),
                   num_classes)


def _mean_ll(gmm, feats, labels):
    """Average log-likelihood of each frame under its class's Gaussian, in float64 (the
    GMM's own scoring is float32)."""
    mu, var = gmm.means[labels], gmm.variances[labels]
    return float((-0.5 * (np.log(2 * np.pi * var) + (feats - mu) ** 2 / var).sum(1)).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mllt_finds_the_shared_rotation_and_raises_the_likelihood(seed):
    """Rounds as in tri2b: MLLT on the current features, then transformed means and ML
    variances in the new space; likelihoods include log|det| to stay densities of x."""
    feats, labels, rotation, true_ll = _rotated_classes(seed)
    gmm = _ml_gmm(feats, labels, 6)
    total = FeatureTransform(np.eye(5))
    history = [_mean_ll(gmm, feats, labels)]
    for _ in range(4):
        y = total.apply(feats)
        A, aux = estimate_mllt(accumulate_mllt(gmm, y, labels), iters=10)
        moved = transform_means(gmm, A)
        np.testing.assert_allclose(moved.means, gmm.means @ A.T)
        total = total.followed_by(FeatureTransform(A))
        y = total.apply(feats)
        gmm = _ml_gmm(y, labels, 6)
        np.testing.assert_allclose(gmm.means, moved.means, atol=1e-9)
        history.append(_mean_ll(gmm, y, labels) + np.linalg.slogdet(total.linear)[1])
        # EM: the likelihood gain is at least the auxiliary gain, per frame.
        assert history[-1] - history[-2] >= (aux[-1] - aux[0]) / len(feats) - 1e-9
    assert np.all(np.diff(history) >= -1e-9), history
    assert history[1] > history[0] + 0.1, history
    assert abs(history[-1] - true_ll) < 0.03, (history, true_ll)   # as good as the planted
    # The transform undoes the rotation up to a scaling and an order of rows: A R^T ~ P S.
    undone = total.linear @ rotation.T
    undone /= np.linalg.norm(undone, axis=1, keepdims=True)
    assert np.abs(undone).max(axis=1).min() > 0.99
    assert sorted(np.abs(undone).argmax(axis=1)) == list(range(5))


def _random_gmm(rng, num_pdfs=4, per=3, dim=5):
    g = num_pdfs * per
    return DiagGmm(rng.normal(size=(g, dim)), rng.uniform(0.3, 2.0, size=(g, dim)),
                   np.log(rng.dirichlet(np.ones(per), size=num_pdfs).ravel()),
                   np.repeat(np.arange(num_pdfs), per), num_pdfs)


@pytest.mark.parametrize("seed", range(5))
def test_mllt_auxiliary_never_falls_and_the_transform_stays_invertible(seed):
    rng = np.random.default_rng(seed)
    feats, labels, _, _ = _rotated_classes(seed, num_classes=4, per_class=200)
    gmm = _random_gmm(rng)
    stats = accumulate_mllt(gmm, feats, labels)
    start = np.eye(5) + 0.3 * rng.normal(size=(5, 5)) if seed % 2 else None
    A, aux = estimate_mllt(stats, start, iters=8)
    assert len(aux) == 9
    assert np.all(np.diff(aux) >= -1e-9 * np.abs(aux[:-1])), aux
    assert aux[-1] > aux[0]
    assert abs(np.linalg.det(A)) > 1e-6 and np.linalg.cond(A) < 1e3
    assert np.isclose(mllt_auxiliary(stats, A), aux[-1])


def test_mllt_auxiliary_is_the_log_likelihood_up_to_a_constant():
    """Q(A) - Q(B) equals the change of sum_t,m gamma_tm log(|det A| N(Ax; A mu_m, var_m))."""
    rng = np.random.default_rng(7)
    feats, labels, _, _ = _rotated_classes(7, num_classes=4, per_class=50)
    gmm = _random_gmm(rng)
    stats = accumulate_mllt(gmm, feats, labels)
    # The Gaussian posteriors within each frame's pdf, by brute force.
    post = np.zeros((len(feats), gmm.num_gauss))
    for t, pdf in enumerate(labels):
        lo, hi = gmm.offsets[pdf], gmm.offsets[pdf + 1]
        ll = gmm.gaussian_log_likelihoods(feats[t:t + 1], slice(lo, hi))[0].astype(float)
        post[t, lo:hi] = np.exp(ll - np.logaddexp.reduce(ll))
    g_brute = np.zeros((5, 5, 5))
    for t in range(len(feats)):
        for m in np.flatnonzero(post[t]):
            r = feats[t] - gmm.means[m]
            g_brute += post[t, m] / gmm.variances[m][:, None, None] * np.outer(r, r)
    np.testing.assert_allclose(stats.G, g_brute, rtol=1e-5)
    assert np.isclose(stats.beta, len(feats))

    def loglik(A):
        y, mu = feats @ A.T, gmm.means @ A.T
        ll = -0.5 * (np.log(2 * np.pi * gmm.variances)[None]
                     + (y[:, None, :] - mu[None]) ** 2 / gmm.variances[None]).sum(2)
        return float((post * (ll + np.linalg.slogdet(A)[1])).sum())

    A, B = np.eye(5) + 0.2 * rng.normal(size=(5, 5)), np.eye(5)
    np.testing.assert_allclose(mllt_auxiliary(stats, A) - mllt_auxiliary(stats, B),
                               loglik(A) - loglik(B), rtol=1e-5)


def test_mllt_statistics_merge_and_round_trip():
    rng = np.random.default_rng(8)
    feats, labels, _, _ = _rotated_classes(8, num_classes=4, per_class=100)
    gmm = _random_gmm(rng)
    weights = rng.uniform(0.2, 1.0, size=len(labels))
    whole = accumulate_mllt(gmm, feats, labels, weights=weights)
    a = accumulate_mllt(gmm, feats[:150], labels[:150], weights=weights[:150])
    b = accumulate_mllt(gmm, feats[150:], labels[150:], weights=weights[150:])
    merged = a + b
    np.testing.assert_allclose(merged.G, whole.G, rtol=1e-10)
    assert np.isclose(merged.beta, weights.sum())
    again = MlltStats.from_arrays(whole.to_arrays())
    np.testing.assert_allclose(estimate_mllt(again, iters=2)[0], estimate_mllt(whole, iters=2)[0])
    with pytest.raises(ValueError, match="no frames"):
        estimate_mllt(MlltStats.zeros(5))


# ----------------------------------------------------------------- FeatureTransform files

def test_composed_transform_is_one_matrix_and_survives_save_load(tmp_path):
    rng = np.random.default_rng(9)
    lda = FeatureTransform(rng.normal(size=(4, 10)), rng.normal(size=4))
    mllt = FeatureTransform(np.eye(4) + 0.1 * rng.normal(size=(4, 4)))
    both = lda.followed_by(mllt)
    feats = rng.normal(size=(20, 10)).astype(np.float32)
    out = both.apply(feats)
    assert out.dtype == np.float32 and out.shape == (20, 4)
    np.testing.assert_allclose(out, mllt.apply(lda.apply(feats)), rtol=1e-4, atol=1e-5)
    path = tmp_path / "final.mat.npz"
    both.save(path)
    loaded = FeatureTransform.load(path, input_dim=10, dim=4)
    np.testing.assert_array_equal(loaded.affine_matrix, both.affine_matrix)
    with pytest.raises(ValueError, match="expected"):
        both.apply(feats[:, :9])
    with pytest.raises(ValueError, match="cannot follow"):
        mllt.followed_by(lda)


@pytest.mark.parametrize("arrays, message", [
    ({"linear": np.eye(3)}, "lacks"),
    ({"linear": np.eye(3), "offset": np.zeros(2)}, "expected"),
    ({"linear": np.zeros(3), "offset": np.zeros(3)}, "expected"),
    ({"linear": np.full((3, 3), np.nan), "offset": np.zeros(3)}, "NaN"),
    ({"linear": np.eye(3, dtype=np.int64), "offset": np.zeros(3)}, "floating"),
])
def test_bad_transform_files_raise_model_errors_naming_the_file(tmp_path, arrays, message):
    path = tmp_path / "lda.npz"
    save_arrays(path, arrays)
    with pytest.raises(ModelError, match=message) as info:
        FeatureTransform.load(path)
    assert info.value.path == str(path)


def test_transform_load_checks_the_expected_dimensions(tmp_path):
    path = tmp_path / "lda.npz"
    FeatureTransform(np.ones((2, 6))).save(path)
    with pytest.raises(ModelError, match="expected 7"):
        FeatureTransform.load(path, input_dim=7)
    with pytest.raises(ModelError, match="expected 3"):
        FeatureTransform.load(path, dim=3)
    with pytest.raises(ModelError, match="missing"):
        FeatureTransform.load(tmp_path / "absent.npz")


# ------------------------------------------------------------------------ real speech

def test_lda_then_mllt_on_yesno_mfcc_with_a_monophone_alignment(shared_data):
    """tri2b's front end on 20 yesno recordings: spliced MFCC (7 x 13), pdf labels from a
    quick monophone alignment, LDA to 10 (11 pdfs), then MLLT rounds (about 5 s)."""
    from asr.audio import read_wav
    from asr.features import FeatureConfig, apply_pipeline
    from asr.features.frontend import compute_features
    from asr.gmm.systems import HmmConfig, align_utterances, train_monophone
    from asr.gmm.train import GmmTrainConfig
    from asr.lexicon import Lexicon
    from asr.training import Utterance

    wavs = sorted((shared_data / "yesno/waves_yesno").glob("*.wav"))[:20]
    mono_cfg = FeatureConfig(deltas=2, cmvn="utterance")
    splice_cfg = FeatureConfig(deltas=0, cmvn="utterance", splice_left=3, splice_right=3)
    raw = {w.stem: compute_features(read_wav(w, 8000)[0], mono_cfg) for w in wavs}
    lexicon = Lexicon.load(Path(__file__).resolve().parents[1] / "data/lexicons/yesno.txt")
    utts = [Utterance(u, f, ["YES" if c == "1" else "NO" for c in u.split("_")])
            for u, f in apply_pipeline(raw, mono_cfg).items()]
    mono, _ = train_monophone(utts, lexicon, mono_cfg, HmmConfig(),
                              GmmTrainConfig(training="viterbi", num_iters=5, max_gaussians=11),
                              progress=False)
    alignments = align_utterances(mono, utts)
    assert len(alignments) == len(utts)
    spliced = apply_pipeline(raw, splice_cfg)
    stats, parts = None, []
    for utt, (path, graph) in alignments.items():
        stats = accumulate_lda(spliced[utt], graph.pdf[path], stats)
        parts.append(accumulate_lda(spliced[utt], graph.pdf[path], num_classes=11))
    assert (stats.num_classes, stats.dim) == (11, 91)
    merged = parts[0]
    for part in parts[1:]:
        merged = merged + part
    np.testing.assert_allclose(merged.second, stats.second, rtol=1e-10)

    lda = FeatureTransform(estimate_lda(stats, dim=10))
    feats = np.vstack([lda.apply(spliced[utt].astype(np.float64)) for utt in alignments])
    labels = np.concatenate([graph.pdf[path] for path, graph in alignments.values()])
    centred = feats - np.vstack([feats[labels == p].mean(0) for p in range(11)])[labels]
    np.testing.assert_allclose(centred.T @ centred / len(feats), np.eye(10), atol=1e-6)

    gmm = _ml_gmm(feats, labels, 11)
    total = FeatureTransform(np.eye(10))
    history = [_mean_ll(gmm, feats, labels)]
    for _ in range(3):
        y = total.apply(feats)
        A, aux = estimate_mllt(accumulate_mllt(gmm, y, labels), iters=10)
        assert np.all(np.diff(aux) >= -1e-9 * abs(aux[0])) and np.linalg.cond(A) < 1e3
        total = total.followed_by(FeatureTransform(A))
        y = total.apply(feats)
        gmm = _ml_gmm(y, labels, 11)
        history.append(_mean_ll(gmm, y, labels) + np.linalg.slogdet(total.linear)[1])
    assert np.all(np.diff(history) > 0), history
    assert history[-1] > history[0] + 0.1, history
    tri2b = lda.followed_by(total)
    assert (tri2b.dim, tri2b.input_dim) == (10, 91)
