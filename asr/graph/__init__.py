"""Decoding graphs as weighted finite-state transducers (HCLG, the Kaldi way).

``FstArrays`` is the searchable form: flat CSR arrays of states and arcs. The modules that
build it (they import kaldifst, so they are imported by name, not here):

- ``asr.graph.lang``: ``phones.txt``, ``words.txt``, disambiguation symbols, L;
- ``asr.graph.grammar_fst``: G from an ARPA file (kaldilm), a word loop or a single word;
- ``asr.graph.hclg``: HCLG = H o C o L o G with Kaldi's scales, cached per graph directory;
- ``asr.graph.fst``: exact, fast conversion between numpy arrays and kaldifst.
"""
from asr.graph.arrays import FstArrays

__all__ = ["FstArrays"]
