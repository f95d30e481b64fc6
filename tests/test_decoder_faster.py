"""The token-passing decoder: exact without pruning, consistent with pruning, equal to Kaldi's."""
import numpy as np
import pytest

from asr.decoder.faster import FasterDecoder, SearchConfig, align, decode
from asr.graph import FstArrays

EXACT = SearchConfig(beam=np.inf, min_active=0, acoustic_scale=0.7)


def random_graph(rng, num_states=6, num_arcs=14, num_labels=5, num_words=4, eps=0.3):
    """A random WFST with epsilon arcs (cycles included, all of positive cost), several
    final states and, often, states that cannot be reached."""
    arcs = []
    for _ in range(num_arcs):
        il = 0 if rng.random() < eps else int(rng.integers(1, num_labels))
        ol = int(rng.integers(1, num_words + 1)) if rng.random() < 0.4 else 0
        arcs.append((int(rng.integers(num_states)), int(rng.integers(num_states)), il, ol,
                     float(rng.uniform(0.05, 2.0))))
    finals = rng.choice(num_states, size=min(num_states, int(rng.integers(1, 4))),
                        replace=False)
    final = {int(s): float(rng.uniform(0.0, 1.5)) for s in finals}
    return FstArrays.from_arcs(num_states, int(rng.integers(num_states)), final, arcs)


def exact_best(graph, label_pdf, loglik, scale):
    """Exact DP over (frame, state) with the epsilon closure relaxed to a fixed point.

    Returns (cost, words, ilabels, reached_final); cost is inf when no path consumes all frames.
    """
    S = graph.num_states
    src = np.repeat(np.arange(S), np.diff(graph.arc_offsets))
    arcs = list(zip(src.tolist(), graph.nextstate.tolist(), graph.ilabel.tolist(),
                    graph.olabel.tolist(), graph.cost.astype(np.float64).tolist()))

    def closure(dist, back, t):
        changed = True
        while changed:
            changed = False
            for a, (s, d, il, _, c) in enumerate(arcs):
                if il == 0 and dist[s] + c < dist[d]:
                    dist[d], back[d] = dist[s] + c, (t, s, a)
                    changed = True

    backs = []                   # backs[t + 1][state]: (frame of the predecessor, its state, arc)
    dist = [np.inf] * S
    back = [(-1, -1, -1)] * S
    dist[graph.start] = 0.0
    for t in range(-1, loglik.shape[0]):
        if t >= 0:
            prev = dist
            dist, back = [np.inf] * S, [(-1, -1, -1)] * S
            for a, (s, d, il, _, c) in enumerate(arcs):
                if il > 0:
                    v = prev[s] + c - scale * float(loglik[t, label_pdf[il]])
                    if v < dist[d]:
                        dist[d], back[d] = v, (t - 1, s, a)
        closure(dist, back, t)
        backs.append(back)
    total = [dist[s] + graph.final_cost[s] for s in range(S)]
    reached = min(total) < np.inf
    if not reached:
        total = dist
    end = int(np.argmin(total))
    if not total[end] < np.inf:
        return np.inf, [], [], False
    words, ilabels = [], []
    t, s = loglik.shape[0] - 1, end
    while True:
        pt, ps, a = backs[t + 1][s]
        if a < 0:
            break
        if arcs[a][3]:
            words.append(arcs[a][3])
        if arcs[a][2]:
            ilabels.append(arcs[a][2])
        t, s = pt, ps
    return float(total[end]), words[::-1], ilabels[::-1], reached


def path_cost(graph, label_pdf, loglik, scale, result):
    """Recompute the cost of a reported path from the graph and the scores; check it is a
    path from the start state that consumes every frame."""
    state, t, cost = graph.start, 0, 0.0
    for a in result.arcs:
        assert graph.arc_offsets[state] <= a < graph.arc_offsets[state + 1]
        cost += float(graph.cost[a])
        if graph.ilabel[a] > 0:
            cost -= scale * float(loglik[t, label_pdf[graph.ilabel[a]]])
            t += 1
        state = graph.nextstate[a]
    assert t == loglik.shape[0]
    if result.reached_final:
        cost += float(graph.final_cost[state])
    return cost


