"""The hybrid on several processes with torch DDP: gloo on the CPU here, NCCL where a GPU is.

On yesno (a monophone's alignments as targets, 40 log-mel bins as the network's input):

- two gloo processes reach the validation accuracy of one process (within 0.5% absolute),
  report the same numbers on both ranks, and only rank 0 writes files;
- a two-process run under torchrun (``asr train-hybrid``), terminated after a checkpoint
  and started again, ends with the weights and history of the uninterrupted two-process run;
- with CUDA, the same command trains on the GPUs with NCCL (skipped without CUDA).

Every process uses one torch thread; the machine may have only two cores.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from asr.nnet import NnetConfig, load_checkpoint, save_targets, train_hybrid_from_files
from asr.nnet.distributed import (global_batch_sizes, shard_batches, shard_utterances,
                                  step_sizes)

REPO = Path(__file__).resolve().parents[1]
# Ten epochs with the rate decayed to 0 (cosine): two runs that shuffle differently end
# close together. Over seeds 0-3 one and two processes ended 0.14-0.30% apart (one
# machine); with five epochs at a constant rate, up to 0.40%.
EPOCHS = 10
SETTINGS = dict(hidden_dim=128, num_layers=2, epochs=EPOCHS, batch_size=256,
                valid_fraction=0.2, lr_schedule="cosine", device="cpu", num_threads=1)
TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    """One thread per process, and the package of this checkout."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "ASR_QUIET": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def yesno(shared_data, tmp_path_factory) -> Path:
    """yesno's training set: data dir, fbank archive, a monophone and its targets.npz."""
    from asr.data import prepare_yesno
    from asr.decoder import DecoderConfig
    from asr.features import (FeatureConfig, apply_pipeline, compute_archive_in_memory,
                              write_archive)
    from asr.gmm.systems import HmmConfig, align_utterances, train_monophone
    from asr.gmm.train import GmmTrainConfig
    from asr.lexicon import Lexicon
    from asr.nnet import pdf_targets
    from asr.training import Utterance

    root = tmp_path_factory.mktemp("ddp_yesno")
    train = prepare_yesno(shared_data / "yesno", root / "data")["train"]
    mfcc = FeatureConfig(kind="mfcc", num_mel_bins=23, num_ceps=13, deltas=2, cmvn="speaker")
    fbank = FeatureConfig(kind="fbank", num_mel_bins=40, deltas=0, cmvn="speaker")
    feats = apply_pipeline(compute_archive_in_memory(train.wavs, mfcc, progress=False), mfcc,
                           train.utt2spk)
    utts = [Utterance(u, f, train.text[u]) for u, f in feats.items()]
    gmm, _ = train_monophone(utts, Lexicon.load(REPO / "data/lexicons/yesno.txt"), mfcc,
                             HmmConfig(3, 5), GmmTrainConfig(training="viterbi", num_iters=8,
                                                             max_gaussians=10, mixup_iters=3),
                             DecoderConfig(grammar="loop", acoustic_scale=0.1, beam=40.0),
                             progress=False)
    gmm.save(root / "mono")
    save_targets(root / "targets.npz", pdf_targets(align_utterances(gmm, utts)))
    write_archive(root / "fbank", compute_archive_in_memory(train.wavs, fbank, progress=False),
                  fbank)
    return root


def _files(root: Path) -> tuple[Path, Path, Path, Path]:
    return root / "data/train", root / "fbank", root / "targets.npz", root / "mono"


