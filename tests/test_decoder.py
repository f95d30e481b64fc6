"""The shared decoder: planted paths, exhaustive search, LM weights, ARPA, forced alignment."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from asr.decoder import (Decoder, DecoderConfig, align, decoding_graph, read_arpa,
                         single_word, viterbi, word_loop)
from asr.errors import DataError
from asr.hmm import ContextTree, Topology, TransitionModel, training_graph
from asr.lexicon import Lexicon

WORDS = [("ALPHA", ["AA", "L"]), ("BRAVO", ["B", "R", "AO"]), ("DELTA", ["D", "EH"]),
         ("ECHO", ["EY", "K", "OW"])]


def _setup():
    lex = Lexicon.from_entries(WORDS)
    topo = Topology(len(lex.phones), 3, 3)
    return lex, TransitionModel(topo), ContextTree.monophone(topo)


def _planted(lex, tree, tm, words, rng, silence=True):
    """Frames whose best-scoring pdf follows the words' states, 2-6 frames per state."""
    pdfs = []
    for i, w in enumerate(words):
        if silence and i:
            pdfs += [tree.pdf(-1, 0, -1, s) for s in range(tm.topology.num_states(0))
                     for _ in range(rng.integers(2, 7))]
        pron = lex.prons[w][0]
        for k, p in enumerate(pron):
            left = pron[k - 1] if k else -1
            right = pron[k + 1] if k + 1 < len(pron) else -1
            pdfs += [tree.pdf(left, p, right, s) for s in range(tm.topology.num_states(p))
                     for _ in range(rng.integers(2, 7))]
    loglik = np.full((len(pdfs), tree.num_pdfs), -30.0)
    loglik[np.arange(len(pdfs)), pdfs] = 0.0
    return loglik + rng.normal(scale=0.5, size=loglik.shape), np.array(pdfs)


@pytest.mark.parametrize("seed", range(5))
def test_decoder_recovers_planted_path(seed):
    lex, tm, tree = _setup()
    rng = np.random.default_rng(seed)
    words = [lex.words[i] for i in rng.integers(0, len(lex.words), size=rng.integers(1, 8))]
    loglik, pdfs = _planted(lex, tree, tm, words, rng, silence=bool(seed % 2))
    graph = decoding_graph(word_loop(lex.words), lex, tree, tm)
    result = Decoder(graph, tm, lex.words, DecoderConfig(acoustic_scale=1.0)).decode(loglik)
    assert result.words == words
    np.testing.assert_array_equal(graph.pdf[result.path], pdfs)


def test_single_word_grammar_outputs_one_word():
    lex, tm, tree = _setup()
    rng = np.random.default_rng(3)
    loglik, _ = _planted(lex, tree, tm, ["BRAVO", "ECHO"], rng)
    graph = decoding_graph(single_word(lex.words), lex, tree, tm)
    result = Decoder(graph, tm, lex.words, DecoderConfig(acoustic_scale=1.0)).decode(loglik)
    assert len(result.words) == 1


def test_forced_alignment_follows_transcript():
    lex, tm, tree = _setup()
    rng = np.random.default_rng(7)
    words = ["DELTA", "ALPHA", "ECHO"]
    loglik, pdfs = _planted(lex, tree, tm, words, rng)
    graph = training_graph(words, lex, tree, tm)
    path = align(graph, tm, loglik, acoustic_scale=1.0)
    np.testing.assert_array_equal(graph.pdf[path], pdfs)
    assert graph.words_of(path) == [lex.word_index[w] for w in words]
    assert align(graph, tm, loglik[:5], acoustic_scale=1.0) is None  # too short


def test_word_penalty_controls_insertions():
    lex, tm, tree = _setup()
    rng = np.random.default_rng(0)
    loglik, _ = _planted(lex, tree, tm, ["ALPHA"] * 4, rng, silence=False)
    graph = decoding_graph(word_loop(lex.words), lex, tree, tm)
    few = Decoder(graph, tm, lex.words, DecoderConfig(acoustic_scale=1.0, word_penalty=-1e4,
                                                          beam=1e9))
    assert len(few.decode(loglik).words) == 1


