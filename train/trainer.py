"""The training loop, top to bottom: data, model, optimizer, epochs of steps, validation against the
ground truth after each epoch, safetensors checkpoints. Runs on the CPU or one GPU, or on several
GPUs with PyTorch DDP when started by ``torchrun`` (WORLD_SIZE set)."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader
from tqdm import tqdm

from mfif.device import parse_device
from mfif.errors import ConfigError, DataError, ModelFileError
from mfif.train import losses
from mfif.train.checkpoint import load_checkpoint, save_checkpoint
from mfif.train.data import RealPairCrops, SourcesOnly, SynthConfig, SyntheticPairs, load_photos, validation_set
from mfif.train.models import MODELS, build_model, count_parameters

DEFAULT_LR = {"xu2018": 1e-3, "mustafa2019": 1e-3, "focusmap": 2e-3}
OPTIM_PREFIX = "optim/"


@dataclass
class TrainConfig:
    model: str = "focusmap"
    model_config: dict = field(default_factory=dict)
    data: str = ""                      # folder of sharp photos (synthetic pairs)
    real: list[str] = field(default_factory=list)   # folders of real pairs (unsupervised models only)
    out: str = "runs/focusmap"
    epochs: int = 2
    steps_per_epoch: int = 50
    steps: int = 0                      # total optimizer steps; when > 0 it sets the epochs
    batch_size: int = 8
    crop: int = 96
    lr: float = 0.0                     # 0: the model's default (DEFAULT_LR)
    warmup_steps: int = 20
    seed: int = 0
    val_count: int = 16
    val_crop: int = 192
    device: str = "auto"
    workers: int = 0
    resume: str = ""
    stop_after: int = 0                 # stop after this many epochs (schedule unchanged); resume later
    synth: dict = field(default_factory=dict)   # SynthConfig overrides

    def __post_init__(self):
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        for name in ("epochs", "steps_per_epoch", "batch_size", "val_count"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.steps < 0 or self.lr < 0 or self.workers < 0:
            raise ConfigError(f"steps, lr and workers must not be negative "
                              f"(got {self.steps}, {self.lr}, {self.workers})")
        if self.real and self.model != "mustafa2019":
            raise ConfigError(f"--real pairs have no ground truth and only train the unsupervised mustafa2019, "
                              f"not {self.model}")
        if self.steps:
            self.epochs = math.ceil(self.steps / self.steps_per_epoch)
        if not self.lr:
            self.lr = DEFAULT_LR[self.model]

    @property
    def total_steps(self) -> int:
        return self.steps or self.epochs * self.steps_per_epoch


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up (at most a tenth of the run), then cosine decay to a tenth of the base rate."""
    warmup = max(1, min(config.warmup_steps, config.total_steps // 10))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, config.total_steps - warmup))
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def compute_loss(model_name: str, model, batch: dict) -> torch.Tensor:
    sources = batch["sources"]
    if model_name == "focusmap":
        fused, weights = model(sources, return_weights=True)
        return losses.focusmap_loss(fused, batch["truth"], weights, batch.get("focus"), sources)
    fused = model(sources)
    if model_name == "xu2018":
        return losses.mse_loss(fused, batch["truth"])
    return losses.unsupervised_ssim_loss(fused, sources)


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


def train(config: TrainConfig) -> dict:
    """Train as ``config`` says; returns a summary (paths, figures, timings)."""
    dist = _Distributed(config.device)
    try:
        return _train(config, dist)
    finally:
        dist.close()


def _train(config: TrainConfig, dist: _Distributed) -> dict:
    device = dist.device
    out = Path(config.out)
    torch.manual_seed(config.seed)

    # Model (fresh or resumed).
    start_epoch, step, resumed = 0, 0, None
    if config.resume:
        resumed = load_checkpoint(config.resume)
        if resumed.model.name != config.model:
            raise ConfigError(f"--resume {config.resume} holds a {resumed.model.name} model, not {config.model}")
        if "train.epoch" not in resumed.metadata:
            raise ModelFileError(f"{config.resume} has no training state (it is a shipped/best checkpoint); "
                                 f"resume from {Path(config.resume).parent / 'last.safetensors'}")
        model = resumed.model.train()
        start_epoch = int(resumed.metadata["train.epoch"]) + 1
        step = int(resumed.metadata["train.step"])
    else:
        model = build_model(config.model, **config.model_config)
    model.to(device)
    train_model = model
    if dist.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
    if resumed is not None and "train.optimizer" in resumed.metadata:
        _restore_optimizer(optimizer, resumed.extra_tensors, resumed.metadata["train.optimizer"])

    # Data.
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
    val_samples = validation_set(config.data, val_config, count=config.val_count) if dist.main else []
    per_epoch = config.steps_per_epoch * config.batch_size * dist.world
    dataset = SyntheticPairs(photos, synth, per_epoch, seed=config.seed)
    datasets = [dataset]
    if config.real:
        datasets = [SourcesOnly(dataset), RealPairCrops(config.real, synth.crop, per_epoch, channels, config.seed)]
    data = ConcatDataset(datasets) if len(datasets) > 1 else dataset
    sampler = None
    if dist.world > 1:
        sampler = torch.utils.data.DistributedSampler(data, num_replicas=dist.world, rank=dist.rank,
                                                      shuffle=True, seed=config.seed, drop_last=True)
    generator = torch.Generator().manual_seed(config.seed)

    summary = {"model": config.model, "config": model.config, "parameters": count_parameters(model),
               "device": str(device), "world_size": dist.world, "photos": len(photos), "epochs": []}
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(asdict(config), indent=2))
        print(f"training {config.model} {model.config} ({summary['parameters']} parameters) on {device}"
              f"{f' x{dist.world} (DDP)' if dist.world > 1 else ''}: {len(photos)} photos from {config.data}"
              f"{', real pairs from ' + ', '.join(config.real) if config.real else ''}; {config.epochs} epochs "
              f"x {config.steps_per_epoch} steps, batch {config.batch_size}, crop {synth.crop}, lr {config.lr:g}")
    best_psnr = -math.inf
    if resumed is not None:
        best_psnr = float(resumed.metadata.get("train.best_psnr", "-inf"))
    started = time.perf_counter()
    last_epoch = min(config.epochs, config.stop_after) if config.stop_after > 0 else config.epochs
    for epoch in range(start_epoch, last_epoch):
        for part in datasets:
            part.set_epoch(epoch)
        # Item content depends only on (seed, epoch, index); shuffling only mixes the batches.
        generator.manual_seed(config.seed * 100003 + epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = DataLoader(data, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
                            num_workers=config.workers, drop_last=True, generator=generator,
                            persistent_workers=False)
        steps_this_epoch = min(config.steps_per_epoch, config.total_steps - step)
        if steps_this_epoch <= 0:
            break
        train_model.train()
        running, count, epoch_start = 0.0, 0, time.perf_counter()
        bar = tqdm(total=steps_this_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not dist.main,
                   unit="step", dynamic_ncols=True)
        for batch in loader:
            if count >= steps_this_epoch:
                break
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            loss = compute_loss(config.model, train_model, batch)
            if not torch.isfinite(loss):
                raise ConfigError(f"the loss became {loss.item()} at step {step} (lr {config.lr:g}); "
                                  f"lower --lr or check the data in {config.data}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            count += 1
            running += loss.item()
            elapsed = time.perf_counter() - epoch_start
            bar.set_postfix(loss=f"{running / count:.4f}",
                            pairs_per_s=f"{count * config.batch_size * dist.world / elapsed:.1f}")
            bar.update(1)
        bar.close()
        record = {"epoch": epoch + 1, "step": step, "loss": running / max(count, 1),
                  "seconds": round(time.perf_counter() - epoch_start, 2)}
        if dist.main:
            record.update(evaluate(model, val_samples, device))
            print(f"epoch {epoch + 1}: loss {record['loss']:.4f}, validation PSNR {record['psnr']:.2f} dB "
                  f"(pixel average {record['average_psnr']:.2f}), SSIM {record['ssim']:.4f} "
                  f"(pixel average {record['average_ssim']:.4f})")
            metadata = {"train.epoch": str(epoch), "train.step": str(step), "train.seed": str(config.seed),
                        "train.config": json.dumps(asdict(config)),
                        "val.psnr": f"{record['psnr']:.4f}", "val.ssim": f"{record['ssim']:.5f}",
                        "val.average_psnr": f"{record['average_psnr']:.4f}",
                        "val.average_ssim": f"{record['average_ssim']:.5f}"}
            if record["psnr"] > best_psnr:
                best_psnr = record["psnr"]
                save_checkpoint(out / f"{config.model}.safetensors", model,
                                {k: v for k, v in metadata.items() if not k.startswith("train.")})
            tensors, groups = _optimizer_tensors(optimizer)
            save_checkpoint(out / "last.safetensors", model,
                            {**metadata, "train.best_psnr": str(best_psnr), "train.optimizer": groups}, tensors)
            with open(out / "log.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
        summary["epochs"].append(record)
        dist.barrier()
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["best"] = str(out / f"{config.model}.safetensors")
    summary["last"] = str(out / "last.safetensors")
    summary["best_psnr"] = best_psnr
    return summary
