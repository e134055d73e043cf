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

import contextlib
import copy
import csv
import json
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from labkit import data as data_module
from labkit.checkpoint import (  # noqa: F401  (load_model, find_checkpoint, snapshot_path, read_log, training_seconds: also reachable as labkit.train.*)
    INITIALISED_FROM,
    RunError,
    check_resumable,
    checkpoint_dir,
    find_checkpoint,
    history_of_weights,
    load_model,
    read_checkpoint,
    read_log,
    rng_state,
    save_checkpoint,
    save_snapshot,
    set_rng_state,
    snapshot_path,
    stored_weights,
    training_seconds,
)
from labkit.config import ConfigError, LabConfig, resolve_path
from labkit.model import build_model, object_attention_weights
from labkit.reference import verified_path
from labkit.runtime import (
    atomic_write_text,
    autocast,
    resolve_channels_last,
    choose_precision,
    remove_stale_temp_files,
    seed_everything,
    show_progress,
)
from labkit.schedules import NoiseSchedule

LOG_COLUMNS = ("step", "loss", "lr", "images_per_s", "elapsed_s", "test_accuracy", "new_test_accuracy")
ACCURACY_COLUMNS = LOG_COLUMNS[-2:]  # filled on the rows of the steps the judge scored (``train.eval_every``)


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
    loss_fn: Callable | None = None,
) -> torch.Tensor:
    """The training loss on one batch (a scalar tensor, not synchronised to the host).

    x0: (B, 3, H, W) in [-1, 1]; labels: (B, 24) multi-hot. The target follows
    ``schedule.prediction_type`` (ε, v or x0); ``min_snr_gamma > 0`` weights each sample by
    min-SNR-γ (Hang et al. 2023). Every random draw uses ``generator``.
    loss_fn(model, x0, labels, timesteps, noise, alpha_bar) -> (B,): replaces the per-sample MSE
    (the student notebook's ``v_loss``, for a v-prediction schedule); the draws, the label dropout
    and the min-SNR weights stay labkit's.
    """
    batch = x0.shape[0]
    timesteps = torch.randint(
        0, schedule.num_train_timesteps, (batch,), device=x0.device, generator=generator
    )  # (B,)
    noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)  # (B, 3, H, W)
    labels = drop_labels(labels, cond_drop_prob, generator)
    if loss_fn is not None:
        per_sample = loss_fn(model, x0, labels, timesteps, noise, schedule.alphas_cumprod.to(x0.device)).float()  # (B,)
    else:
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


