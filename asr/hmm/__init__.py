"""HMMs without Gaussians: topologies, transition model, context trees, graphs, forward-backward."""
from asr.hmm.forward_backward import Posteriors, forward_backward
from asr.hmm.graph import Graph, GraphBuilder, training_graph
from asr.hmm.transitions import Topology, TransitionModel
from asr.hmm.tree import ContextStats, ContextTree, build_tree

__all__ = ["ContextStats", "ContextTree", "Graph", "GraphBuilder", "Posteriors", "Topology",
           "TransitionModel", "build_tree", "forward_backward", "training_graph"]
