"""One contract, every registered acoustic model: shapes, dtype, save/load, decoding.

A new model type names its class in the ``asr.acoustic_models`` entry-point group of its
package and adds a factory below; the contract then runs against it unchanged. The last
tests install a throw-away package that adds a model the same way.
"""
import sys
import textwrap

import numpy as np
import pytest

import asr.models
from asr.errors import ModelError

from asr.decoder import Decoder, DecoderConfig, decoding_graph
from asr.features import FeatureConfig
from asr.hmm import ContextTree, Topology, TransitionModel
from asr.lexicon import Lexicon
from asr.models import AcousticModel, model_class, registered_models
from asr.system import AsrSystem

DIM = 6
WORDS = [("YES", ["Y"]), ("NO", ["N"]), ("MAYBE", ["M", "EY", "B", "IY"])]


def _gmm(num_pdfs, dim, rng):
    from asr.gmm import DiagGmm, GmmAcousticModel

    per = 2
    gmm = DiagGmm(rng.normal(size=(num_pdfs * per, dim)),
                  rng.uniform(0.5, 2.0, size=(num_pdfs * per, dim)),
                  np.log(np.full(num_pdfs * per, 1.0 / per)),
                  np.repeat(np.arange(num_pdfs), per), num_pdfs)
    return GmmAcousticModel(gmm)


def _dnn(num_pdfs, dim, rng):
    import torch

    from asr.nnet import HybridAcousticModel, NnetConfig, build_net, net_spec

    torch.manual_seed(int(rng.integers(1 << 31)))
    spec = net_spec(NnetConfig(model="tdnn", hidden_dim=16, num_layers=3, context_left=3,
                               context_right=2, norm="batch"), dim, num_pdfs)
    net = build_net(spec)
    with torch.no_grad():      # give BatchNorm running statistics other than 0 and 1
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    return HybridAcousticModel(net, rng.dirichlet(np.ones(num_pdfs)))


FACTORIES = {"gmm": _gmm, "dnn": _dnn}


@pytest.fixture
def hmm():
    lexicon = Lexicon.from_entries(WORDS)
    topo = Topology(len(lexicon.phones), 3, 3)
    return lexicon, TransitionModel(topo), ContextTree.monophone(topo)


@pytest.fixture
def make_model():
    def make(model_type: str, num_pdfs: int, seed: int = 0):
        assert model_type in FACTORIES, (f"acoustic model {model_type!r} is registered but "
                                         "tests/test_models_contract.py has no factory for it")
        return FACTORIES[model_type](num_pdfs, DIM, np.random.default_rng(seed))
    return make


@pytest.mark.parametrize("model_type", registered_models())
def test_acoustic_model_contract(model_type, make_model, hmm, tmp_path):
    lexicon, tm, tree = hmm
    check_contract(make_model(model_type, tree.num_pdfs), model_type, hmm, tmp_path)


def test_builtin_models_arrive_through_entry_points():
    from importlib.metadata import entry_points

    eps = {ep.name: ep for ep in entry_points(group=asr.models.ENTRY_POINT_GROUP)}
    assert {"gmm", "dnn"} <= set(eps) and {"gmm", "dnn"} <= set(registered_models())
    for name in ("gmm", "dnn"):
        assert eps[name].dist.name == "asr"
        assert model_class(name) is eps[name].load() and model_class(name).model_type == name


def check_contract(model, model_type, hmm, tmp_path):
    """Shapes, dtype, finite scores, save -> load, decoding, and a whole system's round trip."""
    lexicon, tm, tree = hmm
    assert isinstance(model, AcousticModel)
    assert model_class(model_type) is type(model) and model.model_type == model_type
    assert model.num_pdfs == tree.num_pdfs

    rng = np.random.default_rng(1)
    feats = rng.normal(size=(60, DIM)).astype(np.float32)
    scores = model.log_likelihoods(feats)
    assert scores.shape == (60, tree.num_pdfs) and scores.dtype == np.float32
    assert np.all(np.isfinite(scores))
    one = model.log_likelihoods(feats[:1])
    assert one.shape == (1, tree.num_pdfs) and np.all(np.isfinite(one))

    (tmp_path / "am").mkdir()
    model.save(tmp_path / "am")
    loaded = model_class(model_type).load(tmp_path / "am")
    assert loaded.num_pdfs == model.num_pdfs
    np.testing.assert_array_equal(loaded.log_likelihoods(feats), scores)

    graph = decoding_graph(lexicon, tree, tm, DecoderConfig())
    result = Decoder(graph, DecoderConfig()).decode(scores)
    assert isinstance(result.words, list) and result.words
    assert set(result.words) <= set(lexicon.words) and np.isfinite(result.cost)

    system = AsrSystem(FeatureConfig(), lexicon, tree, tm, model, DecoderConfig())
    system.save(tmp_path / "system")
    again = AsrSystem.load(tmp_path / "system")
    assert type(again.model) is type(model)
    np.testing.assert_array_equal(again.model.log_likelihoods(feats), scores)
    assert again.decoder().decode(scores).words == result.words