def _spawned_rank(rank: int, world_size: int, port: int, root: str, name: str) -> None:
    """One process of a gloo run: records what it writes, then trains as the CLI does."""
    import torch.distributed as dist

    import asr.nnet.train as nnet_train
    from asr.system import AsrSystem

    torch.set_num_threads(1)
    root = Path(root)
    record = root / f"{name}.writes.rank{rank}"
    record.write_text("")

    def recorded(what, real):
        def write(*args, **kwargs):
            target = args[1] if what == "system" else args[0]
            with open(record, "a") as fh:
                fh.write(f"{what} {Path(target).name}\n")
            return real(*args, **kwargs)
        return write

    nnet_train._save_checkpoint = recorded("checkpoint", nnet_train._save_checkpoint)
    nnet_train.write_json = recorded("json", nnet_train.write_json)
    nnet_train.write_text = recorded("text", nnet_train.write_text)
    AsrSystem.save = recorded("system", AsrSystem.save)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    try:
        system = train_hybrid_from_files(*_files(root), NnetConfig(**SETTINGS),
                                         root / f"{name}_train", root / name, progress=False)
    finally:
        dist.destroy_process_group()
    history = json.loads((root / f"{name}_train/history.json").read_text())
    (root / f"{name}.result.rank{rank}").write_text(json.dumps({
        "valid_acc": [h["valid_acc"] for h in history],
        "num_pdfs": system.model.num_pdfs}))


@pytest.fixture(scope="module")
def two_processes(yesno) -> Path:
    """An uninterrupted two-process gloo run (torch.multiprocessing): its system's folder."""
    import torch.multiprocessing as mp

    mp.spawn(_spawned_rank, args=(2, _free_port(), str(yesno), "two"), nprocs=2, join=True)
    return yesno / "two"


def _history(train_dir: Path) -> list[dict]:
    return json.loads((train_dir / "history.json").read_text())


def _weights(system_dir: Path) -> dict[str, np.ndarray]:
    from asr.system import AsrSystem

    state = AsrSystem.load(system_dir).model.net.state_dict()
    return {k: v.numpy() for k, v in state.items()}


def test_shards_are_balanced_and_every_process_takes_the_same_steps():
    lengths = [500, 40, 300, 300, 120, 90, 610, 75, 10]
    shards = shard_utterances(lengths, 3)
    assert sorted(u for s in shards for u in s) == list(range(len(lengths)))
    frames = [sum(lengths[u] for u in s) for s in shards]
    assert max(frames) - min(frames) <= max(lengths)
    assert shard_utterances(lengths, 3) == shards                 # the same on every process
    steps = 7
    batches = [shard_batches(f, steps, torch.Generator().manual_seed(r))
               for r, f in enumerate(frames)]
    assert all(len(b) == steps for b in batches)
    for f, b in zip(frames, batches):                             # each frame once per epoch
        assert sorted(torch.cat(b).tolist()) == list(range(f))
        assert [len(x) for x in b] == step_sizes(f, steps).tolist()
    assert global_batch_sizes(frames, steps).sum() == sum(frames)


def test_targets_round_trip_as_plain_arrays(tmp_path):
    from asr.errors import DataError
    from asr.nnet import load_targets

    targets = {"b": np.array([2, 2, 0]), "a": np.arange(5, dtype=np.int32)}
    save_targets(tmp_path / "t.npz", targets)
    back = load_targets(tmp_path / "t.npz")
    assert list(back) == ["a", "b"] and all(v.dtype == np.int64 for v in back.values())
    assert all(np.array_equal(back[u], targets[u]) for u in targets)
    with np.load(tmp_path / "t.npz", allow_pickle=False) as plain:
        assert np.array_equal(plain["b"], targets["b"])
    np.savez(tmp_path / "bad.npz", u=np.zeros((3, 2)))
    with pytest.raises(DataError, match="bad.npz.*one integer pdf id per frame"):
        load_targets(tmp_path / "bad.npz")


def test_two_gloo_processes_match_one(yesno, two_processes):
    start = time.perf_counter()
    train_hybrid_from_files(*_files(yesno), NnetConfig(**SETTINGS), yesno / "one_train",
                            yesno / "one", progress=False)
    one_seconds = time.perf_counter() - start
    one = _history(yesno / "one_train")[-1]["valid_acc"]
    two = _history(yesno / "two_train")[-1]["valid_acc"]
    print(f"valid accuracy after {EPOCHS} epochs: one process {one:.4f}, two {two:.4f} "
          f"(one process: {one_seconds:.1f} s)")
    assert one > 0.8 and two > 0.8
    assert abs(one - two) <= 0.005
    # Both ranks report the same (all-reduced) accuracies and build the same system.
    results = [json.loads((yesno / f"two.result.rank{r}").read_text()) for r in (0, 1)]
    assert results[0] == results[1]
    assert results[0]["valid_acc"] == [h["valid_acc"] for h in _history(yesno / "two_train")]
    # The same split as one process; the files are one process's files.
    for name in ("train_utts", "valid_utts"):
        assert (yesno / "two_train" / name).read_text() == (yesno / "one_train" / name).read_text()
    assert sorted(p.name for p in (yesno / "two_train").iterdir()) == sorted(
        p.name for p in (yesno / "one_train").iterdir())
    assert load_checkpoint(yesno / "two_train/checkpoint.pt")["world_size"] == 2


