"""Hybrid network training speed: asr's trainer beside a plain PyTorch loop, CPU and CUDA.

Both train the FSDD recipe's network (MLP, 3 × 256, ±5 frames of 40 log-mel bins with
speaker CMVN, AdamW, batches of 512) for one epoch per round over the conventional split's
2,250 training recordings:

- **asr**: ``asr.nnet.train_nnet``, which cuts each batch's windows from the frame matrix
  on the fly (on the GPU when the frames fit there; bf16 autocast on CUDA);
- **peer**: the textbook loop, every window spliced up front into one (N, 11, 40) tensor and
  fed by ``torch.utils.data.DataLoader``; the same network, optimiser and batch size.

Frame labels are drawn at random over the triphone tree's 98 pdfs: the work per frame does
not depend on their values. One section per device (the CPU, and CUDA when torch sees a
GPU) with frames per second, the ratio asr / peer, one epoch's wall time and peak memory
(resident set on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU).

A last table trains the same network with torch DDP (``asr.nnet.distributed``): one
process beside two gloo processes on the CPU (``--threads`` threads each), and on CUDA one
GPU beside a one-GPU NCCL run and, with several GPUs, one NCCL process per GPU. Frames per
second there are the training loop's own (``history.json``: an epoch's frames over its
training seconds, process start and data loading left out).

    python benchmarks/bench_hybrid.py [--rounds N] [--threads N] [--corpus DIR] [--ddp-only]

``--ddp-only`` runs the DDP table alone and prints it without writing ``results/``.
"""
from __future__ import annotations

import itertools
import json
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _harness import REPO, cli, interleave, limit_threads, log, machine, si, table, write_section  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from asr.data import prepare_fsdd_isolated  # noqa: E402
from asr.experiment import Experiment  # noqa: E402
from asr.features import FeatureConfig, read_archive, write_archive  # noqa: E402
from asr.nnet import NnetConfig, build_net, load_targets, save_targets, splice_frames  # noqa: E402
from asr.nnet.models import net_spec  # noqa: E402
from asr.nnet.train import resolve_device, train_nnet  # noqa: E402

BEGIN, END = "<!-- begin: hybrid -->", "<!-- end: hybrid -->"
NUM_PDFS = 98


