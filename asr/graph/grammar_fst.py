"""G: the grammar as a weighted acceptor over ``words.txt`` symbols.

- :func:`arpa_fst`: an ARPA n-gram model of any order through ``kaldilm.arpa2fst`` (Kaldi's
  ``arpa2fst``): back-off arcs read ``#0``, ``<s>`` and ``</s>`` become epsilon (the start
  state is the ``<s>`` history, final weights carry ``</s>``), n-grams over words that
  ``words.txt`` lacks are skipped;
- :func:`word_loop_fst`: any non-empty word sequence, each next word with probability 1/W
  and ending free (the grammar yesno and connected digits use);
- :func:`single_word_fst`: exactly one word, each with probability 1/W (isolated words);
- :func:`bigram_fst`: any bigram table ``log_probs[h, v]`` (row 0 = ``<s>``, row i+1 =
  word i; column W = ``</s>``), as ``asr.decoder.grammar.Grammar`` holds.

:func:`make_g` reads the grammar setting recipes already use (``"loop"``, ``"single"`` or an
ARPA path). Every G here is input-label sorted and uses the lang's word symbols.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Sequence

import kaldifst
import kaldilm
import numpy as np

from asr.errors import DataError
from asr.graph.fst import ArcTable, from_fst, to_fst
from asr.graph.lang import BOS, EOS, Lang


def _sorted(fst: kaldifst.StdVectorFst) -> kaldifst.StdVectorFst:
    kaldifst.arcsort(fst, sort_type="ilabel")
    return fst


def _word_symbols(lang: Lang, words: Sequence[str] | None) -> list[int]:
    words = lang.lexicon.words if words is None else list(words)
    missing = [w for w in words if w not in lang.lexicon.prons]
    if missing:
        raise DataError(None, f"grammar words not in the lexicon: {missing[:10]}")
    if not words:
        raise DataError(None, "a grammar needs at least one word")
    return [lang.word_symbol(w) for w in words]


def word_loop_fst(lang: Lang, words: Sequence[str] | None = None) -> kaldifst.StdVectorFst:
    """One or more words (default: all the lexicon's), each next word costing log W."""
    symbols = _word_symbols(lang, words)
    cost = math.log(len(symbols))
    arcs = [(s, 1, w, w, cost) for s in (0, 1) for w in symbols]
    return _sorted(to_fst(ArcTable.from_arcs(2, 0, {1: 0.0}, arcs)))


def single_word_fst(lang: Lang, words: Sequence[str] | None = None) -> kaldifst.StdVectorFst:
    """Exactly one word, each costing log W."""
    symbols = _word_symbols(lang, words)
    cost = math.log(len(symbols))
    return _sorted(to_fst(ArcTable.from_arcs(2, 0, {1: 0.0},
                                             [(0, 1, w, w, cost) for w in symbols])))


def bigram_fst(lang: Lang, words: Sequence[str], log_probs: np.ndarray
               ) -> kaldifst.StdVectorFst:
    """A bigram table over ``words`` (natural log probabilities, ``-inf`` = impossible).

    State 0 is the ``<s>`` history, state i+1 the history "word i".
    """
    symbols = _word_symbols(lang, words)
    w = len(symbols)
    log_probs = np.asarray(log_probs, dtype=np.float64)
    if log_probs.shape != (w + 1, w + 1):
        raise ValueError(f"bigram table has shape {log_probs.shape}, expected "
                         f"({w + 1}, {w + 1})")
    h, v = np.nonzero(np.isfinite(log_probs[:, :w]))
    arcs = [(int(a), int(b) + 1, symbols[b], symbols[b], -float(log_probs[a, b]))
            for a, b in zip(h, v)]
    final = {int(a): -float(log_probs[a, w]) for a in range(1, w + 1)
             if np.isfinite(log_probs[a, w])}
    return _sorted(to_fst(ArcTable.from_arcs(w + 1, 0, final, arcs)))


def arpa_fst(path: str | Path, lang: Lang, max_order: int = -1) -> kaldifst.StdVectorFst:
    """G from an ARPA file (``max_order``: highest n-gram order used, -1 = all)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "ARPA file not found")
    # kaldilm aborts the process on a malformed file: read it here first, so that an error
    # names the file and line instead.
    from asr.lm import read_arpa
    read_arpa(path)
    with tempfile.TemporaryDirectory(prefix="arpa2fst.") as tmp:
        table = os.path.join(tmp, "words.txt")
        Path(table).write_text("".join(f"{s} {i}\n" for i, s in enumerate(lang.words)),
                               encoding="utf-8")
        out = os.path.join(tmp, "G.fst")
        try:
            kaldilm.arpa2fst(str(path), out, bos_symbol=BOS, eos_symbol=EOS,
                             disambig_symbol="#0", read_symbol_table=table,
                             max_order=max_order, max_arpa_warnings=0)
        except Exception as exc:
            raise DataError(path, f"cannot convert ARPA file to G: {exc}") from None
        if not os.path.isfile(out):
            raise DataError(path, "cannot convert ARPA file to G")
        fst = kaldifst.StdVectorFst.read(out)
    return _sorted(fst)


def make_g(spec: str, lang: Lang, base_dir: Path | None = None, weight: float = 1.0
           ) -> kaldifst.StdVectorFst:
    """``"loop"``, ``"single"``, or an ARPA file path (relative to ``base_dir``); every
    cost times ``weight`` (the grammar's weight against the acoustic and lexicon costs)."""
    if spec == "loop":
        g = word_loop_fst(lang)
    elif spec == "single":
        g = single_word_fst(lang)
    else:
        path = Path(spec)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        g = arpa_fst(path, lang)
    if weight == 1.0:
        return g
    table = from_fst(g)
    table.cost[:] = table.cost * weight
    finite = np.isfinite(table.final)        # not-final states stay at inf (0 * inf)
    table.final[finite] = table.final[finite] * weight
    return _sorted(to_fst(table))


__all__ = ["arpa_fst", "bigram_fst", "make_g", "single_word_fst", "word_loop_fst"]
