"""Diagonal GMMs: likelihoods, statistics, EM monotonicity, splitting, save/load."""
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from asr.gmm import DiagGmm, GmmAcousticModel, GmmStats, mle_update, split_gaussians
from asr.gmm.train import GmmTrainConfig, train_gmm_hmm
from asr.hmm import ContextTree, Topology, TransitionModel
from asr.lexicon import Lexicon
from asr.training import Utterance


def _gmm(seed=0, pdfs=3, per=2, dim=4):
    rng = np.random.default_rng(seed)
    g = pdfs * per
    return DiagGmm(rng.normal(size=(g, dim)), rng.uniform(0.5, 2, size=(g, dim)),
                   np.log(np.full(g, 1.0 / per)), np.repeat(np.arange(pdfs), per), pdfs)


def test_log_likelihoods_match_scipy():
    gmm = _gmm()
    x = np.random.default_rng(1).normal(size=(7, 4))
    ll = gmm.log_likelihoods(x)
    for p in range(3):
        dens = sum(np.exp(gmm.log_weights[g]) * multivariate_normal.pdf(
            x, gmm.means[g], np.diag(gmm.variances[g])) for g in range(2 * p, 2 * p + 2))
        np.testing.assert_allclose(ll[:, p], np.log(dens), rtol=1e-4)


def test_mixtures_of_uneven_sizes_sum_their_own_gaussians():
    """Pdfs of 1 to 6 Gaussians (one pdf far below the rest): each column is the
    log-sum-exp of its pdf's Gaussians, in full and for a chosen subset of pdfs."""
    rng = np.random.default_rng(3)
    sizes = np.array([1, 6, 2, 1, 3, 5])
    gauss_pdf = np.repeat(np.arange(len(sizes)), sizes)
    g, dim = len(gauss_pdf), 5
    means = rng.normal(size=(g, dim))
    means[gauss_pdf == 4] += 30.0        # about -2000 nats: exp underflows without the peak
    gmm = DiagGmm(means, rng.uniform(0.5, 2, (g, dim)), np.log(rng.dirichlet(np.ones(g))),
                  gauss_pdf, len(sizes))
    x = rng.normal(size=(9, dim))
    per_gauss = gmm.gaussian_log_likelihoods(x).astype(np.float64)
    expected = np.stack([logsumexp(per_gauss[:, gauss_pdf == p], axis=1)
                         for p in range(len(sizes))], axis=1)
    np.testing.assert_allclose(gmm.log_likelihoods(x), expected, rtol=1e-5)
    np.testing.assert_allclose(gmm.log_likelihoods(x, chunk=4), expected, rtol=1e-5)
    chosen = np.array([4, 1, 3])
    np.testing.assert_allclose(gmm.log_likelihoods(x, pdfs=chosen), expected[:, chosen],
                               rtol=1e-5)


def test_stats_merge_equals_joint_accumulation():
    gmm = _gmm()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 4))
    w = rng.dirichlet(np.ones(3), size=30)
    frames, pdfs = np.repeat(np.arange(30), 3), np.tile(np.arange(3), 30)
    joint = GmmStats(gmm.num_gauss, gmm.dim)
    joint.accumulate(gmm, x, frames, pdfs, w.ravel())
    a, b = GmmStats(gmm.num_gauss, gmm.dim), GmmStats(gmm.num_gauss, gmm.dim)
    a.accumulate(gmm, x, frames[:30], pdfs[:30], w.ravel()[:30])
    b.accumulate(gmm, x, frames[30:], pdfs[30:], w.ravel()[30:])
    a.merge(b)
    np.testing.assert_allclose(a.occ, joint.occ)
    np.testing.assert_allclose(a.second, joint.second)
    assert a.occ.sum() == pytest.approx(30.0)


def test_em_on_one_mixture_increases_likelihood():
    rng = np.random.default_rng(3)
    x = np.vstack([rng.normal(-2, 1, size=(200, 2)), rng.normal(3, 0.5, size=(200, 2))])
    gmm = DiagGmm(rng.normal(size=(2, 2)), np.ones((2, 2)), np.log([0.5, 0.5]), [0, 0], 1)
    last = -np.inf
    for _ in range(10):
        stats = GmmStats(gmm.num_gauss, gmm.dim)
        stats.accumulate(gmm, x, np.arange(len(x)), np.zeros(len(x), int), np.ones(len(x)))
        assert stats.log_likelihood >= last - 1e-5 * abs(last)  # float32 scoring
        last = stats.log_likelihood
        gmm = mle_update(gmm, stats, np.full(2, 1e-3))
    assert sorted(gmm.means[:, 0].round()) == [-2.0, 3.0]


def test_split_reaches_target_and_keeps_weights_normalised():
    gmm = _gmm(per=1)
    grown = split_gaussians(gmm, np.array([100.0, 100.0, 100.0]), 9)
    assert grown.num_gauss == 9
    np.testing.assert_allclose(np.bincount(grown.gauss_pdf, np.exp(grown.log_weights)), 1.0)


