"""The trainer: conditional DDPM with classifier-free-guidance dropout, AMP, EMA and exact resume.

One call, :func:`train`, runs a whole run (or continues it) from a :class:`~labkit.config.LabConfig`:

1. sample t ~ U{0..T-1} and ε ~ N(0, I); noise x0 into x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε  (DDPM eq. 4);
2. replace each label by the null condition with probability ``cond_drop_prob`` (CFG);
3. predict v (the default), ε or x0 and take the MSE, optionally weighted by min-SNR-γ;
4. AdamW (fused where supported), warm-up then cosine LR, gradient clipping, EMA of the weights.

It runs the same on one CPU, one GPU or several processes under Accelerate (data parallel,
gloo on CPU / NCCL on GPU): ``accelerate launch -m labkit train ...`` or ``notebook_launcher``.
The decoded uint8 training set lives on the device; the loss is read from the device only every
``log_every`` steps; checkpoints are written atomically and hold everything needed to resume
bit-for-bit on CPU (model, EMA, optimiser, LR schedule, grad scaler, step, data order, RNG states).
"""

from __future__ import annotations

import copy
import csv
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from labkit import data as data_module
from labkit.config import LabConfig
from labkit.runtime import (
    atomic_save,
    autocast,
    get_device,
    resolve_channels_last,
    resolve_precision,
    seed_everything,
    show_progress,
)

LOG_COLUMNS = ("step", "loss", "lr", "images_per_s", "elapsed_s")


# ---- the loss -------------------------------------------------------------------------------
def drop_labels(labels: torch.Tensor, drop_prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Classifier-free guidance dropout: each row becomes the null (all-zero) condition w.p. ``drop_prob``.

    labels: (B, 24) multi-hot -> (B, 24).
    """
    if labels is None:  # unconditional: nothing to drop
        return None
    if drop_prob <= 0:
        return labels
    keep = torch.rand(labels.shape[0], device=labels.device, generator=generator) >= drop_prob  # (B,)
    return labels * keep[:, None].to(labels.dtype)


def diffusion_loss(
    model: nn.Module,
    schedule,
    x0: torch.Tensor,
    labels: torch.Tensor,
    cond_drop_prob: float = 0.1,
    min_snr_gamma: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The training loss on one batch (a scalar tensor, not synchronised to the host).

    x0: (B, 3, H, W) in [-1, 1]; labels: (B, 24) multi-hot. The target follows
    ``schedule.prediction_type`` (ε, v or x0); ``min_snr_gamma > 0`` weights each sample by
    min-SNR-γ (Hang et al. 2023). Every random draw uses ``generator``.
    """
    batch = x0.shape[0]
    timesteps = torch.randint(
        0, schedule.num_train_timesteps, (batch,), device=x0.device, generator=generator
    )  # (B,)
    noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)  # (B, 3, H, W)
    labels = drop_labels(labels, cond_drop_prob, generator)
    x_t = schedule.add_noise(x0, noise, timesteps)  # DDPM eq. 4
    target = schedule.training_target(x0, noise, timesteps)
    prediction = model(x_t, timesteps, labels)
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))  # (B,)
    if min_snr_gamma > 0:
        per_sample = per_sample * schedule.loss_weights(timesteps, gamma=min_snr_gamma)
    return per_sample.mean()


