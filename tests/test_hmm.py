"""Forward-backward, transition model and graphs: properties and a cross-check with hmmlearn."""
import numpy as np
import pytest
from hmmlearn.hmm import GaussianHMM

from asr.hmm import ContextTree, Topology, TransitionModel, forward_backward, training_graph
from asr.hmm.forward_backward import forward_backward_arcs
from asr.lexicon import Lexicon


@pytest.fixture
def lexicon():
    return Lexicon.from_entries([("NO", ["N", "OW"]), ("YES", ["Y", "EH", "S"])])


def _dense_hmm(seed=0, n=4, dim=3, frames=120):
    rng = np.random.default_rng(seed)
    hmm = GaussianHMM(n_components=n, covariance_type="diag", random_state=seed)
    hmm.startprob_ = rng.dirichlet(np.ones(n))
    hmm.transmat_ = rng.dirichlet(np.ones(n), size=n)
    hmm.means_ = rng.normal(size=(n, dim)) * 2
    hmm.covars_ = rng.uniform(0.5, 2.0, size=(n, dim))
    x, _ = hmm.sample(frames, random_state=seed)
    return hmm, x


def _arcs_of(hmm):
    n = hmm.n_components
    src, dst = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return src.ravel(), dst.ravel(), np.log(hmm.transmat_).ravel()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_backward_matches_hmmlearn(seed):
    hmm, x = _dense_hmm(seed)
    src, dst, w = _arcs_of(hmm)
    loglik = hmm._compute_log_likelihood(x)
    n = hmm.n_components
    post = forward_backward_arcs(loglik, np.arange(n), src, dst, w, np.log(hmm.startprob_),
                                 np.zeros(n))
    expected = hmm.score(x)
    assert post.log_likelihood == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(post.node_posteriors, hmm.predict_proba(x), atol=1e-6)


def test_posteriors_sum_to_one_and_counts_balance(lexicon):
    topo = Topology(len(lexicon.phones), 3, 5)
    tm, tree = TransitionModel(topo), ContextTree.monophone(topo)
    graph = training_graph(["YES", "NO", "YES"], lexicon, tree, tm)
    rng = np.random.default_rng(0)
    loglik = rng.normal(size=(80, tree.num_pdfs)) * 3
    post = forward_backward(graph, tm, loglik)
    assert np.isfinite(post.log_likelihood)
    np.testing.assert_allclose(post.node_posteriors.sum(axis=1), 1.0, atol=1e-9)
    # Every frame but the last leaves its node by exactly one arc; the last by the exit.
    assert post.arc_counts.sum() == pytest.approx(79.0, rel=1e-9)
    assert post.final_counts.sum() == pytest.approx(1.0, rel=1e-9)
    counts = post.transition_counts(graph, 2 * tm.num_tstates)
    assert counts.sum() == pytest.approx(80.0, rel=1e-9)


def test_too_short_utterance_has_no_path(lexicon):
    topo = Topology(len(lexicon.phones), 3, 5)
    tm, tree = TransitionModel(topo), ContextTree.monophone(topo)
    graph = training_graph(["YES", "NO"], lexicon, tree, tm)
    post = forward_backward(graph, tm, np.zeros((10, tree.num_pdfs)))  # needs 15 frames
    assert post.log_likelihood == -np.inf


def test_transition_update_from_counts():
    tm = TransitionModel(Topology(2, 3, 3))
    counts = np.zeros(2 * tm.num_tstates)
    counts[0], counts[1] = 9.0, 1.0
    tm.update(counts)
    np.testing.assert_allclose(np.exp(tm.log_probs[0]), [0.9, 0.1])
    np.testing.assert_allclose(np.exp(tm.log_probs[1]), [0.75, 0.25])  # unseen: unchanged


def test_training_graph_optional_silence(lexicon):
    topo = Topology(len(lexicon.phones), 3, 5)
    tm, tree = TransitionModel(topo), ContextTree.monophone(topo)
    graph = training_graph(["NO"], lexicon, tree, tm, silence_prob=0.5)
    # Two silences (5 states each) and the word (2 phones x 3 states).
    assert graph.num_nodes == 16
    starts = np.flatnonzero(np.isfinite(graph.start))
    finals = np.flatnonzero(graph.final_tid >= 0)
    assert len(starts) == 2 and len(finals) == 2
    assert graph.word[starts].tolist().count(lexicon.word_index["NO"]) == 1