def place_training_set(
    images: torch.Tensor, labels: torch.Tensor, device: torch.device, data_on_device: bool = True
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Put the uint8 training set where batches are cut from it; returns (images, labels, description).

    images: uint8 (N, 3, S, S); labels: (N, 24). On a CPU the set is already on the device. On a GPU
    it moves there when ``data_on_device`` and it takes under 30% of the free GPU memory; otherwise it
    stays in host memory and :func:`make_batch` copies each batch through pinned memory with
    non-blocking copies. The description says which path was taken and why (printed by :func:`train`).
    """
    label_bytes = 0 if labels is None else labels.numel() * labels.element_size()  # None: unconditional
    size_mib = (images.numel() * images.element_size() + label_bytes) / 2**20
    what = f"{len(images)} images, {size_mib:,.1f} MiB as uint8"
    if device.type != "cuda":
        return images, labels, f"training set ({what}) in {device.type} memory, the model's device"
    if not data_on_device:
        why = "train.data_on_device = false"
    else:
        free, _ = torch.cuda.mem_get_info(device)
        if size_mib * 2**20 < 0.3 * free:
            on_device = None if labels is None else labels.to(device)
            return images.to(device), on_device, f"training set ({what}) on {device}"
        why = f"it would take over 30% of the GPU's free {free / 2**20:,.0f} MiB"
    return images, labels, f"training set ({what}) in host memory ({why}): batches copied through pinned memory, non-blocking"


def make_batch(
    images_uint8: torch.Tensor,
    indices: torch.Tensor,
    hflip: bool,
    generator: torch.Generator | None,
    channels_last: bool,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """uint8 (N, 3, S, S) + indices (B,) -> float (B, 3, S, S) in [-1, 1] on ``device``, maybe flipped.

    device: the model's device (default: where the images are). A set kept in host memory is indexed
    there; on a GPU its uint8 batch (4x smaller than float) is pinned and copied with
    ``non_blocking=True``. The flip mask is drawn from ``generator`` on the generator's own device.
    """
    device = torch.device(device) if device is not None else images_uint8.device
    batch = images_uint8[indices.to(images_uint8.device)]  # (B, 3, S, S) uint8
    if batch.device != device:
        if batch.device.type == "cpu" and device.type == "cuda":
            batch = batch.pin_memory()
        batch = batch.to(device, non_blocking=True)
    x0 = data_module.to_model_range(batch)  # (B, 3, S, S)
    if hflip:
        draw_on = generator.device if generator is not None else device
        flip = (torch.rand(x0.shape[0], device=draw_on, generator=generator) < 0.5).to(device)  # (B,)
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
    if channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    return x0


def optimizer_step(loss: torch.Tensor, optimizer, grad_scaler, parameters, grad_clip: float) -> None:
    """Backward and one optimiser step through ``grad_scaler`` (a no-op scaler unless fp16).

    fp16: the loss is scaled before backward so small gradients do not underflow; the gradients
    are unscaled before clipping to ``grad_clip`` (0: no clipping); a step whose gradients hold
    inf/NaN is skipped and the scale halved (``GradScaler.step``/``update``).
    """
    optimizer.zero_grad(set_to_none=True)
    grad_scaler.scale(loss).backward()
    if grad_clip > 0:
        grad_scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    grad_scaler.step(optimizer)
    grad_scaler.update()


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


# ---- the run: fixed pieces, changing state, one step, logging, saving -----------------------------
@dataclass
class RunSetup:
    """What stays fixed during a run: processes, device, precision, data and noise schedule."""

    config: LabConfig
    accelerator: object  # accelerate.Accelerator
    device: torch.device
    rank: int
    world_size: int
    is_main: bool
    precision: str  # "bf16", "fp16" or "fp32"
    precision_reason: str  # why that precision (printed at the start of training)
    channels_last: bool
    images: torch.Tensor  # uint8 (N, 3, S, S), on the device when it fits
    labels: torch.Tensor | None  # (N, 24) multi-hot; None for an unconditional model
    schedule: NoiseSchedule
    data_path: str  # where the training set lives and how batches reach the device
    loss_fn: Callable | None = None  # replaces the per-sample MSE (see diffusion_loss)

    @property
    def last_path(self) -> Path:
        return checkpoint_dir(self.config.run_dir) / "last.pt"


@dataclass
class TrainState:
    """What changes during a run, and what a checkpoint holds."""

    model: nn.Module
    ema: EMA | None  # main process only
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LambdaLR
    grad_scaler: torch.amp.GradScaler
    sampler: BatchSampler
    noise_generator: torch.Generator
    step: int = 0
    best_accuracy: float | None = None
    in_step: bool = False  # True while a step is half done (the weights, optimiser and data order may disagree)


def prepare_run(config: LabConfig, resume: bool, training_set=None, progress: bool = True) -> RunSetup:
    """Processes, device and precision; the old run moved aside when not resuming; the data on the device."""
    from accelerate import Accelerator

    config.validate()  # bad settings fail here, before any work
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device, world_size = accelerator.device, accelerator.num_processes
    if config.train.batch_size % world_size:
        raise ConfigError(f"train.batch_size = {config.train.batch_size} must divide evenly over the {world_size} processes; "
                          f"set it to a multiple of {world_size}")
    precision_choice = choose_precision(config.train.precision, device)
    precision = precision_choice.name
    seed_everything(config.train.seed + accelerator.process_index)
    run_dir = config.run_dir
    if accelerator.is_main_process and not resume and run_dir.exists() and any(run_dir.iterdir()):
        aside = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(aside)
        print(f"moved the previous run {run_dir} to {aside}")
    if accelerator.is_main_process:
        for folder in (run_dir, checkpoint_dir(run_dir)):  # left by a kill during an earlier run's write
            for stale in remove_stale_temp_files(folder):
                print(f"removed {stale}, a partial file left by an earlier run that was killed while writing it")
    accelerator.wait_for_everyone()
    if training_set is None:
        training_set = data_module.load_training_set(config.data, progress=progress and accelerator.is_main_process)
    images, labels, data_path = place_training_set(
        training_set.images, training_set.labels, device, config.train.data_on_device
    )
    return RunSetup(
        config, accelerator, device, accelerator.process_index, world_size, accelerator.is_main_process, precision,
        str(precision_choice), resolve_channels_last(config.train.channels_last, device, precision), images, labels,
        NoiseSchedule.from_config(config.diffusion).to(device), data_path,
    )


def build_state(setup: RunSetup) -> TrainState:
    """A fresh model (with its EMA on the main process), AdamW, warm-up + cosine LR, grad scaler, data order."""
    config, device = setup.config, setup.device
    train_config = config.train
    model = build_model(config.model, config.data.image_size).to(device)
    if setup.channels_last:
        model = model.to(memory_format=torch.channels_last)
    fused = device.type == "cuda" or (device.type == "cpu" and torch.__version__ >= "2.4")
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay, fused=fused)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, train_config.warmup_steps, train_config.steps, train_config.min_lr_ratio),
    )
    return TrainState(
        model=model,
        ema=EMA(model, train_config.ema_decay, train_config.ema_warmup_steps) if setup.is_main else None,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        grad_scaler=torch.amp.GradScaler(device.type, enabled=setup.precision == "fp16"),
        sampler=BatchSampler(
            len(setup.images), train_config.batch_size // setup.world_size, seed=train_config.seed,
            rank=setup.rank, world_size=setup.world_size,
        ),
        noise_generator=torch.Generator(device=device).manual_seed(train_config.seed * 1000 + setup.rank),
    )


def resume_state(state: TrainState, setup: RunSetup) -> None:
    """Continue from ``last.pt``: weights, EMA, optimiser, LR schedule, scaler, data order and RNG of this process."""
    checkpoint = read_checkpoint(setup.last_path)
    check_resumable(checkpoint, setup.config, setup.last_path)
    state.model.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    state.grad_scaler.load_state_dict(checkpoint["grad_scaler"])
    state.sampler.load_state_dict(checkpoint["sampler"][min(setup.rank, len(checkpoint["sampler"]) - 1)])
    if len(checkpoint["rng"]) > setup.rank:
        set_rng_state(checkpoint["rng"][setup.rank], state.noise_generator)
    else:  # saved by the main process alone (an interrupt): give this process a fresh stream
        state.noise_generator.manual_seed(setup.config.train.seed * 1000 + setup.rank + 7919 * checkpoint["step"])
    if state.ema is not None:
        state.ema.load_state_dict(checkpoint["ema"])
    state.step, state.best_accuracy = checkpoint["step"], checkpoint.get("best_accuracy")
    if setup.is_main:
        print(f"resumed {setup.config.run_dir} at step {state.step}")


def init_weights_path(init_from: str) -> Path:
    """The file ``train.init_from`` names: "reference" is the shipped reference model (SHA-256 checked)."""
    return verified_path("model.pt") if init_from == "reference" else resolve_path(init_from)


def initialize_from(state: TrainState, setup: RunSetup) -> None:
    """Start a new run from the weights ``train.init_from`` names (a file, or "reference"; its EMA weights when it
    keeps them): the model and its EMA begin there; the optimiser, LR schedule and step count start afresh."""
    path = init_weights_path(setup.config.train.init_from)
    checkpoint = read_checkpoint(path)
    check_resumable(checkpoint, setup.config, path, adds_object_attention=True)
    weights = {key: value.float() for key, value in stored_weights(checkpoint).items()}
    missing, unexpected = state.model.load_state_dict(weights, strict=False)
    not_added = sorted(set(missing) - object_attention_weights(state.model))  # a fine-tune may add only these
    if not_added or unexpected:
        raise RunError(f"{path} does not hold this model's weights (missing {not_added[:4]}, unexpected "
                       f"{unexpected[:4]}); set train.init_from to weights of the same model")
    if state.ema is not None:
        state.ema.model.load_state_dict(state.model.state_dict())
    if setup.is_main:  # what the run started from, so its steps and hours can be counted on from there
        step, seconds = history_of_weights(path, checkpoint)
        start = {"init_from": str(path), "step": step, "train_wall_s": seconds}
        setup.config.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(start, indent=1) + "\n", setup.config.run_dir / INITIALISED_FROM)
        print(f"initialised {setup.config.run_name} from {path} (trained {start['step']} steps there)")


def train_step(state: TrainState, setup: RunSetup, network: nn.Module) -> torch.Tensor:
    """One optimiser step on the next batch (``network`` is the prepared, maybe compiled, model); returns the
    loss on the device (no host sync)."""
    config = setup.config
    state.in_step = True
    indices = state.sampler.next_indices()
    x0 = make_batch(setup.images, indices, config.data.hflip, state.noise_generator, setup.channels_last, setup.device)
    batch_labels = (  # None: an unconditional model (a training set without labels)
        None if setup.labels is None else setup.labels[indices.to(setup.labels.device)].to(setup.device, non_blocking=True)
    )
    with autocast(setup.device, setup.precision):
        loss = diffusion_loss(
            network, setup.schedule, x0, batch_labels, cond_drop_prob=config.train.cond_drop_prob,
            min_snr_gamma=config.diffusion.min_snr_gamma, generator=state.noise_generator, loss_fn=setup.loss_fn,
        )
    optimizer_step(loss, state.optimizer, state.grad_scaler, network.parameters(), config.train.grad_clip)
    state.lr_scheduler.step()
    if state.ema is not None:
        state.ema.update(setup.accelerator.unwrap_model(state.model), state.step)
    state.step += 1
    state.in_step = False
    return loss.detach()


def save_state(state: TrainState, setup: RunSetup, path: Path, gather: bool = True) -> None:
    """Write a resumable checkpoint. Every process calls this with ``gather=True`` (a collective: each one's data
    order and RNG state is kept so each resumes its own stream); ``gather=False``: the main process alone."""
    samplers, rngs = [state.sampler.state_dict()], [rng_state(state.noise_generator)]
    if gather and setup.world_size > 1:
        from accelerate.utils import gather_object

        samplers, rngs = gather_object(samplers), gather_object(rngs)
    if not setup.is_main:
        return
    save_checkpoint(
        path,
        config=setup.config.to_dict(),
        step=state.step,
        model=setup.accelerator.unwrap_model(state.model).state_dict(),
        ema=state.ema.state_dict() if state.ema is not None else None,
        optimizer=state.optimizer.state_dict(),
        lr_scheduler=state.lr_scheduler.state_dict(),
        grad_scaler=state.grad_scaler.state_dict(),
        sampler=samplers,
        rng=rngs,
        best_accuracy=state.best_accuracy,
        world_size=setup.world_size,
    )


class TrainLog:
    """The loss averaged on the device between log rows; each row goes to ``log.csv``, TensorBoard and ``on_log``."""

    def __init__(self, setup: RunSetup, step: int, result: "TrainResult", on_log: Callable[[dict], None] | None):
        self.setup, self.result, self.on_log = setup, result, on_log
        self.path = setup.config.run_dir / "log.csv"
        self.running_loss = torch.zeros((), device=setup.device)
        self.count = 0
        self.start = self.window_start = time.perf_counter()
        self.window_step = step
        self.tensorboard = None
        if setup.is_main:
            setup.config.run_dir.mkdir(parents=True, exist_ok=True)
            setup.config.save(setup.config.run_dir / "config.json")
            _reset_log(self.path, step)
            self.tensorboard = _maybe_tensorboard(setup.config.run_dir)

    def add(self, loss: torch.Tensor) -> None:
        self.running_loss += loss
        self.count += 1

    def write(self, state: TrainState, bar, accuracies: dict | None = None) -> None:
        """Average the losses since the last row over every process (the one host sync) and record the row
        (with the accuracies measured at this step, when there are any)."""
        mean_loss = self.setup.accelerator.reduce(self.running_loss / max(self.count, 1), reduction="mean").item()
        now = time.perf_counter()
        images_per_s = (state.step - self.window_step) * self.setup.config.train.batch_size / max(now - self.window_start, 1e-9)
        row = {
            "step": state.step, "loss": mean_loss, "lr": state.lr_scheduler.get_last_lr()[0],
            "images_per_s": images_per_s, "elapsed_s": now - self.start,
        }
        row.update({key: value for key, value in (accuracies or {}).items() if key in ACCURACY_COLUMNS})
        self.running_loss.zero_()
        self.count = 0
        self.window_start, self.window_step = now, state.step
        if not self.setup.is_main:
            return
        _append_log(self.path, row)
        self.result.losses.append((state.step, mean_loss))
        self.result.images_per_s = images_per_s
        bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{images_per_s:.1f}")
        if self.tensorboard is not None:
            for key in ("loss", "lr", "images_per_s"):
                self.tensorboard.add_scalar(f"train/{key}", row[key], state.step)
        if self.on_log is not None:
            self.on_log(row)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def after_step(state: TrainState, setup: RunSetup, end_step: int, log: TrainLog, bar, callbacks: dict) -> None:
    """Checkpoint and snapshot when their step comes; then preview and evaluate (``best.pt`` on a better
    accuracy); then the log row (with the accuracies of an evaluation). The callbacks run after the step's
    checkpoint, so a failing one loses no training, and in a forked random state, so the training stream
    is the same with or without them."""
    train_config, step, main = setup.config.train, state.step, setup.is_main
    if step % train_config.checkpoint_every == 0 or step == end_step:
        save_state(state, setup, setup.last_path)
    if main and train_config.snapshot_every and step % train_config.snapshot_every == 0:
        save_snapshot(state.ema.model, setup.config, step)
    preview = main and callbacks.get("on_preview") and train_config.preview_every and step % train_config.preview_every == 0
    evaluation_due = bool(callbacks.get("on_eval") and train_config.eval_every and step % train_config.eval_every == 0)
    accuracies = None
    if preview or (main and evaluation_due):
        with forked_random_state(setup.device):
            if preview:
                callbacks["on_preview"](state.ema.model, setup.schedule, step)
            if main and evaluation_due:
                accuracies = evaluation_result(callbacks["on_eval"](state.ema.model, setup.schedule, step))
                accuracy = accuracies.get("accuracy")
                if accuracy is not None and (state.best_accuracy is None or accuracy > state.best_accuracy):
                    state.best_accuracy = accuracy
                    save_state(state, setup, checkpoint_dir(setup.config.run_dir) / "best.pt", gather=False)
    if step % train_config.log_every == 0 or step == end_step or evaluation_due:
        log.write(state, bar, accuracies)


def evaluation_result(value) -> dict:
    """What ``on_eval`` returned, as a dict: a number is the accuracy that picks ``best.pt``; a dict may add
    ``test_accuracy`` and ``new_test_accuracy`` (written to ``log.csv``); None: nothing measured."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    return {"accuracy": float(value)}


@contextlib.contextmanager
def forked_random_state(device: torch.device):
    """Python's and torch's random states (CPU and ``device``) restored on the way out."""
    python_state = random.getstate()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)


