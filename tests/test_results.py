"""Tests of asr.results: the results.json store, the generated RESULTS.md and plots."""
from __future__ import annotations

import json

import pytest

from asr.errors import DataError
from asr.results import (MISSING, load_results, load_runs, plot_curves, plot_results,
                         record_system, seed_spread_table, write_results_md)
from asr.scoring import WerResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN = {"commit": "0123abc", "date": "2024-01-01 00:00:00 UTC", "command": "python run.py",
       "settings": {"seed": 0}}


def wer(errors: int, words: int, name: str) -> WerResult:
    return WerResult(errors=errors, words=words, ins=0, dels=errors, subs=0,
                     sentences=words, sentence_errors=errors, name=name)


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "results" / "results.json"
    record_system(path, "tri1", {"test": wer(1, 100, "exp/tri1/decode_test")}, RUN)
    record_system(path, "mono", {"test": wer(3, 100, "exp/mono/decode_test"),
                                 "spk_b": wer(10, 40, "exp/mono/decode_spk_b"),
                                 "spk_a": wer(1, 3, "exp/mono/decode_spk_a")}, RUN)
    return path


def test_record_system_round_trip(store):
    results = load_results(store)
    assert list(results) == ["mono", "tri1"]                      # sorted on disk
    assert list(results["mono"]) == ["spk_a", "spk_b", "test"]
    assert results["mono"]["spk_b"] == {
        "wer": 25.0, "errors": 10, "words": 40, "ins": 0, "del": 10, "sub": 0,
        "line": "%WER 25.00 [ 10 / 40, 0 ins, 10 del, 0 sub ] exp/mono/decode_spk_b"}
    assert load_runs(store) == {"mono": RUN, "tri1": RUN}
    assert len(json.loads(store.read_text())["runs"]) == 1        # one record, shared
    before = store.read_bytes()
    record_system(store, "mono", {"test": wer(3, 100, "exp/mono/decode_test"),
                                  "spk_b": wer(10, 40, "exp/mono/decode_spk_b"),
                                  "spk_a": wer(1, 3, "exp/mono/decode_spk_a")}, RUN)
    assert store.read_bytes() == before                          # deterministic
    assert not [p for p in store.parent.iterdir() if p.name != "results.json"]


def test_record_system_rewrites_the_row_whole(store):
    later = {**RUN, "date": "2024-02-01 00:00:00 UTC", "settings": {"seed": 1}}
    record_system(store, "mono", {"spk_a": wer(2, 3, "exp/mono/decode_spk_a")}, later)
    results, runs = load_results(store), load_runs(store)
    assert list(results["mono"]) == ["spk_a"]                    # no stale test sets
    assert results["mono"]["spk_a"]["errors"] == 2
    assert runs["mono"] == later and runs["tri1"] == RUN          # each row names its run
    record_system(store, "tri1", {"test": wer(0, 100, "exp/tri1/decode_test")}, later)
    assert len(json.loads(store.read_text())["runs"]) == 1        # unused runs dropped
    with pytest.raises(ValueError, match="no scores"):
        record_system(store, "dnn", {}, RUN)


def test_load_results_missing_file_is_empty(tmp_path):
    assert load_results(tmp_path / "results.json") == {}


@pytest.mark.parametrize("content, match", [
    ('{"systems": {"mono": ', "results.json:1: not valid JSON"),
    ('{"mono": {"test": {}}}', "exactly 'systems' and 'runs'"),
    ('{"systems": {"mono": [1]}, "runs": {}}', "'mono' lacks a 'test_sets'"),
    ('{"systems": {"mono": {"run": "x", "test_sets": {}}}, "runs": {}}', "names run 'x'"),
    ('{"systems": {"mono": {"run": "x", "test_sets": {"test": {"wer": 1.0}}}}, '
     '"runs": {"x": {}}}', "'mono' / 'test' lacks"),
])
def test_load_results_rejects_bad_layout(tmp_path, content, match):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        load_results(path)


def test_seed_spread_table(tmp_path):
    path = tmp_path / "results.json"
    for system, errors in (("dnn", (2, 10)), ("dnn_seed1", (4, 12)), ("dnn_seed2", (6, 14))):
        record_system(path, system, {"a": wer(errors[0], 100, "x"),
                                     "b": wer(errors[1], 100, "y")}, RUN)
    record_system(path, "other", {"c": wer(1, 100, "z")}, RUN)
    table = seed_spread_table(path, ["dnn", "dnn_seed1", "dnn_seed2"], ["a", "b", "c"],
                              mean_rows={"mean": ["a", "b"]}).splitlines()
    assert table[0] == "| test set | dnn | dnn_seed1 | dnn_seed2 | mean ± sd | range |"
    assert table[2] == "| a | 2.00 (2) | 4.00 (4) | 6.00 (6) | 4.00 ± 2.00 | 2.00–6.00 |"
    assert table[3].startswith("| b | 10.00 (10) |")
    assert table[4] == "| mean | 6.00 | 8.00 | 10.00 | 8.00 ± 2.00 | 6.00–10.00 |"
    assert len(table) == 5                                        # "c": not scored by all


