"""The shared decoder over HCLG: planted paths, grammars, LM weights, forced alignment."""
import math

import numpy as np
import pytest

from asr.decoder import Decoder, DecoderConfig, align, decoding_graph
from asr.hmm import ContextTree, Topology, TransitionModel, training_graph
from asr.lexicon import Lexicon
from conftest import planted_scores

WORDS = [("ALPHA", ["AA", "L"]), ("BRAVO", ["B", "R", "AO"]), ("DELTA", ["D", "EH"]),
         ("ECHO", ["EY", "K", "OW"])]


def _setup():
    lex = Lexicon.from_entries(WORDS)
    topo = Topology(len(lex.phones), 3, 3)
    return lex, TransitionModel(topo), ContextTree.monophone(topo)


def _decoder(lex, tree, tm, base_dir=None, **settings):
    """A decoder with unscaled transitions (the scores the tests compute by hand)."""
    cfg = DecoderConfig(**{"acoustic_scale": 1.0, "self_loop_scale": 1.0, **settings})
    return Decoder(decoding_graph(lex, tree, tm, cfg, base_dir), cfg)


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
    return planted_scores(pdfs, tree.num_pdfs, rng, 0.5)


@pytest.mark.parametrize("seed", range(5))
def test_decoder_recovers_planted_path(seed):
    lex, tm, tree = _setup()
    rng = np.random.default_rng(seed)
    words = [lex.words[i] for i in rng.integers(0, len(lex.words), size=rng.integers(1, 8))]
    loglik, pdfs = _planted(lex, tree, tm, words, rng, silence=bool(seed % 2))
    result = _decoder(lex, tree, tm).decode(loglik)
    assert result.words == words and result.reached_final
    np.testing.assert_array_equal(result.pdfs, pdfs)


def test_single_word_grammar_outputs_one_word():
    lex, tm, tree = _setup()
    rng = np.random.default_rng(3)
    loglik, _ = _planted(lex, tree, tm, ["BRAVO", "ECHO"], rng)
    assert len(_decoder(lex, tree, tm, grammar="single").decode(loglik).words) == 1


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


def test_forced_alignment_is_the_best_path_of_the_training_graph():
    """On noise the aligner's path must score what an exhaustive dynamic programme finds."""
    lex, tm, tree = _setup()
    rng = np.random.default_rng(11)
    graph = training_graph(["ECHO", "ALPHA"], lex, tree, tm)
    arc_w, start, final = graph.weights(tm)
    for _ in range(5):
        loglik = rng.normal(-3.0, 3.0, size=(int(rng.integers(20, 40)), tree.num_pdfs))
        path = align(graph, tm, loglik, acoustic_scale=1.0, beam=1e9, retry_beam=1e9)
        delta = start + loglik[0, graph.pdf]
        for t in range(1, len(loglik)):
            new = np.full(len(delta), -np.inf)
            np.maximum.at(new, graph.arc_dst, delta[graph.arc_src] + arc_w)
            delta = new + loglik[t, graph.pdf]
        exact = float(np.max(delta + final))
        best_arc = {}
        for a, b, w in zip(graph.arc_src, graph.arc_dst, arc_w):
            best_arc[a, b] = max(best_arc.get((a, b), -np.inf), w)
        score = (start[path[0]] + final[path[-1]] + loglik[np.arange(len(path)),
                                                           graph.pdf[path]].sum()
                 + sum(best_arc[a, b] for a, b in zip(path[:-1], path[1:])))
        assert score == pytest.approx(exact, abs=1e-3)


def test_word_penalty_controls_insertions():
    lex, tm, tree = _setup()
    rng = np.random.default_rng(0)
    loglik, _ = _planted(lex, tree, tm, ["ALPHA"] * 4, rng, silence=False)
    assert len(_decoder(lex, tree, tm, beam=1e9).decode(loglik).words) == 4
    assert len(_decoder(lex, tree, tm, word_penalty=1e4, beam=1e9).decode(loglik).words) == 1


@pytest.mark.parametrize("seed", range(6))
def test_a_narrower_beam_never_finds_a_better_path(seed):
    lex, tm, tree = _setup()
    rng = np.random.default_rng(seed)
    loglik = rng.normal(-3.0, 3.0, size=(int(rng.integers(6, 30)), tree.num_pdfs))
    grammar = "loop" if seed % 2 else "single"
    wide = _decoder(lex, tree, tm, grammar=grammar, beam=1e9, acoustic_scale=0.5)
    exact = wide.decode(loglik)
    search = wide.search.decode(loglik)       # its cost is its own path's cost
    assert search.cost == pytest.approx(search.acoustic_cost + search.graph_cost, abs=1e-3)
    for beam in (2.0, 8.0):
        narrow = _decoder(lex, tree, tm, grammar=grammar, beam=beam, acoustic_scale=0.5)
        assert narrow.decode(loglik).cost >= exact.cost - 1e-6


# --- a language model changes a decode as its weights say ---------------------------------

def _two_word_arpa(path, log10_alpha, log10_delta):
    """A bigram LM over ALPHA and DELTA: P(w | <s>) from the arguments, P(</s> | w) = 0.9.

    Backing off from ``<s>`` costs more than either bigram: G's back-off arcs are a
    tropical shortcut (as in Kaldi), so a cheaper back-off path would replace the bigram."""
    path.write_text(
        "\\data\\\nngram 1=4\nngram 2=4\n\n\\1-grams:\n-1.0 </s>\n-99 <s> -2.0\n"
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
    for favoured, (la, ld) in (("ALPHA", (-0.1, -1.0)), ("DELTA", (-1.0, -0.1))):
        arpa = _two_word_arpa(tmp_path / f"{favoured}.arpa", la, ld)
        decoder = _decoder(lex, tree, tm, grammar=str(arpa), beam=1e9)
        assert decoder.decode(loglik).words == [favoured]


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
    arpa = _two_word_arpa(tmp_path / "lm.arpa", log10_alpha, log10_delta)

    def decode(lm_weight):
        return _decoder(lex, tree, tm, grammar=str(arpa), acoustic_scale=scale,
                        lm_weight=lm_weight, beam=1e9).decode(loglik)

    assert decode(0.0).words == ["ALPHA"]                        # acoustics alone
    assert decode(0.9 * switch).words == ["ALPHA"]
    assert decode(1.1 * switch).words == ["DELTA"]
    assert decode(3.0 * switch).words == ["DELTA"]
    # On a fixed path the cost is linear in the LM weight, with slope its LM cost (graph
    # weights are quantized by 1/1024 when HCLG is minimized).
    lm_alpha = (log10_alpha + math.log10(0.9)) * math.log(10)    # <s> ALPHA </s>
    lm_delta = (log10_delta + math.log10(0.9)) * math.log(10)
    base = decode(0.0).cost
    assert decode(0.5 * switch).cost == pytest.approx(base - 0.5 * switch * lm_alpha, abs=5e-3)
    assert decode(2.0 * switch).cost == pytest.approx(
        base + acoustic_gap - 2.0 * switch * lm_delta, abs=5e-3)
