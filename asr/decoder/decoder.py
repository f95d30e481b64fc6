"""Decoding and forced alignment with one Viterbi search.

>>> graph = decoding_graph(word_loop(lexicon.words), lexicon, tree, tm)   # doctest: +SKIP
>>> decoder = Decoder(graph, tm, lexicon.words, DecoderConfig())          # doctest: +SKIP
>>> decoder.decode(model.log_likelihoods(feats))                         # doctest: +SKIP
['YES', 'NO', ...]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr.decoder.grammar import Grammar, read_arpa, single_word, word_loop
from asr.decoder.viterbi import viterbi
from asr.hmm.graph import Graph
from asr.hmm.transitions import TransitionModel


@dataclass
class DecoderConfig:
    """Search settings. Scores are ``acoustic_scale * AM + transitions + silence
    + lm_weight * LM + word_penalty * words``; paths further than ``beam`` below the best
    are pruned (Kaldi's defaults: acoustic scale 0.1, beam 13-16)."""

    grammar: str = "loop"          # "loop", "single" or the path of an ARPA file
    beam: float = 40.0
    acoustic_scale: float = 0.1
    lm_weight: float = 1.0
    word_penalty: float = 0.0
    silence_prob: float = 0.5

    def __post_init__(self):
        if self.beam <= 0 or self.acoustic_scale <= 0:
            raise ValueError("beam and acoustic_scale must be positive")
        if not 0.0 < self.silence_prob < 1.0:
            raise ValueError("silence_prob must lie strictly between 0 and 1")


def make_grammar(spec: str, words: list[str], base_dir: Path | None = None) -> Grammar:
    """``"loop"``, ``"single"``, or an ARPA file path (relative to ``base_dir``)."""
    if spec == "loop":
        return word_loop(words)
    if spec == "single":
        return single_word(words)
    path = Path(spec)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    return read_arpa(path, words)


@dataclass
class DecodeResult:
    words: list[str]
    score: float           # total scaled log score of the best path (-inf: no path)
    path: np.ndarray       # (T,) node ids


class Decoder:
    """Viterbi beam decoder over a compiled graph; consumes (frames x pdfs) log-likelihoods."""

    def __init__(self, graph: Graph, tm: TransitionModel, words: list[str], cfg: DecoderConfig):
        self.graph, self.words, self.cfg = graph, list(words), cfg
        self.arc_w, self.start, self.final = graph.weights(tm, cfg.lm_weight, cfg.word_penalty)

    def decode(self, loglik: np.ndarray) -> DecodeResult:
        """Best word sequence for one utterance. loglik: (T, num_pdfs)."""
        g = self.graph
        score, path = viterbi(self.cfg.acoustic_scale * loglik, g.pdf, g.arc_src, g.arc_dst,
                              self.arc_w, self.start, self.final, self.cfg.beam)
        if len(path) == 0 or path[0] < 0:
            return DecodeResult([], -np.inf, path)
        return DecodeResult([self.words[i] for i in g.words_of(path)], float(score), path)


def align(graph: Graph, tm: TransitionModel, loglik: np.ndarray, acoustic_scale: float = 0.1,
          beam: float = 10.0, retry_beam: float = 40.0) -> np.ndarray | None:
    """Forced alignment: the best node path (T,) through a training graph, or None.

    Tries ``beam`` first and ``retry_beam`` if no path survives, as Kaldi's aligner does.
    """
    arc_w, start, final = graph.weights(tm)
    for b in (beam, retry_beam):
        _, path = viterbi(acoustic_scale * loglik, graph.pdf, graph.arc_src, graph.arc_dst,
                          arc_w, start, final, b)
        if len(path) and path[0] >= 0:
            return path
    return None