def parse_table(markdown: str) -> tuple[list[str], dict[str, list[str]]]:
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    header, separator, *body = cells
    assert all(set(cell) <= set(":-") for cell in separator)
    return header, {row[0]: row[1:] for row in body}


def test_results_md_table_and_wer_lines(store, tmp_path):
    md = tmp_path / "RESULTS.md"
    write_results_md(store, md, "FSDD digits", system_order=["tri1", "mono", "dnn"],
                     test_set_order=["test"], notes="Run on 2024-01-01, 2 cores.",
                     mean_columns={"heldout mean": ["spk_a", "spk_b"]})
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# FSDD digits\n")
    assert "do not edit by hand" in text and "Run on 2024-01-01, 2 cores." in text
    header, rows = parse_table(text)
    assert header == ["system", "test", "spk_a", "spk_b", "heldout mean"]
    assert list(rows) == ["tri1", "mono", "dnn"]
    assert rows["mono"] == ["3.00", "33.33", "25.00", "29.17"]     # (33.33.. + 25) / 2
    assert rows["tri1"] == ["1.00", MISSING, MISSING, MISSING]
    assert rows["dnn"] == [MISSING] * 4
    fenced = text.split("```")[1].strip().splitlines()
    assert fenced == [
        "# tri1",
        "%WER 1.00 [ 1 / 100, 0 ins, 1 del, 0 sub ] exp/tri1/decode_test",
        "",
        "# mono",
        "%WER 3.00 [ 3 / 100, 0 ins, 3 del, 0 sub ] exp/mono/decode_test",
        "%WER 33.33 [ 1 / 3, 0 ins, 1 del, 0 sub ] exp/mono/decode_spk_a",
        "%WER 25.00 [ 10 / 40, 0 ins, 10 del, 0 sub ] exp/mono/decode_spk_b",
    ]
    first = md.read_bytes()
    write_results_md(store, md, "FSDD digits", system_order=["tri1", "mono", "dnn"],
                     test_set_order=["test"], notes="Run on 2024-01-01, 2 cores.",
                     mean_columns={"heldout mean": ["spk_a", "spk_b"]})
    assert md.read_bytes() == first
    assert "## Runs" in text and "commit `0123abc`" in text and "`python run.py`" in text


def test_results_md_default_order_is_sorted(store, tmp_path):
    md = tmp_path / "RESULTS.md"
    write_results_md(store, md, "t")
    header, rows = parse_table(md.read_text(encoding="utf-8"))
    assert header == ["system", "spk_a", "spk_b", "test"]
    assert list(rows) == ["mono", "tri1"]


def test_plot_results_png_is_deterministic(store, tmp_path):
    first, second = tmp_path / "a" / "wer.png", tmp_path / "b" / "wer.png"
    plot_results(store, first, "WER by test set")
    plot_results(store, second, "WER by test set")
    data = first.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert data == second.read_bytes()


def test_plot_results_many_test_sets(tmp_path):
    path = tmp_path / "results.json"
    rows: dict = {}
    for i in range(25):
        rows.setdefault(f"system{i % 12}", {})[f"noisy_babble_snr{i:02d}"] = wer(i, 50, f"d{i}")
    for system, scores in rows.items():
        record_system(path, system, scores, RUN)
    plot_results(path, tmp_path / "wer.png", "many")
    assert (tmp_path / "wer.png").read_bytes().startswith(PNG_SIGNATURE)


def test_plot_curves_png_is_deterministic(tmp_path):
    curves = {"train": [2.0, 1.2, 0.8, 0.7], "valid": [2.1, 1.5, 1.3]}
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    plot_curves(curves, first, "epoch", "loss", "Learning curve")
    plot_curves(curves, second, "epoch", "loss", "Learning curve")
    assert first.read_bytes().startswith(PNG_SIGNATURE)
    assert first.read_bytes() == second.read_bytes()
    with pytest.raises(ValueError, match="'train' has 4 values"):
        plot_curves(curves, tmp_path / "c.png", "epoch", "loss", "t", x=[0, 10, 20])
    assert not (tmp_path / "c.png").exists()


def test_results_json_is_plain_json(store):
    stored = json.loads(store.read_text())
    assert {k: v["test_sets"] for k, v in stored["systems"].items()} == load_results(store)


def test_dev_choice_sums_errors_over_shared_dev_sets_and_breaks_ties_by_order(tmp_path):
    from asr.results import dev_choice, dev_choice_section, record_system
    from asr.scoring import compute_wer

    path = tmp_path / "results.json"
    refs = {"u1": ["a", "b"], "u2": ["c"]}
    for system, hyps in (("x", {"u1": ["a"], "u2": ["c"]}), ("y", {"u1": ["a", "b"], "u2": []})):
        record_system(path, system, {"dev": compute_wer(refs, hyps),
                                     "dev2": compute_wer(refs, refs)}, {"command": "t"})
    record_system(path, "z", {"dev": compute_wer(refs, refs)}, {"command": "t"})
    assert dev_choice(path, ["x", "y"], ["dev", "dev2"]) == ("x", {"x": 1, "y": 1})
    assert dev_choice(path, ["x", "z"], ["dev", "dev2"]) == ("z", {"x": 1, "z": 0})  # dev only
    assert "**z**" in dev_choice_section(path, ["x", "z"], ["dev", "dev2"])
