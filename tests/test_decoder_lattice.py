"""Word lattices from the token-passing decoder: the 1-best inside, pruning by the lattice beam,
best paths at other acoustic scales, and n-gram LM rescoring."""
import functools

import numpy as np
import pytest

import asr.decoder.faster as faster
from asr.decoder.faster import FasterDecoder, SearchConfig
from asr.decoder.lattice import Lattice, arc_costs, best_path, best_path_arcs
from test_decoder_faster import exact_best, planted_scores, random_problem, word_loop


def eps_cyclic(graph):
    """Whether the graph's epsilon arcs close a cycle."""
    s = graph.num_states
    src = np.repeat(np.arange(s), np.diff(graph.arc_offsets))
    eps = graph.ilabel == 0
    reach = np.zeros((s, s), dtype=bool)
    reach[src[eps], graph.nextstate[eps]] = True
    for k in range(s):
        reach |= reach[:, [k]] & reach[[k], :]
    return bool(np.diag(reach).any())


def forward_backward(lat, scale):
    """(alpha (N,), beta (N,)) shortest distances from the start and to a final state."""
    cost = arc_costs(lat, scale)
    alpha = np.full(lat.num_states, np.inf)
    alpha[0] = 0.0
    for e in range(lat.num_arcs):
        alpha[lat.dst[e]] = min(alpha[lat.dst[e]], alpha[lat.src[e]] + cost[e])
    beta = lat.final_cost.astype(np.float64).copy()
    for e in range(lat.num_arcs - 1, -1, -1):    # arcs sorted by (topologically sorted) src
        beta[lat.src[e]] = min(beta[lat.src[e]], cost[e] + beta[lat.dst[e]])
    return alpha, beta, cost


CONFIGS = [SearchConfig(beam=3.0, acoustic_scale=1.0, lattice_beam=2.0),
           SearchConfig(beam=2.0, max_active=2, min_active=1, acoustic_scale=1.0,
                        lattice_beam=5.0),
           SearchConfig(beam=3.0, word_end_beam=0.3, acoustic_scale=0.5, lattice_beam=0.5)]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_the_lattice_holds_the_1best_and_only_paths_within_the_lattice_beam(cfg):
    checked = 0
    for seed in range(200):
        graph, label_pdf, loglik = random_problem(seed, T=int(seed % 9))
        decoder = FasterDecoder(graph, label_pdf, cfg)
        plain = decoder.decode(loglik)
        result, lat = decoder.decode_lattice(loglik)
        lat.check()
        assert result.words.tolist() == plain.words.tolist() and result.cost == plain.cost
        assert result.arcs.tolist() == plain.arcs.tolist()
        assert result.reached_final == plain.reached_final
        words, cost = best_path(lat, cfg.acoustic_scale)
        if plain.cost == np.inf:
            assert cost == np.inf
            continue
        checked += 1
        assert words.tolist() == plain.words.tolist(), seed
        assert cost == pytest.approx(plain.cost, abs=1e-3), seed
        assert np.all(lat.dst > lat.src) and lat.frames[0] == 0
        assert np.all(lat.frames[lat.dst] - lat.frames[lat.src] == (lat.ilabel > 0))
        # every arc and state lies on a complete path within the lattice beam of the best
        alpha, beta, arc_cost = forward_backward(lat, cfg.acoustic_scale)
        assert np.all(alpha + beta <= cost + cfg.lattice_beam + 1e-6), seed
        through = alpha[lat.src] + arc_cost + beta[lat.dst]
        assert np.all(through <= cost + cfg.lattice_beam + 1e-6), seed
    assert checked > 80


