"""The training loop, top to bottom: set-up (device, model and optimizer, fresh or resumed), data,
then per epoch the optimizer steps, a validation against the ground truth and the checkpoints.
The model owns its recipe (loss, learning rate, training config: train/models), the options are
:class:`train.config.TrainConfig`; nothing here depends on which model trains. Runs on the CPU or
one GPU, or on several GPUs with PyTorch DDP when started by ``torchrun`` (WORLD_SIZE set)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader

from mfif.device import parse_device
from mfif.errors import ConfigError, DataError, ModelFileError
from mfif.hashing import sha256_file
from mfif.progress import Progress, format_seconds
from mfif.train import losses, runs
from mfif.train.checkpoint import load_checkpoint, save_checkpoint
from mfif.train.config import TrainConfig
from mfif.train.data import RealPairCrops, SourcesOnly, SynthConfig, SyntheticPairs, load_photos, validation_set
from mfif.train.models import build_model, count_parameters

OPTIM_PREFIX = "optim/"


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up (at most a tenth of the run), then cosine decay to a tenth of the base rate."""
    warmup = max(1, min(config.warmup_steps, config.total_steps // 10))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, config.total_steps - warmup))
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model, samples: list[dict], device: torch.device, batch_size: int = 8) -> dict[str, float]:
    """Mean PSNR and SSIM against the ground truth, for the model and for the pixel average."""
    was_training = model.training
    model.eval()
    scores = {"psnr": [], "ssim": [], "average_psnr": [], "average_ssim": []}
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        sources = torch.stack([s["sources"] for s in chunk]).to(device)
        truth = torch.stack([s["truth"] for s in chunk]).to(device)
        fused = model(sources).clamp(0, 1)
        average = sources.mean(dim=1)
        scores["psnr"] += losses.psnr(fused, truth).tolist()
        scores["ssim"] += losses.ssim(fused, truth).tolist()
        scores["average_psnr"] += losses.psnr(average, truth).tolist()
        scores["average_ssim"] += losses.ssim(average, truth).tolist()
    model.train(was_training)
    return {key: float(np.mean(values)) for key, values in scores.items()}


# ---------------------------------------------------------------------------------------------
# Processes and devices


class _Distributed:
    """torch.distributed set-up when torchrun started us (WORLD_SIZE set), else a single process."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        wanted = parse_device(device)
        use_cuda = wanted.kind == "cuda" or (wanted.kind == "auto" and torch.cuda.is_available())
        if use_cuda and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU; use --device cpu")
        if wanted.index is not None:
            self.device = torch.device("cuda", wanted.index)
        elif use_cuda:
            self.device = torch.device("cuda", local_rank if self.world > 1 else torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")
        if self.world > 1:
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            torch.distributed.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.world > 1:
            torch.distributed.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# The steps of a run


@dataclass
class _State:
    """What the epochs change: the model (``net`` runs its forward pass: the model or its DDP
    wrapper), the optimizer, and where the run stands."""

    model: torch.nn.Module
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    first_epoch: int
    step: int
    best_psnr: float


@dataclass
class _Data:
    parts: list                 # datasets that move to a new epoch with set_epoch
    data: torch.utils.data.Dataset
    sampler: torch.utils.data.DistributedSampler | None
    validation: list[dict]      # the fixed validation split (main process only)
    photos: int
    crop: int


def train(config: TrainConfig) -> dict:
    """Train as ``config`` says; returns a summary (paths, figures, timings)."""
    dist = _Distributed(config.device)
    try:
        state = _setup(config, dist)
        data = _data(config, state.model, dist)
        out = runs.run_folder(config.out, config.model, config.resume) if dist.main else Path(config.out)
        summary = {"model": config.model, "config": state.model.config, "parameters": count_parameters(state.model),
                   "device": str(dist.device), "world_size": dist.world, "photos": data.photos, "epochs": []}
        if dist.main:
            _start_log(config, summary, data, out)
        started, first_step = time.perf_counter(), state.step
        last_epoch = min(config.epochs, config.stop_after) if config.stop_after > 0 else config.epochs
        planned = max(0, min(config.total_steps, last_epoch * config.steps_per_epoch) - state.step)
        # One bar for the run (its ETA is the run's); on a terminal only. Each epoch prints a line.
        with Progress(total=planned, desc="training", unit="step", enabled=dist.main) as bar:
            for epoch in range(state.first_epoch, last_epoch):
                steps = min(config.steps_per_epoch, config.total_steps - state.step)
                if steps <= 0:
                    break
                record = _one_epoch(config, state, data, epoch, steps, dist, bar)
                if dist.main:
                    record.update(evaluate(state.model, data.validation, dist.device))
                    done, elapsed = state.step - first_step, time.perf_counter() - started
                    left = elapsed / done * (planned - done) if planned > done else 0.0
                    bar.note(f"epoch {epoch + 1}/{config.epochs}: loss {record['loss']:.4f}, validation PSNR "
                             f"{record['psnr']:.2f} dB (pixel average {record['average_psnr']:.2f}), SSIM "
                             f"{record['ssim']:.4f} (pixel average {record['average_ssim']:.4f}); "
                             f"{format_seconds(elapsed)} so far" + (f", ETA {format_seconds(left)}" if left else ""),
                             file=sys.stdout)
                    _save(config, state, epoch, record, out)
                summary["epochs"].append(record)
                dist.barrier()
        if dist.main:
            runs.plot_curve(out, f"{config.model}, {out}")
        return {**summary, "seconds": round(time.perf_counter() - started, 1), "out": str(out),
                "best": str(out / f"{config.model}.safetensors"), "last": str(out / "last.safetensors"),
                "best_psnr": state.best_psnr}
    finally:
        dist.close()


def _setup(config: TrainConfig, dist: _Distributed) -> _State:
    """The model (built, or resumed with its optimizer from a last.safetensors) and its optimizer."""
    torch.manual_seed(config.seed)
    resumed = None
    if config.resume:
        resumed = load_checkpoint(config.resume)
        if resumed.model.name != config.model:
            raise ConfigError(f"--resume {config.resume} holds a {resumed.model.name} model, not {config.model}")
        if "train.epoch" not in resumed.metadata:
            raise ModelFileError(f"{config.resume} has no training state (it is a shipped/best checkpoint); "
                                 f"resume from {Path(config.resume).parent / 'last.safetensors'}")
        model = resumed.model.train()
    elif config.init:
        start = load_checkpoint(config.init)
        if start.model.name != config.model:
            raise ConfigError(f"--init {config.init} holds a {start.model.name} model, not {config.model}")
        model = build_model(config.model, **{**start.model.config, **config.model_config})
        model.load_state_dict(start.model.state_dict())
    else:
        model = build_model(config.model, **config.model_config)
    model.to(dist.device)
    net = model
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
    if resumed is None:
        return _State(model, net, optimizer, first_epoch=0, step=0, best_psnr=-math.inf)
    if "train.optimizer" in resumed.metadata:
        _restore_optimizer(optimizer, resumed.extra_tensors, resumed.metadata["train.optimizer"])
    return _State(model, net, optimizer, first_epoch=int(resumed.metadata["train.epoch"]) + 1,
                  step=int(resumed.metadata["train.step"]),
                  best_psnr=float(resumed.metadata.get("train.best_psnr", "-inf")))


def _data(config: TrainConfig, model, dist: _Distributed) -> _Data:
    """Synthetic pairs from the sharp photos (plus crops of real pairs with ``config.real``), the
    sampler that splits them between DDP processes, and the fixed validation split."""
    if not config.data:
        raise DataError("no data folder given: pass --data with a folder of sharp photos")
    channels = getattr(model, "channels", 3)
    sources = model.sources or 2
    try:
        synth = SynthConfig(**{"crop": config.crop, "channels": channels, "sources": sources, **config.synth})
    except TypeError as exc:
        raise ConfigError(f"unknown synthetic-pair setting in {config.synth}: {exc}") from exc
    photos = load_photos(config.data, split="train", min_size=synth.crop // 2)
    val_config = SynthConfig(**{**asdict(synth), "crop": config.val_crop, "sources": sources})
    validation = validation_set(config.data, val_config, count=config.val_count) if dist.main else []
    per_epoch = config.steps_per_epoch * config.batch_size * dist.world
    synthetic = SyntheticPairs(photos, synth, per_epoch, seed=config.seed)
    parts = [synthetic]
    if config.real:
        parts = [SourcesOnly(synthetic), RealPairCrops(config.real, synth.crop, per_epoch, channels, config.seed)]
    data = ConcatDataset(parts) if len(parts) > 1 else synthetic
    sampler = None
    if dist.world > 1:
        sampler = torch.utils.data.DistributedSampler(data, num_replicas=dist.world, rank=dist.rank,
                                                      shuffle=True, seed=config.seed, drop_last=True)
    return _Data(parts, data, sampler, validation, len(photos), synth.crop)


def _start_log(config: TrainConfig, summary: dict, data: _Data, out: Path) -> None:
    if out != Path(config.out):
        print(f"{config.out} holds an earlier run ({runs.describe(config.out)}): this run writes to {out}")
    # the starting checkpoint's digest: a later file at that path is known not to be the start
    started_from = {"init_sha256": sha256_file(config.init)} if config.init else {}
    runs.write_config(out, {**asdict(config), "out": str(out), **started_from})
    world = summary["world_size"]
    print(f"training {config.model} {summary['config']} ({summary['parameters']} parameters) on {summary['device']}"
          f"{f' x{world} (DDP)' if world > 1 else ''}: {data.photos} photos from {config.data}"
          f"{', real pairs from ' + ', '.join(config.real) if config.real else ''}; {config.epochs} epochs "
          f"x {config.steps_per_epoch} steps, batch {config.batch_size}, crop {data.crop}, lr {config.lr:g}")


def _one_epoch(config: TrainConfig, state: _State, data: _Data, epoch: int, steps: int, dist: _Distributed,
               bar: Progress) -> dict:
    """``steps`` optimizer steps; the epoch's record (loss, step, learning rate, seconds)."""
    for part in data.parts:
        part.set_epoch(epoch)
    if data.sampler is not None:
        data.sampler.set_epoch(epoch)
    # Item content depends only on (seed, epoch, index); shuffling only mixes the batches.
    generator = torch.Generator().manual_seed(config.seed * 100003 + epoch)
    loader = DataLoader(data.data, batch_size=config.batch_size, shuffle=data.sampler is None, sampler=data.sampler,
                        num_workers=config.workers, drop_last=True, generator=generator, persistent_workers=False)
    state.net.train()
    running, count, start = 0.0, 0, time.perf_counter()
    for batch in loader:
        if count >= steps:
            break
        batch = {key: value.to(dist.device, non_blocking=True) for key, value in batch.items()}
        for group in state.optimizer.param_groups:
            group["lr"] = learning_rate(config, state.step)
        loss = state.model.loss(batch, state.net)
        if not torch.isfinite(loss):
            raise ConfigError(f"the loss became {loss.item()} at step {state.step} (lr {config.lr:g}); "
                              f"lower --lr or check the data in {config.data}")
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        state.step += 1
        count += 1
        running += loss.item()
        pairs_per_s = count * config.batch_size * dist.world / (time.perf_counter() - start)
        bar.set_postfix_str(f"epoch {epoch + 1}/{config.epochs}, loss {running / count:.4f}, {pairs_per_s:.1f} pairs/s")
        bar.update(1)
    return {"epoch": epoch + 1, "step": state.step, "loss": running / max(count, 1),
            "lr": state.optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - start, 2)}