# ---- EMA and LR ------------------------------------------------------------------------------
class EMA:
    """Exponential moving average of a model's weights (kept in float32).

    After each optimiser step: ``ema = decay_t * ema + (1 - decay_t) * param`` with the warm-up
    ``decay_t = min(decay, (1 + step) / (10 + step))`` while ``step < warmup_steps``; buffers
    (e.g. norm statistics) are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup_steps: int = 2000):
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay used for the update made after optimiser step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return min(self.decay, (1 + step) / (10 + step))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = self.decay_at(step)
        ema_params = list(self.model.parameters())
        params = [p.detach().to(e.dtype) for p, e in zip(model.parameters(), ema_params)]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)  # ema += (1 - decay) * (param - ema)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_lr_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# ---- batches -----------------------------------------------------------------------------------
class BatchSampler:
    """Epoch permutations of the data set, split across processes like a DistributedSampler.

    Every process draws the same permutation (shared generator) and takes every
    ``world_size``-th batch slot; the state (epoch, position, generator) goes into checkpoints.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.num_items = num_items
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.generator = torch.Generator().manual_seed(seed)
        self.permutation = torch.randperm(num_items, generator=self.generator)
        self.position = 0
        self.epoch = 0

    def next_indices(self) -> torch.Tensor:
        """Indices of this process's next batch, shape (batch_size,)."""
        chunk = self.batch_size * self.world_size
        if self.position + chunk > self.num_items:
            if self.num_items < chunk:  # tiny data sets: sample with replacement
                picks = torch.randint(0, self.num_items, (chunk,), generator=self.generator)
                return picks[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            self.permutation = torch.randperm(self.num_items, generator=self.generator)
            self.position = 0
            self.epoch += 1
        start = self.position + self.rank * self.batch_size
        self.position += chunk
        return self.permutation[start : start + self.batch_size]

    def state_dict(self) -> dict:
        return {
            "permutation": self.permutation,
            "position": self.position,
            "epoch": self.epoch,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.permutation = state["permutation"]
        self.position = state["position"]
        self.epoch = state["epoch"]
        self.generator.set_state(state["generator"])


def make_batch(
    images_uint8: torch.Tensor,
    indices: torch.Tensor,
    hflip: bool,
    generator: torch.Generator | None,
    channels_last: bool,
) -> torch.Tensor:
    """uint8 (N, 3, S, S) on the device + indices -> float (B, 3, S, S) in [-1, 1], maybe flipped."""
    x0 = data_module.to_model_range(images_uint8[indices.to(images_uint8.device)])  # (B, 3, S, S)
    if hflip:
        flip = torch.rand(x0.shape[0], device=x0.device, generator=generator) < 0.5  # (B,)
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
    if channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    return x0


# ---- checkpoints ------------------------------------------------------------------------------
def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def find_checkpoint(run_dir: str | os.PathLike, which: str = "best") -> Path:
    """``best.pt`` when asked for and present, else ``last.pt``; a clear error when neither exists."""
    folder = checkpoint_dir(run_dir)
    for name in ([f"{which}.pt"] if which == "last" else [f"{which}.pt", "last.pt"]):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(
        f"no checkpoint in {folder}; train first (python -m labkit train, or notebook 04_training)"
    )


def _rng_state(noise_generator: torch.Generator) -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state(), "noise": noise_generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, noise_generator: torch.Generator) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    noise_generator.set_state(state["noise"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_model(
    run_dir: str | os.PathLike | None = None,
    which: str = "best",
    use_ema: bool = True,
    device: str | torch.device | None = None,
    config: LabConfig | None = None,
):
    """Load a trained model for sampling: ``(model, schedule, config)``.

    ``run_dir`` defaults to ``config.run_dir``; ``which`` is "best" (falls back to "last") or
    "last"; the EMA weights are used unless ``use_ema=False``. The model is in eval mode.
    """
    from labkit.model import build_model
    from labkit.schedules import NoiseSchedule

    if run_dir is None:
        if config is None:
            raise ValueError("load_model needs run_dir or config")
        run_dir = config.run_dir
    path = find_checkpoint(run_dir, which)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    config = LabConfig.from_dict(checkpoint["config"])
    device = get_device(str(device) if device else None)
    model = build_model(config.model, config.data.image_size)
    model.load_state_dict(checkpoint["ema"] if use_ema and checkpoint.get("ema") else checkpoint["model"])
    model.to(device).eval().requires_grad_(False)
    schedule = NoiseSchedule.from_config(config.diffusion).to(device)
    model.checkpoint_step = checkpoint["step"]
    return model, schedule, config


# ---- the run -----------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`train` returns (on the main process)."""

    run_dir: Path
    step: int
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss) per log row
    images_per_s: float = 0.0
    wall_s: float = 0.0
    best_accuracy: float | None = None
    last_checkpoint: Path | None = None
    model: nn.Module | None = None  # the trained weights (unwrapped)
    ema_model: nn.Module | None = None  # their EMA (main process)


def _reset_log(log_path: Path, resumed_step: int) -> None:
    """Keep the log rows up to the resumed step (a run killed after its last checkpoint logged more)."""
    if not log_path.exists():
        return
    with log_path.open() as file:
        rows = [row for row in csv.DictReader(file) if int(row["step"]) <= resumed_step]
    with log_path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def train(
    config: LabConfig,
    resume: bool = True,
    progress: bool = True,
    stop_at_step: int | None = None,
    judge=None,
    training_set=None,
    on_log: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train (or continue) the run ``config.run_dir`` up to ``config.train.steps`` optimiser steps.

    resume: continue from ``checkpoints/last.pt`` when it exists (else start fresh; an existing
        run folder is then moved aside, never overwritten).
    stop_at_step: stop early after this step with a checkpoint (a simulated interruption).
    judge: a :class:`labkit.evaluate.Judge` for the periodic test accuracy (``eval_every``);
        ``None`` loads it lazily when ``eval_every > 0``.
    training_set: a :class:`labkit.data.TrainingSet` (default: loaded from ``config.data``).
    on_log: called on the main process with each log row (for live plots).
    The global batch is ``config.train.batch_size``, split evenly across processes.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from labkit.model import build_model
    from labkit.schedules import NoiseSchedule

    train_config = config.train
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device = accelerator.device
    rank, world_size = accelerator.process_index, accelerator.num_processes
    is_main = accelerator.is_main_process
    if train_config.batch_size % world_size:
        raise ValueError(
            f"train.batch_size={train_config.batch_size} must divide evenly over {world_size} processes"
        )
    local_batch = train_config.batch_size // world_size
    precision = resolve_precision(train_config.precision, device)
    channels_last = resolve_channels_last(train_config.channels_last, device, precision)
    seed_everything(train_config.seed + rank)

    run_dir = config.run_dir
    last_path = checkpoint_dir(run_dir) / "last.pt"
    if is_main and not resume and run_dir.exists() and any(run_dir.iterdir()):
        aside = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(aside)
        print(f"moved the previous run {run_dir} to {aside}")
    accelerator.wait_for_everyone()

    # data, on the device as uint8 when it fits
    if training_set is None:
        training_set = data_module.load_training_set(config.data, progress=progress and is_main)
    images = training_set.images
    labels_all = training_set.labels
    if train_config.data_on_device and device.type == "cuda":
        needed = images.numel() + (0 if labels_all is None else labels_all.numel() * 4)
        free, _ = torch.cuda.mem_get_info(device)
        if needed < 0.3 * free:
            images = images.to(device)
            labels_all = None if labels_all is None else labels_all.to(device)

    # model, optimiser, schedule
    model = build_model(config.model, config.data.image_size).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, train_config.ema_decay, train_config.ema_warmup_steps) if is_main else None
    fused = device.type == "cuda" or (device.type == "cpu" and torch.__version__ >= "2.4")
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay, fused=fused
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, train_config.warmup_steps, train_config.steps, train_config.min_lr_ratio),
    )
    grad_scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    schedule = NoiseSchedule.from_config(config.diffusion).to(device)
    noise_generator = torch.Generator(device=device).manual_seed(train_config.seed * 1000 + rank)
    sampler = BatchSampler(len(training_set), local_batch, seed=train_config.seed, rank=rank, world_size=world_size)
    step = 0
    best_accuracy = None

    if resume and last_path.exists():
        checkpoint = torch.load(last_path, map_location="cpu", weights_only=False)
        _check_resumable(checkpoint, config, last_path)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["lr_scheduler"])
        grad_scaler.load_state_dict(checkpoint["grad_scaler"])
        sampler.load_state_dict(checkpoint["sampler"][min(rank, len(checkpoint["sampler"]) - 1)])
        if len(checkpoint["rng"]) > rank:
            _set_rng_state(checkpoint["rng"][rank], noise_generator)
        else:  # saved by the main process alone (an interrupt): give this process a fresh stream
            noise_generator.manual_seed(train_config.seed * 1000 + rank + 7919 * checkpoint["step"])
        if ema is not None:
            ema.load_state_dict(checkpoint["ema"])
        step = checkpoint["step"]
        best_accuracy = checkpoint.get("best_accuracy")
        if is_main:
            print(f"resumed {run_dir} at step {step}")

    if step >= train_config.steps:
        accelerator.wait_for_everyone()
        return TrainResult(run_dir, step, best_accuracy=best_accuracy, last_checkpoint=last_path)

    compiled = torch.compile(model) if train_config.compile else model
    compiled, optimizer = accelerator.prepare(compiled, optimizer)

    log_path = run_dir / "log.csv"
    tensorboard = None
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / "config.json")
        _reset_log(log_path, step)
        tensorboard = _maybe_tensorboard(run_dir)
    if judge is None and train_config.eval_every and is_main:
        from labkit.evaluate import load_judge

        judge = load_judge(config, device=device, progress=progress)

    def save_checkpoint(path: Path, current_step: int, gather: bool = True) -> None:
        # Every process calls this with gather=True (a collective): each one's sampler and RNG
        # state is kept so each resumes its own random stream. gather=False: main process only.
        samplers, rngs = [sampler.state_dict()], [_rng_state(noise_generator)]
        if gather and world_size > 1:
            from accelerate.utils import gather_object

            samplers, rngs = gather_object(samplers), gather_object(rngs)
        if not is_main:
            return
        atomic_save(
            {
                "config": config.to_dict(),
                "step": current_step,
                "model": accelerator.unwrap_model(model).state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict(),
                "grad_scaler": grad_scaler.state_dict(),
                "sampler": samplers,
                "rng": rngs,
                "best_accuracy": best_accuracy,
                "world_size": world_size,
            },
            path,
        )

    result = TrainResult(run_dir, step)
    end_step = min(train_config.steps, stop_at_step) if stop_at_step is not None else train_config.steps
    running_loss = torch.zeros((), device=device)
    running_count = 0
    window_start, window_step = time.perf_counter(), step
    start_time = time.perf_counter()
    bar = tqdm(total=end_step, initial=step, desc=f"train {config.run_name}", disable=not show_progress(progress and is_main))
    compiled.train()
    try:
        while step < end_step:
            indices = sampler.next_indices()
            x0 = make_batch(images, indices, config.data.hflip, noise_generator, channels_last)
            batch_labels = (  # None: unconditional (a training set without labels)
                None if labels_all is None else labels_all[indices.to(labels_all.device)].to(device, non_blocking=True)
            )
            with autocast(device, precision):
                loss = diffusion_loss(
                    compiled,
                    schedule,
                    x0,
                    batch_labels,
                    cond_drop_prob=train_config.cond_drop_prob,
                    min_snr_gamma=config.diffusion.min_snr_gamma,
                    generator=noise_generator,
                )
            optimizer.zero_grad(set_to_none=True)
            grad_scaler.scale(loss).backward()
            if train_config.grad_clip > 0:
                grad_scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(compiled.parameters(), train_config.grad_clip)
            grad_scaler.step(optimizer)
            grad_scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update(accelerator.unwrap_model(model), step)
            running_loss += loss.detach()
            running_count += 1
            step += 1
            bar.update(1)

            if step % train_config.log_every == 0 or step == end_step:
                mean_loss = accelerator.reduce(running_loss / running_count, reduction="mean").item()  # the one sync
                now = time.perf_counter()
                images_per_s = (step - window_step) * train_config.batch_size / max(now - window_start, 1e-9)
                row = {
                    "step": step,
                    "loss": mean_loss,
                    "lr": scheduler.get_last_lr()[0],
                    "images_per_s": images_per_s,
                    "elapsed_s": now - start_time,
                }
                running_loss.zero_()
                running_count = 0
                window_start, window_step = now, step
                if is_main:
                    _append_log(log_path, row)
                    result.losses.append((step, mean_loss))
                    result.images_per_s = images_per_s
                    bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{images_per_s:.1f}")
                    if tensorboard is not None:
                        for key in ("loss", "lr", "images_per_s"):
                            tensorboard.add_scalar(f"train/{key}", row[key], step)
                    if on_log is not None:
                        on_log(row)
            if is_main and train_config.preview_every and step % train_config.preview_every == 0:
                save_preview(ema.model, schedule, config, step, device)
            if train_config.eval_every and step % train_config.eval_every == 0 and judge is not None and is_main:
                accuracy = evaluate_during_training(ema.model, schedule, config, judge, device, run_dir, step)
                if best_accuracy is None or accuracy > best_accuracy:
                    best_accuracy = accuracy
                    save_checkpoint(checkpoint_dir(run_dir) / "best.pt", step, gather=False)
            if step % train_config.checkpoint_every == 0 or step == end_step:
                save_checkpoint(last_path, step)
            if is_main and train_config.snapshot_every and step % train_config.snapshot_every == 0:
                save_snapshot(ema.model, config, step)
    except KeyboardInterrupt:
        if is_main:
            print(f"interrupted at step {step}; saving {last_path} so the run can resume")
        save_checkpoint(last_path, step, gather=False)
        raise
    finally:
        bar.close()
        if tensorboard is not None:
            tensorboard.close()
    accelerator.wait_for_everyone()
    result.step = step
    result.wall_s = time.perf_counter() - start_time
    result.best_accuracy = best_accuracy
    result.last_checkpoint = last_path
    result.model = accelerator.unwrap_model(model)
    result.ema_model = ema.model if ema is not None else None
    return result


