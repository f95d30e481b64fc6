"""Context dependency: which pdf each (left phone, phone, right phone, hmm state) uses.

A ``ContextTree`` has one root per (phone set, hmm state). The phone sets are Kaldi's
``roots.txt`` "shared split" sets (``shared``; see :meth:`asr.lexicon.Lexicon.shared_roots`):
the word-position and stress variants of one base phone (``AH_B``, ``AH_I``, ...) share a
root, and a phone without variants is a set of its own. A monophone system has a single
leaf under each root, so a phone's variants share its pdfs; a triphone system grows each
root by questions about the left or right context phone ("is the left phone a nasal?") or,
in a shared root, the central phone ("is it word-final?"), chosen greedily by the gain in
likelihood of one diagonal Gaussian per leaf, until a target number of leaves (tied
states) is reached.
Context phone ``-1`` is the word boundary in a word-internal tree (Kaldi's old default)
and the utterance edge in a cross-word tree (``cross_word``), whose word-edge phones take
the neighbouring word's phone, or silence (phone 0), as context.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from asr.hmm.transitions import Topology

LEFT, CENTER, RIGHT = 0, 1, 2  # positions in a (left, phone, right, state) context


@dataclass
class _Node:
    pdf: int = -1                 # leaf: pdf id; question node: -1
    position: int = -1            # LEFT, CENTER or RIGHT
    phones: frozenset = frozenset()
    yes: int = -1
    no: int = -1


class ContextTree:
    """Decision tree(s) mapping a phone in context to a pdf id."""

    def __init__(self, nodes: list[_Node], roots: dict[tuple[int, int], int],
                 cross_word: bool = False):
        self.nodes = nodes
        self.roots = roots
        self.cross_word = cross_word      # contexts span word boundaries (graphs follow)
        self.num_pdfs = 1 + max(n.pdf for n in nodes)

    @classmethod
    def monophone(cls, topology: Topology, shared: list[frozenset[int]] | None = None
                  ) -> "ContextTree":
        """One pdf per (phone set, hmm state); ``shared``: phone sets that share their pdfs
        (None: every phone its own)."""
        nodes, roots = [], {}
        for phones in root_sets(topology, shared):
            for state in range(topology.num_states(min(phones))):
                roots.update({(phone, state): len(nodes) for phone in phones})
                nodes.append(_Node(pdf=len(nodes)))
        return cls(nodes, roots)

    def pdf(self, left: int, phone: int, right: int, state: int) -> int:
        node = self.nodes[self.roots[(phone, state)]]
        context = (left, phone, right)
        while node.pdf < 0:
            node = self.nodes[node.yes if context[node.position] in node.phones else node.no]
        return node.pdf

    def to_dict(self) -> dict:
        out = {"roots": [[p, s, i] for (p, s), i in sorted(self.roots.items())],
               "nodes": [[n.pdf, n.position, sorted(n.phones), n.yes, n.no] for n in self.nodes]}
        if self.cross_word:         # absent: word-internal (every tree written before)
            out["cross_word"] = True
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ContextTree":
        nodes = [_Node(pdf, pos, frozenset(phones), yes, no)
                 for pdf, pos, phones, yes, no in data["nodes"]]
        cross_word = data.get("cross_word", False)
        if not isinstance(cross_word, bool):
            raise ValueError(f"tree 'cross_word' must be true or false, got {cross_word!r}")
        return cls(nodes, {(p, s): i for p, s, i in data["roots"]}, cross_word)


class ContextStats:
    """Per-context sufficient statistics of one diagonal Gaussian: count, sum, sum of squares.

    Keys are (left, phone, right, hmm state). Statistics add up across utterances.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.stats: dict[tuple[int, int, int, int], np.ndarray] = {}

    def accumulate(self, contexts: np.ndarray, feats: np.ndarray) -> None:
        """Add frames. contexts: (T, 4) int; feats: (T, D)."""
        keys, inverse = np.unique(contexts, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        block = np.zeros((len(keys), 1 + 2 * self.dim))
        np.add.at(block, inverse, np.hstack([np.ones((len(feats), 1)), feats, feats ** 2]))
        for key, row in zip(map(tuple, keys.tolist()), block):
            if key in self.stats:
                self.stats[key] += row
            else:
                self.stats[key] = row

    def merge(self, other: "ContextStats") -> None:
        for key, row in other.stats.items():
            self.stats[key] = self.stats.get(key, 0) + row


def root_sets(topology: Topology, shared: list[frozenset[int]] | None = None
              ) -> list[frozenset[int]]:
    """The phone sets that own a root, ordered by their first phone: ``shared`` and a set of
    one for every phone it leaves out. Raises ValueError if a phone is in two sets, is not
    a phone of ``topology``, or its set mixes phones of different state counts."""
    sets, seen = [], set()
    for phones in shared or []:
        phones = frozenset(int(p) for p in phones)
        if not phones or seen & phones or not phones <= set(range(topology.num_phones)):
            raise ValueError(f"shared roots must be disjoint sets of phone ids below "
                             f"{topology.num_phones}, got {sorted(phones)}")
        if len({topology.num_states(p) for p in phones}) > 1:
            raise ValueError(f"phones {sorted(phones)} share a root but have different "
                             "numbers of HMM states")
        seen |= phones
        sets.append(phones)
    sets += [frozenset({p}) for p in range(topology.num_phones) if p not in seen]
    return sorted(sets, key=min)


def _log_like(row: np.ndarray, dim: int, var_floor: float) -> float:
    """Log-likelihood of the pooled frames under their own ML diagonal Gaussian."""
    n = row[0]
    if n <= 0:
        return 0.0
    mean = row[1:1 + dim] / n
    var = np.maximum(row[1 + dim:] / n - mean ** 2, var_floor)
    return -0.5 * n * (dim * (1.0 + np.log(2 * np.pi)) + np.log(var).sum())


def build_tree(stats: ContextStats, topology: Topology, questions: list[frozenset],
               num_leaves: int, min_count: float = 50.0, min_gain: float = 1.0,
               var_floor: float = 1e-3, shared: list[frozenset[int]] | None = None
               ) -> tuple[ContextTree, np.ndarray]:
    """Grow a tree by greedy likelihood-gain splitting.

    ``shared``: phone sets that share a root (see :func:`root_sets`); a shared root may also
    split on the central phone. Returns the tree and ``leaf_stats``, (num_pdfs, 1 + 2*D): the
    pooled statistics of each leaf, from which a one-Gaussian-per-pdf model is initialised.
    Silence is never split.
    """
    dim = stats.dim
    by_root: dict[tuple[int, int], list] = {}
    for key in sorted(stats.stats):
        by_root.setdefault((key[1], key[3]), []).append(key)
    nodes: list[_Node] = []
    roots: dict[tuple[int, int], int] = {}
    members: dict[int, list] = {}
    for phones in root_sets(topology, shared):
        for state in range(topology.num_states(min(phones))):
            roots.update({(phone, state): len(nodes) for phone in phones})
            members[len(nodes)] = [k for p in sorted(phones) for k in by_root.get((p, state), [])]
            nodes.append(_Node(pdf=0))

    def pooled(keys):
        return sum((stats.stats[k] for k in keys), np.zeros(1 + 2 * dim))

    def best_split(node_id):
        keys = members[node_id]
        if not keys or keys[0][1] == 0:
            return None
        base = _log_like(pooled(keys), dim, var_floor)
        best = None
        # the central phone splits only a node holding several (of a shared root)
        central = len({k[1] for k in keys}) > 1
        for position in (LEFT, RIGHT, CENTER) if central else (LEFT, RIGHT):
            for phones in questions:
                yes = [k for k in keys if k[position] in phones]
                if not yes or len(yes) == len(keys):
                    continue
                no = [k for k in keys if k[position] not in phones]
                sy, sn = pooled(yes), pooled(no)
                if sy[0] < min_count or sn[0] < min_count:
                    continue
                gain = _log_like(sy, dim, var_floor) + _log_like(sn, dim, var_floor) - base
                if best is None or gain > best[0] + 1e-9:
                    best = (gain, position, phones, yes, no)
        return best

    heap = []
    for node_id in list(members):
        split = best_split(node_id)
        if split and split[0] >= min_gain:
            heapq.heappush(heap, (-split[0], node_id, split))
    leaves = len(nodes)
    while heap and leaves < num_leaves:
        _, node_id, (gain, position, phones, yes, no) = heapq.heappop(heap)
        node = nodes[node_id]
        node.pdf, node.position, node.phones = -1, position, phones
        node.yes, node.no = len(nodes), len(nodes) + 1
        for keys in (yes, no):
            members[len(nodes)] = keys
            nodes.append(_Node(pdf=0))
        leaves += 1
        for child in (node.yes, node.no):
            split = best_split(child)
            if split and split[0] >= min_gain:
                heapq.heappush(heap, (-split[0], child, split))
    # Number the leaves in root order so that pdf ids do not depend on the split order.
    leaf_stats = []
    order = []

    def collect(i):
        if nodes[i].pdf >= 0 or nodes[i].yes < 0:
            order.append(i)
        else:
            collect(nodes[i].yes)
            collect(nodes[i].no)

    for root in dict.fromkeys(roots[key] for key in sorted(roots)):   # a shared root once
        collect(root)
    for pdf, i in enumerate(order):
        nodes[i].pdf = pdf
        leaf_stats.append(pooled(members[i]))
    tree = ContextTree(nodes, roots)
    return tree, np.array(leaf_stats)
