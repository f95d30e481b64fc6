"""LM text: one sentence a line, words separated by white space, no sentence markers.

Training and perplexity read the same format (SRILM's and KenLM's): ``<s>`` and ``</s>`` are
added around every line by the LM code, so a line that already holds them is an error
naming the file and line. Blank lines are skipped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from asr.errors import DataError
from asr.lm.model import SENTENCE_END, SENTENCE_START

__all__ = ["read_sentences", "as_sentences"]


def read_sentences(path: str | Path) -> list[list[str]]:
    """The non-blank lines of ``path``, each split into words."""
    path = Path(path)
    sentences = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                words = line.split()
                if not words:
                    continue
                if SENTENCE_START in words or SENTENCE_END in words:
                    raise DataError(path, f"sentence markers {SENTENCE_START} and "
                                    f"{SENTENCE_END} are added by the LM code; remove them "
                                    "from the text", number)
                sentences.append(words)
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise DataError(path, f"cannot read LM text: {exc.strerror or exc}") from None
    return sentences


def as_sentences(text: str | Path | Iterable[str | list[str]]) -> list[list[str]]:
    """Sentences from a file path, or from an iterable of strings or word lists."""
    if isinstance(text, (str, Path)):
        return read_sentences(text)
    sentences = []
    for sentence in text:
        words = sentence.split() if isinstance(sentence, str) else list(sentence)
        if SENTENCE_START in words or SENTENCE_END in words:
            raise ValueError(f"sentence markers are added by the LM code: {sentence!r}")
        if words:
            sentences.append(words)
    return sentences