def weights_are_finite(model: nn.Module) -> bool:
    """False when any parameter holds NaN or inf (a diverged run: its checkpoint must not replace a good one)."""
    return all(bool(torch.isfinite(parameter).all()) for parameter in model.parameters())


def save_on_failure(state: TrainState, setup: RunSetup, error: BaseException) -> None:
    """Keep the steps since the last checkpoint when training stops on ``error``, if the state is sound:
    not half-way through a step, weights finite. Never replaces a good ``last.pt`` with a broken state."""
    if not setup.is_main:
        return
    what = "interrupted" if isinstance(error, KeyboardInterrupt) else f"stopped by {type(error).__name__}"
    if state.in_step:
        print(f"training {what} in the middle of step {state.step + 1}; {setup.last_path} (the last checkpoint) is kept")
        return
    if not weights_are_finite(setup.accelerator.unwrap_model(state.model)):
        print(f"training {what} at step {state.step} with non-finite weights; {setup.last_path} is kept as it was")
        return
    try:
        save_state(state, setup, setup.last_path, gather=False)
        print(f"training {what} at step {state.step}; saved {setup.last_path} so the run can resume")
    except Exception as save_error:  # e.g. the disk is full: report it, and raise the original error
        print(f"training {what} at step {state.step}; saving {setup.last_path} failed too ({save_error})")