def test_read_arpa_bigram(tmp_path):
    arpa = tmp_path / "lm.arpa"
    arpa.write_text("\\data\\\nngram 1=4\nngram 2=2\n\n\\1-grams:\n-1.0 </s>\n-99 <s> -0.5\n"
                    "-0.3 ALPHA -0.2\n-0.6 BRAVO\n\n\\2-grams:\n-0.1 <s> ALPHA\n"
                    "-0.2 ALPHA BRAVO\n\n\\end\\\n")
    g = read_arpa(arpa, ["ALPHA", "BRAVO"])
    ln10 = np.log(10)
    assert g.log_probs[0, 0] == pytest.approx(-0.1 * ln10)            # P(ALPHA | <s>)
    assert g.log_probs[1, 1] == pytest.approx(-0.2 * ln10)            # P(BRAVO | ALPHA)
    assert g.log_probs[0, 1] == pytest.approx((-0.5 - 0.6) * ln10)    # backed off
    assert g.log_probs[1, 2] == pytest.approx((-0.2 - 1.0) * ln10)    # P(</s> | ALPHA)


@pytest.mark.parametrize("text, line", [
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n-0.5\n\\end\\\n", 5),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\nx ALPHA\n\\end\\\n", 5),
    ("\\data\\\nngram one\n", 2),
])
def test_read_arpa_errors_name_file_and_line(tmp_path, text, line):
    arpa = tmp_path / "bad.arpa"
    arpa.write_text(text)
    with pytest.raises(DataError) as err:
        read_arpa(arpa, ["ALPHA"])
    assert f"bad.arpa:{line}:" in str(err.value)


# --- the beam search against exhaustive search --------------------------------------------

EXAMPLES = settings(max_examples=300, deadline=None, derandomize=True, database=None)


def _random_graph(rng, num_nodes, num_pdfs):
    """Random arcs (self-loops and parallel arcs included), weights, starts and finals;
    some starts and finals are impossible (-inf), so some graphs have no path at all."""
    num_arcs = int(rng.integers(1, 3 * num_nodes + 1))
    src = rng.integers(0, num_nodes, num_arcs).astype(np.int32)
    dst = rng.integers(0, num_nodes, num_arcs).astype(np.int32)
    w = rng.normal(-1.0, 2.0, num_arcs)
    start = np.where(rng.random(num_nodes) < 0.6, rng.normal(0.0, 2.0, num_nodes), -np.inf)
    final = np.where(rng.random(num_nodes) < 0.6, rng.normal(0.0, 2.0, num_nodes), -np.inf)
    pdf = rng.integers(0, num_pdfs, num_nodes).astype(np.int32)
    return pdf, src, dst, w, start, final


def _path_scores(paths, loglik, pdf, src, dst, w, start, final):
    """Exact score of each node path: paths (K, T) -> (K,), -inf where a step has no arc."""
    n = len(pdf)
    best_arc = np.full((n, n), -np.inf)
    np.maximum.at(best_arc, (src, dst), w)          # parallel arcs: the search takes the best
    frames = np.arange(paths.shape[1])
    return (start[paths[:, 0]] + final[paths[:, -1]] + loglik[frames, pdf[paths]].sum(1)
            + best_arc[paths[:, :-1], paths[:, 1:]].sum(1))


@EXAMPLES
@given(seed=st.integers(0, 2**32 - 1), num_nodes=st.integers(1, 5), frames=st.integers(1, 6),
       num_pdfs=st.integers(1, 4), beam=st.floats(0.0, 8.0))
