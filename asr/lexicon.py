"""Phone set, pronunciations and phonetic classes.

A lexicon file is Kaldi's ``lexicon.txt`` without the silence entry: one pronunciation per
line, ``WORD p1 p2 ...``; a word may have several lines. The silence phone ``SIL`` is always
phone 0 and is never part of a word; graphs insert it optionally between words.

A phone symbol may carry a word-position mark, as in Kaldi: ``AH_B`` (word begin), ``AH_I``
(inside), ``AH_E`` (end), ``AH_S`` (a one-phone word), and CMUdict's stress digit (``AH0``).
:func:`base_phone` maps a symbol back to its base phone (``AH0_B`` -> ``AH``), which is what
the phonetic classes and the tree questions speak about. Large-vocabulary lexicons (CMUdict,
a corpus's lexicon file, ``<UNK>`` -> ``SPN``) are built by :mod:`asr.pronunciations`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from asr.errors import DataError
from asr.fileio import read_lines

SILENCE = "SIL"
POSITIONS = ("B", "I", "E", "S")   # word-position marks: begin, inside, end, singleton
_POSITION = re.compile(r"_[BIES]$")
_STRESS = re.compile(r"(?<=[A-Z])[0-2]$")


def base_phone(symbol: str, stress: bool = False) -> str:
    """The phone without its word-position mark, and without its stress digit unless
    ``stress``: ``base_phone("AH0_B") == "AH"``, ``base_phone("AH0_B", stress=True) == "AH0"``."""
    symbol = _POSITION.sub("", symbol)
    return symbol if stress else _STRESS.sub("", symbol)

# ARPAbet phonetic classes, used as questions when a decision tree ties triphone states.
PHONE_CLASSES: dict[str, tuple[str, ...]] = {
    "vowel": ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY",
              "UH", "UW"),
    "front_vowel": ("AE", "EH", "EY", "IH", "IY"),
    "back_vowel": ("AA", "AO", "OW", "UH", "UW"),
    "central_vowel": ("AH", "ER"),
    "diphthong": ("AW", "AY", "EY", "OW", "OY"),
    "rounded": ("AO", "OW", "OY", "UH", "UW", "W", "R"),
    "stop": ("B", "D", "G", "K", "P", "T"),
    "voiced_stop": ("B", "D", "G"),
    "unvoiced_stop": ("K", "P", "T"),
    "fricative": ("DH", "F", "HH", "S", "SH", "TH", "V", "Z", "ZH"),
    "voiced_fricative": ("DH", "V", "Z", "ZH"),
    "unvoiced_fricative": ("F", "HH", "S", "SH", "TH"),
    "sibilant": ("S", "SH", "Z", "ZH", "CH", "JH"),
    "labial": ("B", "F", "M", "P", "V", "W"),
    "dental": ("DH", "TH"),
    "alveolar": ("D", "L", "N", "R", "S", "T", "Z"),
    "velar": ("G", "K", "NG"),
    "nasal": ("M", "N", "NG"),
    "liquid": ("L", "R"),
    "glide": ("W", "Y"),
    "approximant": ("L", "R", "W", "Y"),
    "voiced": ("B", "D", "G", "DH", "V", "Z", "ZH", "JH", "M", "N", "NG", "L", "R", "W", "Y",
               "AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY",
               "UH", "UW"),
}


@dataclass
class Lexicon:
    """Words and their pronunciations over a phone set.

    Attributes
    ----------
    phones : list of str
        Phone id -> symbol; ``phones[0]`` is ``SIL``. Phone ids count from 0.
    words : list of str
        Word id -> word, sorted. Word ids count from 0.
    prons : dict of str to list of tuple of int
        Word -> its pronunciations as phone ids.
    """

    phones: list[str]
    words: list[str]
    prons: dict[str, list[tuple[int, ...]]] = field(repr=False)

    @classmethod
    def from_entries(cls, entries: list[tuple[str, list[str]]]) -> "Lexicon":
        """Build from ``(word, [phone, ...])`` pairs."""
        symbols = sorted({p for _, pron in entries for p in pron} - {SILENCE})
        phones = [SILENCE] + symbols
        index = {p: i for i, p in enumerate(phones)}
        prons: dict[str, list[tuple[int, ...]]] = {}
        for word, pron in entries:
            ids = tuple(index[p] for p in pron)
            if ids not in prons.setdefault(word, []):
                prons[word].append(ids)
        return cls(phones=phones, words=sorted(prons), prons=prons)

    @classmethod
    def load(cls, path: str | Path) -> "Lexicon":
        """Read a lexicon file; a malformed line raises DataError naming file and line."""
        path = Path(path)
        lines = read_lines(path, "lexicon")
        entries = []
        for number, line in enumerate(lines, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise DataError(path, f"expected 'WORD phone1 phone2 ...', got {line!r}", number)
            if SILENCE in parts[1:]:
                raise DataError(path, f"{SILENCE} is reserved for optional silence and may not "
                                "be part of a word's pronunciation", number)
            entries.append((parts[0], parts[1:]))
        if not entries:
            raise DataError(path, "lexicon is empty")
        return cls.from_entries(entries)

    def to_dict(self) -> dict:
        return {"phones": self.phones,
                "entries": [[w, [self.phones[p] for p in pron]]
                            for w in self.words for pron in self.prons[w]]}

    @classmethod
    def from_dict(cls, data: dict) -> "Lexicon":
        lex = cls.from_entries([(w, list(pron)) for w, pron in data["entries"]])
        if lex.phones != data["phones"]:
            # Keep the saved phone order: phone ids must not move between save and load.
            index = {p: i for i, p in enumerate(data["phones"])}
            prons = {w: [tuple(index[p] for p in pron) for pron in
                         ([lex.phones[i] for i in ids] for ids in lex.prons[w])]
                     for w in lex.words}
            lex = cls(phones=list(data["phones"]), words=lex.words, prons=prons)
        return lex

    @cached_property
    def word_index(self) -> dict[str, int]:
        """Word -> word id; made once (a lexicon is not changed after it is built), as
        every training graph looks its words up here."""
        return {w: i for i, w in enumerate(self.words)}

    def shared_roots(self) -> list[frozenset[int]]:
        """Phone sets that share a tree root, as Kaldi's ``roots.txt`` "shared split" lines:
        the variants of each base phone (``AH_B``, ``AH1_E``, ... share ``AH``'s root), in
        the order of their first phone id; silence (phone 0) is alone, as is every phone of
        a lexicon without marks."""
        groups: dict[str, set[int]] = {}
        for i, p in enumerate(self.phones):
            groups.setdefault(base_phone(p), set()).add(i)
        return sorted((frozenset(ids) for ids in groups.values()), key=min)

    def questions(self) -> list[tuple[str, frozenset[int]]]:
        """Phone-set questions for tree building: every phonetic class, every base phone
        and, where the phone set has them, every stress variant and word position.

        A question about a base phone (``AH``) holds all its variants (``AH0_B``, ``AH1_E``,
        ...), as Kaldi's questions hold every phone of a shared root. For a phone set
        without marks the base-phone questions are the single phones. Context phone ``-1``
        is the word boundary; it is grouped with silence.
        """
        by_base: dict[str, set[int]] = {}
        by_stress: dict[str, set[int]] = {}
        by_position: dict[str, set[int]] = {}
        for i, p in enumerate(self.phones[1:], start=1):
            by_base.setdefault(base_phone(p), set()).add(i)
            by_stress.setdefault(base_phone(p, stress=True), set()).add(i)
            mark = _POSITION.search(p)
            if mark:
                by_position.setdefault(f"word_position{mark.group()}", set()).add(i)
        found: dict[frozenset[int], str] = {}
        for name, members in PHONE_CLASSES.items():
            ids = frozenset(i for p in members for i in by_base.get(p, ()))
            if 0 < len(ids) < len(self.phones) - 1:
                found.setdefault(ids, name)
        found.setdefault(frozenset({0, -1}), "silence_or_boundary")
        for groups in (by_base, by_stress, by_position):
            for name, ids in sorted(groups.items()):
                found.setdefault(frozenset(ids), name)
        return sorted(((n, s) for s, n in found.items()), key=lambda q: q[0])