def test_a_wide_lattice_holds_the_best_path_at_any_acoustic_scale():
    """Without pruning the lattice is the whole trellis: its best path at another scale is
    the exact re-decode's, except where an epsilon cycle of the graph had to be cut."""
    cfg = SearchConfig(beam=np.inf, min_active=0, acoustic_scale=0.7, lattice_beam=np.inf)
    same = total = 0
    for seed in range(300):
        graph, label_pdf, loglik = random_problem(seed)
        result, lat = FasterDecoder(graph, label_pdf, cfg).decode_lattice(loglik)
        for scale in (0.2, 2.5):
            cost, words, _, _ = exact_best(graph, label_pdf, loglik, scale)
            if cost == np.inf:
                continue
            ours, our_cost = best_path(lat, scale)
            ok = abs(our_cost - cost) < 1e-4
            if not eps_cyclic(graph):
                assert ok, (seed, scale)
                assert ours.tolist() == words, (seed, scale)
            total += 1
            same += ok
    assert same >= 0.97 * total and total > 300


def test_word_penalty_and_acoustic_scale_change_the_best_path_as_defined():
    rng = np.random.default_rng(3)
    graph, label_pdf, _ = word_loop(rng, num_words=10)
    loglik = planted_scores(rng, graph, label_pdf, T=120)
    _, lat = FasterDecoder(graph, label_pdf, SearchConfig(beam=12.0, lattice_beam=10.0)
                           ).decode_lattice(loglik)
    for scale, penalty in ((0.1, 0.0), (0.05, 2.0), (0.3, -1.0)):
        arcs, cost = best_path_arcs(lat, scale, penalty)
        words = lat.word[arcs]
        expected = (lat.graph_cost[arcs].sum() + scale * lat.acoustic_cost[arcs].astype(
            np.float64).sum() + penalty * np.count_nonzero(words)
            + lat.final_cost[lat.dst[arcs[-1]]])
        assert cost == pytest.approx(expected, abs=1e-6)
        assert lat.frames[lat.dst[arcs[-1]]] == 120
    few = best_path(lat, 0.1, word_penalty=20.0)[0]
    many = best_path(lat, 0.1, word_penalty=-20.0)[0]
    assert len(few) <= len(many)


def test_periodic_pruning_keeps_exactly_what_pruning_at_the_end_keeps(monkeypatch):
    rng = np.random.default_rng(1)
    graph, label_pdf, _ = word_loop(rng, num_words=15)
    decoder = FasterDecoder(graph, label_pdf, SearchConfig(beam=10.0, lattice_beam=6.0))
    for _ in range(3):
        loglik = planted_scores(rng, graph, label_pdf, T=int(rng.integers(60, 200)))
        monkeypatch.setattr(faster, "PRUNE_INTERVAL", 25)
        result, periodic = decoder.decode_lattice(loglik)
        monkeypatch.setattr(faster, "PRUNE_INTERVAL", 10 ** 6)
        _, at_end = decoder.decode_lattice(loglik)
        for name in ("frames", "final_cost", "src", "dst", "word", "graph_cost",
                     "acoustic_cost"):
            np.testing.assert_array_equal(getattr(periodic, name), getattr(at_end, name))
        assert periodic.num_arcs > len(result.arcs)        # more than the 1-best
        assert best_path(periodic, 0.1)[0].tolist() == result.words.tolist()


def test_a_zero_lattice_beam_keeps_the_best_paths_alone_and_a_wider_one_more():
    rng = np.random.default_rng(2)
    graph, label_pdf, _ = word_loop(rng, num_words=8)
    loglik = planted_scores(rng, graph, label_pdf, T=80)
    sizes = []
    for lattice_beam in (0.0, 2.0, 8.0):
        result, lat = FasterDecoder(graph, label_pdf, SearchConfig(
            beam=12.0, lattice_beam=lattice_beam)).decode_lattice(loglik)
        sizes.append(lat.num_arcs)
        if lattice_beam == 0.0:     # the 1-best and paths of exactly its cost (ties)
            alpha, beta, cost = forward_backward(lat, 0.1)
            through = alpha[lat.src] + cost + beta[lat.dst]
            np.testing.assert_allclose(through, result.cost, atol=1e-9)
            assert lat.num_arcs >= len(result.arcs)
    assert sizes[0] < sizes[1] < sizes[2]