@contextlib.contextmanager
def stop_between_steps():
    """Ctrl-C (SIGINT) during training: finish the step under way, then raise KeyboardInterrupt, so the
    checkpoint written on the way out is never half a step. A second Ctrl-C interrupts at once.
    Yields a function that raises when a stop was asked for. Only in the main thread (signals live there)."""
    asked = []

    def handler(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)

    def check() -> None:
        if asked:
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield check
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)


def train(
    config: LabConfig,
    resume: bool = True,
    progress: bool = True,
    stop_at_step: int | None = None,
    training_set=None,
    on_log: Callable[[dict], None] | None = None,
    on_eval: Callable[[nn.Module, NoiseSchedule, int], float | None] | None = None,
    on_preview: Callable[[nn.Module, NoiseSchedule, int], None] | None = None,
    loss_fn: Callable | None = None,
) -> TrainResult:
    """Train (or continue) the run ``config.run_dir`` up to ``config.train.steps`` optimiser steps.

    resume: continue from ``checkpoints/last.pt`` when it exists (else start fresh; an existing
        run folder is then moved aside, never overwritten).
    stop_at_step: stop early after this step with a checkpoint (a simulated interruption).
    training_set: a :class:`labkit.data.TrainingSet` (default: loaded from ``config.data``).
    on_log(row): each log row (dict with step, loss, lr, images_per_s, elapsed_s), e.g. for live plots.
    on_eval(ema_model, schedule, step) -> accuracy: every ``train.eval_every`` steps, after that step's
        checkpoint; a number, or a dict with "accuracy" (a better one than before writes ``checkpoints/best.pt``)
        and "test_accuracy" / "new_test_accuracy" (written to ``log.csv``).
    on_preview(ema_model, schedule, step): every ``train.preview_every`` steps (e.g. a grid of samples).
    loss_fn(model, x0, labels, timesteps, noise, alpha_bar) -> (B,): your own per-sample loss (see
        :func:`diffusion_loss`), e.g. the student notebook's ``v_loss``.
    Callbacks run on the main process only. The global batch is ``config.train.batch_size``, split
    evenly across processes. :func:`labkit.lab.run_train` passes the lab's preview and evaluation.
    """
    setup = prepare_run(config, resume, training_set, progress)
    setup.loss_fn = loss_fn
    state = build_state(setup)
    if resume and setup.last_path.exists():
        resume_state(state, setup)
    elif config.train.init_from:
        initialize_from(state, setup)
    if state.step >= config.train.steps:
        if setup.is_main:
            print(f"{config.run_name}: already trained to step {state.step} of train.steps = {config.train.steps}; "
                  f"nothing to do (raise train.steps to continue, or --fresh to start again)")
        setup.accelerator.wait_for_everyone()
        return TrainResult(config.run_dir, state.step, best_accuracy=state.best_accuracy, last_checkpoint=setup.last_path)
    network = torch.compile(state.model) if config.train.compile else state.model
    network, state.optimizer = setup.accelerator.prepare(network, state.optimizer)
    result = TrainResult(config.run_dir, state.step)
    log = TrainLog(setup, state.step, result, on_log)
    end_step = min(config.train.steps, stop_at_step) if stop_at_step is not None else config.train.steps
    callbacks = {"on_eval": on_eval, "on_preview": on_preview}
    if setup.is_main:
        print(f"train {config.run_name}: steps {state.step} -> {end_step} on {setup.device}\n"
              f"  precision {setup.precision_reason}\n  data: {setup.data_path}")
    bar = tqdm(total=end_step, initial=state.step, desc=f"train {config.run_name}",
               disable=not show_progress(progress and setup.is_main))
    network.train()
    try:
        with stop_between_steps() as stop_if_asked:
            while state.step < end_step:
                log.add(train_step(state, setup, network))
                bar.update(1)
                after_step(state, setup, end_step, log, bar, callbacks)
                stop_if_asked()
    except BaseException as error:
        save_on_failure(state, setup, error)
        raise
    finally:
        bar.close()
        log.close()
    setup.accelerator.wait_for_everyone()
    result.step, result.wall_s, result.best_accuracy = state.step, time.perf_counter() - log.start, state.best_accuracy
    result.last_checkpoint = setup.last_path
    result.model = setup.accelerator.unwrap_model(state.model)
    result.ema_model = state.ema.model if state.ema is not None else None
    return result


def _append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=LOG_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({key: (f"{value:.6g}" if isinstance(value, float) else value) for key, value in row.items()})


def _maybe_tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
