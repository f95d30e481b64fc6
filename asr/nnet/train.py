"""Training a frame classifier on pdf targets: cross-entropy, AdamW, early stopping, resume.

The MLP trains on shuffled frames, each cut with its window; the TDNN on shuffled chunks
of ``chunk_width`` consecutive frames, each run through the convolutions as one sequence
(``asr.nnet.data``). Either way a step sees about ``batch_size`` frames and minimises
their mean cross-entropy.

>>> cfg = NnetConfig(model="tdnn", epochs=10)  # doctest: +SKIP
>>> net, history = train_nnet(feats, targets, tree.num_pdfs, cfg, "exp/dnn.train")  # doctest: +SKIP

Files written into ``out_dir``::

    settings.json    the resolved NnetConfig of the run
    checkpoint.pt    after every epoch, atomically: weights, optimizer, schedule, the best
                     weights so far, history and every RNG state (tensors and plain data
                     only, so it loads with ``torch.load(..., weights_only=True)``)
    history.json     per epoch: losses, frame accuracies, learning rate, seconds, frames/s
    train_utts, valid_utts   the utterances of each side of the split, one id a line
                     (validation is drawn by source recording: no copy on the other side)

A run that is killed resumes from ``checkpoint.pt`` when called again with the same
settings and reaches the same weights as a run that was never interrupted (on the CPU with
a fixed seed, where torch's deterministic algorithms are switched on for the run).

Under ``torchrun`` (or in a process group the caller initialised) the same call trains on
every process with DistributedDataParallel: each process holds a shard of the utterances,
the global batch and learning rate stay those of one process, and rank 0 alone writes the
files above (see ``asr.nnet.distributed``). A run killed on K processes resumes on K
processes to the same weights as one never interrupted.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import time
from functools import partial
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from asr.errors import ModelError
from asr.fileio import atomic_file, write_json, write_text
from asr.nnet import distributed as ddp
from asr.nnet.config import NnetConfig
from asr.nnet.data import PAD, FrameDataset, mask_frequencies
from asr.nnet.distributed import Distributed
from asr.nnet.models import build_net, net_spec

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
SPLIT_FILES = ("train_utts", "valid_utts")
CHECKPOINT_FORMAT = 1
#: Settings that may change between a run and its resumption.
RESUMABLE_CHANGES = ("epochs", "patience", "device", "num_threads")


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError('device = "cuda" but torch sees no CUDA device')
    return torch.device("cuda", torch.cuda.current_device())


def split_utterances(utts: list[str], valid_fraction: float, seed: int,
                     sources: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """Seeded split of utterance ids into sorted (train, valid); valid may be empty.

    ``sources`` maps an utterance to the recording it was made from (an augmented copy to
    its clean original; default: each utterance is its own source). Whole sources are
    drawn for validation, so all copies of one recording fall on the same side, until
    ``valid_fraction`` of the utterances (at least one source, never all) is held out.
    """
    utts = sorted(utts)
    source_of = {u: (sources or {}).get(u, u) for u in utts}
    members: dict[str, list[str]] = {}
    for u in utts:
        members.setdefault(source_of[u], []).append(u)
    names = sorted(members)
    if valid_fraction <= 0 or len(names) < 2:
        return utts, []
    wanted = max(int(round(valid_fraction * len(utts))), 1)
    valid: list[str] = []
    for i in np.random.default_rng(seed).permutation(len(names)):
        if len(valid) >= wanted:
            break
        valid += members[names[i]]
    if len(valid) == len(utts):          # never every source: keep the last one for training
        valid = [u for u in valid if source_of[u] != source_of[valid[-1]]]
    chosen = set(valid)
    return [u for u in utts if u not in chosen], sorted(valid)


@contextlib.contextmanager
def _torch_settings(cfg: NnetConfig, device: torch.device) -> Iterator[None]:
    """Threads and deterministic algorithms for one run; the previous values come back after."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(cfg.num_threads)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _scheduler(opt: torch.optim.Optimizer, cfg: NnetConfig, steps_per_epoch: int):
    """The rate's schedule: the plateau schedule steps once an epoch (on the validation
    loss), the others after every training step (the cosine down to 0 after ``cfg.epochs``
    epochs)."""
    if cfg.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.lr_factor, patience=0)
    if cfg.lr_schedule == "cosine":
        total = max(cfg.epochs * steps_per_epoch, 1)
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total)))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


