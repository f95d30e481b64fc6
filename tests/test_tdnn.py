"""The TDNN over whole sequences: scoring an utterance at once equals scoring it window by
window, training chunks hold exactly the frames and context of the windows, chunk training
leaves the MLP alone, and chunks keep DDP's step counts and weights."""
import json
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asr.nnet import (FrameDataset, HybridAcousticModel, NnetConfig, build_net,
                      load_checkpoint, net_spec, sequence_logits, splice_frames, train_nnet)
from asr.nnet.data import PAD
from conftest import toy_frames


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**kw):
    base = dict(model="tdnn", hidden_dim=32, num_layers=3, context_left=4, context_right=3,
                epochs=2, batch_size=32, chunk_width=8, valid_fraction=0.2, device="cpu",
                num_threads=1)
    return NnetConfig(**{**base, **kw})


def _tdnn(norm, dim=5, num_pdfs=7, seed=0):
    """A TDNN in eval mode; BatchNorm gets running statistics other than 0 and 1."""
    torch.manual_seed(seed)
    net = build_net(net_spec(_cfg(norm=norm), dim, num_pdfs))
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("norm", ["layer", "batch", "none"])
@pytest.mark.parametrize("frames", [1, 3, 8, 57])
def test_scoring_an_utterance_at_once_equals_window_by_window(norm, frames):
    net = _tdnn(norm)
    feats = torch.from_numpy(np.random.default_rng(frames).normal(size=(frames, 5))
                             .astype(np.float32))
    with torch.no_grad():
        windows = net(splice_frames(feats, 4, 3))           # (T, num_pdfs), one per window
        for piece in (1, 5, 4096):                          # pieces with their overlap
            whole = sequence_logits(net, feats, piece)
            assert whole.shape == (frames, 7)
            torch.testing.assert_close(whole, windows, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_spliced_layers_are_the_convolutions_of_the_weights(norm):
    """The TDNN multiplies spliced frames by its Conv1d weights: the same as conv1d."""
    net = _tdnn(norm)
    x = torch.randn(3, 30, 5)
    with torch.no_grad():
        reference = net.output(net.hidden(x.transpose(1, 2)).transpose(1, 2))  # conv1d
        torch.testing.assert_close(net(x, sequence=True), reference, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="sequence=True"):
        net(x)


def test_the_acoustic_model_scores_a_tdnn_over_sequences():
    net = _tdnn("batch")
    model = HybridAcousticModel(net, np.full(7, 1 / 7))
    feats = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    calls = []
    net.register_forward_hook(lambda module, args, kwargs, out: calls.append(
        (tuple(args[0].shape), kwargs.get("sequence", False))), with_kwargs=True)
    model.batch_frames = 16
    post = model.log_posteriors(feats)
    assert calls == [((1, 16 + 7, 5), True), ((1, 16 + 7, 5), True), ((1, 8 + 7, 5), True)]
    with torch.no_grad():
        expected = torch.log_softmax(net(splice_frames(torch.from_numpy(feats), 4, 3)), 1)
    np.testing.assert_allclose(post, expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.exp(post).sum(1), 1.0, rtol=1e-5)


def test_chunks_hold_the_windows_of_their_frames():
    feats = [np.arange(7, dtype=np.float32)[:, None], 10 + np.arange(3, dtype=np.float32)[:, None]]
    targets = [np.arange(7), 10 + np.arange(3)]
    data = FrameDataset(feats, targets, left=2, right=1)
    starts = data.chunk_starts(3)
    assert starts.tolist() == [0, 3, 6, 7]                  # per utterance, from its start
    assert data.chunk_frames(starts, 3).tolist() == [3, 3, 1, 3]
    x, y = data.chunk_batch(starts, 3)
    assert x.shape == (4, 2 + 3 + 1, 1) and y.shape == (4, 3)
    assert y.tolist() == [[0, 1, 2], [3, 4, 5], [6, PAD, PAD], [10, 11, 12]]
    windows = data.windows(torch.arange(10))[..., 0]        # (frames, 4)
    for chunk, start in enumerate(starts.tolist()):
        for k in range(int(data.chunk_frames(starts[chunk:chunk + 1], 3))):
            # frame start + k sees rows k .. k + 3 of its chunk: the window cut for it
            assert torch.equal(x[chunk, k:k + 4, 0], windows[start + k])
    order = torch.cat(list(data.chunk_batches(3, 2, torch.Generator().manual_seed(0))))
    assert sorted(order.tolist()) == starts.tolist()
    assert [len(b) for b in data.chunk_batches(3, 3)] == [3, 1]


def test_a_chunk_batch_has_the_loss_of_its_frames_windows():
    """Chunk training optimises what window training does: the mean loss over the frames."""
    feats, targets = toy_frames(num_utts=3)
    data = FrameDataset(list(feats.values()), list(targets.values()), 4, 3)
    torch.manual_seed(0)
    net = build_net(net_spec(_cfg(dropout=0.0), 5, 4)).train()
    x, y = data.chunk_batch(data.chunk_starts(8), 8)
    chunk_loss = F.cross_entropy(net(x, sequence=True).flatten(0, 1), y.flatten(),
                                 ignore_index=PAD)
    xw, yw = data.batch(torch.arange(len(data)))
    window_loss = F.cross_entropy(net(xw), yw)
    torch.testing.assert_close(chunk_loss, window_loss, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(chunk_loss, list(net.parameters()))
    for a, b in zip(grads, torch.autograd.grad(window_loss, list(net.parameters()))):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_chunk_width_is_validated():
    with pytest.raises(ValueError, match="chunk_width must be >= 1"):
        _cfg(chunk_width=0)
    with pytest.raises(ValueError, match="must not exceed batch_size"):
        _cfg(chunk_width=64, batch_size=32)
    mlp = _cfg(model="mlp", chunk_width=64, batch_size=32)     # the MLP ignores it
    assert mlp.training_chunk() is None and _cfg().training_chunk() == 8


def test_the_mlp_trains_the_same_whatever_the_chunk_width(tmp_path):
    feats, targets = toy_frames()
    a, hist_a = train_nnet(feats, targets, 4, _cfg(model="mlp", chunk_width=1),
                           tmp_path / "a", progress=False)
    b, hist_b = train_nnet(feats, targets, 4, _cfg(model="mlp", chunk_width=32),
                           tmp_path / "b", progress=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [h["train_loss"] for h in hist_a] == [h["train_loss"] for h in hist_b]
    # ... and it resumes whatever the chunk width: the MLP never used it
    train_nnet(feats, targets, 4, _cfg(model="mlp", chunk_width=4, epochs=3), tmp_path / "a",
               progress=False)


def _steps_taken(folder):
    state = load_checkpoint(folder / "checkpoint.pt")["optimizer"]["state"]
    return {int(s["step"]) for s in state.values()}


def test_tdnn_trains_on_chunks_one_step_per_batch(tmp_path):
    feats, targets = toy_frames()
    cfg = _cfg(valid_fraction=0.0, epochs=2)
    net, history = train_nnet(feats, targets, 4, cfg, tmp_path, progress=False)
    chunks = sum(-(-len(t) // 8) for t in targets.values())
    assert _steps_taken(tmp_path) == {2 * -(-chunks // (32 // 8))}
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(h["frames_per_second"] > 0 for h in history)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned_rank(rank, world_size, port, folder):
    """One process of a gloo run; records the loss weights of each training epoch."""
    import torch.distributed as dist

    import asr.nnet.train as nnet_train

    torch.set_num_threads(1)
    run_epoch, weights = nnet_train._run_epoch, []

    def spy(net, data, cfg, device, opt, batches, *args):
        if opt is not None:
            weights.append(np.asarray(args[2]).tolist())
        return run_epoch(net, data, cfg, device, opt, batches, *args)

    nnet_train._run_epoch = spy
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    try:
        feats, targets = toy_frames()
        _, history = train_nnet(feats, targets, 4, _cfg(epochs=2), folder, progress=False)
    finally:
        dist.destroy_process_group()
    (folder.parent / f"rank{rank}.json").write_text(json.dumps({"history": history,
                                                                 "weights": weights}))


def test_two_gloo_processes_take_the_steps_of_one_on_chunks(tmp_path):
    import torch.multiprocessing as mp

    feats, targets = toy_frames()
    _, one = train_nnet(feats, targets, 4, _cfg(epochs=2), tmp_path / "one", progress=False)
    mp.spawn(_spawned_rank, args=(2, _free_port(), tmp_path / "two"), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    keys = ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr")
    assert [[h[k] for k in keys] for h in ranks[0]["history"]] == [
        [h[k] for k in keys] for h in ranks[1]["history"]]        # all-reduced everywhere
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert _steps_taken(tmp_path / "two") == _steps_taken(tmp_path / "one")
    # Step s weighs each process's summed loss by 2 / (frames of global batch s): over an
    # epoch the global batches hold every training frame once.
    train = (tmp_path / "one/train_utts").read_text().split()
    assert (tmp_path / "two/train_utts").read_text().split() == train
    for epoch in ranks[0]["weights"]:
        assert round(sum(2 / w for w in epoch)) == sum(len(targets[u]) for u in train)
    assert abs(ranks[0]["history"][-1]["valid_loss"] - one[-1]["valid_loss"]) < 0.2
