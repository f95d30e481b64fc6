"""The neural path on CUDA: training, checkpoints, resume and decoding on the GPU.

Every test here runs only where torch sees a GPU and is skipped elsewhere. The same code
runs on the CPU in test_nnet.py and test_resume.py; these check what only a GPU exercises:
the network and its frames placed on the device (or in pinned host memory when the frames
are too large for it), bf16 autocast, the CUDA generator's state in a checkpoint, a run
moved between the CPU and the GPU on resume, and scores that match the CPU's.

The data are synthetic: utterances of a three-word lexicon whose frames are each pdf's
mean plus noise, along a planted alignment, so the targets are learnable in a few epochs.
"""
import math

import numpy as np
import pytest
import torch

import asr.nnet.train as nnet_train
from asr.decoder import DecoderConfig
from asr.features import FeatureConfig
from asr.hmm import ContextTree, Topology, TransitionModel
from asr.lexicon import Lexicon
from asr.nnet import (HybridAcousticModel, NnetConfig, build_net, load_checkpoint,
                      train_hybrid, train_nnet)
from asr.system import AsrSystem
from asr.training import Utterance

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="torch sees no CUDA device")

WORDS = [("YES", ["Y"]), ("NO", ["N"]), ("MAYBE", ["M", "EY", "B", "IY"])]
DIM = 8


class Corpus:
    """Lexicon, HMMs and planted utterances: ``train`` and ``test`` lists of
    (Utterance, (T,) pdf ids)."""

    def __init__(self, seed: int = 0, num_train: int = 40, num_test: int = 10):
        self.lexicon = Lexicon.from_entries(WORDS)
        topo = Topology(len(self.lexicon.phones), 3, 3)
        self.tm, self.tree = TransitionModel(topo), ContextTree.monophone(topo)
        rng = np.random.default_rng(seed)
        self.means = rng.normal(scale=3.0, size=(self.tree.num_pdfs, DIM))
        self.train = [self._utterance(f"train{i:03d}", rng) for i in range(num_train)]
        self.test = [self._utterance(f"test{i:03d}", rng) for i in range(num_test)]

    def _utterance(self, utt: str, rng) -> tuple[Utterance, np.ndarray]:
        words = [self.lexicon.words[k]
                 for k in rng.integers(0, len(self.lexicon.words), rng.integers(1, 4))]
        pdfs: list[int] = []

        def states(phones):     # word-internal contexts, as the graphs build them
            for k, phone in enumerate(phones):
                left = phones[k - 1] if k else -1
                right = phones[k + 1] if k + 1 < len(phones) else -1
                for state in range(self.tm.topology.num_states(phone)):
                    pdfs.extend([self.tree.pdf(left, phone, right, state)]
                                * int(rng.integers(2, 5)))

        states((0,))                                    # leading silence
        for word in words:
            states(tuple(self.lexicon.prons[word][0]))
            states((0,))                                # silence after each word
        pdfs = np.array(pdfs, dtype=np.int64)
        feats = self.means[pdfs] + rng.normal(scale=0.5, size=(len(pdfs), DIM))
        return Utterance(utt, feats.astype(np.float32), words), pdfs

    def feats(self, part: str) -> dict[str, np.ndarray]:
        return {u.utt: u.feats for u, _ in getattr(self, part)}

    def targets(self, part: str) -> dict[str, np.ndarray]:
        return {u.utt: pdfs for u, pdfs in getattr(self, part)}


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus()


def _config(**changes) -> NnetConfig:
    settings = dict(model="mlp", hidden_dim=64, num_layers=2, context_left=2, context_right=2,
                    epochs=3, batch_size=128, lr=2e-3, patience=100, device="cuda",
                    num_threads=1)
    return NnetConfig(**{**settings, **changes})


def _weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


def _same_history(a: list[dict], b: list[dict]) -> bool:
    """Equal epoch records, NaN (a figure not measured) equal to NaN."""
    def plain(history):
        return [{k: "nan" if isinstance(v, float) and math.isnan(v) else v
                 for k, v in h.items()} for h in history]
    return plain(a) == plain(b)


@pytest.mark.parametrize("placement, amp", [("gpu", True), ("pinned", False)])
def test_training_runs_on_the_gpu(corpus, tmp_path, monkeypatch, placement, amp):
    if placement == "pinned":      # frames "too large" for the GPU: pinned host memory
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (0, 1 << 30))
    seen = []
    run_epoch = nnet_train._run_epoch

    def spy(net, data, cfg, device, *args, **kwargs):
        seen.append((device.type, {p.device.type for p in net.parameters()},
                     data.device.type, data.frames.is_pinned()))
        return run_epoch(net, data, cfg, device, *args, **kwargs)

    monkeypatch.setattr(nnet_train, "_run_epoch", spy)
    net, history = train_nnet(corpus.feats("train"), corpus.targets("train"),
                              corpus.tree.num_pdfs, _config(amp=amp), tmp_path / "train",
                              progress=False)
    assert seen and all(device == "cuda" and params == {"cuda"} for device, params, _, _ in seen)
    if placement == "gpu":
        assert all(data == "cuda" for _, _, data, _ in seen)
    else:
        assert all(data == "cpu" and pinned for _, _, data, pinned in seen)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(h["max_memory_mb"] > 0 for h in history)          # measured on the GPU only
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["valid_acc"] > 0.9
    assert {p.device.type for p in net.parameters()} == {"cpu"} and not net.training