def _save(config: TrainConfig, state: _State, epoch: int, record: dict, out: Path) -> None:
    """The best checkpoint so far (weights only, shippable), the resumable last one, every
    save_period-th epoch's weights, the epoch's record (log.jsonl, results.csv)."""
    metadata = {"train.epoch": str(epoch), "train.step": str(state.step), "train.seed": str(config.seed),
                "train.config": json.dumps(asdict(config)),
                "val.psnr": f"{record['psnr']:.4f}", "val.ssim": f"{record['ssim']:.5f}",
                "val.average_psnr": f"{record['average_psnr']:.4f}",
                "val.average_ssim": f"{record['average_ssim']:.5f}"}
    if record["psnr"] > state.best_psnr:
        state.best_psnr = record["psnr"]
        save_checkpoint(out / f"{config.model}.safetensors", state.model,
                        {k: v for k, v in metadata.items() if not k.startswith("train.")})
    if config.save_period and record["epoch"] % config.save_period == 0:
        save_checkpoint(out / f"epoch_{record['epoch']:03d}.safetensors", state.model,
                        {k: v for k, v in metadata.items() if k not in ("train.config", "train.seed")})
    tensors, groups = _optimizer_tensors(state.optimizer)
    save_checkpoint(out / "last.safetensors", state.model,
                    {**metadata, "train.best_psnr": str(state.best_psnr), "train.optimizer": groups}, tensors)
    runs.add_record(out, record)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"{OPTIM_PREFIX}{index}/{key}"] = torch.as_tensor(value)
    return tensors, json.dumps(state["param_groups"])


def _restore_optimizer(optimizer: torch.optim.Optimizer, extra: dict[str, torch.Tensor], groups: str) -> None:
    state: dict[int, dict] = {}
    for name, value in extra.items():
        if name.startswith(OPTIM_PREFIX):
            index, key = name[len(OPTIM_PREFIX):].split("/")
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(groups)})