def test_beam_search_matches_exhaustive_search(seed, num_nodes, frames, num_pdfs, beam):
    rng = np.random.default_rng(seed)
    graph = _random_graph(rng, num_nodes, num_pdfs)
    loglik = rng.normal(-2.0, 2.0, size=(frames, num_pdfs))
    paths = np.array(list(itertools.product(range(num_nodes), repeat=frames)), dtype=np.int64)
    scores = _path_scores(paths, loglik, *graph)
    order = np.argsort(scores)[::-1]
    exact = scores[order[0]]

    score, path = viterbi(loglik, *graph)                     # no beam: exact
    if exact == -np.inf:
        assert score == -np.inf and np.all(path == -1)
    else:
        assert score == pytest.approx(exact, rel=1e-12, abs=1e-9)
        assert _path_scores(path[None].astype(np.int64), loglik, *graph)[0] == \
            pytest.approx(score, rel=1e-12, abs=1e-9)
        if len(scores) == 1 or scores[order[1]] < exact - 1e-6:   # a unique best path
            np.testing.assert_array_equal(path, paths[order[0]])

    pruned_score, pruned = viterbi(loglik, *graph, beam=beam)     # pruning never gains
    assert pruned_score <= exact + 1e-9
    if pruned_score > -np.inf:
        assert np.all(pruned >= 0)
        assert _path_scores(pruned[None].astype(np.int64), loglik, *graph)[0] == \
            pytest.approx(pruned_score, rel=1e-12, abs=1e-9)
    else:
        assert np.all(pruned == -1)


def _exact_decode(graph, arc_w, start, final, loglik):
    """Best score through a graph by a dense dynamic programme with no pruning."""
    delta = start + loglik[0, graph.pdf]
    for t in range(1, len(loglik)):
        new = np.full(len(delta), -np.inf)
        np.maximum.at(new, graph.arc_dst, delta[graph.arc_src] + arc_w)
        delta = new + loglik[t, graph.pdf]
    return float(np.max(delta + final))


@pytest.mark.parametrize("seed", range(12))
def test_decoder_with_a_wide_beam_is_exact(seed):
    lex, tm, tree = _setup()
    rng = np.random.default_rng(seed)
    grammar = word_loop(lex.words) if seed % 2 else single_word(lex.words)
    graph = decoding_graph(grammar, lex, tree, tm)
    loglik = rng.normal(-3.0, 3.0, size=(int(rng.integers(6, 30)), tree.num_pdfs))
    cfg = DecoderConfig(acoustic_scale=0.5, lm_weight=float(rng.uniform(0.5, 2.0)),
                        word_penalty=float(rng.normal()), beam=1e9)
    decoder = Decoder(graph, tm, lex.words, cfg)
    exact = _exact_decode(graph, decoder.arc_w, decoder.start, decoder.final,
                          cfg.acoustic_scale * loglik)
    result = decoder.decode(loglik)
    assert result.score == pytest.approx(exact, rel=1e-12, abs=1e-9)
    assert result.words == [lex.words[i] for i in graph.words_of(result.path)]
    for beam in (2.0, 8.0):                      # a narrower beam never finds a better path
        narrow = Decoder(graph, tm, lex.words, DecoderConfig(
            acoustic_scale=0.5, lm_weight=cfg.lm_weight, word_penalty=cfg.word_penalty,
            beam=beam)).decode(loglik)
        assert narrow.score <= exact + 1e-9


# --- a language model changes a decode as its weights say ---------------------------------

def _two_word_arpa(path, log10_alpha, log10_delta):
    """A bigram LM over ALPHA and DELTA: P(w | <s>) from the arguments, P(</s> | w) = 0.9."""
    path.write_text(
        "\\data\\\nngram 1=4\nngram 2=4\n\n\\1-grams:\n-1.0 </s>\n-99 <s> 0\n"
        "-0.5 ALPHA 0\n-0.5 DELTA 0\n\n\\2-grams:\n"
        f"{log10_alpha} <s> ALPHA\n{log10_delta} <s> DELTA\n"
        f"{math.log10(0.9)} ALPHA </s>\n{math.log10(0.9)} DELTA </s>\n\n\\end\\\n")
    return path