def test_lattices_save_and_load_as_npz(tmp_path):
    rng = np.random.default_rng(4)
    graph, label_pdf, _ = word_loop(rng, num_words=5)
    loglik = planted_scores(rng, graph, label_pdf, T=30)
    _, lat = FasterDecoder(graph, label_pdf, SearchConfig()).decode_lattice(loglik)
    lat.save(tmp_path / "lat.npz")
    back = Lattice.load(tmp_path / "lat.npz")
    assert back.num_arcs == lat.num_arcs
    np.testing.assert_array_equal(back.graph_cost, lat.graph_cost)
    assert best_path(back, 0.1)[1] == best_path(lat, 0.1)[1]


def test_an_empty_graph_or_no_survivor_gives_an_empty_lattice():
    from asr.graph import FstArrays

    g = FstArrays.from_arcs(2, 0, {1: 0.0}, [(0, 1, 1, 5, 1.0)])
    result, lat = FasterDecoder(g, np.array([-1, 0])).decode_lattice(np.zeros((2, 1), np.float32))
    assert result.cost == np.inf and lat.num_arcs == 0
    assert best_path(lat, 0.1)[1] == np.inf


# ----------------------------------------------------------------------------- rescoring

def sentences(rng, num_words, n, bias):
    """Random sentences over words ``w1..w{num_words}`` where word k tends to follow k - bias."""
    out = []
    for _ in range(n):
        words = [int(rng.integers(1, num_words + 1))]
        for _ in range(int(rng.integers(1, 6))):
            follow = (words[-1] + bias - 1) % num_words + 1
            words.append(follow if rng.random() < 0.6 else int(rng.integers(1, num_words + 1)))
        out.append([f"w{w}" for w in words])
    return out


def lm_cost(lm, words):
    return -np.log(10.0) * lm.sentence_log_prob(list(words))


def direct_best(lat, scale, old, new, symbols, lm_scale=1.0):
    """Best total cost over the lattice's word sequences with the LM costs swapped: a DP whose
    state is (lattice state, last ``order - 1`` words), scored word by word with
    ``NgramLM.log_prob`` (no back-off state merging)."""
    keep = max(old.order, new.order) - 1
    ln10 = np.log(10.0)

    @functools.lru_cache(maxsize=None)
    def delta(hist, word):
        return lm_scale * ln10 * (old.log_prob(word, hist) - new.log_prob(word, hist))

    cost = arc_costs(lat, scale)
    at = [dict() for _ in range(lat.num_states)]
    at[0][("<s>",)] = 0.0
    for e in range(lat.num_arcs):
        for hist, c in at[lat.src[e]].items():
            c, h = c + cost[e], hist
            if lat.word[e]:
                c += delta(hist, symbols[lat.word[e]])
                h = (hist + (symbols[lat.word[e]],))[-keep:]
            if c < at[lat.dst[e]].get(h, np.inf):
                at[lat.dst[e]][h] = c
    best = np.inf
    for s in np.flatnonzero(np.isfinite(lat.final_cost)):
        for hist, c in at[s].items():
            best = min(best, c + lat.final_cost[s] + delta(hist, "</s>"))
    return best


@pytest.fixture(scope="module")
def loop_and_lms():
    from asr.lm import train_kneser_ney

    rng = np.random.default_rng(5)
    graph, label_pdf, words = word_loop(rng, num_words=6, silence=False)
    symbols = ["<eps>"] + [f"w{w}" for w in words]
    old = train_kneser_ney(sentences(rng, 6, 300, bias=1), order=2)
    new = train_kneser_ney(sentences(rng, 6, 300, bias=2), order=3)
    return graph, label_pdf, symbols, old, new


