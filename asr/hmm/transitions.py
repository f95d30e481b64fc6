"""HMM topologies and the transition model.

Glossary of the id spaces that meet here (every id counts from 0):

=================  =================================================================
phone id           index into ``Lexicon.phones``; 0 is silence
hmm state          position of a state inside its phone's HMM, 0 .. num_states-1
transition state   one per (phone, hmm state): ``TransitionModel.tstate(phone, state)``
transition id      two per transition state: ``2*tstate`` is the self-loop,
                   ``2*tstate + 1`` the forward arc (for a phone's last state, the exit)
pdf id             tied state: a row of the acoustic model's output; several
                   (phone-in-context, hmm state) pairs may share one (see ``asr.hmm.tree``)
node               a state of one particular graph (``asr.hmm.graph.Graph``)
=================  =================================================================

Every phone has a left-to-right topology: each state has a self-loop and one forward arc.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOOP, FORWARD = 0, 1


@dataclass
class Topology:
    """Number of emitting states of each phone; the silence phone may differ."""

    num_phones: int
    states_per_phone: int = 3
    silence_states: int = 3

    def num_states(self, phone: int) -> int:
        return self.silence_states if phone == 0 else self.states_per_phone


class TransitionModel:
    """Self-loop and forward probabilities per transition state, trained from arc counts.

    Attributes
    ----------
    topology : Topology
    offsets : (num_phones + 1,) int
        ``offsets[p] + s`` is the transition state of (phone p, hmm state s).
    log_probs : (num_tstates, 2) float64
        Log probability of the self-loop (column 0) and the forward arc (column 1).
    """

    def __init__(self, topology: Topology, self_loop_prob: float = 0.75):
        self.topology = topology
        sizes = [topology.num_states(p) for p in range(topology.num_phones)]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        n = int(self.offsets[-1])
        self.log_probs = np.log(np.tile([self_loop_prob, 1.0 - self_loop_prob], (n, 1)))

    @property
    def num_tstates(self) -> int:
        return int(self.offsets[-1])

    def tstate(self, phone: int, state: int) -> int:
        return int(self.offsets[phone] + state)

    def transition_log_probs(self) -> np.ndarray:
        """(2 * num_tstates,) log probability of every transition id."""
        return self.log_probs.reshape(-1)

    def update(self, counts: np.ndarray, min_prob: float = 0.01) -> None:
        """M-step from expected counts per transition id, shape (2 * num_tstates,).

        States never seen keep their probabilities; no probability falls below ``min_prob``.
        """
        counts = counts.reshape(-1, 2)
        totals = counts.sum(axis=1)
        seen = totals > 0
        probs = np.clip(counts[seen] / totals[seen, None], min_prob, 1.0 - min_prob)
        self.log_probs[seen] = np.log(probs / probs.sum(axis=1, keepdims=True))

    def to_dict(self) -> dict:
        t = self.topology
        return {"num_phones": t.num_phones, "states_per_phone": t.states_per_phone,
                "silence_states": t.silence_states, "log_probs": self.log_probs.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "TransitionModel":
        tm = cls(Topology(data["num_phones"], data["states_per_phone"], data["silence_states"]))
        log_probs = np.asarray(data["log_probs"], dtype=np.float64)
        if log_probs.shape != tm.log_probs.shape:
            raise ValueError(f"transition table has shape {log_probs.shape}, "
                             f"expected {tm.log_probs.shape}")
        tm.log_probs = log_probs
        return tm
