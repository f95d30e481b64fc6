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

Another table sets the TDNN beside the MLP on the same frames: training frames per second
(one epoch; the TDNN on chunks of ``chunk_width`` frames, and on single windows as before
chunks) and scoring frames per second (``HybridAcousticModel.log_posteriors`` over every
utterance: the TDNN runs over whole utterances, the MLP window by window), for a TDNN as
wide as the MLP and one of about the MLP's parameter count, each as a ratio to the MLP of
the same round. ``--tdnn`` also trains both on yesno's real alignments (a monophone's,
15 Baum-Welch passes) for several seeds and reports validation frame accuracy and test
%WER.

    python benchmarks/bench_hybrid.py [--rounds N] [--threads N] [--corpus DIR] [--ddp-only]
                                      [--tdnn] [--yesno DIR]

``--ddp-only`` runs the DDP table alone and ``--tdnn`` the TDNN tables alone; both print
without writing ``results/``.
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
from asr.nnet import (HybridAcousticModel, NnetConfig, build_net, load_targets,  # noqa: E402
                      save_targets, splice_frames)
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


def _parameters(cfg: NnetConfig, input_dim: int) -> int:
    return sum(p.numel() for p in build_net(net_spec(cfg, input_dim, NUM_PDFS)).parameters())


def _matched_tdnn(mlp: NnetConfig, input_dim: int, **changes) -> NnetConfig:
    """The widest TDNN (otherwise ``mlp``'s settings) with no more parameters than ``mlp``."""
    budget, width = _parameters(mlp, input_dim), 8
    while _parameters(NnetConfig(**{**vars(mlp), "model": "tdnn", "hidden_dim": width + 1}),
                      input_dim) <= budget:
        width += 1
    return NnetConfig(**{**vars(mlp), **changes, "model": "tdnn", "hidden_dim": width})


def _tdnn_table(feats: dict, targets: dict, tmp: Path, threads: int, rounds: int
                ) -> list[str]:
    """Training and scoring frames/s of MLP and TDNN on the same frames; markdown lines."""
    dim = next(iter(feats.values())).shape[1]
    mlp = NnetConfig(hidden_dim=256, num_layers=3, epochs=1, valid_fraction=0.0,
                     device="cpu", num_threads=max(threads, 1))
    wide = NnetConfig(**{**vars(mlp), "model": "tdnn"})
    matched = _matched_tdnn(mlp, dim)
    nets = {"MLP": mlp,
            f"TDNN, chunks of {wide.chunk_width}": wide,
            f"TDNN, chunks of {matched.chunk_width}, {matched.hidden_dim} wide": matched,
            "TDNN, single windows (chunk_width 1)": NnetConfig(**{**vars(wide),
                                                                 "chunk_width": 1})}
    frames = sum(len(f) for f in feats.values())
    train_fps: dict[str, list[float]] = {n: [] for n in nets}
    score_fps: dict[str, list[float]] = {n: [] for n in nets}
    runs = itertools.count()
    for r in range(rounds):
        for name, cfg in nets.items():
            net, history = train_nnet(feats, targets, NUM_PDFS, cfg, tmp / f"tdnn_{next(runs)}",
                                      progress=False)
            train_fps[name].append(history[-1]["frames_per_second"])
            model = HybridAcousticModel(net, np.full(NUM_PDFS, 1.0 / NUM_PDFS))
            start = time.perf_counter()
            for f in feats.values():
                model.log_posteriors(f)
            score_fps[name].append(frames / (time.perf_counter() - start))
        log(f"  TDNN round {r + 1}/{rounds}: " + ", ".join(
            f"{n}: train {train_fps[n][-1]:.0f}, score {score_fps[n][-1]:.0f} frames/s"
            for n in nets))
    rows = []
    for name, cfg in nets.items():
        train_ratio = np.median(np.divide(train_fps[name], train_fps["MLP"]))
        score_ratio = np.median(np.divide(score_fps[name], score_fps["MLP"]))
        rows.append([name, f"{cfg.hidden_dim} × {cfg.num_layers}",
                     f"{_parameters(cfg, dim) / 1e3:.0f} k",
                     si(float(np.median(train_fps[name])), "frames/s"), f"{train_ratio:.2f}×",
                     si(float(np.median(score_fps[name])), "frames/s"), f"{score_ratio:.2f}×"])
    return [f"**TDNN beside the MLP** ({frames} frames, ±5 frames of context, batches of "
            f"{mlp.batch_size} frames, {threads} torch thread(s); speeds are medians of "
            f"{rounds} rounds, ratios the median of each round's ratio to the MLP):", "",
            table(["network", "hidden", "parameters", "training (median)", "/ MLP",
                   "scoring (median)", "/ MLP"], rows), ""]


