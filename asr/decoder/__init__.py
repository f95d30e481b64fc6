"""Decoding: grammar x lexicon x HMM graphs and one Viterbi beam search.

Imports no acoustic-model code: it consumes (frames x pdfs) log-likelihood matrices.
"""
from asr.decoder.decoder import DecodeResult, Decoder, DecoderConfig, align, make_grammar
from asr.decoder.grammar import Grammar, read_arpa, single_word, word_loop
from asr.decoder.graph import decoding_graph
from asr.decoder.viterbi import viterbi

__all__ = ["DecodeResult", "Decoder", "DecoderConfig", "Grammar", "align", "decoding_graph",
           "make_grammar", "read_arpa", "single_word", "viterbi", "word_loop"]