def test_rank_zero_alone_writes(yesno, two_processes):
    writes = [(yesno / f"two.writes.rank{r}").read_text().splitlines() for r in (0, 1)]
    assert writes[1] == []
    assert writes[0].count("checkpoint checkpoint.pt") == EPOCHS
    assert {"json settings.json", "json history.json", "text train_utts", "text valid_utts",
            "system two"} <= set(writes[0])


def _torchrun(yesno: Path, name: str, *extra: str) -> subprocess.Popen:
    data, feats, targets, base = _files(yesno)
    settings = [f"--set={k}={json.dumps(v)}" for k, v in SETTINGS.items()]
    args = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
            "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
            "--master-port", str(_free_port()), "-m", "asr.cli", "train-hybrid",
            "--data", str(data), "--feats", str(feats), "--targets", str(targets),
            "--base", str(base), "--out", str(yesno / name), "--no-progress", *settings, *extra]
    log = open(yesno / f"{name}.log", "ab")
    return subprocess.Popen(args, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)


def test_torchrun_run_stopped_after_a_checkpoint_resumes_exactly(yesno, two_processes):
    checkpoint = yesno / "cut_train/checkpoint.pt"
    proc = _torchrun(yesno, "cut")
    try:
        deadline = time.monotonic() + TIMEOUT
        while not checkpoint.exists():
            assert proc.poll() is None, (yesno / "cut.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"no checkpoint in {TIMEOUT} s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)     # torchrun stops both processes mid-run
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert 1 <= load_checkpoint(checkpoint)["epoch"] < EPOCHS
    assert not (yesno / "cut").exists()

    resumed = _torchrun(yesno, "cut")
    assert resumed.wait(TIMEOUT) == 0, (yesno / "cut.log").read_text()[-3000:]
    keys = ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr")
    whole, again = _history(yesno / "two_train"), _history(yesno / "cut_train")
    assert [[h[k] for k in keys] for h in again] == [[h[k] for k in keys] for h in whole]
    a, b = _weights(two_processes), _weights(yesno / "cut")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
def test_nccl_on_the_gpus(yesno):
    """One process per GPU (two at most): NCCL, cuda:LOCAL_RANK, the same command."""
    gpus = min(torch.cuda.device_count(), 2)
    data, feats, targets, base = _files(yesno)
    settings = {**SETTINGS, "device": "cuda"}
    args = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
            "--nproc-per-node", str(gpus), "--master-addr", "127.0.0.1",
            "--master-port", str(_free_port()), "-m", "asr.cli", "train-hybrid",
            "--data", str(data), "--feats", str(feats), "--targets", str(targets),
            "--base", str(base), "--out", str(yesno / "gpu"), "--no-progress",
            *[f"--set={k}={json.dumps(v)}" for k, v in settings.items()]]
    out = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    history = _history(yesno / "gpu_train")
    print(f"NCCL on {gpus} GPU(s): valid accuracy {history[-1]['valid_acc']:.4f}, "
          f"{history[-1]['frames_per_second']:.0f} frames/s")
    assert len(history) == EPOCHS and history[-1]["valid_acc"] > 0.8
    state = load_checkpoint(yesno / "gpu_train/checkpoint.pt")
    assert state["world_size"] == gpus and state["config"]["device"] == "cuda"
    assert history[-1]["max_memory_mb"] > 0
    assert all(np.isfinite(w).all() for w in _weights(yesno / "gpu").values())