def snapshot_path(run_dir: str | os.PathLike, step: int) -> Path:
    """Where the EMA snapshot of ``step`` is kept: ``checkpoints/ema_XXXXXX.pt``."""
    return checkpoint_dir(run_dir) / f"ema_{step:06d}.pt"


def save_snapshot(ema_model: nn.Module, config: LabConfig, step: int) -> Path:
    """Keep the EMA weights of ``step`` (fp16, with the config) for learning curves and
    denoising rows at several points of one run; :func:`load_model` reads them with ``which="ema_XXXXXX"``."""
    state = {key: value.detach().to("cpu", torch.float16) for key, value in ema_model.state_dict().items()}
    path = snapshot_path(config.run_dir, step)
    atomic_save({"config": config.to_dict(), "step": step, "model": state, "ema": None}, path)
    return path


def _check_resumable(checkpoint: dict, config: LabConfig, path: Path) -> None:
    """Refuse to resume when the model or data would not match the checkpoint."""
    saved = LabConfig.from_dict(checkpoint["config"])
    for section in ("model", "diffusion"):
        if getattr(saved, section) != getattr(config, section):
            raise ValueError(
                f"{path} was trained with a different {section} config; resume with the same settings, "
                f"pass resume=False (the old run is moved aside), or set train.run_name to a new name"
            )
    if saved.data.image_size != config.data.image_size:
        raise ValueError(f"{path} was trained at {saved.data.image_size}px, not {config.data.image_size}px")