def _datasets(train_feats: dict[str, np.ndarray], targets: dict[str, np.ndarray],
              num_pdfs: int, cfg: NnetConfig, device: torch.device,
              sources: Mapping[str, str] | None, ctx: Distributed | None = None
              ) -> tuple[FrameDataset | None, FrameDataset | None, list[str], list[str],
                         list[list[int]]]:
    """(train, valid) frames of this process, the whole split's (train, valid) utterance
    ids, and the lengths of the training utterances of every process's shard (one shard
    without ``ctx``). A set is None where this process has no utterance of it."""
    utts = sorted(u for u in train_feats if u in targets)
    if not utts:
        raise ValueError("no utterance has both features and targets")
    if len(utts) < len(train_feats):
        log.warning("%d of %d utterances have no targets and are left out",
                    len(train_feats) - len(utts), len(train_feats))
    for u in utts:
        t = np.asarray(targets[u])
        if t.shape != (len(train_feats[u]),):
            raise ValueError(f"utterance {u!r}: {len(train_feats[u])} frames of features but "
                             f"targets of shape {t.shape}")
        if len(t) and (t.min() < 0 or t.max() >= num_pdfs):
            raise ValueError(f"utterance {u!r}: pdf ids must lie in [0, {num_pdfs}), got "
                             f"{t.min()}..{t.max()}")
    train_utts, valid_utts = split_utterances(utts, cfg.valid_fraction, cfg.seed, sources)
    mine, shard_lengths = (train_utts, valid_utts), [[len(targets[u]) for u in train_utts]]
    if ctx is not None:
        mine, shard_lengths = [], []
        for names in (train_utts, valid_utts):
            shards = ddp.shard_utterances([len(targets[u]) for u in names], ctx.world_size)
            mine.append([names[i] for i in shards[ctx.rank]])
            if names is train_utts:
                shard_lengths = [[len(targets[names[i]]) for i in s] for s in shards]
    shard_frames = [sum(lengths) for lengths in shard_lengths]
    datasets = [FrameDataset([train_feats[u] for u in names], [targets[u] for u in names],
                             cfg.context_left, cfg.context_right) if names else None
                for names in mine]
    if device.type == "cuda":
        # Frames on the GPU when they take under a quarter of its free memory (windows are
        # then gathered there); else in pinned host memory, batches copied asynchronously.
        free, _ = torch.cuda.mem_get_info(device)
        size = sum(d.frames.numel() * 4 + d.targets.numel() * 8
                   for d in datasets if d is not None)
        for d in datasets:
            if d is not None and size < free // 4:
                d.to(device)
            elif d is not None:
                d.pin_memory()
    train_set, valid_set = datasets
    if ctx is None:
        log.info("training on %d utterances (%d frames), validating on %d (%d frames), %s",
                 len(train_utts), len(train_set), len(valid_utts),
                 0 if valid_set is None else len(valid_set), device)
    else:
        log.info("rank %d of %d: training on %d of %d utterances (%d of %d frames), "
                 "validating on %d of %d, %s", ctx.rank, ctx.world_size, len(mine[0]),
                 len(train_utts), shard_frames[ctx.rank], sum(shard_frames), len(mine[1]),
                 len(valid_utts), device)
    return train_set, valid_set, train_utts, valid_utts, shard_lengths


