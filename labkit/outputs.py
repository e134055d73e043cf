"""The course's required files, one set per run in ``outputs/<run name>/``, and handing them in.

Layout of a run's outputs (the course's layout inside the run's folder)::

    images/test/0.png ... 31.png        in the order of test.json
    images/new_test/0.png ... 31.png    in the order of new_test.json
    test_grid.png, new_test_grid.png    8 per row x 4 rows (also in report_figures/)
    denoising_process.png               x_T -> x_0 for one label set
    accuracy.txt, accuracy.json         the accuracy summary, naming the judge
    sampling.json                       how the images were sampled
    report_figures/                     the run's figures for the report

:func:`hand_in` copies one run's folder into the flat layout a student hands in (``handin/``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from labkit import figures
from labkit.config import LabConfig, resolve_path
from labkit.images import decode_png, to_model_range
from labkit.judge import COURSE_JUDGE
from labkit.metrics import AccuracyResult
from labkit.runtime import atomic_write_text

SPLITS = ("test", "new_test")
HANDIN_MARK = "handin.json"  # written into every hand-in folder; only such a folder is ever replaced


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


def staging_folder(out_dir: str | os.PathLike) -> Path:
    """An empty ``.<name>.partial`` folder beside ``out_dir``: a sampling run writes its whole set there and
    :func:`publish_outputs` swaps it in only when every file was written (a failing run changes nothing)."""
    out_dir = resolve_path(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


STALE_AFTER_SAMPLING = ("accuracy.txt", "accuracy.json")  # they scored the images being replaced


def swap_folder(new: Path, target: Path) -> Path:
    """Put the folder ``new`` in the place of ``target`` by renames (the old ``target`` is removed after), so
    ``target`` holds exactly the new set: none of the old files stay beside it. Returns ``target``."""
    retired = target.with_name(f".{target.name}.old")
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists():
        target.rename(retired)
    new.rename(target)
    shutil.rmtree(retired, ignore_errors=True)
    return target


def publish_outputs(staging: Path, out_dir: str | os.PathLike) -> Path:
    """Move a complete set from ``staging`` into ``out_dir``: ``images/`` is swapped as a whole (by rename),
    files replace their namesakes one by one (``report_figures/`` keeps the run's other figures), and
    the accuracy files of the replaced images are removed. ``staging`` is removed. Returns ``out_dir``."""
    out_dir = resolve_path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    new_images = staging / "images"
    if new_images.is_dir():
        swap_folder(new_images, out_dir / "images")
    for name in STALE_AFTER_SAMPLING:
        (out_dir / name).unlink(missing_ok=True)
    for path in sorted(staging.rglob("*")):
        if path.is_file():
            target = out_dir / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    shutil.rmtree(staging, ignore_errors=True)
    return out_dir


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


def read_output_images(split: str, config: LabConfig) -> torch.Tensor:
    """The run's saved ``outputs/<run name>/images/<split>/<i>.png`` as float (B, 3, 64, 64) in [-1, 1], in file order."""
    folder = config.outputs_dir / "images" / split
    paths = sorted(folder.glob("*.png"), key=lambda path: int(path.stem))
    if not paths:
        raise FileNotFoundError(
            f"no images in {folder}; run the sample stage first (python -m labkit sample --run-name {config.run_name})"
        )
    return to_model_range(torch.stack([decode_png(path) for path in paths]))


def hand_in(config: LabConfig, destination: str | Path = "handin") -> Path:
    """Copy the run's required files into the course's flat layout and return the folder.

    From ``outputs/<run name>/`` to ``destination`` (default ``handin/`` under the project root):
    ``images/test/0.png …``, ``images/new_test/0.png …``, the two grids, ``denoising_process.png``,
    ``accuracy.txt``/``accuracy.json``, ``sampling.json`` and ``report_figures/``, plus
    ``handin.json`` naming the run. The run's own files are never changed. An existing destination
    is replaced only when it is empty or an earlier hand-in (it holds ``handin.json``).
    """
    source = config.outputs_dir
    for split in SPLITS:
        if not any((source / "images" / split).glob("*.png")):
            runs = sorted(path.name for path in source.parent.iterdir() if path.is_dir()) if source.parent.is_dir() else []
            raise FileNotFoundError(
                f"no images in {source / 'images' / split}; sample this run first (python -m labkit sample "
                f"--run-name {config.run_name}). Runs with outputs: {', '.join(runs) or 'none'}"
            )
    destination = resolve_path(destination)
    if destination.exists() and any(destination.iterdir()) and not (destination / HANDIN_MARK).is_file():
        raise FileExistsError(
            f"{destination} holds files that are not an earlier hand-in; choose an empty folder (--to) or move them"
        )
    staging = destination.with_name(f".{destination.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    (staging / HANDIN_MARK).write_text(
        json.dumps({"run": config.run_name, "from": str(source), "copied": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2) + "\n"
    )
    if destination.exists():
        shutil.rmtree(destination)
    staging.rename(destination)
    return destination
