"""FstArrays: the decoder's CSR form of a WFST."""
import numpy as np
import pytest

from asr.errors import ModelError
from asr.graph import FstArrays


def test_from_arcs_sorts_by_source_and_round_trips(tmp_path):
    g = FstArrays.from_arcs(3, 0, {2: 0.5},
                            [(1, 2, 2, 0, 1.0), (0, 1, 1, 3, 0.5), (0, 2, 0, 0, 2.0)])
    assert g.arc_offsets.tolist() == [0, 2, 3, 3]
    assert g.nextstate.tolist() == [1, 2, 2] and g.ilabel.tolist() == [1, 0, 2]
    assert g.final_cost.tolist() == [np.inf, np.inf, 0.5]
    g.save(tmp_path / "g.npz")
    again = FstArrays.load(tmp_path / "g.npz")
    for name in ("arc_offsets", "ilabel", "olabel", "cost", "nextstate", "final_cost"):
        assert np.array_equal(getattr(again, name), getattr(g, name))
    assert again.start == 0


@pytest.mark.parametrize("arcs, start, match", [
    ([(0, 5, 1, 0, 0.0)], 0, "leads to a state that does not exist"),
    ([(0, 1, -1, 0, 0.0)], 0, "labels must be >= 0"),
    ([(0, 1, 1, 0, 0.0)], 7, "start state 7 does not exist"),
])
def test_invalid_graphs_are_refused(arcs, start, match):
    with pytest.raises(ModelError, match=match):
        FstArrays.from_arcs(2, start, {1: 0.0}, arcs)


def test_a_damaged_graph_file_names_itself(tmp_path):
    path = tmp_path / "g.npz"
    np.savez(path, start=np.array([0]), final_cost=np.zeros(2, np.float32))
    with pytest.raises(ModelError, match="g.npz.*lacks arc_offsets"):
        FstArrays.load(path)
