"""asr.lm: Kneser-Ney counts and probabilities by hand, distributions that sum to 1, ARPA
files (round trip, bad input naming file and line), perplexity by hand."""
import math

import numpy as np
import pytest

from asr.errors import DataError
from asr.lm import (NgramLM, count_ngrams, perplexity, read_arpa, train_kneser_ney,
                    write_arpa)
from asr.lm.__main__ import main as lm_main

# Tokens: <s> a b </s> | <s> a a b </s> | <s> b a </s>
TINY = ["a b", "a a b", "b a"]
# Discounts fixed by hand (the tiny corpus's count-of-counts have zeros): unigrams,
# bigrams, trigrams.
D = [(0.4, 0.8, 1.2), (0.6, 0.9, 1.3), (0.5, 1.0, 1.5)]


def synthetic_corpus(num_sentences=150, seed=0):
    """Sentences from a fixed random Markov chain over 25 words: varied counts of counts."""
    rng = np.random.default_rng(seed)
    words = [f"w{i:02d}" for i in range(25)]
    trans = rng.dirichlet(np.full(25, 0.3), size=25)
    out = []
    for _ in range(num_sentences):
        w = rng.integers(25)
        sentence = [words[w]]
        for _ in range(rng.integers(1, 9)):
            w = rng.choice(25, p=trans[w])
            sentence.append(words[w])
        out.append(" ".join(sentence))
    return out


# ----------------------------------------------------------------------------- counts by hand

def test_counts_and_continuation_counts_by_hand():
    c = count_ngrams(TINY, order=3)
    assert c.vocab == ["</s>", "<s>", "<unk>", "a", "b"]

    def table(n, values):
        rows = NgramLM(c.vocab, c.keys, c.adjusted, c.adjusted).ngram_ids(n)
        return {tuple(c.vocab[i] for i in row): int(x) for row, x in zip(rows, values[n - 1])}

    # Raw unigram counts: <s> and </s> once per sentence, <unk> never.
    assert table(1, c.counts) == {("</s>",): 3, ("<s>",): 3, ("<unk>",): 0, ("a",): 4,
                                  ("b",): 3}
    # Trigrams (the highest order keeps raw counts): "a b </s>" ends two sentences.
    assert table(3, c.adjusted) == {("<s>", "a", "b"): 1, ("<s>", "a", "a"): 1,
                                    ("a", "a", "b"): 1, ("a", "b", "</s>"): 2,
                                    ("<s>", "b", "a"): 1, ("b", "a", "</s>"): 1}
    # Bigrams: raw counts ...
    assert table(2, c.counts) == {("<s>", "a"): 2, ("<s>", "b"): 1, ("a", "b"): 2,
                                  ("a", "a"): 1, ("a", "</s>"): 1, ("b", "</s>"): 2,
                                  ("b", "a"): 1}
    # ... and continuation counts N1+(• h w): "b </s>" follows only "a" (twice) -> 1;
    # "a b" follows <s> and a -> 2; bigrams starting with <s> keep their raw counts.
    assert table(2, c.adjusted) == {("<s>", "a"): 2, ("<s>", "b"): 1, ("a", "b"): 2,
                                    ("a", "a"): 1, ("a", "</s>"): 1, ("b", "</s>"): 1,
                                    ("b", "a"): 1}
    # Unigrams: a follows <s>, a, b -> 3; b follows a, <s> -> 2; </s> follows b, a -> 2.
    adjusted1 = table(1, c.adjusted)
    assert {w: adjusted1[(w,)] for w in ("a", "b", "</s>", "<unk>")} == \
        {"a": 3, "b": 2, "</s>": 2, "<unk>": 0}
    # Count-of-counts (of the adjusted counts; unigrams without <s>).
    assert c.count_of_counts(3).tolist() == [5, 1, 0, 0]
    assert c.count_of_counts(2).tolist() == [5, 2, 0, 0]
    assert c.count_of_counts(1).tolist() == [0, 2, 1, 0]


