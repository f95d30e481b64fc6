"""Decoding and forced alignment with one search: token passing over a WFST.

Decoding searches an HCLG (``asr.graph.hclg``) built from the system's lexicon, tree and
transition model and a grammar G (a word loop, one word, or an ARPA n-gram LM); forced
alignment searches each utterance's training graph (``asr.hmm.graph``) laid out as the same
kind of WFST. Both run :class:`asr.decoder.faster.FasterDecoder` on a (frames x pdfs)
log-likelihood matrix and know no acoustic model.

>>> decoder = system.decoder(DecoderConfig(grammar="exp/lm/3gram.arpa"))  # doctest: +SKIP
>>> decoder.decode(system.model.log_likelihoods(feats)).words            # doctest: +SKIP
['THE', 'UNION', ...]
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr.decoder.faster import NO_LIMIT, Aligner, FasterDecoder, SearchConfig
from asr.graph import FstArrays
from asr.hmm.graph import Graph
from asr.hmm.transitions import TransitionModel
from asr.hmm.tree import ContextTree
from asr.lexicon import Lexicon


@dataclass
class DecoderConfig:
    """How a system decodes: the grammar, the graph's scales and the search's pruning.

    Path costs are ``graph + acoustic_scale * (-log-likelihoods) + word_penalty * words``,
    where the graph cost is HCLG's: transitions (self-loops times ``self_loop_scale``, the
    rest times ``transition_scale``, as Kaldi's mkgraph), optional silence
    (``silence_prob``) and the grammar times ``lm_weight``. Kaldi's usual settings are
    acoustic scale 0.1, self-loop scale 0.1 and beam 13-16; ``1 / acoustic_scale`` is what
    Kaldi's scoring calls the LM weight (LMWT) and sweeps over on a dev set.
    """

    grammar: str = "loop"          # "loop", "single" or the path of an ARPA file
    beam: float = 16.0
    max_active: int = NO_LIMIT
    lattice_beam: float = 8.0      # lattices keep paths within this of the best
    acoustic_scale: float = 0.1
    lm_weight: float = 1.0
    word_penalty: float = 0.0
    silence_prob: float = 0.5
    self_loop_scale: float = 0.1
    transition_scale: float = 1.0

    def __post_init__(self):
        if self.beam <= 0 or self.acoustic_scale <= 0:
            raise ValueError("beam and acoustic_scale must be positive")
        if self.max_active < 1:
            raise ValueError("max_active must be >= 1")
        if self.lm_weight < 0:
            raise ValueError("lm_weight must be >= 0")
        if not 0.0 < self.silence_prob < 1.0:
            raise ValueError("silence_prob must lie strictly between 0 and 1")
        if self.self_loop_scale < 0 or self.transition_scale < 0:
            raise ValueError("self_loop_scale and transition_scale must be >= 0")

    def search(self) -> SearchConfig:
        """The search's pruning settings."""
        return SearchConfig(beam=self.beam, max_active=self.max_active,
                            min_active=min(20, self.max_active),
                            lattice_beam=self.lattice_beam,
                            acoustic_scale=self.acoustic_scale)


@dataclass
class DecodeResult:
    """The best path of one utterance (T frames).

    Attributes
    ----------
    words : list of str
    cost : float -- total scaled cost of the path (``inf``: no path survived)
    reached_final : bool -- False when no surviving path ended in a final state
    transition_ids : (T,) int32 -- the transition id that consumed each frame
    pdfs : (T,) int32 -- the pdf that scored each frame
    """

    words: list[str]
    cost: float
    reached_final: bool
    transition_ids: np.ndarray
    pdfs: np.ndarray


class Decoder:
    """A decoding graph prepared for the search; then one call per utterance.

    ``graph`` is an ``asr.graph.hclg.DecodingGraph`` (input labels scored through
    ``label_pdf``, output labels indexing ``words``).
    """

    def __init__(self, graph, cfg: DecoderConfig):
        self.graph, self.cfg = graph, cfg
        fst = graph.fst
        if cfg.word_penalty:
            cost = fst.cost + np.float32(cfg.word_penalty) * (fst.olabel > 0)
            fst = dataclasses.replace(fst, cost=cost.astype(np.float32))
        self.search = FasterDecoder(fst, graph.label_pdf, cfg.search())

    def decode(self, loglik: np.ndarray) -> DecodeResult:
        """Best word sequence for one utterance. loglik: (T, num_pdfs)."""
        result = self.search.decode(loglik)
        words = self.graph.words
        return DecodeResult([words[w] for w in result.words], result.cost,
                            result.reached_final, self.graph.label_tid[result.ilabels],
                            self.graph.label_pdf[result.ilabels])


