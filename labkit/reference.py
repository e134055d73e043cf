"""The shipped reference model and synthetic judge: weights kept in the repository, checked by SHA-256.

``reference/`` at the top of the checkout holds:

- ``model.pt``: the EMA weights (fp16) of a conditional UNet trained by labkit on synthetic
  i-CLEVR, with the run's config (the sample section holds the sampler and the guidance scale
  chosen by a sweep), its step count and training wall time;
- ``judge.pth`` + ``judge.json``: a synthetic judge (ResNet18 of the course evaluator's
  architecture, fp16 weights in the course checkpoint format) and its held-out report;
- ``manifest.json``: each file's SHA-256 and size, checked before a file is used;
- ``README.md``: how each file was made and the command that makes it again.

:func:`load_reference` returns ``(model, schedule, config)`` like ``train.load_model``; the
model carries ``model.label`` = "reference model (N steps)" for every figure and printout.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from labkit import synth
from labkit.checkpoint import history_of_weights, stored_weights
from labkit.config import LabConfig, LabError, resolve_path
from labkit.model import build_model
from labkit.runtime import atomic_save, atomic_write_text, get_device
from labkit.schedules import NoiseSchedule

MODEL_FILE = "model.pt"
JUDGE_FILE = "judge.pth"
JUDGE_REPORT_FILE = "judge.json"
MANIFEST_FILE = "manifest.json"
RUN_NAME = "reference"


class ReferenceFileError(LabError, RuntimeError):
    """A shipped reference file is missing or does not match its recorded SHA-256."""


def reference_dir() -> Path:
    """``reference/`` beside the ``labkit`` package (shipped with the checkout, not under LABKIT_HOME)."""
    return Path(__file__).resolve().parents[1] / "reference"


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: str | os.PathLike | None = None) -> dict:
    """``manifest.json`` of ``folder`` (default :func:`reference_dir`): {file name: {"sha256", "bytes"}}."""
    path = Path(folder or reference_dir()) / MANIFEST_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def verified_path(name: str, folder: str | os.PathLike | None = None) -> Path:
    """The path of shipped file ``name`` after checking its SHA-256 against the manifest.

    Raises :class:`ReferenceFileError` naming the file and the fix when it is missing, unlisted
    or changed (a partial clone, a Git LFS pointer, an edited file).
    """
    folder = Path(folder or reference_dir())
    path = folder / name
    expected = read_manifest(folder).get(name)
    if expected is None or not path.is_file():
        raise ReferenceFileError(
            f"{path} is not shipped in this checkout (or {folder / MANIFEST_FILE} does not list it); "
            f"restore it with `git checkout -- {folder.name}/`, or train your own model (python -m labkit train)"
        )
    found = sha256(path)
    if found != expected["sha256"]:
        raise ReferenceFileError(
            f"{path} has SHA-256 {found[:16]}…, but the manifest records {expected['sha256'][:16]}…; the file was "
            f"changed or only partly downloaded. Restore it with `git checkout -- {folder.name}/{name}`"
        )
    return path


def reference_available(folder: str | os.PathLike | None = None) -> bool:
    """True when the reference model is shipped (listed in the manifest and present)."""
    folder = Path(folder or reference_dir())
    return MODEL_FILE in read_manifest(folder) and (folder / MODEL_FILE).is_file()


def reference_step(folder: str | os.PathLike | None = None) -> int | None:
    """The optimiser steps of the shipped reference model (None when none is shipped)."""
    if not reference_available(folder):
        return None
    return int(torch.load(Path(folder or reference_dir()) / MODEL_FILE, map_location="cpu", weights_only=True)["step"])


def load_reference(device: str | torch.device | None = None, folder: str | os.PathLike | None = None):
    """The shipped reference model for sampling: ``(model, schedule, config)``.

    The model (eval mode, float32 on ``device``, default CUDA when present else CPU) has
    ``checkpoint_step`` and ``label`` ("reference model (N steps)"); ``config`` is the run's
    config with ``train.run_name = "reference"`` and the sampling settings chosen for it. Since the
    model was trained on synthetic renders, the config reads the synthetic i-CLEVR condition files of
    its seed (``data.source = "synthetic"``; written when absent, no images needed).
    """
    path = verified_path(MODEL_FILE, folder)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    config = LabConfig.from_dict(checkpoint["config"])
    config.train.run_name = RUN_NAME
    config.data.source = "synthetic"
    conditions = resolve_path(config.data.synthetic_dir)
    if not (conditions / "test.json").is_file() or not (conditions / "new_test.json").is_file():
        synth.write_condition_files(conditions, config.data.synthetic_seed)
    device = get_device(str(device) if device is not None else None)
    model = build_model(config.model, config.data.image_size)
    model.load_state_dict({key: value.float() for key, value in checkpoint["model"].items()})
    model.to(device).eval().requires_grad_(False)
    model.checkpoint_step = int(checkpoint["step"])
    model.label = f"reference model ({model.checkpoint_step:,} steps)"
    schedule = NoiseSchedule.from_config(config.diffusion).to(device)
    return model, schedule, config


def _record(folder: Path, names: list[str]) -> None:
    manifest = read_manifest(folder)
    for name in names:
        manifest[name] = {"sha256": sha256(folder / name), "bytes": (folder / name).stat().st_size}
    atomic_write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n", folder / MANIFEST_FILE)


def export_model(checkpoint_path: str | os.PathLike, folder: str | os.PathLike | None = None,
                 sample_overrides: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``model.pt`` (fp16 EMA weights + config + step) from a run's checkpoint or EMA snapshot.

    ``sample_overrides`` (e.g. {"guidance_scale": 2.0}) set the config's sample section, so the
    shipped config carries the settings chosen for it; ``extra`` (e.g. wall time) is stored as is.
    The step counts the steps of the weights a fine-tuned run started from (``train.init_from``) too.
    """
    folder = Path(folder or reference_dir())
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    weights = stored_weights(checkpoint)
    config = LabConfig.from_dict(checkpoint["config"])
    for key, value in (sample_overrides or {}).items():
        setattr(config.sample, key, value)
    state = {key: value.detach().to(torch.float16) for key, value in weights.items()}
    step, _ = history_of_weights(Path(checkpoint_path), checkpoint)
    atomic_save({"config": config.to_dict(), "step": step, "model": state, **(extra or {})},
                folder / MODEL_FILE)
    _record(folder, [MODEL_FILE])
    return folder / MODEL_FILE


def export_judge(weights_path: str | os.PathLike, report_path: str | os.PathLike,
                 folder: str | os.PathLike | None = None) -> Path:
    """Write ``judge.pth`` (fp16 weights, course checkpoint format) and ``judge.json`` from a trained judge."""
    folder = Path(folder or reference_dir())
    state = torch.load(weights_path, map_location="cpu", weights_only=True)["model"]
    half = {key: (value.to(torch.float16) if value.is_floating_point() else value) for key, value in state.items()}
    atomic_save({"model": half}, folder / JUDGE_FILE)
    report = json.loads(Path(report_path).read_text())
    report.update(renderer_version=synth.RENDERER_VERSION, weights="fp16 (rounded from the float32 training weights)")
    if isinstance(report.get("data"), dict):  # no machine paths in a shipped file
        report["data"]["source"] = str(report["data"].get("source", "")).split(" at /")[0]
    atomic_write_text(json.dumps(report, indent=2) + "\n", folder / JUDGE_REPORT_FILE)
    _record(folder, [JUDGE_FILE, JUDGE_REPORT_FILE])
    return folder / JUDGE_FILE
