"""Decoding: one token-passing Viterbi search over WFSTs (HCLG for decoding, each
utterance's training graph for alignment).

Imports no acoustic-model code: it consumes (frames x pdfs) log-likelihood matrices.
"""
from asr.decoder.decoder import (DecodeResult, Decoder, DecoderConfig, align, decoding_graph,
                                 training_fst)

__all__ = ["DecodeResult", "Decoder", "DecoderConfig", "align", "decoding_graph",
           "training_fst"]