def _peer_epoch(feats: list[np.ndarray], targets: list[np.ndarray], cfg: NnetConfig,
                device: torch.device) -> None:
    """One epoch of the textbook loop: windows spliced up front, DataLoader batches."""
    x = torch.cat([splice_frames(torch.from_numpy(f), cfg.context_left, cfg.context_right)
                   for f in feats])
    y = torch.from_numpy(np.concatenate(targets))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                         batch_size=cfg.batch_size, shuffle=True,
                                         pin_memory=device.type == "cuda")
    torch.manual_seed(cfg.seed)
    net = build_net(net_spec(cfg, x.shape[2], NUM_PDFS)).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    net.train()
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16,
                            enabled=cfg.amp and device.type == "cuda"):
            logits = net(xb)
        loss = F.cross_entropy(logits.float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _ddp_rank(rank: int, world_size: int, port: int, backend: str, folder: Path,
              settings: dict, out: Path) -> None:
    """One process of a DDP run (started by torch.multiprocessing): trains one epoch."""
    import torch.distributed as dist

    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    try:
        train_nnet(read_archive(folder / "feats"), load_targets(folder / "targets.npz"),
                   NUM_PDFS, NnetConfig(**settings), out, progress=False)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_table(feats: dict, targets: dict, features: FeatureConfig, tmp: Path, threads: int,
               rounds: int) -> list[str]:
    """Frames/s of one process beside DDP runs, per device; markdown lines."""
    import torch.multiprocessing as mp

    folder = tmp / "ddp"
    write_archive(folder / "feats", feats, features)      # CMVN applied; the config labels it
    save_targets(folder / "targets.npz", targets)
    setups = [("cpu", "1 process", 1, None), ("cpu", "2 processes, gloo", 2, "gloo")]
    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        setups += [("cuda", "1 GPU", 1, None), ("cuda", "1 GPU, NCCL", 1, "nccl")]
        if gpus > 1:
            setups.append(("cuda", f"{gpus} GPUs, NCCL", gpus, "nccl"))
    speeds: dict[str, list[float]] = {name: [] for _, name, _, _ in setups}
    seconds: dict[str, list[float]] = {name: [] for _, name, _, _ in setups}
    runs = itertools.count()
    for r in range(rounds):
        for device, name, procs, backend in setups:
            settings = dict(hidden_dim=256, num_layers=3, epochs=1, valid_fraction=0.0,
                            device=device, num_threads=max(threads, 1))
            out = tmp / f"ddp_run_{next(runs)}"
            if backend is None:
                train_nnet(feats, targets, NUM_PDFS, NnetConfig(**settings), out,
                           progress=False)
            else:
                mp.spawn(_ddp_rank, args=(procs, _free_port(), backend, folder, settings, out),
                         nprocs=procs, join=True)
            epoch = json.loads((out / "history.json").read_text())[-1]
            speeds[name].append(epoch["frames_per_second"])
            seconds[name].append(epoch["seconds"])
        log(f"  DDP round {r + 1}/{rounds}: " + ", ".join(
            f"{n} {speeds[n][-1]:.0f} frames/s" for n in speeds))
    rows = []
    for device, name, procs, backend in setups:
        base = next(n for d, n, _, b in setups if d == device and b is None)
        speed = float(np.median(speeds[name]))
        rows.append([device, name, str(procs), backend or "none (no DDP)",
                     si(speed, "frames/s"), f"{np.median(seconds[name]):.2f}",
                     f"{speed / float(np.median(speeds[base])):.2f}×"])
    return [f"**DDP** (`asr.nnet.distributed`; {threads} torch thread(s) per process on the "
            "CPU; the global batch stays 512 frames, 512 / K per process; median of "
            f"{rounds} rounds):", "",
            table(["device", "setup", "processes", "backend", "frames/s (median)",
                   "epoch s (median)", "speed / one process"], rows), ""]


def main() -> None:
    def extra(p):
        p.add_argument("--corpus", type=Path, default=REPO.parent / "shared/data/fsdd/recordings")
        p.add_argument("--ddp-only", dest="ddp_only", action="store_true",
                       help="only the DDP table, printed and not written to results/")

    args = cli(__doc__.splitlines()[0], default_rounds=3, extra=extra)
    info = machine()
    threads = limit_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare_fsdd_isolated(args.corpus, tmp / "data/fsdd/isolated")
        ex = Experiment("fsdd", tmp / "data", tmp / "exp", tmp / "results",
                        FeatureConfig(kind="fbank", num_mel_bins=40, deltas=0, cmvn="speaker",
                                      cmvn_variance=True), progress=False)
        ex.make_features("isolated/train")
        feats = {u.utt: u.feats for u in ex.utterances("isolated/train")}
        rng = np.random.default_rng(0)
        targets = {u: rng.integers(0, NUM_PDFS, len(f)) for u, f in feats.items()}
        frames = sum(len(f) for f in feats.values())
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        ddp_lines = _ddp_table(feats, targets, ex.features, tmp, args.threads, args.rounds)
        if args.ddp_only:
            print("\n".join(ddp_lines))
            return
        sections = []
        for name in devices:
            device = resolve_device(name)
            cfg = NnetConfig(hidden_dim=256, num_layers=3, epochs=1, valid_fraction=0.0,
                             device=name, num_threads=max(args.threads, 1))
            runs = itertools.count()   # a fresh folder per run: train_nnet resumes otherwise
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            timings = interleave({
                "asr": lambda: train_nnet(feats, targets, NUM_PDFS, cfg,
                                          tmp / f"nnet_{name}_{next(runs)}", progress=False),
                "peer": lambda: _peer_epoch(list(feats.values()), list(targets.values()),
                                            cfg, device),
            }, args.rounds, log)
            memory = (f"{torch.cuda.max_memory_allocated(device) / 2 ** 20:.0f} MiB (GPU)"
                      if device.type == "cuda" else
                      f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10:.0f} MiB "
                      "(process RSS)")
            card = torch.cuda.get_device_name(device) if device.type == "cuda" else info["cpu"]
            rows = [[who, si(frames / timings.median(who), "frames/s"),
                     f"{timings.median(who):.2f}", f"{timings.best(who):.2f}"]
                    for who in ("asr", "peer")]
            sections += [f"**{name}** ({card}; threads: {threads}; peak memory {memory}):", "",
                         table(["trainer", "frames/s (median)", "epoch s (median)",
                                "epoch s (best)"], rows), "",
                         f"asr / peer speed: {timings.paired_ratio('peer', 'asr'):.2f}× "
                         f"(median of paired rounds; above 1: asr is faster).", ""]
    text = "\n".join([
        BEGIN, "## Hybrid network training (FSDD conventional split, isolated recordings)", "",
        f"{frames} training frames; {args.rounds} interleaved rounds of one epoch per "
        f"trainer; load {info['load']}; {info['date']}. "
        + ("No CUDA device was present in this run, so there is no GPU row."
           if len(devices) == 1 else ""), "",
        *sections,
        *ddp_lines,
        "Reproduce: `python benchmarks/bench_hybrid.py` (it adds a CUDA section when torch "
        "sees a GPU).", END, ""])
    write_section(REPO / "results/benchmarks.md", BEGIN, END, text)
    print(text)


if __name__ == "__main__":
    main()
