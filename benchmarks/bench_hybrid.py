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

    python benchmarks/bench_hybrid.py [--rounds N] [--threads N] [--corpus DIR]
"""
from __future__ import annotations

import itertools
import resource
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
from asr.features import FeatureConfig  # noqa: E402
from asr.nnet import NnetConfig, build_net, splice_frames  # noqa: E402
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


def main() -> None:
    args = cli(__doc__.splitlines()[0], default_rounds=3, extra=lambda p: p.add_argument(
        "--corpus", type=Path, default=REPO.parent / "shared/data/fsdd/recordings"))
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
        "Reproduce: `python benchmarks/bench_hybrid.py` (it adds a CUDA section when torch "
        "sees a GPU).", END, ""])
    write_section(REPO / "results/benchmarks.md", BEGIN, END, text)
    print(text)


if __name__ == "__main__":
    main()
