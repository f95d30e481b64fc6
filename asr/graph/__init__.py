"""Decoding graphs as weighted finite-state transducers (HCLG, the Kaldi way).

``FstArrays`` is the searchable form: flat CSR arrays of states and arcs.
"""
from asr.graph.arrays import FstArrays

__all__ = ["FstArrays"]
