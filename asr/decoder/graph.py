"""The decoding graph: grammar x lexicon x HMMs, as one graph of HMM states.

Each pronunciation is one chain of states (word-internal triphone contexts). The bigram
history is the word just ended, so the grammar's table applies exactly: the end of word
``u`` joins the start of word ``v`` with ``log P(v | u)``, either directly or through an
optional silence that belongs to ``u`` (so silence does not forget the history).
"""
from __future__ import annotations

import numpy as np

from asr.decoder.grammar import Grammar
from asr.errors import DataError
from asr.hmm.graph import Graph, GraphBuilder
from asr.hmm.transitions import TransitionModel
from asr.hmm.tree import ContextTree
from asr.lexicon import Lexicon


def decoding_graph(grammar: Grammar, lexicon: Lexicon, tree: ContextTree, tm: TransitionModel,
                   silence_prob: float = 0.5) -> Graph:
    """Compile a grammar over the lexicon's words into a graph of HMM states."""
    missing = [w for w in grammar.words if w not in lexicon.prons]
    if missing:
        raise DataError(None, f"grammar words not in the lexicon: {missing[:10]}")
    b = GraphBuilder(lexicon, tree, tm)
    index = lexicon.word_index
    log_sil, log_nosil = np.log(silence_prob), np.log1p(-silence_prob)
    w_count = grammar.num_words
    end = w_count  # column of </s>
    chains = [[b.chain(pron, index[w]) for pron in lexicon.prons[w]] for w in grammar.words]
    lead_first, lead_last = b.silence()
    b.set_start(lead_first, log_sil)
    # Exits of history h: (last node, graph weight owed on leaving it).
    exits: list[list[tuple[int, float]]] = [[(lead_last, 0.0)]]
    for u in range(w_count):
        sil_first, sil_last = b.silence()
        ends = [(sil_last, 0.0)]
        for _, last in chains[u]:
            b.link(last, sil_first, log_sil)
            ends.append((last, log_nosil))
        exits.append(ends)
    table = grammar.log_probs
    for h, ends in enumerate(exits):
        for v in range(w_count):
            lp = table[h, v]
            if not np.isfinite(lp):
                continue
            for first, _ in chains[v]:
                if h == 0:  # starting directly in a word, without leading silence
                    b.set_start(first, log_nosil, lm=lp)
                for last, owed in ends:
                    b.link(last, first, owed, lm=lp)
        lp_end = table[h, end]
        if np.isfinite(lp_end) and h > 0:
            for last, owed in ends:
                b.set_final(last, owed, lm=lp_end)
    return b.build()