def test_discounts_from_count_of_counts_by_hand():
    # One sentence: c once, d twice, e three times, f four times, </s> once.
    c = count_ngrams(["c d d e e e f f f f"], order=1)
    assert c.count_of_counts(1).tolist() == [2, 1, 1, 1]
    # Y = n1/(n1+2 n2) = 2/4; D1 = 1 - 2Y n2/n1 = 0.5; D2 = 2 - 3Y n3/n2 = 0.5;
    # D3+ = 3 - 4Y n4/n3 = 1.
    assert c.discounts(1) == pytest.approx((0.5, 0.5, 1.0))
    lm = train_kneser_ney(["c d d e e e f f f f"], order=1)
    # Total 11, discounted mass 0.5+0.5+0.5+1+1 = 3.5, shared by 6 words (</s> <unk> c d e f).
    gamma = 3.5 / 11
    assert 10 ** lm.log_prob("f") == pytest.approx((4 - 1) / 11 + gamma / 6)
    assert 10 ** lm.log_prob("c") == pytest.approx((1 - 0.5) / 11 + gamma / 6)
    assert 10 ** lm.log_prob("<unk>") == pytest.approx(gamma / 6)


def test_fallback_discounts_when_count_of_counts_have_zeros(caplog):
    c = count_ngrams(TINY, order=2)
    assert c.discounts(2) == (0.5, 1.0, 1.5)
    assert "no valid modified Kneser-Ney discounts" in caplog.text


def test_probabilities_by_hand():
    lm = train_kneser_ney(TINY, order=3, discounts=D)
    # Unigrams: continuation counts a 3, b 2, </s> 2 (total 7); discounts D3+ 1.2 (a),
    # D2 0.8 (b, </s>): mass 2.8/7 = 0.4, spread over </s> <unk> a b.
    p1 = {"a": 1.8 / 7 + 0.1, "b": 1.2 / 7 + 0.1, "</s>": 1.2 / 7 + 0.1, "<unk>": 0.1}
    for w, p in p1.items():
        assert 10 ** lm.log_prob(w) == pytest.approx(p)
    assert lm.log_prob("<s>") == -99
    # Bigrams after a (continuation counts b 2, a 1, </s> 1; total 4): γ = (0.9+0.6+0.6)/4.
    p2_b_a = (2 - 0.9) / 4 + 0.525 * p1["b"]
    assert 10 ** lm.log_prob("b", ["a"]) == pytest.approx(p2_b_a)
    # After b (</s> 1, a 1; total 2): γ = 1.2/2.
    p2_end_b = 0.4 / 2 + 0.6 * p1["</s>"]
    p2_a_b = 0.4 / 2 + 0.6 * p1["a"]
    assert 10 ** lm.log_prob("</s>", ["b"]) == pytest.approx(p2_end_b)
    # Trigram "<s> a b" (raw 1; history "<s> a" has b 1, a 1): γ = (0.5+0.5)/2.
    assert 10 ** lm.log_prob("b", ["<s>", "a"]) == pytest.approx(0.5 / 2 + 0.5 * p2_b_a)
    # "a b </s>" (raw 2, the only continuation of "a b"): (2 - 1)/2 + (1/2) p2(</s> | b).
    assert 10 ** lm.log_prob("</s>", ["a", "b"]) == pytest.approx(0.5 + 0.5 * p2_end_b)
    # Unseen "a b a" backs off: bow(a b) = γ(a b) = 0.5, times p2(a | b).
    assert 10 ** lm.log_prob("a", ["a", "b"]) == pytest.approx(0.5 * p2_a_b)
    # A history never seen ("b b") costs nothing: p(a | b b) = p(a | b).
    assert 10 ** lm.log_prob("a", ["b", "b"]) == pytest.approx(p2_a_b)
    # Sentence "a b": p(a|<s>) p(b|<s> a) p(</s>|a b).
    p2_a_s = (2 - 0.9) / 3 + 0.5 * p1["a"]
    expect = math.log10(p2_a_s * (0.25 + 0.5 * p2_b_a) * (0.5 + 0.5 * p2_end_b))
    assert lm.sentence_log_prob(["a", "b"]) == pytest.approx(expect)


