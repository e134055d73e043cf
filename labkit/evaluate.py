"""Scoring generated images the course's way: the evaluator, the accuracy, the required files.

The course scores each generated image with a pretrained ResNet18 (``evaluator.py`` +
``checkpoint.pth``): for an image with k true objects it takes the evaluator's k most probable
classes and counts how many are true; the accuracy of a label file is the total of those hits
over the total number of objects (72 in test.json, 84 in new_test.json), not a mean of
per-image accuracies.

Which network judges (every printed accuracy names it):

- ``course checkpoint``: ``<data root>/evaluator.py`` and ``checkpoint.pth`` from the course.
  ``evaluator.py`` is imported from its path and its ``evaluation_model`` class is subclassed
  (the file stays untouched): the subclass loads the checkpoint from its real path onto the
  chosen device instead of ``./checkpoint.pth`` and ``.cuda()``.
- ``synthetic judge``: when the course files are absent, a ResNet18 of the same architecture and
  input (64x64 upsampled from 32x32, in [-1, 1]) is trained on the synthetic i-CLEVR renders,
  tested on extra renders it never saw, and saved in the course's checkpoint format.

Required outputs (the course's layout, one set per run in ``outputs/<run name>/``)::

    images/test/0.png ... 31.png        in the order of test.json
    images/new_test/0.png ... 31.png    in the order of new_test.json
    test_grid.png, new_test_grid.png    8 per row x 4 rows (also in report_figures/)
    accuracy.txt, accuracy.json         the accuracy summary, naming the judge
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from labkit import data as data_module
from labkit.config import LabConfig, resolve_path
from labkit.runtime import (
    atomic_save,
    atomic_write_text,
    autocast,
    get_device,
    resolve_precision,
    seed_everything,
    show_progress,
)

NUM_CLASSES = 24
EVALUATOR_SIZE = 64  # the evaluator's input: (B, 3, 64, 64), normalized with mean = std = 0.5
JUDGE_TRAIN_SIZE = 32  # the course evaluator was trained on 32x32 images upsampled to 64x64
COURSE_JUDGE = "course checkpoint"
SYNTHETIC_JUDGE = "synthetic judge"
OFFICIAL_IMAGES_JUDGE = "labkit judge (trained on the official images)"
# Synthetic judge optimisation (besides cfg.judge): one-cycle warm-up fraction and AdamW weight decay.
JUDGE_WARMUP_FRACTION = 0.25
JUDGE_WEIGHT_DECAY = 1e-4
JUDGE_CURVE_POINTS = 10  # held-out accuracy measured this many times during judge training


class EvaluatorFileError(RuntimeError):
    """A course evaluator file (evaluator.py or checkpoint.pth) that cannot be used."""


class WeakJudgeWarning(UserWarning):
    """The synthetic judge scored below ``cfg.judge.min_accuracy`` on its held-out renders."""


# ---- the network --------------------------------------------------------------------------------
def build_evaluator_network() -> nn.Module:
    """The course evaluator's architecture: torchvision ResNet18 (no weights) ending in a sigmoid.

    Input float (B, 3, 64, 64) in [-1, 1]; output (B, 24) probabilities.
    """
    from torchvision.models import resnet18

    network = resnet18(weights=None)
    network.fc = nn.Sequential(nn.Linear(512, NUM_CLASSES), nn.Sigmoid())
    return network


def _logits_view(network: nn.Module) -> nn.Module:
    """The same ResNet18 without its final sigmoid (shares the parameters): for a stable BCE loss."""
    return nn.Sequential(
        network.conv1, network.bn1, network.relu, network.maxpool,
        network.layer1, network.layer2, network.layer3, network.layer4,
        network.avgpool, nn.Flatten(1), network.fc[0],
    )


def read_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict:
    """Load ``{"model": state_dict}`` (the course's checkpoint format) with ``torch.load``.

    Raises :class:`EvaluatorFileError` naming the file, what was wrong and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluatorFileError(f"{path} not found; copy the course's checkpoint.pth there")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged or foreign file
        raise EvaluatorFileError(
            f"{path}: torch.load cannot read it ({type(error).__name__}: {str(error)[:200]}); "
            f"replace it with the course's original checkpoint.pth (students must not modify it)"
        ) from error
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        found = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise EvaluatorFileError(
            f"{path}: expected a dict whose entry 'model' holds the ResNet18 state dict (the course "
            f"format), found {found}; replace it with the course's original checkpoint.pth"
        )
    return checkpoint


def load_network_state(network: nn.Module, checkpoint: dict, path: str | os.PathLike) -> nn.Module:
    """Load ``checkpoint["model"]`` into ``network``; a mismatch names the file and the keys."""
    state = checkpoint["model"]
    if not isinstance(state, dict):
        raise EvaluatorFileError(
            f"{path}: entry 'model' is a {type(state).__name__}, not a state dict; replace it with "
            f"the course's original checkpoint.pth"
        )
    if state and all(key.startswith("module.") for key in state):  # saved from DataParallel
        state = {key[len("module."):]: value for key, value in state.items()}
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        raise EvaluatorFileError(
            f"{path}: entry 'model' does not fit ResNet18 with fc = Sequential(Linear(512, 24), "
            f"Sigmoid()) ({str(error).splitlines()[0][:300]}); replace it with the course's original "
            f"checkpoint.pth"
        ) from error
    return network


# ---- the accuracy ---------------------------------------------------------------------------------
def _check_pair(probabilities: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if probabilities.dim() != 2 or labels.shape != probabilities.shape:
        raise ValueError(
            f"expected probabilities and labels of the same shape (B, {NUM_CLASSES}), got "
            f"{tuple(probabilities.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.detach().float().cpu()
    if not torch.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be multi-hot (0 or 1); encode label lists with LabelSpace.encode")
    return probabilities.detach().float().cpu(), labels


def course_accuracy(probabilities: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """The course's score as (hits, total), total = number of true labels over all images.

    probabilities: (B, 24); labels: (B, 24) multi-hot. For image i with k true labels, the k
    classes of ``probabilities[i].topk(k)`` are compared with the true ones (ties resolved by
    ``torch.topk`` exactly as in the course's ``compute_acc``). accuracy = hits / total.
    """
    probabilities, labels = _check_pair(probabilities, labels)
    hits = total = 0
    for row in range(len(labels)):
        k = int(labels[row].sum().item())
        total += k
        if k:
            top = probabilities[row].topk(k).indices
            hits += int(labels[row, top].sum().item())
    return hits, total


def _per_image_hits(probabilities: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 24) selected-class mask (the top-k of each image) and (B,) hit counts."""
    probabilities, labels = _check_pair(probabilities, labels)
    selected = torch.zeros_like(labels)
    for row in range(len(labels)):
        k = int(labels[row].sum().item())
        if k:
            selected[row, probabilities[row].topk(k).indices] = 1.0
    return selected, (selected * labels).sum(dim=1)


@dataclass
class AccuracyResult:
    """One accuracy in the course's formula, always with the judge that produced it."""

    accuracy: float
    hits: int
    total: int
    judge: str
    split: str = ""  # e.g. "test" (printed as test.json)
    judge_holdout_accuracy: float | None = None  # the judge's own held-out accuracy, when known

    def __str__(self) -> str:
        name = f"{self.split}.json" if self.split in ("test", "new_test") else self.split  # a label file, or e.g. "held-out"
        prefix = f"{name}: " if name else "accuracy "
        return f"{prefix}{self.accuracy:.3f} ({self.hits}/{self.total} objects, {self.judge})"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def per_class_accuracy(probabilities: torch.Tensor, labels: torch.Tensor, label_space=None) -> dict[str, dict]:
    """For each object present in ``labels``: how often it is among its image's top-k classes.

    probabilities, labels: (B, 24). Returns {name: {"hits", "total", "accuracy"}} in label-index
    order; objects that appear in no image are left out. The totals add up to course_accuracy's.
    """
    label_space = label_space or data_module.LabelSpace.default()
    selected, _ = _per_image_hits(probabilities, labels)
    _, labels = _check_pair(probabilities, labels)
    hits = (selected * labels).sum(dim=0)
    totals = labels.sum(dim=0)
    return {
        label_space.names[index]: {
            "hits": int(hits[index]),
            "total": int(totals[index]),
            "accuracy": float(hits[index] / totals[index]),
        }
        for index in range(labels.shape[1])
        if totals[index] > 0
    }


def per_object_count_accuracy(probabilities: torch.Tensor, labels: torch.Tensor) -> dict[int, dict]:
    """Accuracy split by the number of objects per image: {k: {"images", "hits", "total", "accuracy"}}.

    probabilities, labels: (B, 24). Only counts that occur are listed (1, 2, 3 for i-CLEVR).
    """
    _, hits = _per_image_hits(probabilities, labels)
    _, labels = _check_pair(probabilities, labels)
    counts = labels.sum(dim=1)
    result = {}
    for k in sorted({int(value) for value in counts.tolist()}):
        mask = counts == k
        total = int(counts[mask].sum())
        result[k] = {
            "images": int(mask.sum()),
            "hits": int(hits[mask].sum()),
            "total": total,
            "accuracy": float(hits[mask].sum() / total) if total else float("nan"),
        }
    return result


@dataclass
class FailureCase:
    """An image whose top-k classes miss at least one of its true objects."""

    index: int  # position in the label file (= the image's file name, index.png)
    wanted: list[str]
    predicted: list[str]  # the judge's top-k classes, most probable first
    missed: list[str]  # wanted but not predicted

    def __str__(self) -> str:
        return f"{self.index}.png: wanted {self.wanted}, judge saw {self.predicted}; missed {self.missed}"


def failure_cases(probabilities: torch.Tensor, labels: torch.Tensor, label_space=None) -> list[FailureCase]:
    """The images with missed labels, in file order. probabilities, labels: (B, 24).

    ``[case.index for case in failure_cases(...)]`` are the indices; each case also names what
    was wanted, what the judge saw (its top-k) and what it missed.
    """
    label_space = label_space or data_module.LabelSpace.default()
    probabilities, labels = _check_pair(probabilities, labels)
    cases = []
    for row in range(len(labels)):
        k = int(labels[row].sum().item())
        if not k:
            continue
        top = probabilities[row].topk(k).indices.tolist()
        wanted = [label_space.names[i] for i in labels[row].nonzero().flatten().tolist()]
        predicted = [label_space.names[i] for i in top]
        missed = [name for name in wanted if name not in predicted]
        if missed:
            cases.append(FailureCase(row, wanted, predicted, missed))
    return cases


# ---- the judge ------------------------------------------------------------------------------------
def to_evaluator_input(images: torch.Tensor, size: int = EVALUATOR_SIZE) -> torch.Tensor:
    """uint8 [0, 255] or float [-1, 1] (B, 3, S, S) -> float (B, 3, size, size) in [-1, 1].

    Smaller images are upsampled bilinearly (the evaluator's 32 -> 64 path); larger ones are
    downsampled with antialiasing.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    batch = data_module.to_model_range(images) if images.dtype == torch.uint8 else images.float()
    if batch.shape[-2:] != (size, size):
        shrinking = batch.shape[-1] > size or batch.shape[-2] > size
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)
    return batch


class Judge:
    """A ResNet18 evaluator (the course checkpoint or the synthetic judge) with its name and device.

    ``network`` maps float (B, 3, 64, 64) in [-1, 1] to (B, 24) probabilities; it is in eval mode
    with frozen parameters (gradients still flow to the input, for evaluator guidance).
    """

    def __init__(
        self,
        name: str,
        network: nn.Module,
        device: torch.device | str | None = None,
        holdout: AccuracyResult | None = None,
        source: str = "",
        course_model=None,
        chunk_size: int = 128,
    ):
        self.name = name
        self.device = torch.device(device) if device is not None else next(network.parameters()).device
        self.network = network.to(self.device).eval()
        self.network.requires_grad_(False)
        self.holdout = holdout  # accuracy on images the judge never trained on, when known
        self.source = source  # the file the weights came from
        self.course_model = course_model  # the course's evaluation_model instance, when loaded from evaluator.py
        self.chunk_size = chunk_size

    @property
    def holdout_accuracy(self) -> float | None:
        return None if self.holdout is None else self.holdout.accuracy

    def __str__(self) -> str:
        text = f"{self.name} (ResNet18, 24 sigmoid outputs, 64x64 input) on {self.device}"
        if self.holdout is not None:
            text += f"; held-out accuracy {self.holdout.accuracy:.3f} ({self.holdout.hits}/{self.holdout.total} objects)"
        if self.source:
            text += f"; weights {self.source}"
        return text

    __repr__ = __str__

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float in [-1, 1] (or uint8) -> (B, 24) float probabilities on the CPU.

        Images that are not 64x64 are resized to 64x64 (bilinear) first; run in chunks of
        ``chunk_size`` under no_grad, in float32.
        """
        outputs = []
        for start in range(0, len(images), self.chunk_size):
            chunk = to_evaluator_input(images[start : start + self.chunk_size]).to(self.device)
            outputs.append(self.network(chunk).float().cpu())
        if not outputs:
            return torch.zeros(0, NUM_CLASSES)
        return torch.cat(outputs)

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor, split: str = "") -> AccuracyResult:
        """The course accuracy of ``images`` (B, 3, S, S) against multi-hot ``labels`` (B, 24).

        ``split`` (e.g. "test") only labels the printed result.
        """
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} label sets; they must pair up one to one")
        probabilities = self.probabilities(images)
        hits, total = course_accuracy(probabilities, labels)
        if self.course_model is not None and total:
            course_value = float(self.course_model.compute_acc(probabilities, labels.detach().float().cpu()))
            if not math.isclose(course_value, hits / total, abs_tol=1e-9):
                warnings.warn(
                    f"the course's compute_acc gives {course_value:.4f}, labkit {hits / total:.4f}; "
                    f"check that evaluator.py is the course's original",
                    stacklevel=2,
                )
        return AccuracyResult(
            accuracy=hits / total if total else float("nan"),
            hits=hits,
            total=total,
            judge=self.name,
            split=split,
            judge_holdout_accuracy=self.holdout_accuracy,
        )


# ---- the course evaluator as a drop-in ---------------------------------------------------------------
def course_files(cfg: LabConfig) -> tuple[Path, Path]:
    """Where the course's ``evaluator.py`` and ``checkpoint.pth`` are looked for (the data root)."""
    root = resolve_path(cfg.data.root)
    return root / "evaluator.py", root / "checkpoint.pth"


def import_course_evaluator(evaluator_path: str | os.PathLike):
    """Import the course's ``evaluator.py`` by its path (the file is not modified); returns the module.

    Its folder is put on ``sys.path`` while it is imported, as when the course runs it there.
    """
    evaluator_path = Path(evaluator_path).resolve()
    if not evaluator_path.is_file():
        raise EvaluatorFileError(f"{evaluator_path} not found; copy the course's evaluator.py there")
    module_name = "labkit_course_evaluator_" + hashlib.sha1(str(evaluator_path).encode()).hexdigest()[:8]
    spec = importlib.util.spec_from_file_location(module_name, evaluator_path)
    module = importlib.util.module_from_spec(spec)
    folder = str(evaluator_path.parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise EvaluatorFileError(
            f"{evaluator_path}: importing it failed ({type(error).__name__}: {str(error)[:200]}); "
            f"restore the course's original evaluator.py (students must not modify it), or remove it "
            f"to use checkpoint.pth alone"
        ) from error
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    if not isinstance(getattr(module, "evaluation_model", None), type):
        raise EvaluatorFileError(
            f"{evaluator_path}: no class evaluation_model in it; restore the course's original evaluator.py"
        )
    return module


def course_evaluation_model(evaluator_path: str | os.PathLike, checkpoint_path: str | os.PathLike, device=None):
    """An instance of a subclass of the course's ``evaluation_model`` that works on any device.

    The subclass overrides only ``__init__``: the same ResNet18 and ``classnum = 24``, but the
    checkpoint comes from ``checkpoint_path`` (not ``./checkpoint.pth``) and is placed on
    ``device`` (CUDA when present, else CPU) instead of ``.cuda()``. ``compute_acc`` and ``eval``
    are the course's own.
    """
    module = import_course_evaluator(evaluator_path)
    device = get_device(str(device) if device is not None else None)
    checkpoint_path = Path(checkpoint_path)

    class PortableEvaluationModel(module.evaluation_model):
        def __init__(self):  # replaces: torch.load('./checkpoint.pth') ... .cuda()
            checkpoint = read_checkpoint(checkpoint_path, device)
            self.resnet18 = load_network_state(build_evaluator_network(), checkpoint, checkpoint_path)
            self.resnet18 = self.resnet18.to(device)
            self.resnet18.eval()
            self.classnum = NUM_CLASSES

    return PortableEvaluationModel()


def load_course_judge(cfg: LabConfig, device=None) -> Judge | None:
    """The course checkpoint as a :class:`Judge`, or None when ``checkpoint.pth`` is absent.

    With ``evaluator.py`` present it is used through :func:`course_evaluation_model`; with the
    checkpoint alone, the checkpoint is loaded into :func:`build_evaluator_network`.
    """
    evaluator_path, checkpoint_path = course_files(cfg)
    device = get_device(str(device) if device is not None else None)
    if not checkpoint_path.is_file():
        if evaluator_path.is_file():
            warnings.warn(
                f"{evaluator_path} is present but {checkpoint_path} is not; copy the course's checkpoint.pth "
                f"next to it. Using the synthetic judge meanwhile.",
                stacklevel=2,
            )
        return None
    if evaluator_path.is_file():
        course_model = course_evaluation_model(evaluator_path, checkpoint_path, device)
        return Judge(COURSE_JUDGE, course_model.resnet18, device, source=str(checkpoint_path), course_model=course_model)
    network = load_network_state(build_evaluator_network(), read_checkpoint(checkpoint_path), checkpoint_path)
    return Judge(COURSE_JUDGE, network, device, source=str(checkpoint_path))


# ---- the synthetic judge ---------------------------------------------------------------------------
def judge_paths(cfg: LabConfig) -> tuple[Path, Path]:
    """Where the synthetic judge is kept: ``<synthetic_dir>/judge.pth`` and its ``judge.json``."""
    folder = resolve_path(cfg.data.synthetic_dir)
    weights = folder / cfg.judge.filename
    return weights, weights.with_suffix(".json")


def _training_settings(cfg: LabConfig, source) -> dict:
    """What the cached judge must match to be reused."""
    return {
        "steps": cfg.judge.steps,
        "batch_size": cfg.judge.batch_size,
        "lr": cfg.judge.lr,
        "num_holdout_scenes": cfg.judge.num_holdout_scenes,
        "data_kind": source.kind,
        "num_scenes": cfg.data.num_scenes,
        "max_train_images": cfg.data.max_train_images,
        "synthetic_seed": cfg.data.synthetic_seed,
        "seed": cfg.train.seed,
    }


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
    from labkit import synth

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
    from labkit import synth

    return f"r{getattr(synth, 'RENDERER_VERSION', '0')}"


def _warn_if_weak(judge: Judge, min_accuracy: float) -> None:
    if judge.holdout is None or judge.holdout.accuracy >= min_accuracy:
        return
    message = (
        f"THE SYNTHETIC JUDGE IS WEAK: held-out accuracy {judge.holdout.accuracy:.3f} "
        f"({judge.holdout.hits}/{judge.holdout.total} objects) is below {min_accuracy:.2f}. "
        f"Accuracies it reports are NOT trustworthy; train it longer (cfg.judge.steps) or on more scenes."
    )
    banner = "!" * min(100, len(message))
    print(f"{banner}\n{message}\n{banner}")
    warnings.warn(message, WeakJudgeWarning, stacklevel=3)


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
    from tqdm.auto import tqdm

    cfg.validate()  # bad settings fail here, before any rendering or training
    device = get_device(str(device) if device is not None else None)
    wall_start = time.perf_counter()
    source = data_module.resolve_source(cfg.data, progress=progress)
    data_32 = dataclasses.replace(cfg.data, image_size=JUDGE_TRAIN_SIZE)
    training_set = data_module.load_training_set(data_32, source=source, progress=progress)
    train_images, train_labels, holdout_images, holdout_labels, holdout_text = _holdout_set(
        cfg, source, training_set, progress
    )
    if len(train_images) == 0:
        raise ValueError(f"no training images in {source}; render or copy the data first")
    data_s = time.perf_counter() - wall_start

    seed = cfg.train.seed
    seed_everything(seed)
    # "auto": bf16 on GPUs and on CPUs with native bf16; fp32 on CPUs that only emulate it, where bf16
    # autocast trained this ResNet18 about 1.5x slower than fp32 (measured on 2 cores).
    precision = resolve_precision("auto", device)
    network = build_evaluator_network().to(device)
    if device.type in ("cpu", "cuda"):
        network = network.to(memory_format=torch.channels_last)
    logits_network = _logits_view(network)
    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.judge.lr, weight_decay=JUDGE_WEIGHT_DECAY)
    steps, batch_size = cfg.judge.steps, cfg.judge.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.judge.lr, total_steps=steps, pct_start=JUDGE_WARMUP_FRACTION, div_factor=10.0, final_div_factor=100.0
    )
    data_device = device if device.type == "cuda" else torch.device("cpu")
    train_images, train_labels = train_images.to(data_device), train_labels.to(data_device)
    generator = torch.Generator(device=data_device).manual_seed(seed)
    order = torch.randperm(len(train_images), generator=generator, device=data_device)
    position = 0
    network.train()
    train_start = time.perf_counter()
    running_loss = torch.zeros((), device=device)
    curve = []  # (step, held-out accuracy) every JUDGE_CURVE_POINTS-th of the run
    curve_every = max(1, steps // JUDGE_CURVE_POINTS)
    bar = tqdm(range(steps), desc=f"synthetic judge ({device.type}, {precision})", disable=not show_progress(progress))
    for step in bar:
        if position + batch_size > len(order):
            order = torch.randperm(len(train_images), generator=generator, device=data_device)
            position = 0
        index = order[position : position + batch_size]
        position += batch_size
        inputs = _augment(train_images[index], generator, cfg.data.hflip).to(device, non_blocking=True)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
        targets = train_labels[index].to(device, non_blocking=True)
        with autocast(device, precision):
            logits = logits_network(inputs)
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running_loss += loss.detach()
        if show_progress(progress) and (step + 1) % 25 == 0:
            bar.set_postfix(loss=f"{running_loss.item() / 25:.4f}")
            running_loss.zero_()
        if (step + 1) % curve_every == 0 and step + 1 < steps:
            curve.append((step + 1, _holdout_accuracy(network, holdout_images, holdout_labels, device)))
            network.train()
    train_s = time.perf_counter() - train_start
    bar.close()

    network.eval()
    judge = Judge(SYNTHETIC_JUDGE if source.kind == "synthetic" else OFFICIAL_IMAGES_JUDGE, network, device)
    holdout = judge.accuracy(holdout_images, holdout_labels, split="held-out")
    judge.holdout = holdout
    weights_path, report_path = judge_paths(cfg)
    state = {key: value.detach().to("cpu").contiguous() for key, value in network.state_dict().items()}
    atomic_save({"model": state}, weights_path)
    judge.source = str(weights_path)
    report = {
        "judge": judge.name,
        "holdout": {"accuracy": holdout.accuracy, "hits": holdout.hits, "total": holdout.total, "images": holdout_text},
        "min_accuracy": cfg.judge.min_accuracy,
        "steps": steps,
        "batch_size": batch_size,
        "lr": cfg.judge.lr,
        "schedule": f"AdamW (weight decay {JUDGE_WEIGHT_DECAY:g}) + one-cycle ({JUDGE_WARMUP_FRACTION:.0%} warm-up, cosine)",
        "holdout_curve": curve + [(steps, holdout.accuracy)],
        "images_seen": steps * batch_size,
        "epochs": round(steps * batch_size / len(train_images), 2),
        "train_wall_s": round(train_s, 1),
        "total_wall_s": round(time.perf_counter() - wall_start, 1),
        "data_wall_s": round(data_s, 1),
        "device": str(device),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "seed": seed,
        "data": {"source": str(source), "training_images": len(train_images), "image_size": JUDGE_TRAIN_SIZE},
        "settings": _training_settings(cfg, source),
        "format": "checkpoint {'model': ResNet18 state_dict}; input (B, 3, 64, 64) in [-1, 1]",
    }
    atomic_write_text(json.dumps(report, indent=2) + "\n", report_path)
    if progress:
        print(f"{judge.name}: {holdout} after {steps} steps x {batch_size} images, {train_s:.0f} s training")
    _warn_if_weak(judge, cfg.judge.min_accuracy)
    return judge, report


def load_synthetic_judge(cfg: LabConfig, device=None, progress: bool = True) -> Judge:
    """The cached synthetic judge of ``cfg`` (``<synthetic_dir>/judge.pth``); trains it when absent or stale."""
    weights_path, report_path = judge_paths(cfg)
    device = get_device(str(device) if device is not None else None)
    if weights_path.is_file() and report_path.is_file():
        try:
            report = json.loads(report_path.read_text())
        except json.JSONDecodeError:
            report = {}
        source = data_module.resolve_source(cfg.data, render=False)
        if report.get("settings") == _training_settings(cfg, source):
            network = load_network_state(build_evaluator_network(), read_checkpoint(weights_path), weights_path)
            holdout = report["holdout"]
            judge = Judge(
                report.get("judge", SYNTHETIC_JUDGE), network, device, source=str(weights_path),
                holdout=AccuracyResult(holdout["accuracy"], holdout["hits"], holdout["total"], report.get("judge", SYNTHETIC_JUDGE), "held-out"),
            )
            _warn_if_weak(judge, cfg.judge.min_accuracy)
            return judge
        if progress:
            print(f"{weights_path} was trained with other settings; training the synthetic judge again")
    judge, _ = train_synthetic_judge(cfg, device=device, progress=progress)
    return judge


def load_judge(cfg: LabConfig, device=None, progress: bool = True) -> Judge:
    """The judge of this lab: the course checkpoint when its files are in the data root, else the synthetic judge.

    Course files: ``<data root>/evaluator.py`` + ``checkpoint.pth`` (or ``checkpoint.pth`` alone).
    Otherwise the cached synthetic judge (trained first when absent: about 11 minutes on 2 CPU cores for the cpu profile).
    """
    judge = load_course_judge(cfg, device=device)
    if judge is not None:
        return judge
    return load_synthetic_judge(cfg, device=device, progress=progress)


# ---- the required output files ----------------------------------------------------------------------
def save_required_outputs(
    images: torch.Tensor,
    split: str,
    out_dir: str | os.PathLike = "outputs",
    report_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Write the course's files for one label file; returns the image paths in order, then the two grids.

    images: (B, 3, S, S) float in [-1, 1] or uint8, in the order of ``<split>.json`` (32 for the
    course's files). Writes ``<out_dir>/images/<split>/0.png ... (B-1).png`` (RGB PNG at size S;
    stale higher-numbered PNGs from an earlier run are removed), the grid
    ``<out_dir>/<split>_grid.png`` (make_grid, 8 per row: 4 rows for 32 images) and the same grid in
    ``<report_dir>/<split>_grid.png`` (default ``<out_dir>/report_figures``). ``out_dir`` is
    relative to the project root unless absolute; the lab passes the run's ``config.outputs_dir``.
    """
    from labkit import figures

    if not split or Path(split).name != split or split.endswith(".json"):
        raise ValueError(f"split must be a plain name like 'test' or 'new_test', not {split!r}")
    if images.dim() != 4 or images.shape[1] != 3 or len(images) == 0:
        raise ValueError(f"expected images of shape (B, 3, H, W) with B >= 1, got {tuple(images.shape)}")
    out_dir = resolve_path(out_dir)
    folder = out_dir / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    pixels = figures.as_uint8(images)
    paths = [figures.save_image(pixels[index], folder / f"{index}.png") for index in range(len(pixels))]
    for stale in folder.glob("*.png"):
        if stale.stem.isdigit() and int(stale.stem) >= len(pixels):
            stale.unlink()
    grid = figures.save_grid(pixels, out_dir / f"{split}_grid.png", nrow=8)
    report_folder = report_dir if report_dir is not None else out_dir / "report_figures"
    report_grid = figures.save_grid(pixels, figures.report_path(f"{split}_grid.png", report_folder), nrow=8)
    return paths + [grid, report_grid]


def write_accuracy_summary(results: dict[str, AccuracyResult], out_dir: str | os.PathLike = "outputs") -> str:
    """A short text block of the accuracies (for a report screenshot), naming the judge.

    results: {"test": AccuracyResult, "new_test": AccuracyResult}. Also written to
    ``<out_dir>/accuracy.txt`` and ``<out_dir>/accuracy.json``. Returns the text.
    """
    if not results:
        raise ValueError("no accuracies to summarise; pass {'test': AccuracyResult, 'new_test': AccuracyResult}")
    judges = sorted({result.judge for result in results.values()})
    lines = ["Accuracy (course formula: top-k hits / objects, over each whole file)"]
    width = max(len(f"{split}.json") for split in results) + 1
    for split, result in results.items():
        lines.append(f"  {(split + '.json:'):<{width}} {result.accuracy:.3f}  ({result.hits}/{result.total} objects)")
    judge_line = "judge: " + ", ".join(judges)
    holdouts = {result.judge_holdout_accuracy for result in results.values()} - {None}
    if holdouts:
        judge_line += f" (held-out accuracy {min(holdouts):.3f})"
    lines.append(judge_line)
    if any(judge != COURSE_JUDGE for judge in judges):
        lines.append("note: not the course checkpoint; comparable only with other runs scored by the same judge")
    text = "\n".join(lines)
    out_dir = resolve_path(out_dir)
    atomic_write_text(text + "\n", out_dir / "accuracy.txt")
    payload = {split: result.to_dict() for split, result in results.items()}
    atomic_write_text(json.dumps(payload, indent=2) + "\n", out_dir / "accuracy.json")
    return text