def _yesno_accuracy(corpus: Path, tmp: Path, threads: int, seeds: int) -> list[str]:
    """MLP and TDNN trained on a monophone's yesno alignments: valid accuracy, test %WER."""
    from asr.data import prepare_yesno
    from asr.decoder import DecoderConfig
    from asr.evaluate import decode_features
    from asr.features import apply_pipeline, compute_archive_in_memory
    from asr.gmm.systems import HmmConfig, align_utterances, train_monophone
    from asr.gmm.train import GmmTrainConfig
    from asr.lexicon import Lexicon
    from asr.nnet import pdf_targets, train_hybrid
    from asr.scoring import compute_wer
    from asr.training import Utterance

    dirs = prepare_yesno(corpus, tmp / "yesno_data")
    mfcc = FeatureConfig(kind="mfcc", num_mel_bins=23, num_ceps=13, deltas=2, cmvn="speaker")
    fbank = FeatureConfig(kind="fbank", num_mel_bins=40, deltas=0, cmvn="speaker")

    def features(cfg, name):
        raw = compute_archive_in_memory(dirs[name].wavs, cfg, progress=False)
        return apply_pipeline(raw, cfg, dirs[name].utt2spk)

    train = dirs["train"]
    gmm_utts = [Utterance(u, f, train.text[u]) for u, f in features(mfcc, "train").items()]
    gmm, _ = train_monophone(gmm_utts, Lexicon.load(REPO / "data/lexicons/yesno.txt"), mfcc,
                             HmmConfig(3, 5),
                             GmmTrainConfig(training="baum-welch", num_iters=15,
                                            max_gaussians=10, mixup_iters=3),
                             DecoderConfig(grammar="loop", acoustic_scale=0.1, beam=40.0),
                             progress=False)
    targets = pdf_targets(align_utterances(gmm, gmm_utts))
    dnn_utts = [Utterance(u, f, train.text[u]) for u, f in features(fbank, "train").items()]
    test = features(fbank, "test")
    mlp = NnetConfig(hidden_dim=128, num_layers=2, epochs=10, device="cpu",
                     num_threads=max(threads, 1))          # the yesno recipe's network
    nets = {"MLP": mlp, "TDNN, as wide": NnetConfig(**{**vars(mlp), "model": "tdnn"})}
    matched = _matched_tdnn(mlp, 40)
    nets[f"TDNN, {matched.hidden_dim} wide"] = matched
    rows, runs = [], itertools.count()
    for name, cfg in nets.items():
        accs, errors, words = [], [], 0
        for seed in range(seeds):
            out = tmp / f"yesno_{next(runs)}"
            system = train_hybrid(dnn_utts, targets, gmm, fbank,
                                  NnetConfig(**{**vars(cfg), "seed": seed}), out,
                                  progress=False)
            accs.append(json.loads((out / "history.json").read_text())[-1]["valid_acc"])
            result = compute_wer(dirs["test"].text, decode_features(system, test,
                                                                    progress=False))
            errors.append(result.errors)
            words = result.words
        rows.append([name, f"{cfg.hidden_dim} × {cfg.num_layers}",
                     f"{_parameters(cfg, 40) / 1e3:.0f} k",
                     f"{100 * np.mean(accs):.1f} ({100 * min(accs):.1f}-{100 * max(accs):.1f})",
                     f"{100 * np.mean(errors) / words:.2f} ({min(errors)}-{max(errors)} "
                     f"errors of {words} words)"])
        log(f"  yesno {name}: valid acc {rows[-1][3]}, %WER {rows[-1][4]}")
    return [f"**Accuracy on yesno** (a monophone's alignments as targets, 40 log-mel bins, "
            f"{mlp.epochs} epochs; mean over seeds 0-{seeds - 1}, range in brackets):", "",
            table(["network", "hidden", "parameters", "valid frame accuracy %", "test %WER"],
                  rows), ""]


def main() -> None:
    def extra(p):
        p.add_argument("--corpus", type=Path, default=REPO.parent / "shared/data/fsdd/recordings")
        p.add_argument("--ddp-only", dest="ddp_only", action="store_true",
                       help="only the DDP table, printed and not written to results/")
        p.add_argument("--tdnn", action="store_true",
                       help="only the TDNN tables (speed, yesno accuracy), printed and not "
                            "written to results/")
        p.add_argument("--yesno", type=Path, default=REPO.parent / "shared/data/yesno")
        p.add_argument("--seeds", type=int, default=3, help="seeds of the yesno comparison")
        p.add_argument("--utts", type=int, default=0,
                       help="train on the first N recordings only (0: all)")

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
        if args.utts:
            feats = dict(itertools.islice(feats.items(), args.utts))
        rng = np.random.default_rng(0)
        targets = {u: rng.integers(0, NUM_PDFS, len(f)) for u, f in feats.items()}
        frames = sum(len(f) for f in feats.values())
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        if args.tdnn:
            print("\n".join(_tdnn_table(feats, targets, tmp, args.threads, args.rounds)
                            + _yesno_accuracy(args.yesno, tmp, args.threads, args.seeds)))
            return
        tdnn_lines = _tdnn_table(feats, targets, tmp, args.threads, args.rounds)
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
        *tdnn_lines,
        *ddp_lines,
        "Reproduce: `python benchmarks/bench_hybrid.py` (it adds a CUDA section when torch "
        "sees a GPU).", END, ""])
    write_section(REPO / "results/benchmarks.md", BEGIN, END, text)
    print(text)


if __name__ == "__main__":
    main()
