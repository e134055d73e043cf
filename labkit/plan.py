"""How long a run takes here, and a trained model for the sampling stages without surprise runs.

:func:`measure_step_time` times a few training steps of a profile's UNet on this machine (random
data, the precision the trainer would choose); :func:`projected_seconds` turns that into the time of
the profile's whole run. :func:`trained_model` gives notebooks 05 and 06 a model: the profile's
finished run, else its unfinished run, else a stand-in (the shipped reference model) when one
exists; it starts training only when asked (``train=True``), and otherwise says what is missing,
how long the run would take here and how to start it.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from labkit.config import LabConfig, LabError
from labkit.runtime import autocast, choose_precision, get_device


class ModelMissing(LabError, FileNotFoundError):
    """No trained model for a stage that needs one; the message says how long training takes and how to start it."""


# ---- timing -------------------------------------------------------------------------------------
@dataclass
class StepTiming:
    """Seconds per optimiser step at the profile's batch size, and where that figure comes from.

    When the measured batch is smaller than the profile's, the time is scaled linearly (an estimate:
    small batches use a GPU less well, so it errs on the slow side there).
    """

    seconds_per_step: float
    batch_size: int  # the profile's batch
    measured_batch: int
    device: str
    precision: str
    source: str  # "measured" or the log it was read from

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.seconds_per_step

    def describe(self) -> str:
        scaled = "" if self.measured_batch == self.batch_size else f", scaled from batch {self.measured_batch}"
        return (f"{self.seconds_per_step:.3g} s per step of {self.batch_size} images on {self.device} in "
                f"{self.precision} ({self.source}{scaled})")


def measure_step_time(
    config: LabConfig,
    device: torch.device | str | None = None,
    measured_batch: int | None = None,
    steps: int = 2,
    warmup: int = 1,
) -> StepTiming:
    """Time ``steps`` training steps (after ``warmup``) of ``config``'s UNet on random data.

    A step is the trainer's: the loss under the chosen precision's autocast, backward through the
    GradScaler, AdamW. measured_batch: default the profile's batch on a GPU, at most 8 images on a
    CPU (the ``gpu`` profile's batch of 128 would take minutes there); the time is scaled to the
    profile's batch. Takes seconds for ``smoke``/``cpu``, about half a minute for ``gpu`` on 2 cores.
    """
    from labkit.model import build_model
    from labkit.schedules import NoiseSchedule
    from labkit.train import diffusion_loss, optimizer_step

    device = get_device(str(device) if device else None)
    precision = choose_precision(config.train.precision, device).name
    batch = config.train.batch_size
    measured_batch = measured_batch or (batch if device.type == "cuda" else min(batch, 8))
    size = config.data.image_size
    generator = torch.Generator(device=device).manual_seed(0)
    model = build_model(config.model, size).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    schedule = NoiseSchedule.from_config(config.diffusion).to(device)
    x0 = torch.rand(measured_batch, 3, size, size, device=device, generator=generator) * 2 - 1
    labels = (torch.rand(measured_batch, config.model.num_classes, device=device, generator=generator) < 0.1).float()

    def one_step() -> None:
        with autocast(device, precision):
            loss = diffusion_loss(model, schedule, x0, labels, generator=generator)
        optimizer_step(loss, optimizer, scaler, model.parameters(), config.train.grad_clip)

    for _ in range(warmup):
        one_step()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    _synchronize(device)
    seconds = (time.perf_counter() - start) / steps * batch / measured_batch
    return StepTiming(seconds, batch, measured_batch, str(device), precision, f"measured over {steps} steps")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timing_from_log(run_dir: str | os.PathLike, config: LabConfig) -> StepTiming | None:
    """The training rate a run logged (the last row of its ``log.csv``), or None without one."""
    path = Path(run_dir) / "log.csv"
    if not path.exists():
        return None
    with path.open() as file:
        rates = [float(row["images_per_s"]) for row in csv.DictReader(file) if float(row["images_per_s"] or 0) > 0]
    if not rates:
        return None
    batch = config.train.batch_size
    device = str(get_device())
    precision = choose_precision(config.train.precision, get_device()).name
    return StepTiming(batch / rates[-1], batch, batch, device, precision, f"logged in {path}")


def projected_seconds(config: LabConfig, timing: StepTiming, from_step: int = 0) -> float:
    """Seconds to train from ``from_step`` to ``config.train.steps`` at ``timing``'s rate (an estimate)."""
    return max(0, config.train.steps - from_step) * timing.seconds_per_step


def format_duration(seconds: float) -> str:
    """A rough human duration: "40 s", "12 min", "3.4 hours", "9.5 days"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.1f} days"


# ---- a trained model, without surprise runs ----------------------------------------------------------
def run_progress(config: LabConfig) -> int | None:
    """The step of ``config.run_dir``'s ``last.pt`` (None when the run has no checkpoint)."""
    from labkit.train import checkpoint_dir

    last = checkpoint_dir(config.run_dir) / "last.pt"
    if not last.exists():
        return None
    return int(torch.load(last, map_location="cpu", weights_only=False)["step"])


def how_to_train(config: LabConfig, step: int | None, timing: StepTiming | None = None) -> str:
    """What is missing, how long training it would take here, and how to start it (several lines)."""
    steps, name = config.train.steps, config.run_name
    folder = config.run_dir / "checkpoints"
    missing = (f"no trained model for the {config.profile} profile: {folder / 'last.pt'} does not exist"
               if step is None else f"the run {config.run_dir} is unfinished: step {step:,} of {steps:,}")
    lines = [missing.capitalize() + "."]
    if timing is not None:
        left = projected_seconds(config, timing, step or 0)
        lines.append(f"Training {'it' if step is None else 'the rest'} here would take about {format_duration(left)} "
                     f"(an estimate: {steps - (step or 0):,} steps x {timing.describe()}).")
    profile = f" --profile {config.profile}"
    run = f" --run-name {name}" if name != config.profile else ""
    lines.append(f"To train: run notebook 04_training, or `python -m labkit train{profile}{run}` in a terminal "
                 f"(it resumes where it stopped), or call this with train=True (in notebooks 05 and 06: "
                 f"TRAIN_IF_MISSING = True).")
    return "\n".join(lines)


def ensure_trained(config: LabConfig, train: bool = False, progress: bool = True, **train_kwargs) -> Path:
    """The folder of ``config``'s run, trained when asked; never a surprise run.

    Finished run (``last.pt`` at ``train.steps``): returned as it is. Otherwise, with ``train=True``
    the run is trained (resuming a partial one); with ``train=False`` (the default) an unfinished run
    is returned with a note of its step and how to finish it, and a missing one raises
    :class:`ModelMissing` whose message gives the measured time the run would take here and how to
    start it. ``train_kwargs`` go to :func:`labkit.train.train`.
    """
    step = run_progress(config)
    if step is not None and step >= config.train.steps:
        return config.run_dir
    if train:
        from labkit.train import train as run_training

        run_training(config, resume=True, progress=progress, **train_kwargs)
        return config.run_dir
    timing = timing_from_log(config.run_dir, config) or measure_step_time(config)
    message = how_to_train(config, step, timing)
    if step is None:
        raise ModelMissing(message)
    print(message + f"\nSampling from the unfinished run (step {step:,}) meanwhile.")
    return config.run_dir


ModelTriple = tuple  # (model, schedule, config), as labkit.train.load_model returns


def reference_model(config: LabConfig) -> ModelTriple | None:
    """The shipped reference model as ``(model, schedule, config)`` (see :mod:`labkit.reference`), or None
    when this checkout ships none. A shipped file that fails its SHA-256 check raises its error."""
    from labkit import reference

    if not reference.reference_available():
        return None
    return reference.load_reference()


MODEL_CHOICES = ("auto", "own", "reference")


def trained_model(
    config: LabConfig,
    train: bool = False,
    fallback: Callable[[LabConfig], ModelTriple | None] | None = reference_model,
    which: str = "best",
    progress: bool = True,
    choice: str = "auto",
) -> ModelTriple:
    """``(model, schedule, model_config)`` for sampling: the profile's run, or a stand-in; trains only when asked.

    choice: ``"own"`` the profile's run; ``"reference"`` the stand-in (the shipped reference model);
    ``"auto"`` (default) the stand-in when the profile's run has fewer steps than it and ``train`` is
    off, else the profile's run (the ``smoke`` profile always shows its own run).
    The run's EMA weights from ``best.pt`` (else ``last.pt``) when the run exists (finished, or
    unfinished with a note); ``train=True`` trains a missing or unfinished run first. When there is
    no run and ``train=False``: the message of :func:`ensure_trained` (time here, how to start) is
    printed and ``fallback(config)`` stands in; without a stand-in, :class:`ModelMissing` is raised.
    ``model.label`` names what was picked ("reference model (N steps)" or "run NAME (N steps)"); the
    returned config is the picked model's own (its image size, sampler and guidance scale).
    """
    from labkit import reference
    from labkit.train import load_model

    if choice not in MODEL_CHOICES:
        raise ValueError(f"model choice {choice!r}: use one of {', '.join(MODEL_CHOICES)}")
    may_use_reference = choice == "auto" and not train and config.profile != "smoke" and fallback is not None
    # read last.pt here only when the choice needs it; ensure_trained below reads it otherwise
    own_step = run_progress(config) if may_use_reference or choice == "reference" else None
    if may_use_reference:
        shipped = reference.reference_step()
        if shipped is not None and own_step is not None and own_step < shipped:
            choice = "reference"  # a missing run goes through ensure_trained below: how long it takes, then the stand-in
    if choice == "reference":
        stand_in = fallback(config) if fallback is not None else None
        if stand_in is None:
            raise ModelMissing("no reference model is shipped in this checkout (reference/model.pt); train your own run")
        mine = f"run {config.run_name} has {own_step:,} steps" if own_step else f"run {config.run_name} is not trained yet"
        print(f"showing the {getattr(stand_in[0], 'label', 'reference model')} ({mine}; choice='own' shows it)")
        return stand_in
    try:
        run_dir = ensure_trained(config, train=train, progress=progress)
    except ModelMissing as missing:
        stand_in = fallback(config) if fallback is not None else None
        if stand_in is None:
            raise
        model_config = stand_in[2]
        print(f"{missing}\nUsing the reference model meanwhile ({model_config.run_name}, "
              f"{model_config.data.image_size}x{model_config.data.image_size}, step {getattr(stand_in[0], 'checkpoint_step', '?')}).")
        return stand_in
    model, schedule, model_config = load_model(run_dir, which=which, config=config)
    model.label = f"run {model_config.run_name} ({model.checkpoint_step:,} steps)"
    return model, schedule, model_config