def _append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=LOG_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({key: (f"{value:.6g}" if isinstance(value, float) else value) for key, value in row.items()})


def read_log(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of ``log.csv`` as dicts of numbers."""
    path = Path(run_dir) / "log.csv"
    if not path.exists():
        return []
    with path.open() as file:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]


def _maybe_tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


# ---- previews and evaluation during training --------------------------------------------------
PREVIEW_LABELS = (
    ["red sphere"],
    ["cyan cube"],
    ["yellow cylinder"],
    ["gray cube", "blue sphere"],
    ["green cylinder", "purple cube"],
    ["red sphere", "cyan cylinder", "cyan cube"],
    ["brown sphere", "gray cylinder", "yellow cube"],
    ["blue cube", "red cylinder", "green sphere"],
)


def save_preview(model, schedule, config: LabConfig, step: int, device) -> Path:
    """A grid of 8 fixed label sets (fixed seeds) with the EMA weights: ``previews/step_XXXXXX.png``."""
    from labkit.figures import save_grid
    from labkit.sample import sample

    labels = data_module.LabelSpace.default().encode(list(PREVIEW_LABELS))
    result = sample(
        model,
        schedule,
        labels,
        sampler="ddim",
        num_inference_steps=min(25, config.sample.num_inference_steps * 2),
        guidance_scale=config.sample.guidance_scale,
        seed=1234,
        device=device,
        precision=resolve_precision(config.train.precision, torch.device(device)),
        progress=False,
    )
    path = config.run_dir / "previews" / f"step_{step:06d}.png"
    return save_grid(result.images, path, nrow=8, upscale=2 if config.data.image_size <= 32 else 1)


def evaluate_during_training(model, schedule, config: LabConfig, judge, device, run_dir: Path, step: int) -> float:
    """Test accuracy (test.json) of the EMA model with the config's sampler; logged to ``eval.csv``."""
    from labkit.sample import sample

    source = data_module.resolve_source(config.data, render=False)
    conditions = source.conditions("test")
    labels = source.label_space.encode(conditions)
    result = sample(
        model,
        schedule,
        labels,
        sampler=config.sample.sampler,
        num_inference_steps=config.sample.num_inference_steps,
        guidance_scale=config.sample.guidance_scale,
        seed=config.sample.seed,
        device=device,
        precision=resolve_precision(config.train.precision, torch.device(device)),
        progress=False,
    )
    accuracy = judge.accuracy(result.images, labels)
    path = run_dir / "eval.csv"
    new = not path.exists()
    with path.open("a", newline="") as file:
        writer = csv.writer(file)
        if new:
            writer.writerow(["step", "test_accuracy", "judge"])
        writer.writerow([step, f"{accuracy.accuracy:.4f}", accuracy.judge])
    return accuracy.accuracy


def ensure_trained(config: LabConfig, progress: bool = True, **train_kwargs) -> Path:
    """Train the run when it has no finished ``last.pt`` (resuming a partial one); returns the run folder."""
    last = checkpoint_dir(config.run_dir) / "last.pt"
    if last.exists():
        step = torch.load(last, map_location="cpu", weights_only=False)["step"]
        if step >= config.train.steps:
            return config.run_dir
    train(config, resume=True, progress=progress, **train_kwargs)
    return config.run_dir


def warn_if_slow(images_per_s: float, config: LabConfig) -> None:
    """A hint when training is far slower than the profile expects."""
    if images_per_s and config.profile == "cpu" and images_per_s < 10:
        warnings.warn(
            f"training runs at {images_per_s:.1f} images/s; the cpu profile expects tens per second. "
            f"Close other programs or lower train.steps.",
            stacklevel=2,
        )
