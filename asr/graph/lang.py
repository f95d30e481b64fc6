"""The lang directory: symbol tables and the lexicon transducer L, as Kaldi's ``data/lang``.

Glossary of the id spaces (``phones.txt`` and ``words.txt`` count from 1; 0 is ``<eps>``):

==============  ==========================================================================
phone id        ``Lexicon.phones`` index, from 0 (``SIL`` = 0); see ``asr.hmm.transitions``
phone symbol    ``phones.txt`` id = phone id + 1; after the phones come ``#0 .. #n``
disambig k      ``#k``: ``#0`` is G's back-off symbol, ``#1 .. #n`` tell apart homophones
                and words whose pronunciation is a prefix of another's (Kaldi's
                ``add_lex_disambig.pl``), ``#n`` itself follows optional silence
word id         ``Lexicon.words`` index, from 0
word symbol     ``words.txt`` id = word id + 1; after the words come ``#0``, ``<s>``, ``</s>``
                (``#0`` and the sentence marks are what ``kaldilm.arpa2fst`` needs)
==============  ==========================================================================

L (``L.fst``) maps phone symbols to word symbols with optional silence between words, as
Kaldi's ``make_lexicon_fst.py --sil-prob``: from the start state silence is taken with
probability ``silence_prob``, and so after every word; ``L_disambig.fst`` also reads the
disambiguation symbols that make ``L o G`` determinizable.

:func:`lexicon_fst` builds L over any input symbols, one sequence per pronunciation, so the
same code builds L over word-position-dependent phones or over phones in context
(``asr.graph.hclg`` expands word-internal triphones this way).

>>> lang = make_lang(Lexicon.from_entries([("NO", ["N"]), ("YES", ["Y"])]))
>>> lang.words
['<eps>', 'NO', 'YES', '#0', '<s>', '</s>']
>>> lang.phones
['<eps>', 'SIL', 'N', 'Y', '#0', '#1']
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import kaldifst

from asr.errors import DataError
from asr.fileio import atomic_dir, read_lines, write_text
from asr.graph.fst import ArcTable, to_fst
from asr.lexicon import SILENCE, Lexicon

EPS = "<eps>"
BOS, EOS = "<s>", "</s>"
RESERVED_WORDS = (EPS, "#0", BOS, EOS)


def add_disambig(prons: Sequence[tuple[int, ...]]) -> tuple[list[int], int]:
    """Kaldi's ``add_lex_disambig.pl``: the disambiguation number of each pronunciation.

    A pronunciation that several words share, or that is a proper prefix of another, gets
    ``#1``, ``#2``, ... (numbered per phone sequence, in order of appearance); any other
    gets 0 (none). Returns (number per pronunciation, highest number used).
    """
    count: dict[tuple[int, ...], int] = {}
    prefixes: set[tuple[int, ...]] = set()
    for pron in prons:
        count[pron] = count.get(pron, 0) + 1
        prefixes.update(pron[:i] for i in range(1, len(pron)))
    used: dict[tuple[int, ...], int] = {}
    numbers = []
    for pron in prons:
        if count[pron] > 1 or pron in prefixes:
            used[pron] = used.get(pron, 0) + 1
            numbers.append(used[pron])
        else:
            numbers.append(0)
    return numbers, max(numbers, default=0)


@dataclass
class Lang:
    """Symbol tables and pronunciations with their disambiguation symbols.

    Attributes
    ----------
    lexicon : Lexicon
    phones : list of str -- ``phones.txt``: ``<eps>``, the lexicon's phones, ``#0 .. #n``
    words : list of str -- ``words.txt``: ``<eps>``, the lexicon's words, ``#0 <s> </s>``
    entries : list of (word id, phone ids, disambig k) -- every pronunciation, in order
    num_disambig : int -- ``n``: the highest ``#k``; ``#n`` is the silence disambiguator
    silence_prob : float -- probability of optional silence before and after every word
    """

    lexicon: Lexicon
    phones: list[str]
    words: list[str]
    entries: list[tuple[int, tuple[int, ...], int]]
    num_disambig: int
    silence_prob: float

    @property
    def disambig_phone_symbols(self) -> list[int]:
        """``phones.txt`` ids of ``#0 .. #n``."""
        first = len(self.lexicon.phones) + 1
        return list(range(first, first + self.num_disambig + 1))

    def word_symbol(self, word: str) -> int:
        return self.lexicon.word_index[word] + 1

    @property
    def word_disambig_symbol(self) -> int:
        """``words.txt`` id of ``#0``."""
        return len(self.lexicon.words) + 1

    def L(self, disambig: bool = False) -> kaldifst.StdVectorFst:
        """The lexicon transducer over phone symbols (with ``#k`` if ``disambig``),
        output-label sorted for composition with G."""
        first = len(self.lexicon.phones) + 1
        prons = [(word + 1, [p + 1 for p in pron] + ([first + k] if disambig and k else []))
                 for word, pron, k in self.entries]
        fst = lexicon_fst(prons, silence=1, silence_prob=self.silence_prob,
                          silence_disambig=first + self.num_disambig if disambig else None)
        if disambig:   # G's back-off #0 passes through L as #0:#0 (Kaldi's fstaddselfloops)
            kaldifst.add_self_loops(fst, [first], [self.word_disambig_symbol])
        kaldifst.arcsort(fst, sort_type="olabel")
        return fst

    def write(self, directory: str | Path) -> None:
        """Write ``phones.txt``, ``words.txt``, ``phones/disambig.int``, ``lexicon.txt``,
        ``lexicon_disambig.txt``, ``L.fst`` and ``L_disambig.fst`` atomically."""
        with atomic_dir(directory) as tmp:
            write_text(tmp / "phones.txt", _symbol_table(self.phones))
            write_text(tmp / "words.txt", _symbol_table(self.words))
            (tmp / "phones").mkdir()
            write_text(tmp / "phones" / "disambig.int",
                       "".join(f"{i}\n" for i in self.disambig_phone_symbols))
            write_text(tmp / "phones" / "silence_prob", f"{self.silence_prob!r}\n")
            lines, lines_disambig = [], []
            for word, pron, k in self.entries:
                text = " ".join([self.lexicon.words[word]]
                                + [self.lexicon.phones[p] for p in pron])
                lines.append(text + "\n")
                lines_disambig.append(text + (f" #{k}\n" if k else "\n"))
            write_text(tmp / "lexicon.txt", "".join(lines))
            write_text(tmp / "lexicon_disambig.txt", "".join(lines_disambig))
            self.L().write(str(tmp / "L.fst"))
            self.L(disambig=True).write(str(tmp / "L_disambig.fst"))