def random_problem(seed, T=None):
    rng = np.random.default_rng(seed)
    graph = random_graph(rng, num_states=int(rng.integers(2, 9)), num_arcs=int(rng.integers(4, 25)))
    label_pdf = np.concatenate([[-1], rng.integers(0, 3, size=4)])
    loglik = rng.normal(size=(int(rng.integers(0, 7)) if T is None else T, 3)).astype(np.float32)
    return graph, label_pdf, loglik


def test_without_pruning_the_search_is_exact():
    checked = 0
    for seed in range(400):
        graph, label_pdf, loglik = random_problem(seed)
        cost, words, ilabels, reached = exact_best(graph, label_pdf, loglik, EXACT.acoustic_scale)
        result = decode(graph, label_pdf, loglik, EXACT)
        if cost == np.inf:
            assert result.cost == np.inf and len(result.words) == 0
            continue
        checked += 1
        assert result.cost == pytest.approx(cost, abs=1e-4), seed
        assert result.reached_final == reached, seed
        assert result.words.tolist() == words, seed
        assert result.ilabels.tolist() == ilabels, seed
        assert result.acoustic_cost + result.graph_cost == pytest.approx(cost, abs=1e-4)
    assert checked > 150


def test_with_pruning_the_cost_is_never_better_than_exact_and_is_the_paths_cost():
    for seed in range(300):
        graph, label_pdf, loglik = random_problem(seed, T=8)
        exact, *_ = exact_best(graph, label_pdf, loglik, 1.0)
        for cfg in (SearchConfig(beam=0.5, min_active=0, acoustic_scale=1.0),
                    SearchConfig(beam=2.0, max_active=2, min_active=1, acoustic_scale=1.0),
                    SearchConfig(beam=3.0, word_end_beam=0.3, acoustic_scale=1.0)):
            result = decode(graph, label_pdf, loglik, cfg)
            if result.cost == np.inf:
                continue
            if result.reached_final:
                assert result.cost >= exact - 1e-4, seed
            assert path_cost(graph, label_pdf, loglik, 1.0, result) == pytest.approx(
                result.cost, abs=1e-4)


def test_no_final_state_reached_takes_the_best_token_and_says_so():
    # 0 -a-> 1 (final) -b-> 2 ; two frames can only end in state 2, which is not final
    g = FstArrays.from_arcs(3, 0, {1: 0.0}, [(0, 1, 1, 5, 1.0), (1, 2, 1, 6, 1.0)])
    result = decode(g, np.array([-1, 0]), np.zeros((2, 1), np.float32), SearchConfig())
    assert not result.reached_final and result.words.tolist() == [5, 6]
    assert result.cost == pytest.approx(2.0)
    assert align(g, np.array([-1, 0]), np.zeros((2, 1), np.float32)) is None
    assert align(g, np.array([-1, 0]), np.zeros((1, 1), np.float32)).tolist() == [1]


def test_traceback_memory_follows_the_active_tokens_not_the_frames():
    rng = np.random.default_rng(0)
    graph, label_pdf, _ = word_loop(rng, num_words=20)
    long = rng.normal(size=(20000, int(label_pdf.max()) + 1)).astype(np.float32)
    result = FasterDecoder(graph, label_pdf, SearchConfig(beam=8.0)).decode(long)
    assert len(result.ilabels) == 20000
    # random scores keep nearly every state active: 20000 frames x ~140 survivors would be
    # 2.8 M tokens without compaction; the store keeps those still on a surviving path
    assert result.num_tokens < 2 ** 21 < 20000 * graph.num_states


