"""Tree questions derived from data: phone sets clustered by their acoustics.

Kaldi's ``cluster-phones`` grows a binary tree of phone sets from the statistics that tree
building accumulates, and every node of that tree becomes a question ("is the left phone
one of these?"). :func:`cluster_phones` does the same bottom-up: each phone set starts as
a cluster holding one diagonal Gaussian (from its pooled count, sum and sum of squares);
the two clusters whose merge loses the least log-likelihood are merged, until one is left.
Every merged cluster is a node; with the single sets they form the question tree.

:func:`derived_questions` applies this to a lexicon: the phone sets are its base phones
(``AH`` holds ``AH0_B``, ``AH1_E``, ...; see :func:`asr.lexicon.base_phone`), the
statistics are those a triphone system accumulates (:class:`~asr.hmm.tree.ContextStats`),
taken from the central HMM state by default as Kaldi's ``--pdf-class-list=1`` does. The
result is added to the hand-written classes of :meth:`Lexicon.questions`:

>>> questions = lexicon.questions() + derived_questions(stats, lexicon)     # doctest: +SKIP
>>> tree, leaf_stats = build_tree(stats, topo, [q for _, q in questions], 2000)   # doctest: +SKIP

Id spaces: a *phone set index* counts rows of the statistics array given to
:func:`cluster_phones` (from 0); questions hold *phone ids* of ``Lexicon.phones``.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from asr.hmm.tree import ContextStats, _log_like
from asr.lexicon import Lexicon, base_phone

__all__ = ["phone_set_stats", "cluster_phones", "derived_questions"]


def phone_set_stats(stats: ContextStats, phone_sets: list[frozenset[int]],
                    states: Iterable[int] | None = (1,)) -> np.ndarray:
    """Pool context statistics by the central phone's set.

    Parameters
    ----------
    stats : ContextStats
        Keys (left, phone, right, hmm state), rows (1 + 2*D,): count, sum, sum of squares.
    phone_sets : list of frozenset of int
        Phone ids of each set; a phone in no set is left out.
    states : iterable of int or None
        HMM states whose frames count (default the central state of three); None for all.
        A phone with fewer states contributes its states that are listed.

    Returns
    -------
    np.ndarray, shape (len(phone_sets), 1 + 2*D)
    """
    which = {p: s for s, phones in enumerate(phone_sets) for p in phones}
    keep = None if states is None else set(states)
    pooled = np.zeros((len(phone_sets), 1 + 2 * stats.dim))
    for (_, phone, _, state), row in stats.stats.items():
        if phone in which and (keep is None or state in keep):
            pooled[which[phone]] += row
    return pooled


def cluster_phones(set_stats: np.ndarray, var_floor: float = 1e-3,
                   min_count: float = 1.0) -> list[frozenset[int]]:
    """Cluster phone sets bottom-up by the likelihood lost in merging their Gaussians.

    Parameters
    ----------
    set_stats : np.ndarray, shape (S, 1 + 2*D)
        Count, sum and sum of squares of the frames of each phone set.
    var_floor : float
        Floor on each variance (in the units of the features' variance).
    min_count : float
        Sets with fewer frames take no part (they have no reliable Gaussian).

    Returns
    -------
    list of frozenset of int
        Every node of the cluster tree as phone set indices: the single sets that took part
        and each merged cluster, in merge order, the root (all of them) excluded.
    """
    set_stats = np.asarray(set_stats, dtype=np.float64)
    dim = (set_stats.shape[1] - 1) // 2

    def cost(a: np.ndarray, b: np.ndarray) -> float:
        return (_log_like(a, dim, var_floor) + _log_like(b, dim, var_floor)
                - _log_like(a + b, dim, var_floor))

    clusters = {i: (frozenset({i}), set_stats[i].copy())
                for i in range(len(set_stats)) if set_stats[i, 0] >= min_count}
    nodes = [members for members, _ in clusters.values()]
    costs = {(i, j): cost(clusters[i][1], clusters[j][1])
             for i in clusters for j in clusters if i < j}
    next_id = len(set_stats)
    while len(clusters) > 2:
        i, j = min(costs, key=lambda pair: (costs[pair], pair))
        members = clusters[i][0] | clusters[j][0]
        row = clusters.pop(i)[1] + clusters.pop(j)[1]
        costs = {pair: c for pair, c in costs.items() if i not in pair and j not in pair}
        for k, (_, other) in clusters.items():
            costs[(k, next_id)] = cost(other, row)
        clusters[next_id] = (members, row)
        nodes.append(members)
        next_id += 1
    return nodes    # the last two clusters are the root's children, already in ``nodes``


def derived_questions(stats: ContextStats, lexicon: Lexicon, states: Iterable[int] | None = (1,),
                      var_floor: float = 1e-3,
                      min_count: float = 1.0) -> list[tuple[str, frozenset[int]]]:
    """Questions from clustering the lexicon's base phones on ``stats``.

    Silence is left out (it has its own question, ``silence_or_boundary``). Each question
    holds the phone ids of every variant of its base phones and is named
    ``cluster_<n>:<base phones joined by '+'>``; base phones with fewer than ``min_count``
    frames in ``states`` appear in none.

    Returns
    -------
    list of (str, frozenset of int)
        In the form :meth:`Lexicon.questions` gives, to be added to it.
    """
    groups: dict[str, set[int]] = {}
    for phone_id, symbol in enumerate(lexicon.phones[1:], start=1):
        groups.setdefault(base_phone(symbol), set()).add(phone_id)
    names = sorted(groups)
    phone_sets = [frozenset(groups[n]) for n in names]
    nodes = cluster_phones(phone_set_stats(stats, phone_sets, states), var_floor, min_count)
    questions = []
    for number, node in enumerate(nodes):
        ids = frozenset().union(*(phone_sets[s] for s in node))
        questions.append((f"cluster_{number}:{'+'.join(names[s] for s in sorted(node))}", ids))
    return questions