def _symbol_table(symbols: list[str]) -> str:
    return "".join(f"{s} {i}\n" for i, s in enumerate(symbols))


def read_symbol_table(path: str | Path) -> list[str]:
    """Read ``phones.txt`` / ``words.txt``; ids must be 0, 1, 2, ... in order."""
    path = Path(path)
    lines = read_lines(path, "symbol table")
    symbols = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if len(parts) != 2 or parts[1] != str(len(symbols)):
            raise DataError(path, f"expected 'SYMBOL {len(symbols)}', got {line!r}", number)
        symbols.append(parts[0])
    return symbols


def make_lang(lexicon: Lexicon, silence_prob: float = 0.5) -> Lang:
    """The lang of a lexicon: symbol tables and disambiguation symbols."""
    if not 0.0 < silence_prob < 1.0:
        raise ValueError("silence_prob must lie strictly between 0 and 1")
    if lexicon.phones[0] != SILENCE:
        raise DataError(None, f"phone 0 must be {SILENCE}, got {lexicon.phones[0]!r}")
    clash = sorted(set(lexicon.words) & set(RESERVED_WORDS))
    if clash:
        raise DataError(None, f"the lexicon may not hold the reserved word {clash[0]!r}")
    index = lexicon.word_index
    entries = [(index[w], pron) for w in lexicon.words for pron in lexicon.prons[w]]
    empty = [lexicon.words[w] for w, pron in entries if not pron]
    if empty:
        raise DataError(None, f"word {empty[0]!r} has an empty pronunciation")
    numbers, top = add_disambig([pron for _, pron in entries])
    num_disambig = top + 1          # one more for optional silence, as Kaldi's prepare_lang
    phones = [EPS] + list(lexicon.phones) + [f"#{k}" for k in range(num_disambig + 1)]
    words = [EPS] + list(lexicon.words) + ["#0", BOS, EOS]
    return Lang(lexicon, phones, words,
                [(w, pron, k) for (w, pron), k in zip(entries, numbers)], num_disambig,
                silence_prob)


def lexicon_fst(prons: Sequence[tuple[int, Sequence[int]]], silence: int,
                silence_prob: float, silence_disambig: int | None = None
                ) -> kaldifst.StdVectorFst:
    """Kaldi's ``make_lexicon_fst.py`` with silence probability, over any input labels.

    Parameters
    ----------
    prons : (word label, input labels) per pronunciation; labels > 0
    silence : input label of the optional silence
    silence_prob : probability of silence at the start and after each word
    silence_disambig : input label read after silence (``L_disambig``), or None

    States: 0 start, 1 loop (between words, final), 2 after a word that silence follows.
    """
    sil_cost, nosil_cost = -math.log(silence_prob), -math.log1p(-silence_prob)
    arcs = [(0, 1, 0, 0, nosil_cost), (0, 2, 0, 0, sil_cost)]
    if silence_disambig is None:
        arcs.append((2, 1, silence, 0, 0.0))
        next_state = 3
    else:
        arcs += [(2, 3, silence, 0, 0.0), (3, 1, silence_disambig, 0, 0.0)]
        next_state = 4
    for word, labels in prons:
        state = 1
        for i, label in enumerate(labels[:-1]):
            arcs.append((state, next_state, label, word if i == 0 else 0, 0.0))
            state, next_state = next_state, next_state + 1
        out = word if len(labels) == 1 else 0
        arcs.append((state, 1, labels[-1], out, nosil_cost))
        arcs.append((state, 2, labels[-1], out, sil_cost))
    return to_fst(ArcTable.from_arcs(next_state, 0, {1: 0.0}, arcs))


__all__ = ["Lang", "add_disambig", "lexicon_fst", "make_lang", "read_symbol_table"]
