"""Tests of asr.scoring: WER counts, the %WER line, text files and details."""
from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings, strategies as st

from asr.errors import DataError
from asr.scoring import (GAP, WerResult, compute_wer, per_utterance, read_text, score_files,
                         write_details, write_text_file)


def words(text: str) -> list[str]:
    return text.split()


def test_wer_line_on_hand_computed_example():
    # a b c d  vs  a x c d e: b->x substituted, e inserted: 2 errors over 4 words
    result = compute_wer({"u1": words("a b c d")}, {"u1": words("a x c d e")}, "exp/mono/decode_test")
    assert (result.ins, result.dels, result.subs, result.errors, result.words) == (1, 0, 1, 2, 4)
    assert result.wer == 50.0
    assert result.line() == "%WER 50.00 [ 2 / 4, 1 ins, 0 del, 1 sub ] exp/mono/decode_test"
    assert result.to_dict() == {"wer": 50.0, "errors": 2, "words": 4, "ins": 1, "del": 0, "sub": 1}


def test_line_formats_two_decimals_and_omits_empty_name():
    result = WerResult(errors=12, words=974, ins=3, dels=4, subs=5, sentences=10,
                       sentence_errors=4, name="exp/mono/decode_test")
    assert result.line() == "%WER 1.23 [ 12 / 974, 3 ins, 4 del, 5 sub ] exp/mono/decode_test"
    assert result.ser_line() == "%SER 40.00 [ 4 / 10 ] exp/mono/decode_test"
    unnamed = WerResult(errors=1, words=3, ins=0, dels=1, subs=0, sentences=1, sentence_errors=1)
    assert unnamed.line() == "%WER 33.33 [ 1 / 3, 0 ins, 1 del, 0 sub ]"


def test_empty_hypothesis_is_all_deletions():
    refs = {"u1": words("yes no yes"), "u2": words("no no")}
    result = compute_wer(refs, {"u1": [], "u2": words("no no")})
    assert (result.dels, result.ins, result.subs, result.words) == (3, 0, 0, 5)
    assert (result.sentences, result.sentence_errors) == (2, 1)
    assert result.line() == "%WER 60.00 [ 3 / 5, 0 ins, 3 del, 0 sub ]"


def test_empty_reference_counts_insertions():
    result = compute_wer({"u1": [], "u2": words("a")}, {"u1": words("x y"), "u2": words("a")})
    assert (result.ins, result.words, result.errors) == (2, 1, 2)


def test_every_hypothesis_empty():
    result = compute_wer({"u1": words("a b")}, {"u1": []})
    assert result.line() == "%WER 100.00 [ 2 / 2, 0 ins, 2 del, 0 sub ]"


def test_missing_hypothesis_counts_as_deletions_and_warns(caplog):
    refs = {"u1": words("a b"), "u2": words("c d e")}
    with caplog.at_level(logging.WARNING, logger="asr.scoring"):
        result = compute_wer(refs, {"u1": words("a b")})
    assert (result.dels, result.errors, result.words) == (3, 3, 5)
    assert "no hypothesis" in caplog.text and "'u2'" in caplog.text


def test_unknown_hypothesis_id_is_a_data_error():
    with pytest.raises(DataError, match="'ghost'"):
        compute_wer({"u1": words("a")}, {"u1": words("a"), "ghost": words("b")})


def test_no_reference_words():
    assert compute_wer({}, {}).wer == 0.0
    assert compute_wer({"u1": []}, {"u1": []}).line() == "%WER 0.00 [ 0 / 0, 0 ins, 0 del, 0 sub ]"


def test_per_utterance_alignment_sorted_by_id():
    refs = {"u2": words("a b c d"), "u1": words("x y")}
    hyps = {"u2": words("a x c d e"), "u1": words("y")}
    rows = per_utterance(refs, hyps)
    assert [row.utt for row in rows] == ["u1", "u2"]
    u1, u2 = rows
    assert (u1.ins, u1.dels, u1.subs) == (0, 1, 0)
    assert u1.ref == ["x", "y"] and u1.hyp == [GAP, "y"]
    assert u2.ref == ["a", "b", "c", "d", GAP]
    assert u2.hyp == ["a", "x", "c", "d", "e"]
    assert u2.ops == ["C", "S", "C", "C", "I"]
    assert (u2.correct, u2.subs, u2.ins, u2.dels) == (3, 1, 1, 0)
    utt, ref, hyp, ins, dels, subs = u2          # a plain tuple too
    assert (utt, ins, dels, subs) == ("u2", 1, 0, 1)