def _run_epoch(net: nn.Module, data: FrameDataset, cfg: NnetConfig, device: torch.device,
               opt: torch.optim.Optimizer | None, batches: list[torch.Tensor], desc: str,
               progress: bool, weights: np.ndarray | None = None, width: int | None = None,
               step_schedule=None) -> tuple[float, int, int]:
    """One pass over ``batches``: training when ``opt`` is given, else evaluation. Returns
    the sums (loss over frames, correctly classified frames, frames).

    Without ``width`` a batch is (B,) frame numbers, each classified from its window; with
    it, (B,) chunk starts, each chunk of ``width`` frames run as one sequence (the loss
    leaves out positions past an utterance's end). Without ``weights`` each step minimises
    the batch's mean loss over frames. With them (DDP) step ``s`` minimises the sum of the
    batch's losses times ``weights[s]``, and no batch is skipped: every process must take
    every step. ``step_schedule`` (a rate schedule of training steps) steps after each batch.
    """
    training = opt is not None
    net.train(training)
    use_amp = cfg.amp and device.type == "cuda"
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    frames = torch.zeros((), device=device, dtype=torch.int64)
    rows = cfg.context if width is None else cfg.context_left + width + cfg.context_right
    bar = tqdm(batches, desc=desc, disable=not progress, leave=False, unit="batch")
    with torch.set_grad_enabled(training):
        for step, index in enumerate(bar):
            if training and weights is None and len(index) * (width or 1) < 2:
                if step_schedule is not None:     # the curve keeps its length
                    step_schedule.step()
                continue                          # BatchNorm cannot train on one frame
            cut = data.batch if width is None else partial(data.chunk_batch, width=width)
            if data.device.type != device.type:   # pinned host memory -> GPU, asynchronously
                buf = torch.empty((len(index), rows, data.dim), pin_memory=True)
                x, y = cut(index, out=buf)
                x = x.to(device, non_blocking=True)
                y = y.pin_memory().to(device, non_blocking=True)
            else:
                x, y = cut(index)
            if training and cfg.freq_mask:
                x = mask_frequencies(x, cfg.freq_mask)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                if width is None:
                    logits = net(x)                                 # (B, num_pdfs)
                else:                                               # (B * width, num_pdfs)
                    logits = net(x, sequence=True).flatten(0, 1)
                    y = y.flatten()
            count = len(index) if width is None else (y != PAD).sum()
            if weights is None:
                loss = F.cross_entropy(logits.float(), y, ignore_index=PAD)
                total = loss.detach().double() * count
            else:
                total = F.cross_entropy(logits.float(), y, ignore_index=PAD, reduction="sum")
                loss = total * float(weights[step])
                total = total.detach().double()
            if training:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if step_schedule is not None:
                    step_schedule.step()
            loss_sum += total
            correct += (logits.detach().argmax(1) == y).sum()
            frames += count
            if progress and step % 50 == 0:
                bar.set_postfix(loss=f"{float(total) / max(int(count), 1):.3f}")
    return float(loss_sum), int(correct), int(frames)


def _means(loss_sum: float, correct: float, frames: float) -> tuple[float, float]:
    """(mean loss, accuracy) from sums; NaN for no frames."""
    if frames == 0:
        return math.nan, math.nan
    return loss_sum / frames, correct / frames


def _state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