def test_vocabulary_cap_keeps_the_most_frequent_words_ties_alphabetical():
    c = count_ngrams(["b a c c", "d c"], order=2, vocab=2)
    # c 3, then a, b, d once each: the tie goes to a.
    assert c.vocab == ["</s>", "<s>", "<unk>", "a", "c"]
    assert c.counts[0][c.vocab.index("<unk>")] == 2
    lm = train_kneser_ney(["b a c c", "d c"], order=2, vocab=["c", "zz"])
    assert lm.vocab == ["</s>", "<s>", "<unk>", "c", "zz"]
    assert lm.log_prob("zz") > -99          # in the vocabulary, unseen: the uniform share


# ----------------------------------------------------------------------------- sums to 1

@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("prune, vocab", [(0.0, None), (0.0, 15), (1e-3, None), (1e-3, 15)])
def test_every_history_distribution_sums_to_one(order, prune, vocab):
    lm = train_kneser_ney(synthetic_corpus(), order=order, vocab=vocab, prune=prune)
    if order > 1 and prune:
        unpruned = train_kneser_ney(synthetic_corpus(), order=order, vocab=vocab)
        assert sum(lm.counts) < sum(unpruned.counts)        # pruning removed n-grams
    predicted = np.array([i for i, w in enumerate(lm.vocab) if w != "<s>"])
    for n in range(1, order + 1):
        histories = lm.ngram_ids(n - 1) if n > 1 else np.zeros((1, 0), dtype=np.int64)
        # Every history of the model and, through back-off, one it has never seen.
        histories = np.concatenate([histories, np.full((1, n - 1), -1)])
        rows = np.concatenate([np.repeat(histories, len(predicted), axis=0),
                               np.tile(predicted, len(histories))[:, None]], axis=1)
        sums = (10.0 ** lm.score(rows)).reshape(len(histories), -1).sum(axis=1)
        np.testing.assert_allclose(sums, 1.0, atol=1e-6)


# ----------------------------------------------------------------------------- ARPA files

@pytest.mark.parametrize("prune", [0.0, 1e-3])
def test_arpa_round_trip(tmp_path, prune):
    lm = train_kneser_ney(synthetic_corpus(), order=3, vocab=20, prune=prune)
    write_arpa(lm, tmp_path / "lm.arpa")
    back = read_arpa(tmp_path / "lm.arpa")
    assert back.vocab == lm.vocab and back.counts == lm.counts
    for n in range(1, 4):
        np.testing.assert_array_equal(back.keys[n - 1], lm.keys[n - 1])
        np.testing.assert_allclose(back.log_probs[n - 1], lm.log_probs[n - 1], rtol=1e-6)
        np.testing.assert_allclose(back.backoffs[n - 1], lm.backoffs[n - 1], rtol=1e-6,
                                   atol=1e-12)
    write_arpa(back, tmp_path / "again.arpa")
    assert (tmp_path / "again.arpa").read_text() == (tmp_path / "lm.arpa").read_text()
    assert not list(tmp_path.glob(".*.tmp"))


def test_kaldi_arpa2fst_reads_our_files_without_warnings(tmp_path, capfd):
    kaldilm = pytest.importorskip("kaldilm")
    lm = train_kneser_ney(synthetic_corpus(), order=3, vocab=20, prune=1e-3)
    write_arpa(lm, tmp_path / "lm.arpa")
    fst = kaldilm.arpa2fst(str(tmp_path / "lm.arpa"), max_arpa_warnings=-1)
    assert fst.strip() and "WARNING" not in capfd.readouterr().err


GOOD = """a comment before the header is ignored

\\data\\
ngram 1=5
ngram 2=3

\\1-grams:
-1.0\t</s>
-99\t<s>\t-0.5
-1.0\t<unk>
-0.5 a  -0.2
-0.7\tb

\\2-grams:
-0.3\t<s> a
-0.4\ta b
-0.2\tb </s>

\\end\\
"""