def test_checkpoint_and_resume_on_the_gpu(corpus, tmp_path):
    feats, targets, pdfs = corpus.feats("train"), corpus.targets("train"), corpus.tree.num_pdfs
    _, full_history = train_nnet(feats, targets, pdfs, _config(epochs=4, dropout=0.2),
                                 tmp_path / "full", progress=False)
    full = load_checkpoint(tmp_path / "full/checkpoint.pt")

    net, history = train_nnet(feats, targets, pdfs, _config(epochs=2, dropout=0.2),
                              tmp_path / "resumed", progress=False)
    saved = load_checkpoint(tmp_path / "resumed/checkpoint.pt")
    assert saved["epoch"] == 2 and _same_history(saved["history"], history)
    assert isinstance(saved["rng_cuda"], torch.Tensor) and saved["rng_cuda"].dtype == torch.uint8
    assert all(t.device.type == "cpu" for t in saved["model"].values())
    for name, value in _weights(net).items():                   # the best epoch's weights
        assert torch.equal(value, saved["best_model"][name])
    again = build_net(saved["spec"]).to("cuda")                 # reloaded onto the GPU
    again.load_state_dict(saved["model"])
    for name, value in _weights(again).items():
        assert torch.equal(value, saved["model"][name])

    _, resumed_history = train_nnet(feats, targets, pdfs, _config(epochs=4, dropout=0.2),
                                    tmp_path / "resumed", progress=False)
    resumed = load_checkpoint(tmp_path / "resumed/checkpoint.pt")
    assert [h["epoch"] for h in resumed_history] == [1, 2, 3, 4]
    assert _same_history(resumed_history[:2], history)          # continued, not restarted
    assert resumed["epoch"] == 4
    # The same weights and losses as the run that was never interrupted (the generators
    # and the optimizer came back from the checkpoint); a tolerance, since CUDA kernels
    # are not switched to deterministic algorithms.
    for key in ("train_loss", "valid_loss"):
        assert [h[key] for h in resumed_history] == pytest.approx(
            [h[key] for h in full_history], rel=1e-3)
    for name, value in full["model"].items():
        torch.testing.assert_close(resumed["model"][name], value, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("first, then", [("cpu", "cuda"), ("cuda", "cpu")])
def test_a_run_resumes_on_the_other_device(corpus, tmp_path, first, then):
    feats, targets, pdfs = corpus.feats("train"), corpus.targets("train"), corpus.tree.num_pdfs
    _, history = train_nnet(feats, targets, pdfs, _config(epochs=2, device=first),
                            tmp_path / "train", progress=False)
    assert (load_checkpoint(tmp_path / "train/checkpoint.pt")["rng_cuda"] is None) == \
        (first == "cpu")
    net, resumed = train_nnet(feats, targets, pdfs, _config(epochs=4, device=then),
                              tmp_path / "train", progress=False)
    state = load_checkpoint(tmp_path / "train/checkpoint.pt")
    assert [h["epoch"] for h in resumed] == [1, 2, 3, 4]
    assert _same_history(resumed[:2], history)
    assert state["epoch"] == 4 and state["config"]["device"] == then
    assert all(math.isfinite(h["train_loss"]) for h in resumed)
    assert (resumed[-1]["max_memory_mb"] > 0) == (then == "cuda")
    assert resumed[-1]["train_loss"] < resumed[0]["train_loss"]


@pytest.fixture
def full_float32():
    """No TF32 in matrix products or convolutions, so GPU scores can be held to the CPU's."""
    precision, conv_tf32 = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.set_float32_matmul_precision(precision)
    torch.backends.cudnn.allow_tf32 = conv_tf32


def test_hybrid_system_trained_and_decoding_on_the_gpu_matches_the_cpu(corpus, tmp_path,
                                                                        full_float32):
    # train_hybrid takes only the HMMs and decoding settings of the system it extends.
    base = AsrSystem(FeatureConfig(), corpus.lexicon, corpus.tree, corpus.tm, None,
                     DecoderConfig(acoustic_scale=0.5))
    utts = [u for u, _ in corpus.train]
    cfg = _config(model="tdnn", norm="batch", epochs=6, context_left=3, context_right=3)
    system = train_hybrid(utts, corpus.targets("train"), base, FeatureConfig(), cfg,
                          tmp_path / "train", progress=False)
    assert isinstance(system.model, HybridAcousticModel)
    system.save(tmp_path / "dnn")

    on_cpu, on_gpu = AsrSystem.load(tmp_path / "dnn"), AsrSystem.load(tmp_path / "dnn")
    for name, value in _weights(system.model.net).items():      # saved and reloaded exactly
        assert torch.equal(_weights(on_gpu.model.net)[name], value)
    on_gpu.model.device = "cuda"
    decoder = on_cpu.decoder()          # the search is the same whichever device scored
    correct = 0
    for utt, _ in corpus.test:
        cpu_scores = on_cpu.model.log_likelihoods(utt.feats)
        gpu_scores = on_gpu.model.log_likelihoods(utt.feats)
        assert {p.device.type for p in on_gpu.model.net.parameters()} == {"cuda"}
        assert gpu_scores.dtype == np.float32 and gpu_scores.shape == cpu_scores.shape
        np.testing.assert_allclose(gpu_scores, cpu_scores, rtol=1e-4, atol=1e-4)
        on_gpu.model.batch_frames = 7                            # many small batches
        np.testing.assert_allclose(on_gpu.model.log_likelihoods(utt.feats), gpu_scores,
                                   rtol=1e-5, atol=1e-5)
        on_gpu.model.batch_frames = 4096
        gpu_words = decoder.decode(gpu_scores).words
        assert gpu_words == decoder.decode(cpu_scores).words
        correct += gpu_words == utt.words
    assert correct >= 0.9 * len(corpus.test)
