"""One contract, every registered acoustic model: shapes, dtype, save/load, decoding.

A new model type registers a name (``asr.models.register``) and adds a factory below;
the contract then runs against it unchanged.
"""
import numpy as np
import pytest

from asr.decoder import Decoder, DecoderConfig, decoding_graph, word_loop
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
    model = make_model(model_type, tree.num_pdfs)
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

    graph = decoding_graph(word_loop(lexicon.words), lexicon, tree, tm)
    result = Decoder(graph, tm, lexicon.words, DecoderConfig()).decode(scores)
    assert isinstance(result.words, list) and result.words
    assert set(result.words) <= set(lexicon.words) and np.isfinite(result.score)

    system = AsrSystem(FeatureConfig(), lexicon, tree, tm, model, DecoderConfig())
    system.save(tmp_path / "system")
    again = AsrSystem.load(tmp_path / "system")
    assert type(again.model) is type(model)
    np.testing.assert_array_equal(again.model.log_likelihoods(feats), scores)
    assert again.decoder().decode(scores).words == result.words
