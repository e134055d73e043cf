"""The judge: a ResNet18 of the course evaluator's architecture that scores generated images.

Which network judges (every printed accuracy names it):

- ``course checkpoint``: ``<data root>/evaluator.py`` and ``checkpoint.pth`` from the course.
  ``evaluator.py`` is imported from its path and its ``evaluation_model`` class is subclassed
  (the file stays untouched): the subclass loads the checkpoint from its real path onto the
  chosen device instead of ``./checkpoint.pth`` and ``.cuda()``.
- ``synthetic judge``: when the course files are absent, a ResNet18 of the same architecture and
  input (64x64 upsampled from 32x32, in [-1, 1]) trained on the synthetic i-CLEVR renders by
  :mod:`labkit.judge_training`, tested on extra renders it never saw, and saved in the course's
  checkpoint format.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.nn as nn
from torchvision.models import resnet18

from labkit import data as data_module
from labkit.config import LabConfig, LabError, resolve_path
from labkit.images import EVALUATOR_SIZE, resize_to, to_model_range
from labkit.metrics import NUM_CLASSES, AccuracyResult, course_accuracy
from labkit.runtime import get_device

JUDGE_TRAIN_SIZE = 32  # the course evaluator was trained on 32x32 images upsampled to 64x64
COURSE_JUDGE = "course checkpoint"
SYNTHETIC_JUDGE = "synthetic judge"
OFFICIAL_IMAGES_JUDGE = "labkit judge (trained on the official images)"


class EvaluatorFileError(LabError, RuntimeError):
    """A course evaluator file (evaluator.py or checkpoint.pth) that cannot be used."""


class WeakJudgeWarning(UserWarning):
    """The synthetic judge scored below ``cfg.judge.min_accuracy`` on its held-out renders."""


# ---- the network --------------------------------------------------------------------------------
def build_evaluator_network() -> nn.Module:
    """The course evaluator's architecture: torchvision ResNet18 (no weights) ending in a sigmoid.

    Input float (B, 3, 64, 64) in [-1, 1]; output (B, 24) probabilities.
    """
    network = resnet18(weights=None)
    network.fc = nn.Sequential(nn.Linear(512, NUM_CLASSES), nn.Sigmoid())
    return network


def logits_view(network: nn.Module) -> nn.Module:
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
    problems = _state_mismatch(network, state)
    if problems:
        raise EvaluatorFileError(
            f"{path}: entry 'model' does not fit ResNet18 with fc = Sequential(Linear(512, 24), Sigmoid()): "
            f"{'; '.join(problems)}. Replace it with the course's original checkpoint.pth"
        )
    network.load_state_dict(state)
    return network


def _state_mismatch(network: nn.Module, state: dict, shown: int = 4) -> list[str]:
    """What keeps ``state`` from loading into ``network``: missing and unexpected keys, wrong shapes (a few of each)."""
    expected = network.state_dict()

    def listed(names: list[str]) -> str:
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        return ", ".join(names[:shown]) + more

    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [
        f"{key} {tuple(getattr(state[key], 'shape', ()))} instead of {tuple(expected[key].shape)}"
        for key in expected if key in state and getattr(state[key], "shape", None) != expected[key].shape
    ]
    return (([f"{len(missing)} keys missing ({listed(missing)})"] if missing else [])
            + ([f"{len(unexpected)} unexpected keys ({listed(unexpected)})"] if unexpected else [])
            + ([f"{len(shapes)} keys of another shape ({listed(shapes)})"] if shapes else []))


# ---- the judge ------------------------------------------------------------------------------------
def to_evaluator_input(images: torch.Tensor, size: int = EVALUATOR_SIZE) -> torch.Tensor:
    """uint8 [0, 255] or float [-1, 1] (B, 3, S, S) -> float (B, 3, size, size) in [-1, 1].

    Smaller images are upsampled bilinearly (the evaluator's 32 -> 64 path); larger ones are
    downsampled with antialiasing.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    batch = to_model_range(images) if images.dtype == torch.uint8 else images.float()
    return resize_to(batch, size)


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
            raise EvaluatorFileError(
                f"{evaluator_path} is present but {checkpoint_path} is not; copy the course's checkpoint.pth "
                f"next to it (evaluator.py alone holds no weights)"
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


def training_settings(cfg: LabConfig, source) -> dict:
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


def warn_if_weak(judge: Judge, min_accuracy: float) -> None:
    if judge.holdout is None or judge.holdout.accuracy >= min_accuracy:
        return
    message = (
        f"THE SYNTHETIC JUDGE IS WEAK: held-out accuracy {judge.holdout.accuracy:.3f} "
        f"({judge.holdout.hits}/{judge.holdout.total} objects) is below {min_accuracy:.2f}. "
        f"Accuracies it reports are NOT trustworthy; train it longer (cfg.judge.steps) or on more scenes."
    )
    banner = "!" * min(100, len(message))
    # one loud message: the banner travels inside the warning, and an explicit origin with no source
    # file keeps Python from quoting a line of code under it
    warnings.warn_explicit(f"\n{banner}\n{message}\n{banner}", WeakJudgeWarning, filename="labkit.judge", lineno=0,
                           module="labkit.judge")


def load_cached_synthetic_judge(cfg: LabConfig, device=None, progress: bool = True) -> Judge | None:
    """The synthetic judge saved for ``cfg`` (``<synthetic_dir>/judge.pth`` and ``judge.json``), or None
    when it is absent or was trained with other settings (see :func:`training_settings`)."""
    weights_path, report_path = judge_paths(cfg)
    if not (weights_path.is_file() and report_path.is_file()):
        return None
    try:
        report = json.loads(report_path.read_text())
    except json.JSONDecodeError:
        report = {}
    source = data_module.resolve_source(cfg.data, render=False)
    if report.get("settings") != training_settings(cfg, source):
        if progress:
            print(f"{weights_path} was trained with other settings; training the synthetic judge again")
        return None
    network = load_network_state(build_evaluator_network(), read_checkpoint(weights_path), weights_path)
    holdout, name = report["holdout"], report.get("judge", SYNTHETIC_JUDGE)
    judge = Judge(
        name, network, get_device(str(device) if device is not None else None), source=str(weights_path),
        holdout=AccuracyResult(holdout["accuracy"], holdout["hits"], holdout["total"], name, "held-out"),
    )
    warn_if_weak(judge, cfg.judge.min_accuracy)
    return judge


def load_shipped_judge(cfg: LabConfig, device=None) -> Judge | None:
    """The synthetic judge shipped in ``reference/`` (SHA-256 checked), or None when it does not fit.

    It fits when ``cfg.judge.use_shipped`` is on and it was trained on synthetic renders of the
    current renderer version and of ``cfg.data.synthetic_seed`` (whatever the number of scenes).
    """
    from labkit import reference, synth

    if not cfg.judge.use_shipped or reference.JUDGE_FILE not in reference.read_manifest():
        return None
    report = json.loads(reference.verified_path(reference.JUDGE_REPORT_FILE).read_text())
    settings = report.get("settings", {})
    if report.get("renderer_version") != synth.RENDERER_VERSION or settings.get("synthetic_seed") != cfg.data.synthetic_seed:
        return None
    weights_path = reference.verified_path(reference.JUDGE_FILE)
    network = load_network_state(build_evaluator_network(), read_checkpoint(weights_path), weights_path).float()
    holdout, name = report["holdout"], report.get("judge", SYNTHETIC_JUDGE)
    return Judge(
        name, network, get_device(str(device) if device is not None else None), source=str(weights_path),
        holdout=AccuracyResult(holdout["accuracy"], holdout["hits"], holdout["total"], name, "held-out"),
    )
