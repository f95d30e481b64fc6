"""Tests of asr.results: the results.json store, the generated RESULTS.md and plots."""
from __future__ import annotations

import json

import pytest

from asr.errors import DataError
from asr.results import (MISSING, load_results, plot_curves, plot_results, update_results,
                         write_results_md)
from asr.scoring import WerResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def wer(errors: int, words: int, name: str) -> WerResult:
    return WerResult(errors=errors, words=words, ins=0, dels=errors, subs=0,
                     sentences=words, sentence_errors=errors, name=name)


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "results" / "results.json"
    update_results(path, "tri1", "test", wer(1, 100, "exp/tri1/decode_test"))
    update_results(path, "mono", "test", wer(3, 100, "exp/mono/decode_test"))
    update_results(path, "mono", "spk_b", wer(10, 40, "exp/mono/decode_spk_b"))
    update_results(path, "mono", "spk_a", wer(1, 3, "exp/mono/decode_spk_a"))
    return path


def test_update_results_round_trip(store):
    results = load_results(store)
    assert list(results) == ["mono", "tri1"]                      # sorted on disk
    assert list(results["mono"]) == ["spk_a", "spk_b", "test"]
    assert results["mono"]["spk_b"] == {
        "wer": 25.0, "errors": 10, "words": 40, "ins": 0, "del": 10, "sub": 0,
        "line": "%WER 25.00 [ 10 / 40, 0 ins, 10 del, 0 sub ] exp/mono/decode_spk_b"}
    before = store.read_bytes()
    update_results(store, "mono", "spk_b", wer(10, 40, "exp/mono/decode_spk_b"))
    assert store.read_bytes() == before                          # deterministic
    update_results(store, "mono", "spk_b", wer(4, 40, "exp/mono/decode_spk_b"))
    assert load_results(store)["mono"]["spk_b"]["errors"] == 4   # replaced, others kept
    assert load_results(store)["tri1"]["test"]["errors"] == 1
    assert not [p for p in store.parent.iterdir() if p.name != "results.json"]


def test_load_results_missing_file_is_empty(tmp_path):
    assert load_results(tmp_path / "results.json") == {}


@pytest.mark.parametrize("content, match", [
    ('{"mono": {"test": ', "results.json:1: not valid JSON"),
    ('{"mono": [1]}', "system 'mono' maps to list"),
    ('{"mono": {"test": {"wer": 1.0}}}', "'mono' / 'test' lacks"),
])
def test_load_results_rejects_bad_layout(tmp_path, content, match):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        load_results(path)


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
    for i in range(25):
        update_results(path, f"system{i % 12}", f"noisy_babble_snr{i:02d}", wer(i, 50, f"d{i}"))
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
    assert json.loads(store.read_text()) == load_results(store)