# --- a model from another package, found the way asr finds its own --------------------------

TOY_MODULE = """
    from pathlib import Path

    import numpy as np

    from asr.models import load_arrays, save_arrays


    class ToyModel:
        \"\"\"Log-softmax of a fixed linear map of the features.\"\"\"

        def __init__(self, weights):
            self.weights = np.asarray(weights, dtype=np.float32)   # (dim, num_pdfs)
            self.num_pdfs = self.weights.shape[1]

        def log_likelihoods(self, feats):
            scores = np.asarray(feats, dtype=np.float32) @ self.weights
            return (scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)).astype(
                np.float32)

        def save(self, directory):
            save_arrays(Path(directory) / "weights.npz", {"weights": self.weights})

        @classmethod
        def load(cls, directory):
            return cls(load_arrays(Path(directory) / "weights.npz")["weights"])


    NOT_A_MODEL = 42
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Install a throw-away distribution with ``[asr.acoustic_models]`` entry points.

    Returns a function ``install(entry_points: dict[str, str])``; whatever it registers,
    imports or puts on ``sys.path`` is undone after the test.
    """
    monkeypatch.setattr(asr.models, "_REGISTRY", dict(asr.models._REGISTRY))
    site = tmp_path / "site"
    site.mkdir()

    def install(entries: dict[str, str]) -> None:
        (site / "asr_toy_model.py").write_text(textwrap.dedent(TOY_MODULE), encoding="utf-8")
        info = site / "asr_toy_model-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: asr-toy-model\n"
                                       "Version: 0.1\n", encoding="utf-8")
        (info / "entry_points.txt").write_text(
            "[asr.acoustic_models]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()),
            encoding="utf-8")
        monkeypatch.syspath_prepend(str(site))

    yield install
    sys.modules.pop("asr_toy_model", None)


def test_a_package_adds_a_model_through_its_entry_point(plugin, hmm, tmp_path):
    plugin({"toy": "asr_toy_model:ToyModel"})
    assert "toy" in registered_models() and {"gmm", "dnn"} <= set(registered_models())
    cls = model_class("toy")
    assert cls.__module__ == "asr_toy_model" and cls.model_type == "toy"
    rng = np.random.default_rng(0)
    model = cls(rng.normal(size=(DIM, hmm[2].num_pdfs)))
    check_contract(model, "toy", hmm, tmp_path)


def test_a_plugin_is_loaded_only_when_asked_for(plugin):
    plugin({"toy": "asr_toy_model:ToyModel"})
    model_class("gmm")
    assert "asr_toy_model" not in sys.modules
    model_class("toy")
    assert "asr_toy_model" in sys.modules


@pytest.mark.parametrize("target, expected", [
    ("asr_no_such_module:Model", "cannot be loaded: ModuleNotFoundError"),
    ("asr_toy_model:Missing", "cannot be loaded: AttributeError"),
    ("asr_toy_model:NOT_A_MODEL", "is not an acoustic model class"),
])
def test_a_broken_plugin_is_one_clear_error(plugin, target, expected):
    plugin({"broken": target})
    for ask in (lambda: model_class("broken"), registered_models):
        with pytest.raises(ModelError) as err:
            ask()
        message = str(err.value)
        assert f"entry point 'broken = {target}'" in message and expected in message
        assert "'asr.acoustic_models'" in message and "'asr-toy-model'" in message
    assert model_class("gmm").model_type == "gmm"     # the others still load


def test_two_packages_may_not_claim_one_name(plugin):
    plugin({"gmm": "asr_toy_model:ToyModel"})
    asr.models._REGISTRY.pop("gmm", None)
    for ask in (lambda: model_class("gmm"), registered_models):
        with pytest.raises(ModelError, match="'gmm' is claimed by more than one") as err:
            ask()
        assert "asr.gmm.model:GmmAcousticModel" in str(err.value)
        assert "asr_toy_model:ToyModel" in str(err.value)


def test_unknown_model_type_names_the_registered_ones():
    with pytest.raises(ModelError, match=r"unknown acoustic model type 'lstm'.*'dnn', 'gmm'"):
        model_class("lstm")
