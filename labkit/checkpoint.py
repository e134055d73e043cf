"""A run's checkpoints, read and written in one place: ``runs/<run name>/checkpoints/``.

- ``last.pt``: everything needed to resume bit-for-bit on CPU (config, step, model, EMA, optimiser,
  LR schedule, grad scaler, every process's data order and RNG states, best accuracy, world size);
- ``best.pt``: the same, written when the accuracy measured during training improves;
- ``ema_XXXXXX.pt``: the EMA weights of one step in fp16 with the config (``train.snapshot_every``).

Every file is written atomically (temp file + rename), so a crash never leaves a truncated checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
from pathlib import Path

import torch
from torch import nn

from labkit.config import LabConfig, LabError
from labkit.model import build_model
from labkit.runtime import atomic_save, get_device
from labkit.schedules import NoiseSchedule


INITIALISED_FROM = "initialised_from.json"  # in the folder of a run started with train.init_from: what it started from


def steps_before(run_dir: str | os.PathLike) -> tuple[int, float]:
    """(optimiser steps, training seconds) of the weights a run started from (``train.init_from``); (0, 0.0) else."""
    path = Path(run_dir) / INITIALISED_FROM
    if not path.is_file():
        return 0, 0.0
    start = json.loads(path.read_text())
    return int(start.get("step") or 0), float(start.get("train_wall_s") or 0.0)


def read_log(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of ``log.csv`` as dicts of numbers (the accuracy columns are None where not measured)."""
    path = Path(run_dir) / "log.csv"
    if not path.exists():
        return []
    with path.open() as file:
        return [{key: float(value) if value not in ("", None) else None for key, value in row.items()}
                for row in csv.DictReader(file)]


def training_seconds(log: list[dict], up_to_step: float | None = None) -> float:
    """Training wall time from :func:`read_log` rows (up to ``up_to_step``, default all): ``elapsed_s``
    restarts at 0 when a run is resumed, so the time is the sum of each segment's last ``elapsed_s``."""
    total, previous = 0.0, 0.0
    for entry in log:
        if entry["elapsed_s"] < previous:  # a new segment: the run was resumed
            total += previous
        previous = entry["elapsed_s"]
        if up_to_step is not None and entry["step"] >= up_to_step:
            break
    return total + previous


def history_of_weights(path: Path, checkpoint: dict) -> tuple[int, float | None]:
    """(optimiser steps, training seconds) behind the weights in ``path``. For a checkpoint or snapshot
    inside a run (``<run>/checkpoints/FILE``) they include the weights that run started from, so a
    fine-tune of a fine-tune counts from the first run; a snapshot's seconds come from the run's log.csv.
    Seconds are None when unknown (e.g. a file from elsewhere without ``train_wall_s``)."""
    step, seconds = int(checkpoint.get("step", 0)), checkpoint.get("train_wall_s")
    run_dir = path.resolve().parent.parent
    if path.resolve().parent.name != "checkpoints" or not (run_dir / "config.json").is_file():
        return step, seconds
    if seconds is None and (run_dir / "log.csv").is_file():
        seconds = training_seconds(read_log(run_dir), step)
    earlier_steps, earlier_seconds = steps_before(run_dir)
    return step + earlier_steps, (None if seconds is None else seconds + earlier_seconds)


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/checkpoints``."""
    return Path(run_dir) / "checkpoints"


def find_checkpoint(run_dir: str | os.PathLike, which: str = "best") -> Path:
    """``best.pt`` when asked for and present, else ``last.pt``; a clear error when neither exists.

    ``which`` may also name a snapshot, e.g. ``"ema_000900"``.
    """
    folder = checkpoint_dir(run_dir)
    for name in ([f"{which}.pt"] if which == "last" else [f"{which}.pt", "last.pt"]):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(
        f"no checkpoint in {folder}; train first (python -m labkit train, or notebook 04_training)"
    )


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint written by :func:`save_checkpoint` or :func:`save_snapshot`, on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=False)


def save_checkpoint(path: str | os.PathLike, **contents) -> Path:
    """Write a training checkpoint atomically; ``contents`` are the entries listed in the module docstring."""
    atomic_save(contents, path)
    return Path(path)


def rng_state(noise_generator: torch.Generator) -> dict:
    """This process's random states: Python, torch (CPU, and CUDA when present) and the noise generator."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state(), "noise": noise_generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, noise_generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    noise_generator.set_state(state["noise"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunError(LabError, ValueError):
    """A run folder that cannot be continued with these settings; the message says how to go on."""


def check_resumable(checkpoint: dict, config: LabConfig, path: Path, adds_object_attention: bool = False) -> None:
    """Refuse to resume when the model or data would not match the checkpoint.

    ``adds_object_attention``: a fine-tune may add object attention (``model.object_attention_levels``) to a
    model trained without it; every other model setting must match.
    """
    saved = LabConfig.from_dict(checkpoint["config"])
    if adds_object_attention and not saved.model.object_attention_levels:
        saved.model = dataclasses.replace(saved.model, object_attention_levels=config.model.object_attention_levels)
    for section in ("model", "diffusion"):
        if getattr(saved, section) != getattr(config, section):
            raise RunError(
                f"{path} was trained with a different {section} config; resume with the same settings, "
                f"pass resume=False (the old run is moved aside), or set train.run_name to a new name"
            )
    if saved.data.image_size != config.data.image_size:
        raise RunError(f"{path} was trained at {saved.data.image_size}px, not {config.data.image_size}px; resume with "
                       f"data.image_size = {saved.data.image_size}, or set train.run_name to a new name")


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


def stored_weights(checkpoint: dict, use_ema: bool = True) -> dict:
    """The state dict to sample or fine-tune from: the EMA weights when kept (and ``use_ema``), else the raw ones."""
    return checkpoint["ema"] if use_ema and checkpoint.get("ema") else checkpoint["model"]


def load_model(
    run_dir: str | os.PathLike | None = None,
    which: str = "best",
    use_ema: bool = True,
    device: str | torch.device | None = None,
    config: LabConfig | None = None,
):
    """Load a trained model for sampling: ``(model, schedule, config)``.

    ``run_dir`` defaults to ``config.run_dir``; ``which`` is "best" (falls back to "last"), "last"
    or a snapshot name; the EMA weights are used unless ``use_ema=False``. The model is in eval
    mode and has ``model.checkpoint_step`` and ``model.checkpoint_path`` (the file it was read from).
    """
    if run_dir is None:
        if config is None:
            raise ValueError("load_model needs run_dir or config")
        run_dir = config.run_dir
    path = find_checkpoint(run_dir, which)
    checkpoint = read_checkpoint(path)
    config = LabConfig.from_dict(checkpoint["config"])
    device = get_device(str(device) if device else None)
    model = build_model(config.model, config.data.image_size)
    model.load_state_dict(stored_weights(checkpoint, use_ema))
    model.to(device).eval().requires_grad_(False)
    schedule = NoiseSchedule.from_config(config.diffusion).to(device)
    model.checkpoint_step, model.checkpoint_path = checkpoint["step"], path
    return model, schedule, config