def test_read_a_hand_written_file(tmp_path):
    (tmp_path / "lm.arpa").write_text(GOOD)
    lm = read_arpa(tmp_path / "lm.arpa")
    assert lm.order == 2 and lm.counts == [5, 3]
    assert lm.log_prob("a", ["<s>"]) == pytest.approx(-0.3)
    assert lm.log_prob("b", ["<s>"]) == pytest.approx(-0.5 - 0.7)      # bow(<s>) + p(b)
    assert lm.log_prob("</s>", ["a"]) == pytest.approx(-0.2 - 1.0)     # bow(a) + p(</s>)
    assert lm.log_prob("a", ["b"]) == pytest.approx(-0.5)              # b has no bow
    assert lm.log_prob("zz") == -99


def test_perplexity_by_hand(tmp_path):
    (tmp_path / "lm.arpa").write_text(GOOD)
    lm = read_arpa(tmp_path / "lm.arpa")
    text = ["a b", "b x a"]
    # "a b": p(a|<s>) -0.3, p(b|a) -0.4, p(</s>|b) -0.2.
    # "b x a": p(b|<s>) = -0.5 - 0.7; x is an OOV (not scored, counted); p(a | <unk>) =
    # p(a) = -0.5 (the history x is <unk>, which has no bigrams); p(</s>|a) = -0.2 - 1.0.
    r = perplexity(lm, text)
    assert (r.sentences, r.words, r.oovs, r.zero_probs) == (2, 5, 1, 0)
    assert r.log10_prob == pytest.approx(-0.9 - 2.9)
    assert r.perplexity == pytest.approx(10 ** (3.8 / (5 - 1 + 2)))
    assert r.ppl1 == pytest.approx(10 ** (3.8 / (5 - 1)))
    assert r.oov_rate == pytest.approx(1 / 5)
    # Open vocabulary: x is scored as <unk>, p(<unk> | b) = 0 + -1.0.
    r = perplexity(lm, text, unk=True)
    assert (r.oovs, r.log10_prob) == (0, pytest.approx(-4.8))
    assert r.perplexity == pytest.approx(10 ** (4.8 / 7))
    # <unk> written in the text is an OOV in the closed-vocabulary score.
    assert perplexity(lm, ["a <unk> b"]).oovs == 1


def replace(text, old, new):
    assert old in text
    return text.replace(old, new, 1)


def line_of(text, fragment):
    return next(i for i, line in enumerate(text.split("\n"), start=1) if fragment in line)


