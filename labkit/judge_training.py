"""Training the synthetic judge: the course evaluator's ResNet18 on the synthetic (or official) training images.

Used when the course's ``checkpoint.pth`` is absent. The judge learns the 24 objects from the
training set at 32x32, upsampled to 64x64 (the course evaluator's input path), with random
flips and a multi-label BCE loss; it is tested on extra renders it never saw (course formula)
and saved in the course's checkpoint format, with ``judge.json`` describing how it was made.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from labkit import data as data_module
from labkit import synth
from labkit.config import LabConfig, resolve_path
from labkit.judge import (
    OFFICIAL_IMAGES_JUDGE,
    SYNTHETIC_JUDGE,
    Judge,
    build_evaluator_network,
    judge_paths,
    load_cached_synthetic_judge,
    load_course_judge,
    load_shipped_judge,
    logits_view,
    to_evaluator_input,
    training_settings,
    warn_if_weak,
)
from labkit.metrics import course_accuracy
from labkit.runtime import atomic_save, atomic_write_text, autocast, get_device, resolve_precision, seed_everything, show_progress
from labkit.train import BatchSampler

JUDGE_TRAIN_SIZE = 32  # the course evaluator was trained on 32x32 images upsampled to 64x64
# Synthetic judge optimisation (besides cfg.judge): one-cycle warm-up fraction and AdamW weight decay.
JUDGE_WARMUP_FRACTION = 0.25
JUDGE_WEIGHT_DECAY = 1e-4
JUDGE_CURVE_POINTS = 10  # held-out accuracy measured this many times during judge training


def _holdout_set(cfg: LabConfig, source, training_set, progress: bool):
    """Held-out images (uint8, N x 3 x 32 x 32) and multi-hot labels the judge never trains on.

    Synthetic data: ``num_holdout_scenes`` extra renders (cached in ``cache_dir``). Official data
    without the course checkpoint: the last 3 x ``num_holdout_scenes`` training images.
    Returns (train_images, train_labels, holdout_images, holdout_labels, description).
    """
    scenes = cfg.judge.num_holdout_scenes
    if source.kind != "synthetic":
        count = max(1, min(3 * scenes, len(training_set) // 5))
        if len(training_set) < 2:
            raise ValueError(f"{source}: {len(training_set)} training image(s); the judge needs at least 2")
        return (
            training_set.images[:-count], training_set.labels[:-count],
            training_set.images[-count:], training_set.labels[-count:],
            f"the last {count} official training images (not trained on)",
        )
    seed = cfg.data.synthetic_seed
    cache = resolve_path(cfg.data.cache_dir) / f"holdout_{scenes}scenes_seed{seed}_{JUDGE_TRAIN_SIZE}px_{_renderer_version()}.pt"
    if cache.exists():
        cached = torch.load(cache, weights_only=True)
        images, labels = cached["images"], cached["labels"]
    else:
        images, label_lists = synth.render_holdout(scenes, seed=seed, image_size=JUDGE_TRAIN_SIZE, progress=progress)
        labels = source.label_space.encode(label_lists)
        atomic_save({"images": images, "labels": labels}, cache)
    return training_set.images, training_set.labels, images, labels, f"{scenes} held-out synthetic scenes ({len(images)} images)"


def _renderer_version() -> str:
    """The renderer's version, so renders from a changed renderer are never served from a stale cache."""
    return f"r{getattr(synth, 'RENDERER_VERSION', '0')}"


def _augment(batch_uint8: torch.Tensor, generator: torch.Generator, hflip: bool) -> torch.Tensor:
    """uint8 (B, 3, 32, 32) -> float (B, 3, 64, 64) in [-1, 1]: the course's 32 -> 64 upsampling, random flips."""
    batch = to_evaluator_input(batch_uint8)
    if hflip:
        flip = torch.rand(len(batch), generator=generator, device=generator.device) < 0.5
        batch = torch.where(flip[:, None, None, None].to(batch.device), batch.flip(-1), batch)
    return batch


def _holdout_accuracy(network: nn.Module, images: torch.Tensor, labels: torch.Tensor, device) -> float:
    """Held-out accuracy (course formula) of the judge network in the middle of its training."""
    network.eval()
    hits, total = course_accuracy(Judge("judge in training", network, device).probabilities(images), labels)
    network.requires_grad_(True)
    return hits / total