def _alpha_or_delta(lex, tree, tm, margin, frames_per_state=2):
    """Frames that fit ALPHA exactly and DELTA less well by ``margin`` per frame.

    ALPHA (AA L) and DELTA (D EH) have the same number of states and transitions, so the two
    words' best paths have the same alignment and their acoustic scores differ by exactly
    ``margin * T``. Every other pdf scores -30.
    """
    def pdfs(word):
        pron = lex.prons[word][0]
        return [tree.pdf(pron[k - 1] if k else -1, p, pron[k + 1] if k + 1 < len(pron) else -1, s)
                for k, p in enumerate(pron) for s in range(tm.topology.num_states(p))
                for _ in range(frames_per_state)]
    alpha, delta = pdfs("ALPHA"), pdfs("DELTA")
    loglik = np.full((len(alpha), tree.num_pdfs), -30.0)
    loglik[np.arange(len(alpha)), alpha] = 0.0
    loglik[np.arange(len(delta)), delta] = -margin
    return loglik


def test_lm_decides_between_words_the_acoustics_cannot_tell_apart(tmp_path):
    lex, tm, tree = _setup()
    loglik = _alpha_or_delta(lex, tree, tm, margin=0.0)          # a perfect tie
    cfg = DecoderConfig(acoustic_scale=1.0, beam=1e9)
    for favoured, (la, ld) in (("ALPHA", (-0.1, -1.0)), ("DELTA", (-1.0, -0.1))):
        arpa = _two_word_arpa(tmp_path / f"{favoured}.arpa", la, ld)
        graph = decoding_graph(read_arpa(arpa, lex.words), lex, tree, tm)
        assert Decoder(graph, tm, lex.words, cfg).decode(loglik).words == [favoured]


def test_lm_weight_moves_the_decision_where_the_weights_say(tmp_path):
    """ALPHA wins the acoustics by ``margin * T``; the LM favours DELTA by ``gain`` (natural
    log). With LM weight ``k`` the decoder must pick DELTA exactly when ``k * gain`` exceeds
    the acoustic margin, and a path's score must grow by ``k`` times its LM log probability."""
    lex, tm, tree = _setup()
    margin, scale = 0.25, 1.0
    loglik = _alpha_or_delta(lex, tree, tm, margin)
    acoustic_gap = scale * margin * len(loglik)                  # 3.0 for T = 12
    log10_alpha, log10_delta = -1.2, -0.2
    gain = (log10_delta - log10_alpha) * math.log(10)            # 2.30
    switch = acoustic_gap / gain                                 # 1.30
    graph = decoding_graph(read_arpa(_two_word_arpa(tmp_path / "lm.arpa", log10_alpha,
                                                    log10_delta), lex.words), lex, tree, tm)

    def decode(lm_weight):
        cfg = DecoderConfig(acoustic_scale=scale, lm_weight=lm_weight, beam=1e9)
        return Decoder(graph, tm, lex.words, cfg).decode(loglik)

    assert decode(0.0).words == ["ALPHA"]                        # acoustics alone
    assert decode(0.9 * switch).words == ["ALPHA"]
    assert decode(1.1 * switch).words == ["DELTA"]
    assert decode(3.0 * switch).words == ["DELTA"]
    # On a fixed path the score is linear in the LM weight, with slope its LM log prob.
    lm_alpha = (log10_alpha + math.log10(0.9)) * math.log(10)    # <s> ALPHA </s>
    lm_delta = (log10_delta + math.log10(0.9)) * math.log(10)
    base = decode(0.0).score
    assert decode(0.5 * switch).score == pytest.approx(base + 0.5 * switch * lm_alpha, abs=1e-9)
    assert decode(2.0 * switch).score == pytest.approx(
        base - acoustic_gap + 2.0 * switch * lm_delta, abs=1e-9)