def _save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, then rename)."""
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by ``train_nnet`` (never unpickles arbitrary objects)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(path, "missing checkpoint") from None
    except Exception as exc:   # torch raises several types for damaged or foreign files
        raise ModelError(path, f"unreadable checkpoint: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(path, f"not a checkpoint of format {CHECKPOINT_FORMAT}")
    return state


def _check_resumable(path: Path, state: dict, cfg: NnetConfig, spec: dict) -> None:
    old = state["config"]
    unused = () if cfg.training_chunk() is not None else ("chunk_width",)   # by the MLP
    changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in dataclasses.asdict(cfg).items()
               if k not in RESUMABLE_CHANGES + unused and old.get(k) != v]
    if state["spec"] != spec:
        changed.append(f"network {state['spec']} -> {spec}")
    if changed:
        raise ModelError(path, "checkpoint was written with other settings ("
                         + "; ".join(changed) + "); restore them or delete the checkpoint")


def train_nnet(train_feats: dict[str, np.ndarray], targets: dict[str, np.ndarray],
               num_pdfs: int, cfg: NnetConfig, out_dir: str | Path, progress: bool = True,
               sources: Mapping[str, str] | None = None) -> tuple[nn.Module, list[dict]]:
    """Train a frame classifier, resuming from ``out_dir/checkpoint.pt`` if there is one.

    Parameters
    ----------
    train_feats : utterance id -> (T, D) features.
    targets : utterance id -> (T,) pdf ids in ``[0, num_pdfs)`` (e.g. from GMM alignments);
        utterances without targets are left out.
    num_pdfs : outputs of the network (the tree's pdfs).
    cfg : settings; ``valid_fraction`` of the utterances is held out (seeded).
    out_dir : folder for settings, checkpoint and history (created).
    sources : utterance id -> the recording it was made from (augmented copies); all
        copies of one recording fall on the same side of the validation split.

    Under DDP (``torchrun``, or an initialised process group) every process passes the
    same arguments (all utterances: each process keeps its shard's frames), and every
    process returns the same network and history; rank 0 alone writes into ``out_dir``.

    Returns
    -------
    net : the network with the weights of its best epoch (lowest validation loss, or
        training loss without a validation set), on the CPU, in eval mode.
    history : one dict per epoch run: ``epoch, train_loss, train_acc, valid_loss,
        valid_acc, lr, seconds, frames_per_second, max_memory_mb`` (NaN where not measured;
        under DDP losses and accuracies are over all processes, frames per second counts
        the frames of all processes, memory is this process's).
    """
    out_dir = Path(out_dir)
    ctx = ddp.setup(cfg.device)
    try:
        return _train(train_feats, targets, num_pdfs, cfg, out_dir, progress, sources, ctx)
    finally:
        if ctx is not None:
            ctx.close()


def _train(train_feats: dict[str, np.ndarray], targets: dict[str, np.ndarray],
           num_pdfs: int, cfg: NnetConfig, out_dir: Path, progress: bool,
           sources: Mapping[str, str] | None, ctx: Distributed | None
           ) -> tuple[nn.Module, list[dict]]:
    main = ctx is None or ctx.is_main
    progress = progress and main
    device = resolve_device(cfg.device) if ctx is None else ddp.device_of(ctx, cfg.device)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "settings.json", dataclasses.asdict(cfg))
    with _torch_settings(cfg, device):
        train_set, valid_set, *split, shard_lengths = _datasets(
            train_feats, targets, num_pdfs, cfg, device, sources, ctx)
        if main:
            for name, names in zip(SPLIT_FILES, split):
                write_text(out_dir / name, "".join(f"{u}\n" for u in names))
        has_valid = bool(split[1])
        shard_frames = [sum(lengths) for lengths in shard_lengths]
        width = cfg.training_chunk()      # None: the network classifies single windows
        if width is not None:
            per_step = max(cfg.batch_size // width, 1)         # chunks a step
            shard_chunks = [sum(-(-n // width) for n in lengths) for lengths in shard_lengths]
        if ctx is not None and width is not None:
            steps = ddp.num_steps(sum(shard_chunks), per_step)
            if min(shard_chunks) < steps or min(shard_chunks) * width < 2 * steps:
                raise ValueError(
                    f"{sum(shard_chunks)} training chunks of {width} frames, {per_step} a "
                    f"step, make {steps} steps an epoch, but the shards of {ctx.world_size} "
                    f"processes hold {shard_chunks} chunks: each process needs at least one "
                    "chunk (and two frames) a step; use fewer processes, a larger "
                    "batch_size or a smaller chunk_width")
        elif ctx is not None:
            steps = ddp.num_steps(sum(shard_frames), cfg.batch_size)
            if min(shard_frames) < 2 * steps:
                raise ValueError(
                    f"{sum(shard_frames)} training frames in batches of {cfg.batch_size} make "
                    f"{steps} steps an epoch, but the shards of {ctx.world_size} processes "
                    f"hold {shard_frames} frames: each process needs at least 2 frames a "
                    "step; use fewer processes or a larger batch_size")
            # DDP averages the K gradients: weighting each process's summed loss by
            # K / (frames of the global batch) makes that the global batch's mean loss.
            weights = ctx.world_size / ddp.global_batch_sizes(shard_frames, steps)
        spec = net_spec(cfg, train_set.dim, num_pdfs)
        torch.manual_seed(cfg.seed)
        net = build_net(spec).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if ctx is not None:
            steps_per_epoch = steps
        elif width is None:
            steps_per_epoch = -(-len(train_set) // cfg.batch_size)
        else:
            steps_per_epoch = -(-len(train_set.chunk_starts(width)) // per_step)
        sched = _scheduler(opt, cfg, steps_per_epoch)
        per_step_schedule = None if cfg.lr_schedule == "plateau" else sched
        shuffle = torch.Generator().manual_seed(cfg.seed)
        world_size = 1 if ctx is None else ctx.world_size
        state = {"epoch": 0, "history": [], "best_loss": math.inf, "best_epoch": 0,
                 "best_model": _state(net), "bad_epochs": 0, "stopped": False}
        path = out_dir / CHECKPOINT_NAME
        if path.exists():
            state = load_checkpoint(path)
            _check_resumable(path, state, cfg, spec)
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng_cpu"])
            shuffle.set_state(state["rng_shuffle"])
            if device.type == "cuda" and state.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(state["rng_cuda"], device)
            if state.get("world_size", 1) != world_size:
                log.warning("%s was written by a run on %d process(es), resumed on %d: the "
                            "run goes on, but will not match one never interrupted",
                            path, state.get("world_size", 1), world_size)
            log.info("resuming from %s after epoch %d", path, state["epoch"])
        model = net
        if ctx is not None:
            model = nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None)
        history = state["history"]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            if state["stopped"]:
                break
            start = time.perf_counter()
            desc = f"epoch {epoch}/{cfg.epochs}"
            lr = opt.param_groups[0]["lr"]          # the rate the epoch starts at
            if ctx is None:
                batches = (list(train_set.batches(cfg.batch_size, shuffle)) if width is None
                           else list(train_set.chunk_batches(width, per_step, shuffle)))
                train_sums = _run_epoch(net, train_set, cfg, device, opt, batches, desc,
                                        progress, width=width,
                                        step_schedule=per_step_schedule)
            elif width is None:
                seed = ddp.epoch_seed(cfg.seed, epoch, ctx.rank)
                torch.manual_seed(seed)              # dropout and frequency masks
                batches = ddp.shard_batches(len(train_set), steps,
                                            torch.Generator().manual_seed(seed))
                train_sums = _run_epoch(model, train_set, cfg, device, opt, batches, desc,
                                        progress, weights, step_schedule=per_step_schedule)
            else:
                seed = ddp.epoch_seed(cfg.seed, epoch, ctx.rank)
                torch.manual_seed(seed)              # dropout and frequency masks
                starts = train_set.chunk_starts(width)
                batches = [starts[part] for part in ddp.shard_batches(
                    len(starts), steps, torch.Generator().manual_seed(seed))]
                # The chunks at an utterance's end are short: the frames of each global
                # batch are summed over the processes, once an epoch, for the weights.
                mine = [int(train_set.chunk_frames(b, width).sum()) for b in batches]
                weights = ctx.world_size / np.asarray(ddp.all_reduce_sum(mine, device))
                train_sums = _run_epoch(model, train_set, cfg, device, opt, batches, desc,
                                        progress, weights, width, per_step_schedule)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds = time.perf_counter() - start
            valid_sums = (0.0, 0, 0)
            if valid_set is not None:       # (under DDP: this process's shard, no DDP)
                batches = (list(valid_set.batches(cfg.batch_size)) if width is None
                           else list(valid_set.chunk_batches(width, per_step)))
                valid_sums = _run_epoch(net, valid_set, cfg, device, None, batches, "valid",
                                        progress, None if ctx is None else
                                        np.ones(len(batches)), width)
            if ctx is not None:
                summed = ddp.all_reduce_sum([*train_sums, *valid_sums], device)
                train_sums, valid_sums = summed[:3], summed[3:]
            train_loss, train_acc = _means(*train_sums)
            valid_loss, valid_acc = _means(*valid_sums) if has_valid else (math.nan, math.nan)
            frames = train_sums[2]
            watched = valid_loss if has_valid else train_loss
            if cfg.lr_schedule == "plateau":     # the others step after every batch
                sched.step(watched)
            memory = (torch.cuda.max_memory_allocated(device) / 2 ** 20
                      if device.type == "cuda" else math.nan)
            history.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                            "valid_loss": valid_loss, "valid_acc": valid_acc, "lr": lr,
                            "seconds": time.perf_counter() - start,
                            "frames_per_second": frames / max(train_seconds, 1e-9),
                            "max_memory_mb": memory})
            if watched < state["best_loss"]:
                state.update(best_loss=watched, best_epoch=epoch, best_model=_state(net),
                             bad_epochs=0)
            else:
                state["bad_epochs"] += 1
            state["stopped"] = state["bad_epochs"] >= cfg.patience
            log.log(logging.INFO if main else logging.DEBUG,
                    "epoch %d/%d: train loss %.4f acc %.3f | valid loss %.4f acc %.3f | "
                    "lr %.2e | %.0f frames/s | %.1f s%s", epoch, cfg.epochs, train_loss,
                    train_acc, valid_loss, valid_acc, lr, history[-1]["frames_per_second"],
                    history[-1]["seconds"],
                    " | early stop" if state["stopped"] else "")
            state.update(
                format=CHECKPOINT_FORMAT, epoch=epoch, config=dataclasses.asdict(cfg),
                spec=spec, model=_state(net), optimizer=opt.state_dict(),
                scheduler=sched.state_dict(), history=history,
                rng_cpu=torch.get_rng_state(), rng_shuffle=shuffle.get_state(),
                rng_cuda=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                world_size=world_size)
            if main:
                _save_checkpoint(path, state)
        net.load_state_dict(state["best_model"])
        log.log(logging.INFO if main else logging.DEBUG, "kept the weights of epoch %d "
                "(loss %.4f)", state["best_epoch"], state["best_loss"])
    if main:
        write_json(out_dir / "history.json", _json_safe(history))
    ddp.barrier(ctx)       # every process leaves once rank 0 has written its files
    return net.cpu().eval(), copy.deepcopy(history)


def _json_safe(history: list[dict]) -> list[dict]:
    """NaN -> None, so history.json is standard JSON."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in h.items()}
            for h in history]