def test_baum_welch_log_likelihood_never_falls(shared_data):
    """Embedded training on synthetic two-word utterances: EM must not decrease the likelihood."""
    rng = np.random.default_rng(0)
    lex = Lexicon.from_entries([("A", ["AA"]), ("B", ["B"])])
    topo = Topology(len(lex.phones), 2, 2)
    centres = {0: -3.0, 1: 0.0, 2: 3.0}
    utts = []
    for i in range(12):
        words = list(rng.choice(["A", "B"], size=3))
        segs = [rng.normal(centres[0], 1, size=(rng.integers(3, 8), 2))]
        for w in words:
            segs.append(rng.normal(centres[lex.phones.index("AA" if w == "A" else "B")], 1,
                                   size=(rng.integers(6, 12), 2)))
        segs.append(rng.normal(centres[0], 1, size=(4, 2)))
        utts.append(Utterance(f"u{i}", np.vstack(segs), words))
    tree = ContextTree.monophone(topo)
    tm = TransitionModel(topo)
    from asr.gmm import flat_start
    gmm = flat_start(np.vstack([u.feats for u in utts]), tree.num_pdfs)
    cfg = GmmTrainConfig(training="baum-welch", num_iters=8, max_gaussians=tree.num_pdfs,
                         min_gaussian_occ=0.0, var_floor=1e-6, min_posterior=0.0)
    result = train_gmm_hmm(utts, lex, tree, tm, gmm, cfg, progress=False)
    h = np.array(result.history)
    assert np.all(np.diff(h) >= -1e-5 * np.abs(h[:-1])), h
    assert len(result.alignments) == len(utts)


def test_save_load_gives_identical_scores(tmp_path):
    model = GmmAcousticModel(_gmm())
    model.save(tmp_path)
    again = GmmAcousticModel.load(tmp_path)
    x = np.random.default_rng(4).normal(size=(5, 4))
    np.testing.assert_array_equal(model.log_likelihoods(x), again.log_likelihoods(x))


def test_statistics_of_one_gaussian_pdfs_equal_the_posterior_weighted_sums():
    """A one-Gaussian pdf's statistics are its frames' weighted sums, exactly."""
    from asr.gmm.diag_gmm import DiagGmm
    from asr.gmm.stats import GmmStats

    rng = np.random.default_rng(0)
    gauss_pdf = np.array([0, 1, 2, 3, 3, 3])           # pdfs 0-2: one Gaussian; pdf 3: three
    gmm = DiagGmm(rng.normal(size=(6, 4)), rng.uniform(0.5, 2.0, size=(6, 4)),
                  np.log([1, 1, 1, 0.2, 0.3, 0.5]), gauss_pdf, 4)
    feats = rng.normal(size=(200, 4)).astype(np.float32)
    frames, pdfs, weights = rng.integers(0, 200, 900), rng.integers(0, 4, 900), rng.random(900)
    stats = GmmStats(6, 4)
    stats.accumulate(gmm, feats, frames, pdfs, weights)
    x = feats.astype(np.float64)
    for p in range(3):
        k = pdfs == p
        assert stats.occ[p] == pytest.approx(weights[k].sum())
        np.testing.assert_allclose(stats.first[p], weights[k] @ x[frames[k]], rtol=1e-12)
        np.testing.assert_allclose(stats.second[p], weights[k] @ x[frames[k]] ** 2, rtol=1e-12)
    expected = sum(w * gmm.log_likelihoods(x[f:f + 1])[0, p]
                   for f, p, w in zip(frames, pdfs, weights))
    assert stats.log_likelihood == pytest.approx(expected, rel=1e-5)
    assert stats.frames == pytest.approx(weights.sum())


def test_statistics_share_each_frame_among_its_pdfs_gaussians_by_posterior():
    """Pdfs of 1 to 6 Gaussians, one far from the data: occupancy, first and second order
    sums (of the same or of other features) match a dense float64 reference."""
    from asr.gmm.stats import gaussian_statistics

    rng = np.random.default_rng(5)
    sizes = np.array([1, 6, 2, 1, 3, 5])
    gauss_pdf = np.repeat(np.arange(len(sizes)), sizes)
    g, dim = len(gauss_pdf), 3
    means = rng.normal(size=(g, dim))
    means[gauss_pdf == 4] += 30.0
    gmm = DiagGmm(means, rng.uniform(0.5, 2, (g, dim)), np.log(rng.dirichlet(np.ones(g))),
                  gauss_pdf, len(sizes))
    x, y = rng.normal(size=(50, dim)), rng.normal(size=(50, 2))
    pdfs, w = rng.integers(0, len(sizes), 50), rng.random(50)
    used, occ, first, second, loglik = gaussian_statistics(gmm, x, pdfs, w, y)
    dens = np.stack([gmm.log_weights[k] + multivariate_normal.logpdf(
        x, gmm.means[k], np.diag(gmm.variances[k])) for k in range(g)], axis=1)
    post = np.zeros((50, g))
    for t, p in enumerate(pdfs):
        mine = gauss_pdf == p
        post[t, mine] = w[t] * np.exp(dens[t, mine] - logsumexp(dens[t, mine]))
    assert used.tolist() == np.flatnonzero(np.isin(gauss_pdf, pdfs)).tolist()
    np.testing.assert_allclose(occ, post.sum(0)[used], rtol=1e-9)
    np.testing.assert_allclose(first, (post.T @ y)[used], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(second, (post.T @ y ** 2)[used], rtol=1e-9, atol=1e-12)
    expected = sum(w[t] * logsumexp(dens[t, gauss_pdf == p]) for t, p in enumerate(pdfs))
    assert loglik == pytest.approx(expected, rel=1e-9)


def test_a_subset_of_pdfs_scores_the_same_bits_as_the_restricted_call():
    gmm = _gmm(pdfs=5, per=3)
    x = np.random.default_rng(6).normal(size=(11, 4))
    chosen = np.array([3, 0, 4])
    subset = gmm.subset(chosen)
    np.testing.assert_array_equal(subset.log_likelihoods(x), gmm.log_likelihoods(x, pdfs=chosen))
    np.testing.assert_array_equal(subset.log_likelihoods(x, chunk=4),
                                  gmm.log_likelihoods(x)[:, chosen])
