"""The shared decoder: planted paths, grammars, ARPA reading, forced alignment."""
import numpy as np
import pytest

from asr.decoder import Decoder, DecoderConfig, align, decoding_graph, read_arpa, single_word, word_loop
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