def test_words_compared_exactly():
    # case and punctuation matter; no normalisation happens behind the caller's back
    result = compute_wer({"u1": ["Yes", "no."]}, {"u1": ["yes", "no."]})
    assert (result.subs, result.errors) == (1, 1)


def test_write_details_kaldi_per_utt(tmp_path):
    rows = per_utterance({"u1": words("a bb c d")}, {"u1": words("a x c d eee")})
    path = tmp_path / "per_utt"
    write_details(path, rows)
    assert path.read_text().splitlines() == [
        "u1 ref   a  bb  c  d  ***",
        "u1 hyp   a  x   c  d  eee",
        "u1 op    C  S   C  C  I",
        "u1 #csid 3 1 1 0",
    ]


def test_read_text_allows_empty_hypothesis(tmp_path):
    path = tmp_path / "text"
    path.write_text("u1 yes no\nu2\nu3  no\tyes \n")
    assert read_text(path) == {"u1": ["yes", "no"], "u2": [], "u3": ["no", "yes"]}
    with pytest.raises(DataError, match=r"text:2: empty transcript for utterance 'u2'"):
        read_text(path, allow_empty=False)


@pytest.mark.parametrize("content, line, what", [
    ("u1 a\n\nu2 b\n", 2, "blank line"),
    ("u1 a\n  u2 b\n", 2, "line starts with whitespace"),
    ("u1 a\nu2 b\nu1 c\n", 3, "duplicate utterance id 'u1' \\(first on line 1\\)"),
])
def test_read_text_malformed_names_file_and_line(tmp_path, content, line, what):
    path = tmp_path / "text"
    path.write_text(content)
    with pytest.raises(DataError, match=f"text:{line}: {what}") as info:
        read_text(path)
    assert info.value.line == line and info.value.path == str(path)


def test_read_text_rejects_invalid_utf8_and_missing_file(tmp_path):
    path = tmp_path / "text"
    path.write_bytes(b"u1 a\nu2 \xff\n")
    with pytest.raises(DataError, match="text:2: not valid UTF-8"):
        read_text(path)
    with pytest.raises(DataError, match="cannot read"):
        read_text(tmp_path / "absent")


def test_write_text_file_sorted_round_trip(tmp_path):
    texts = {"u10": ["b"], "u2": [], "u1": ["a", "c"]}
    path = tmp_path / "sub" / "text"
    write_text_file(path, texts)
    assert path.read_text() == "u1 a c\nu10 b\nu2\n"
    assert read_text(path) == texts
    with pytest.raises(DataError, match="whitespace"):
        write_text_file(tmp_path / "bad", {"u1": ["two words"]})
    assert not (tmp_path / "bad").exists()


def test_score_files(tmp_path):
    ref, hyp = tmp_path / "ref", tmp_path / "hyp"
    ref.write_text("u1 a b c d\nu2 e f\n")
    hyp.write_text("u1 a x c d e\nu2\n")
    details = tmp_path / "details" / "per_utt"
    result = score_files(ref, hyp, "exp/tri1/decode", details_path=details)
    assert result.line() == "%WER 66.67 [ 4 / 6, 1 ins, 2 del, 1 sub ] exp/tri1/decode"
    assert details.read_text().splitlines()[-1] == "u2 #csid 0 0 0 2"
    hyp.write_text("u1 a\nu9 b\n")
    with pytest.raises(DataError, match="hyp: .*'u9'") as info:
        score_files(ref, hyp)
    assert info.value.path == str(hyp)


def _levenshtein(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


utterance = st.lists(st.sampled_from(["yes", "no", "one", "two"]), max_size=6)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.tuples(utterance, utterance), max_size=5))
def test_counts_agree_with_edit_distance(pairs):
    refs = {f"u{i}": ref for i, (ref, _) in enumerate(pairs)}
    hyps = {f"u{i}": hyp for i, (_, hyp) in enumerate(pairs)}
    rows = per_utterance(refs, hyps)
    for row in rows:
        ref, hyp = refs[row.utt], hyps[row.utt]
        assert row.errors == _levenshtein(ref, hyp)
        assert [w for w in row.ref if w != GAP] == ref
        assert [w for w in row.hyp if w != GAP] == hyp
        assert row.correct == row.ops.count("C")
    result = compute_wer(refs, hyps)
    assert result.errors == sum(_levenshtein(r, h) for r, h in pairs)
    assert result.words == sum(len(r) for r, _ in pairs)