def word_loop(rng, num_words=30, num_pdfs=40, silence=True):
    """A decoding graph shaped like a small HCLG: a loop state, one chain of 3-state HMMs per
    word (self-loops, word label on the entering arc), epsilon exits back to the loop state.

    Returns (graph, label_pdf, word sequence planted in ``planted_scores``).
    """
    arcs, label_pdf = [], [-1]
    n = 1

    def label(pdf):
        label_pdf.append(pdf)
        return len(label_pdf) - 1

    words = list(range(1, num_words + 1)) + ([num_words + 1] if silence else [])
    for w in words:
        states = 3 * int(rng.integers(1, 4))
        pdfs = rng.integers(0, num_pdfs, size=states)
        prev = 0
        for i in range(states):
            arcs.append((prev, n, label(int(pdfs[i])), w if i == 0 else 0,
                         float(np.log(num_words)) if i == 0 else 0.69))
            arcs.append((n, n, label(int(pdfs[i])), 0, 0.69))
            prev = n
            n += 1
        arcs.append((prev, 0, 0, 0, 0.5))
    return FstArrays.from_arcs(n, 0, {0: 0.0}, arcs), np.array(label_pdf), words


def planted_scores(rng, graph, label_pdf, T, noise=1.0):
    """Scores that favour one random path through ``graph``: its pdfs get a bonus."""
    num_pdfs = int(label_pdf.max()) + 1
    loglik = rng.normal(scale=noise, size=(T, num_pdfs)).astype(np.float32) - 5.0
    state, t = graph.start, 0
    while t < T:
        a = int(rng.integers(graph.arc_offsets[state], graph.arc_offsets[state + 1]))
        if graph.ilabel[a]:
            loglik[t, label_pdf[graph.ilabel[a]]] += 4.0
            t += 1
        state = graph.nextstate[a]
    return loglik


def kaldi_best(fst, label_pdf, loglik, cfg):
    """Kaldi's FasterDecoder on the same graph and scores: (words, cost, reached_final)."""
    kaldi_decoder = pytest.importorskip("kaldi_decoder")
    import kaldifst

    scaled = np.ascontiguousarray(cfg.acoustic_scale * loglik[:, label_pdf[1:]], np.float32)
    opts = kaldi_decoder.FasterDecoderOptions(beam=cfg.beam, max_active=cfg.max_active,
                                              min_active=cfg.min_active,
                                              beam_delta=cfg.beam_delta)
    dec = kaldi_decoder.FasterDecoder(fst, opts)
    dec.decode(kaldi_decoder.DecodableCtc(scaled))
    ok, lattice = dec.get_best_path()
    if not ok:
        return None, np.inf, False
    _, _, olabels, weight = kaldifst.get_linear_symbol_sequence(lattice)
    return list(olabels), weight.value1 + weight.value2, dec.reached_final()


@pytest.mark.parametrize("cfg", [SearchConfig(beam=4.0, acoustic_scale=1.0),
                                 SearchConfig(beam=2.0, max_active=3, min_active=1,
                                              acoustic_scale=1.0)])
def test_equal_to_kaldis_faster_decoder_on_random_graphs(cfg):
    pytest.importorskip("kaldi_decoder")
    same = total = 0
    for seed in range(300):
        graph, label_pdf, loglik = random_problem(seed, T=int(seed % 6) + 1)
        ours = decode(graph, label_pdf, loglik, cfg)
        words, cost, reached = kaldi_best(graph.to_kaldifst(), label_pdf, loglik, cfg)
        if words is None:
            assert ours.cost == np.inf
            continue
        total += 1
        same += (ours.words.tolist() == words and abs(ours.cost - cost) < 1e-3
                 and ours.reached_final == reached)
    assert same >= 0.99 * total and total > 100


def test_equal_to_kaldis_faster_decoder_on_a_word_loop():
    pytest.importorskip("kaldi_decoder")
    rng = np.random.default_rng(1)
    graph, label_pdf, _ = word_loop(rng)
    fst = graph.to_kaldifst()
    for cfg in (SearchConfig(beam=10.0), SearchConfig(beam=6.0, max_active=50)):
        decoder = FasterDecoder(graph, label_pdf, cfg)
        for _ in range(10):
            loglik = planted_scores(rng, graph, label_pdf, T=int(rng.integers(50, 300)))
            ours = decoder.decode(loglik)
            words, cost, reached = kaldi_best(fst, label_pdf, loglik, cfg)
            assert ours.words.tolist() == words
            assert ours.cost == pytest.approx(cost, abs=1e-3)
            assert ours.reached_final == reached