@dataclass
class JudgeData:
    """The judge's training images and the held-out ones it is tested on (uint8 (N, 3, 32, 32), labels (N, 24))."""

    source: object  # labkit.data.DataSource
    train_images: torch.Tensor
    train_labels: torch.Tensor
    holdout_images: torch.Tensor
    holdout_labels: torch.Tensor
    holdout_text: str  # what the held-out images are, for the report
    seconds: float  # time spent rendering, decoding and loading


def judge_data(cfg: LabConfig, progress: bool = True) -> JudgeData:
    """The training set at 32x32 (rendered and decoded when needed) and the held-out set (:func:`_holdout_set`)."""
    start = time.perf_counter()
    source = data_module.resolve_source(cfg.data, progress=progress)
    data_32 = dataclasses.replace(cfg.data, image_size=JUDGE_TRAIN_SIZE)
    training_set = data_module.load_training_set(data_32, source=source, progress=progress)
    parts = _holdout_set(cfg, source, training_set, progress)
    if len(parts[0]) == 0:
        raise ValueError(f"no training images in {source}; render or copy the data first")
    return JudgeData(source, *parts, seconds=time.perf_counter() - start)


def fit_judge_network(network: nn.Module, data: JudgeData, cfg: LabConfig, device, precision: str, progress: bool) -> list:
    """Train ``network`` (in place) with multi-label BCE, AdamW and a one-cycle LR for ``cfg.judge.steps`` steps.

    Batches come from the diffusion trainer's :class:`~labkit.train.BatchSampler` (epoch permutations,
    seeded by ``train.seed``), upsampled to 64x64 with random flips. Returns the held-out curve
    [(step, accuracy)] measured :data:`JUDGE_CURVE_POINTS` times during training.
    """
    steps, batch_size = cfg.judge.steps, cfg.judge.batch_size
    logits_network = logits_view(network)
    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.judge.lr, weight_decay=JUDGE_WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.judge.lr, total_steps=steps, pct_start=JUDGE_WARMUP_FRACTION, div_factor=10.0, final_div_factor=100.0
    )
    data_device = device if device.type == "cuda" else torch.device("cpu")
    images, labels = data.train_images.to(data_device), data.train_labels.to(data_device)
    sampler = BatchSampler(len(images), batch_size, seed=cfg.train.seed)
    flips = torch.Generator(device=data_device).manual_seed(cfg.train.seed)
    curve, curve_every = [], max(1, steps // JUDGE_CURVE_POINTS)
    running_loss = torch.zeros((), device=device)
    network.train()
    bar = tqdm(range(steps), desc=f"synthetic judge ({device.type}, {precision})", disable=not show_progress(progress))
    for step in bar:
        index = sampler.next_indices().to(data_device)
        inputs = _augment(images[index], flips, cfg.data.hflip).to(device, non_blocking=True)
        with autocast(device, precision):
            logits = logits_network(inputs.contiguous(memory_format=torch.channels_last))
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels[index].to(device, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running_loss += loss.detach()
        if show_progress(progress) and (step + 1) % 25 == 0:
            bar.set_postfix(loss=f"{running_loss.item() / 25:.4f}")
            running_loss.zero_()
        if (step + 1) % curve_every == 0 and step + 1 < steps:
            curve.append((step + 1, _holdout_accuracy(network, data.holdout_images, data.holdout_labels, device)))
            network.train()
    bar.close()
    return curve


def train_synthetic_judge(cfg: LabConfig, device=None, progress: bool = True) -> tuple[Judge, dict]:
    """Train the synthetic judge (ResNet18 of the course's architecture) and save it.

    Data: the training set of ``labkit.data.resolve_source(cfg.data)`` at 32x32, upsampled to
    64x64 (the course evaluator's input path), random horizontal flips. Loss: multi-label BCE on
    the 24 outputs. Optimiser: AdamW (``cfg.judge.lr``, one-cycle schedule) for ``cfg.judge.steps``
    steps of ``cfg.judge.batch_size`` images, bf16 autocast where supported, channels_last.
    Test: ``cfg.judge.num_holdout_scenes`` extra renders it never trained on, course formula.
    Writes ``<synthetic_dir>/judge.pth`` ({"model": state_dict}, the course format) and
    ``judge.json``; warns loudly (print and :class:`WeakJudgeWarning`) below ``cfg.judge.min_accuracy``.
    Returns (judge, report).
    """
    cfg.validate()  # bad settings fail here, before any rendering or training
    device = get_device(str(device) if device is not None else None)
    data = judge_data(cfg, progress)
    seed_everything(cfg.train.seed)
    # "auto": bf16 on GPUs and on CPUs with native bf16; fp32 on CPUs that only emulate it, where bf16
    # autocast trained this ResNet18 about 1.5x slower than fp32 (measured on 2 cores).
    precision = resolve_precision("auto", device)
    network = build_evaluator_network().to(device).to(memory_format=torch.channels_last)
    train_start = time.perf_counter()
    curve = fit_judge_network(network, data, cfg, device, precision, progress)
    train_s = time.perf_counter() - train_start
    network.eval()
    judge = Judge(SYNTHETIC_JUDGE if data.source.kind == "synthetic" else OFFICIAL_IMAGES_JUDGE, network, device)
    judge.holdout = judge.accuracy(data.holdout_images, data.holdout_labels, split="held-out")
    weights_path, report_path = judge_paths(cfg)
    atomic_save({"model": {key: value.detach().to("cpu").contiguous() for key, value in network.state_dict().items()}}, weights_path)
    judge.source = str(weights_path)
    report = judge_report(cfg, judge, data, curve, precision, train_s, device)
    atomic_write_text(json.dumps(report, indent=2) + "\n", report_path)
    if progress:
        print(f"{judge.name}: {judge.holdout} after {cfg.judge.steps} steps x {cfg.judge.batch_size} images, {train_s:.0f} s training")
    warn_if_weak(judge, cfg.judge.min_accuracy)
    return judge, report


def judge_report(cfg: LabConfig, judge: Judge, data: JudgeData, curve: list, precision: str, train_s: float, device) -> dict:
    """What ``judge.json`` says about how the judge was made and how well it does on held-out images."""
    holdout, steps, batch_size = judge.holdout, cfg.judge.steps, cfg.judge.batch_size
    return {
        "judge": judge.name,
        "holdout": {"accuracy": holdout.accuracy, "hits": holdout.hits, "total": holdout.total, "images": data.holdout_text},
        "min_accuracy": cfg.judge.min_accuracy,
        "steps": steps,
        "batch_size": batch_size,
        "lr": cfg.judge.lr,
        "schedule": f"AdamW (weight decay {JUDGE_WEIGHT_DECAY:g}) + one-cycle ({JUDGE_WARMUP_FRACTION:.0%} warm-up, cosine)",
        "holdout_curve": curve + [(steps, holdout.accuracy)],
        "images_seen": steps * batch_size,
        "epochs": round(steps * batch_size / len(data.train_images), 2),
        "train_wall_s": round(train_s, 1),
        "total_wall_s": round(data.seconds + train_s, 1),
        "data_wall_s": round(data.seconds, 1),
        "device": str(device),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "seed": cfg.train.seed,
        "data": {"source": str(data.source), "training_images": len(data.train_images), "image_size": JUDGE_TRAIN_SIZE},
        "settings": training_settings(cfg, data.source),
        "format": "checkpoint {'model': ResNet18 state_dict}; input (B, 3, 64, 64) in [-1, 1]",
    }


def load_synthetic_judge(cfg: LabConfig, device=None, progress: bool = True) -> Judge:
    """The synthetic judge of ``cfg``: for synthetic data the one shipped in ``reference/`` when it fits
    (:func:`labkit.judge.load_shipped_judge`), else the cached ``<synthetic_dir>/judge.pth``; trains it
    when absent or stale."""
    if data_module.resolve_source(cfg.data, render=False).kind == "synthetic":
        judge = load_shipped_judge(cfg, device)
        if judge is not None:
            warn_if_weak(judge, cfg.judge.min_accuracy)
            return judge
    judge = load_cached_synthetic_judge(cfg, device=device, progress=progress)
    if judge is None:
        judge, _ = train_synthetic_judge(cfg, device=device, progress=progress)
    return judge


def load_judge(cfg: LabConfig, device=None, progress: bool = True) -> Judge:
    """The judge of this lab, from the same place as the test conditions.

    Official data: the course checkpoint (``<data root>/checkpoint.pth``, through ``evaluator.py`` when
    present); without it a judge trained here on the official training images (said so, with its
    held-out accuracy). Synthetic data: the synthetic judge (shipped in ``reference/``, cached, or trained
    first: about 11 minutes on 2 CPU cores for the cpu profile), whatever course files lie in the data root.
    """
    if data_module.resolve_source(cfg.data, render=False).kind == "official":
        judge = load_course_judge(cfg, device=device)
        if judge is not None:
            return judge
        if progress:
            print(f"no checkpoint.pth in {cfg.data.root}: the lab uses a judge of the course's architecture trained "
                  f"here on the official training images (it is trained now if it is not cached; copy the course's "
                  f"checkpoint.pth there to score with the course's judge)")
    return load_synthetic_judge(cfg, device=device, progress=progress)