def test_rescoring_with_the_same_lm_changes_nothing(loop_and_lms):
    from asr.decoder.lattice import rescore

    graph, label_pdf, symbols, old, new = loop_and_lms
    rng = np.random.default_rng(6)
    decoder = FasterDecoder(graph, label_pdf, SearchConfig(beam=10.0, lattice_beam=5.0))
    for _ in range(4):
        loglik = planted_scores(rng, graph, label_pdf, T=int(rng.integers(40, 120)))
        _, lat = decoder.decode_lattice(loglik)
        same = rescore(lat, new, new, words=symbols)
        same.check()
        for scale in (0.1, 0.05):
            words, cost = best_path(lat, scale)
            words2, cost2 = best_path(same, scale)
            assert words2.tolist() == words.tolist() and cost2 == pytest.approx(cost, abs=1e-6)


def test_rescoring_equals_swapping_the_lm_costs_of_every_word_sequence(loop_and_lms):
    from asr.decoder.lattice import rescore

    graph, label_pdf, symbols, old, new = loop_and_lms
    rng = np.random.default_rng(7)
    decoder = FasterDecoder(graph, label_pdf, SearchConfig(beam=8.0, lattice_beam=5.0))
    changed = 0
    for _ in range(5):
        loglik = planted_scores(rng, graph, label_pdf, T=int(rng.integers(20, 50)), noise=1.5)
        _, lat = decoder.decode_lattice(loglik)
        for lm_scale in (1.0, 0.5):
            out = rescore(lat, old, new, lm_scale, words=symbols)
            out.check()
            assert out.num_states >= lat.num_states
            expected = direct_best(lat, 0.1, old, new, symbols, lm_scale)
            words, cost = best_path(out, 0.1)
            assert cost == pytest.approx(expected, abs=1e-6)
            changed += words.tolist() != best_path(lat, 0.1)[0].tolist()
    assert changed > 0


def test_a_4gram_flips_the_best_path_that_a_trigram_keeps():
    """Two hypotheses that differ in their last word: "A B C D" and "A B C E". In the new
    text "B C" is mostly followed by D, but "A B C" always by E: only the 4-gram sees it."""
    from asr.decoder.lattice import rescore
    from asr.lm import train_kneser_ney

    symbols = ["<eps>", "A", "B", "C", "D", "E", "X"]
    old = train_kneser_ney([s.split() for s in ["A B C D"] * 5 + ["A B C E"] * 4], order=3)
    text = [s.split() for s in ["A B C E"] * 5 + ["X B C D"] * 20 + ["X B C E"] * 2]
    new3, new4 = train_kneser_ney(text, order=3), train_kneser_ney(text, order=4)
    path_d, path_e = lm_cost(old, "A B C D".split()), lm_cost(old, "A B C E".split())
    assert path_d < path_e
    # 0 -A-> 1 -B-> 2 -C-> 3 -D-> 4, 3 -E-> 5; G's cost of each sentence on its last arc
    lat = Lattice(np.array([0, 1, 2, 3, 4, 4], np.int32), np.array([np.inf] * 4 + [0.0, 0.0]),
                  np.array([0, 1, 2, 3, 3], np.int32), np.array([1, 2, 3, 4, 5], np.int32),
                  np.array([1, 2, 3, 4, 5], np.int32), np.array([1, 1, 1, 1, 1], np.int32),
                  np.array([0.0, 0.0, 0.0, path_d, path_e]),
                  np.array([1.0, 1.0, 1.0, 1.0, 1.0], np.float32))
    lat.check()
    assert best_path(lat, 0.1)[0].tolist() == [1, 2, 3, 4]
    assert best_path(rescore(lat, old, old, words=symbols), 0.1)[0].tolist() == [1, 2, 3, 4]
    assert best_path(rescore(lat, old, new3, words=symbols), 0.1)[0].tolist() == [1, 2, 3, 4]
    words, cost = best_path(rescore(lat, old, new4, words=symbols), 0.1)
    assert words.tolist() == [1, 2, 3, 5]
    assert cost == pytest.approx(lm_cost(new4, "A B C E".split()) + 0.4, abs=1e-6)
    with pytest.raises(ValueError, match="words"):
        rescore(lat, old, new4)
