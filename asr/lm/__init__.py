"""ARPA n-gram language models: reading any order, Kneser-Ney training, pruning, perplexity.

>>> from asr.lm import train_kneser_ney, write_arpa, read_arpa, perplexity  # doctest: +SKIP
>>> lm = train_kneser_ney("lm-norm.txt", order=3, vocab=20000, prune=1e-8)   # doctest: +SKIP
>>> write_arpa(lm, "exp/lm/3gram.arpa")                                      # doctest: +SKIP
>>> lm = read_arpa("exp/lm/3gram.arpa")                                      # doctest: +SKIP
>>> lm.log_prob("UNION", ("OF", "THE"))               # log10 p(w | h)     # doctest: +SKIP
-1.8545...
>>> perplexity(lm, [["THE", "STATE", "OF", "THE", "UNION"]]).summary()       # doctest: +SKIP
'1 sentences, 5 words, 0 OOVs (0.00%), 0 zeroprobs, logprob= -6.29 ppl= 11.19 ppl1= 18.15'

The same from the command line::

    python -m asr.lm train --order 3 --vocab-size 20000 --prune 1e-8 text.txt 3gram.arpa
    python -m asr.lm ppl 3gram.arpa dev.txt

Modules: ``model`` (:class:`NgramLM`, back-off lookup), ``arpa`` (files), ``text`` (one
sentence a line), ``kneser_ney`` (counting and estimation), ``prune`` (relative entropy),
``perplexity``.
"""
from asr.lm.arpa import read_arpa, write_arpa
from asr.lm.kneser_ney import (NgramCounts, count_ngrams, estimate_kneser_ney,
                               select_vocabulary, train_kneser_ney)
from asr.lm.model import LOG10_ZERO, SENTENCE_END, SENTENCE_START, NgramLM
from asr.lm.perplexity import Perplexity, perplexity
from asr.lm.prune import prune_relative_entropy
from asr.lm.text import read_sentences

__all__ = ["NgramLM", "NgramCounts", "Perplexity", "read_arpa", "write_arpa", "read_sentences",
           "count_ngrams", "estimate_kneser_ney", "train_kneser_ney", "select_vocabulary",
           "prune_relative_entropy", "perplexity", "SENTENCE_START", "SENTENCE_END",
           "LOG10_ZERO"]