BAD = [
    # (name, arpa text, the line the error names, words in the message)
    ("header line", replace(GOOD, "ngram 2=3", "ngram 2=three"), "ngram 2=three", "ngram N=COUNT"),
    ("order 0", replace(GOOD, "ngram 2=3", "ngram 0=3"), "ngram 0=3", "count from 1"),
    ("order twice", replace(GOOD, "ngram 2=3", "ngram 1=3"), "ngram 1=3", "twice"),
    ("gap in orders", replace(GOOD, "ngram 2=3", "ngram 3=3"), "\\1-grams:", "without gaps"),
    ("too few unigrams", replace(GOOD, "ngram 1=5", "ngram 1=6"), "\\2-grams:", "announces 6"),
    ("too many bigrams", replace(GOOD, "ngram 2=3", "ngram 2=2"), "\\end\\", "announces 2"),
    ("bad probability", replace(GOOD, "-0.4\ta b", "-0.4x\ta b"), "-0.4x", "log10 probability"),
    ("nan", replace(GOOD, "-0.4\ta b", "nan\ta b"), "nan\ta b", "log10 probability"),
    ("positive log prob", replace(GOOD, "-0.4\ta b", "0.4\ta b"), "0.4\ta b", "at most 0"),
    ("bad back-off", replace(GOOD, "-0.5 a  -0.2", "-0.5 a  x"), "-0.5 a  x", "back-off"),
    ("too many fields", replace(GOOD, "-0.4\ta b", "-0.4\ta b c d"), "a b c d", "2 word(s)"),
    ("unknown word", replace(GOOD, "-0.4\ta b", "-0.4\ta zz"), "a zz", "not among the unigrams"),
    ("duplicate unigram", replace(GOOD, "-0.7\tb", "-0.7\ta"), "-0.7\ta", "duplicate unigram"),
    ("duplicate bigram", replace(GOOD, "-0.4\ta b", "-0.4\t<s> a"), "-0.4\t<s> a", "duplicate"),
    ("<s> inside", replace(GOOD, "-0.4\ta b", "-0.4\ta <s>"), "a <s>", "only come first"),
    ("</s> inside", replace(GOOD, "-0.4\ta b", "-0.4\t</s> b"), "</s> b", "only last"),
    ("bow at top order", replace(GOOD, "-0.4\ta b", "-0.4\ta b\t-0.1"), "a b\t-0.1",
     "highest-order"),
    ("no </s>", replace(replace(GOOD, "-1.0\t</s>\n", ""), "ngram 1=5", "ngram 1=4"),
     "\\2-grams:", "no unigram </s>"),
    ("section not announced", replace(GOOD, "\\end\\", "\\3-grams:\n-0.1 <s> a b\n\\end\\"),
     "\\3-grams:", "not announced"),
    ("sections out of order", replace(GOOD, "\\1-grams:", "\\2-grams:"), "\\2-grams:",
     "expected the \\1-grams:"),
    ("end too early", replace(GOOD, "\\2-grams:", "\\end\\"), "\\end\\", "\\end\\ after"),
    ("missing end", GOOD.replace("\\end\\\n", ""), "b </s>", "missing \\end\\"),
    ("not ARPA", "hello\nworld\n", "world", "no \\data\\"),
]


@pytest.mark.parametrize("name, text, where, message", BAD, ids=[b[0] for b in BAD])
def test_bad_arpa_names_file_and_line(tmp_path, name, text, where, message):
    path = tmp_path / "bad.arpa"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_arpa(path)
    assert info.value.path == str(path)
    # A file that ends early: the error names its last line.
    expected_line = text.count("\n") if name == "missing end" else line_of(text, where)
    assert info.value.line == expected_line, str(info.value)
    assert message in str(info.value)


def test_absent_history_is_an_error(tmp_path):
    text = (GOOD.replace("ngram 2=3", "ngram 2=3\nngram 3=1")
            .replace("\\end\\", "\\3-grams:\n-0.1\tb a </s>\n\n\\end\\"))
    (tmp_path / "lm.arpa").write_text(text)
    with pytest.raises(DataError, match=r"lm.arpa:\d+: .*history 'b a' is not a 2-gram") as e:
        read_arpa(tmp_path / "lm.arpa")
    assert e.value.line == line_of(text, "b a </s>")


def test_training_text_with_sentence_markers_names_file_and_line(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("a b\n\n<s> a b </s>\n")
    with pytest.raises(DataError) as info:
        train_kneser_ney(path, order=2)
    assert (info.value.path, info.value.line) == (str(path), 3)


# ----------------------------------------------------------------------------- command

def test_command_trains_and_scores(tmp_path, capsys):
    (tmp_path / "train.txt").write_text("\n".join(synthetic_corpus()) + "\n")
    (tmp_path / "dev.txt").write_text("w01 w02 w03\nw04 unseen w05\n")
    assert lm_main(["train", "--order", "3", "--prune", "1e-4", str(tmp_path / "train.txt"),
                    str(tmp_path / "lm.arpa")]) == 0
    assert lm_main(["ppl", str(tmp_path / "lm.arpa"), str(tmp_path / "dev.txt")]) == 0
    out = capsys.readouterr().out
    assert "2 sentences, 6 words, 1 OOVs" in out and "ppl=" in out
    (tmp_path / "bad.arpa").write_text(replace(GOOD, "ngram 1=5", "ngram 1=6"))
    assert lm_main(["ppl", str(tmp_path / "bad.arpa"), str(tmp_path / "dev.txt")]) == 1
    assert f"bad.arpa:{line_of(GOOD, '2-grams:')}:" in capsys.readouterr().err