def decoding_graph(lexicon: Lexicon, tree: ContextTree, tm: TransitionModel,
                   cfg: DecoderConfig, base_dir: Path | None = None,
                   cache: Path | None = None):
    """The HCLG (``asr.graph.hclg.DecodingGraph``) of a lexicon, tree and transition model
    for ``cfg``: its grammar (an ARPA path is relative to ``base_dir``), ``lm_weight``,
    ``silence_prob`` and graph scales.

    With ``cache`` the graph is kept in ``cache/<key>/``, the key hashing the lang, G, tree,
    transition model and scales, so systems that share a tree and transitions (a GMM and the
    hybrid trained on its alignments) share one graph; without it the graph is compiled in
    memory.
    """
    from asr.graph.grammar_fst import make_g
    from asr.graph.hclg import HclgConfig, build_hclg, compile_hclg, graph_key
    from asr.graph.lang import make_lang

    lang = make_lang(lexicon, cfg.silence_prob)
    g = make_g(cfg.grammar, lang, base_dir, weight=cfg.lm_weight)
    hclg_cfg = HclgConfig(context="cross" if tree.cross_word else "word",
                          transition_scale=cfg.transition_scale,
                          self_loop_scale=cfg.self_loop_scale)
    if cache is None:
        return compile_hclg(lang, g, tree, tm, hclg_cfg)
    key = graph_key(lang, g, tree, tm, hclg_cfg)
    return build_hclg(lang, g, tree, tm, Path(cache) / key[:16], hclg_cfg)


def training_fst(graph: Graph, tm: TransitionModel) -> tuple[FstArrays, np.ndarray]:
    """A training graph as a WFST for the search: (fst, label_pdf).

    State ``n < N`` is "frame consumed in node n", state N the start; the arc into node n
    reads input label ``n + 1`` (scored by ``graph.pdf[n]``), so a path's input labels
    minus one are its node path. Costs are minus the log weights of ``graph.weights``.
    """
    arc_w, start, final = graph.weights(tm)
    n = graph.num_nodes
    starts = np.flatnonzero(np.isfinite(start))
    keep = np.isfinite(arc_w)
    src = np.concatenate([graph.arc_src[keep], np.full(len(starts), n)])
    dst = np.concatenate([graph.arc_dst[keep], starts])
    cost = np.concatenate([-arc_w[keep], -start[starts]])
    order = np.argsort(src, kind="stable")
    offsets = np.zeros(n + 2, dtype=np.int64)
    np.add.at(offsets, src + 1, 1)
    fst = FstArrays(n, np.concatenate([-final, [np.inf]]).astype(np.float32),
                    np.cumsum(offsets), (dst[order] + 1).astype(np.int32),
                    np.zeros(len(src), dtype=np.int32), cost[order].astype(np.float32),
                    dst[order].astype(np.int32))
    return fst, np.concatenate([[-1], graph.pdf]).astype(np.int64)


class TrainingAligner:
    """Forced alignment through one training graph under one transition model, its WFST
    and searches laid out once for every utterance with that transcript."""

    def __init__(self, graph: Graph, tm: TransitionModel, acoustic_scale: float = 0.1,
                 beam: float = 10.0, retry_beam: float = 40.0):
        fst, label_pdf = training_fst(graph, tm)
        self._search = Aligner(fst, label_pdf,
                               SearchConfig(beam=beam, acoustic_scale=acoustic_scale),
                               retry_beam=retry_beam)

    def __call__(self, loglik: np.ndarray) -> np.ndarray | None:
        """The best node path (T,) for ``loglik`` (T, K) scored by the graph's pdfs, or None."""
        labels = self._search(loglik)
        return None if labels is None else labels.astype(np.int64) - 1


def align(graph: Graph, tm: TransitionModel, loglik: np.ndarray, acoustic_scale: float = 0.1,
          beam: float = 10.0, retry_beam: float = 40.0) -> np.ndarray | None:
    """Forced alignment: the best node path (T,) through a training graph, or None.

    Tries ``beam`` first and ``retry_beam`` if no path reaches the end, as Kaldi's aligner.
    """
    return TrainingAligner(graph, tm, acoustic_scale, beam, retry_beam)(loglik)
