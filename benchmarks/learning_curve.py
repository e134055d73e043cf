"""The learning curve: accuracy on both label files against optimiser steps and wall time.

    .venv/bin/python benchmarks/learning_curve.py RUN_DIR [RUN_DIR ...] [--steps 1000 2000 4000 ...]
        [--scales 1.5 2 3 4] [--figure report_figures/learning_curve.png]

Each RUN_DIR is a training run made with ``train.snapshot_every`` set, so that it keeps the EMA
weights of every N-th step (``checkpoints/ema_XXXXXX.pt``). For each run and each asked step
that has a snapshot (default: doubling counts 1k, 2k, 4k, … and the last snapshot), the script
samples ``test.json`` and ``new_test.json`` with the run's own sampler or the one ``--samplers``
names for it (per-image seeds, the same for every point), scores them with the judge (the course checkpoint when present, else the
synthetic judge; its name and held-out accuracy are printed), and takes the best guidance scale
of ``--scales`` (the mean over both files, the course formula per file). A run trained with
``train.ema_decay = 0`` keeps its raw weights (the students'-style recipe has no EMA).

A run started from other weights (``train.init_from``) is plotted after them: its steps and hours
are counted from the step and training time of the weights it started from. ``--earlier FILE`` puts
points scored before (a JSON file written by ``--save-points``) in front of the first run's curve,
e.g. ``docs/learning_curve_points.json`` for the reference run and its continuations (with ``starts``, the
step and hours each continuation in them began at, which the figure marks).

Results are cached in ``RUN_DIR/learning_curve.json`` (a second call scores only new points).
Prints a Markdown table with one standard error per accuracy (binomial over the 72 and 84
objects), the steps each run needs to reach 0.5, 0.7 and 0.9 on both files, the step at which the
first run reaches each other run's best point (on both files) with the ratio of the two step counts,
and writes the figure (accuracy against steps and against training hours).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from labkit import data as data_module  # noqa: E402
from labkit import lab  # noqa: E402
from labkit.config import LabConfig  # noqa: E402
from labkit.evaluate import load_judge  # noqa: E402
from labkit.model import build_model  # noqa: E402
from labkit.sample import SAMPLERS, sample_conditions  # noqa: E402
from labkit.schedules import NoiseSchedule  # noqa: E402
from labkit.checkpoint import steps_before  # noqa: E402
from labkit.train import read_log, training_seconds  # noqa: E402

THRESHOLDS = (0.5, 0.7, 0.9)


def snapshots(run_dir: Path) -> dict[int, Path]:
    """{step: path} of the run's EMA snapshots."""
    return {int(path.stem.split("_")[1]): path for path in sorted((run_dir / "checkpoints").glob("ema_*.pt"))}


def doubling_steps(available: list[int], start: int = 1000) -> list[int]:
    """1k, 2k, 4k, … among the available snapshot steps, plus the last one."""
    chosen, step = [], start
    while step <= max(available, default=0):
        if step in available:
            chosen.append(step)
        step *= 2
    if available and available[-1] not in chosen:
        chosen.append(available[-1])
    return chosen


def load_snapshot(path: Path, device):
    """(model, schedule, config) from an EMA snapshot."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    config = LabConfig.from_dict(checkpoint["config"])
    model = build_model(config.model, config.data.image_size)
    model.load_state_dict({key: value.float() for key, value in checkpoint["model"].items()})
    model.to(device).eval().requires_grad_(False)
    return model, NoiseSchedule.from_config(config.diffusion).to(device), config


def wall_hours_at(log: list[dict], step: int) -> float:
    """Training hours up to ``step`` from log.csv (every segment of a resumed run)."""
    return training_seconds(log, step) / 3600


def parse_sampler(text: str) -> dict:
    """"own" -> {} (the run's own sampler); "NAME-STEPS" or "NAME-STEPS-ETA" (e.g. "ddim-50-1") -> its settings."""
    if text == "own":
        return {}
    parts = text.split("-")
    try:
        name, steps, eta = parts[0], int(parts[1]), float(parts[2]) if len(parts) > 2 else 0.0
    except (IndexError, ValueError):
        name = None
    if name not in SAMPLERS or len(parts) > 3:
        raise SystemExit(f"--samplers: {text!r} is not 'own' or NAME-STEPS[-ETA] with NAME one of {', '.join(SAMPLERS)}, "
                         f"e.g. ddim-50-1 or dpmsolver++-20")
    return {"sampler": name, "num_inference_steps": steps, "eta": eta}


def sampler_text(config, overrides: dict) -> str:
    """"ddim-50 (eta 1)" or "dpmsolver++-20": the sampler a point was scored with."""
    name = overrides.get("sampler", config.sample.sampler)
    steps = overrides.get("num_inference_steps", config.sample.num_inference_steps)
    eta = overrides.get("eta", config.sample.eta)
    return f"{name}-{steps}" + (f" (eta {eta:g})" if name == "ddim" else "")


def score_point(path: Path, scales: list[float], judge, device, sampler: dict | None = None) -> dict:
    """Accuracy on both files at each guidance scale; the best scale by the mean of both files.
    sampler: settings that replace the run's own sampler (:func:`parse_sampler`); default its own."""
    model, schedule, config = load_snapshot(path, device)
    sampler = sampler or {}
    source = data_module.resolve_source(config.data, render=False)
    point = {"sampler": sampler_text(config, sampler), "by_scale": {}}
    for scale in scales:
        row = {}
        for split in lab.SPLITS:
            conditions = source.conditions(split)
            result = sample_conditions(model, schedule, conditions, config, source.label_space,
                                       guidance_scale=scale, progress=False, **sampler)
            accuracy = judge.accuracy(lab.upsample_for_output(result.images), source.label_space.encode(conditions))
            row[split] = {"accuracy": accuracy.accuracy, "hits": accuracy.hits, "total": accuracy.total}
        point["by_scale"][str(scale)] = row
    best = max(point["by_scale"], key=lambda s: sum(point["by_scale"][s][x]["accuracy"] for x in lab.SPLITS))
    point["best_scale"] = float(best)
    point.update({split: point["by_scale"][best][split] for split in lab.SPLITS})
    return point


def earlier_starts(saved: dict) -> list[list]:
    """[[step, hours], ...] where continuations in saved points began (``starts``; an older file has one ``start``)."""
    if "starts" in saved:
        return [list(start) for start in saved["starts"]]
    return [list(saved["start"])] if saved.get("start") else []


def start_of(run: Path) -> tuple[int, float]:
    """(steps, hours) trained before ``run`` began: the weights it was initialised from (``train.init_from``), else 0."""
    steps, seconds = steps_before(run)
    return steps, seconds / 3600


def standard_error(accuracy: float, total: int) -> float:
    return math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / total)


def steps_to_reach(points: dict[int, dict], threshold: float) -> int | None:
    """The first measured step at which both files reach ``threshold`` (None when none does)."""
    for step in sorted(points):
        if all(points[step][split]["accuracy"] >= threshold for split in lab.SPLITS):
            return step
    return None


def best_point(points: dict[int, dict]) -> int:
    """The step of a curve's best point (by the mean of both files; the earlier step on a tie)."""
    return max(sorted(points), key=lambda step: sum(points[step][split]["accuracy"] for split in lab.SPLITS))


def steps_to_match(points: dict[int, dict], target: dict) -> int | None:
    """The first measured step at which ``points`` reach ``target``'s accuracy on both files (None when none does)."""
    for step in sorted(points):
        if all(points[step][split]["accuracy"] >= target[split]["accuracy"] for split in lab.SPLITS):
            return step
    return None


def curve_figure(curves: dict[str, dict], judge_text: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for (name, curve), color in zip(curves.items(), ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        # one line per segment: the earlier points (--earlier) and the run's own are timed by different runs
        for index, steps in enumerate(curve["segments"]):
            for split, style in zip(lab.SPLITS, ("-o", "--s")):
                values = [curve["points"][s][split]["accuracy"] for s in steps]
                errors = [standard_error(v, curve["points"][s][split]["total"]) for v, s in zip(values, steps)]
                hours = [curve["points"][s]["wall_hours"] for s in steps]
                label = f"{name}: {split}" if index == 0 else None
                axes[0].errorbar(steps, values, yerr=errors, fmt=style, color=color, label=label, capsize=2)
                axes[1].plot(hours, values, style, color=color, label=label)
        for index, (steps_at, hours_at) in enumerate(curve["starts"]):  # continued from other weights (init_from)
            for axis, x in zip(axes, (steps_at, hours_at)):
                axis.axvline(x, color=color, lw=0.8, ls="--", alpha=0.6)
            axes[0].annotate(f"continued at step {steps_at:,}\n(a new LR schedule)", (steps_at, 0.05 + 0.12 * index),
                             fontsize=7, ha="right", color=color)
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("optimiser steps (log scale)")
    axes[1].set_xlabel("training wall time (hours, 2-core CPU)")
    for axis in axes:
        axis.set_ylim(0, 1)
        axis.axhline(0.9, color="gray", lw=0.8, ls=":")
        axis.set_ylabel("accuracy (course formula)")
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"learning curve, best guidance scale per point; {judge_text}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"figure: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (with checkpoints/ema_*.pt)")
    parser.add_argument("--names", nargs="*", default=None, help="a display name per run (default: folder names)")
    parser.add_argument("--steps", nargs="*", type=int, default=None, help="steps to score (default: 1k, 2k, 4k, … and the last)")
    parser.add_argument("--scales", nargs="+", type=float, default=[1.5, 2.0, 3.0, 4.0], help="guidance scales tried per point")
    parser.add_argument("--samplers", nargs="*", default=None,
                        help="a sampler per run: 'own' (its config's) or NAME-STEPS[-ETA], e.g. ddim-50-1")
    parser.add_argument("--figure", type=Path, default=ROOT / "report_figures" / "learning_curve.png")
    parser.add_argument("--earlier", type=Path, default=None, help="points scored before (JSON from --save-points), put in front of the first run")
    parser.add_argument("--save-points", type=Path, default=None, help="write the first run's points (earlier ones included) to this JSON file")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    device = torch.device("cpu") if not torch.cuda.is_available() else torch.device("cuda")
    names = args.names or [run.name for run in args.runs]
    samplers = [parse_sampler(text) for text in (args.samplers or ["own"] * len(args.runs))]
    if len(samplers) != len(args.runs):
        raise SystemExit(f"--samplers: give one per run ({len(args.runs)}), 'own' for a run's own sampler")
    first_config = LabConfig.load(args.runs[0] / "config.json")
    judge = load_judge(first_config, device=device, progress=True)
    judge_text = f"{judge.name}" + (f" (held-out {judge.holdout.accuracy:.3f})" if judge.holdout else "")
    print(f"judge: {judge}")
    curves = {}
    for name, run, sampler in zip(names, args.runs, samplers):
        cache_path = run / "learning_curve.json"
        cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
        found = snapshots(run)
        steps = [s for s in (args.steps or doubling_steps(sorted(found))) if s in found]
        log = read_log(run)
        start_step, start_hours = start_of(run)
        points, starts = {}, []
        if args.earlier and not curves:
            earlier = json.loads(args.earlier.read_text())
            points.update({int(step): point for step, point in earlier["points"].items()})
            starts = earlier_starts(earlier)  # where the earlier points' runs were continued from, if they were
        if start_step and [start_step, round(start_hours, 2)] not in [[s, round(h, 2)] for s, h in starts]:
            starts.append([start_step, round(start_hours, 2)])
        for step in steps:
            key = f"{step}|{','.join(map(str, args.scales))}|{judge.name}" + (f"|{json.dumps(sampler)}" if sampler else "")
            if key not in cache:
                cache[key] = score_point(found[step], args.scales, judge, device, sampler)
                cache_path.write_text(json.dumps(cache, indent=2) + "\n")
            total_step = start_step + step
            points[total_step] = dict(cache[key], wall_hours=start_hours + wall_hours_at(log, step))
            p = points[total_step]
            print(f"{name} step {total_step}: test {p['test']['accuracy']:.3f}, new_test {p['new_test']['accuracy']:.3f} "
                  f"(w = {p['best_scale']}, {p['sampler']}, {p['wall_hours']:.2f} h)", flush=True)
        own = sorted(start_step + step for step in steps)
        segments = [sorted(set(points) - set(own)), own]  # the earlier points (if any), then the run's own
        curves[name] = {"points": points, "segments": [segment for segment in segments if segment],
                        "reach": {str(t): steps_to_reach(points, t) for t in THRESHOLDS},
                        "starts": starts}
        if args.save_points and len(curves) == 1:
            saved = {"name": name, "judge": judge_text, "starts": curves[name]["starts"],
                     "points": {str(step): point for step, point in sorted(points.items())}}
            args.save_points.write_text(json.dumps(saved, indent=1) + "\n")

    print(f"\n| run | steps | hours | w | test.json | new_test.json |\n|---|---:|---:|---:|---:|---:|")
    for name, curve in curves.items():
        for step, p in sorted(curve["points"].items()):
            cells = [f"{p[s]['accuracy']:.3f} ± {standard_error(p[s]['accuracy'], p[s]['total']):.3f}" for s in lab.SPLITS]
            print(f"| {name} | {step:,} | {p['wall_hours']:.2f} | {p['best_scale']:g} | {cells[0]} | {cells[1]} |")
    print(f"\naccuracy by the {judge_text}; ± one standard error over the objects of each file")
    for name, curve in curves.items():
        print(f"{name}: steps to reach 0.5 / 0.7 / 0.9 on both files: "
              + " / ".join(str(curve["reach"][str(t)]) for t in THRESHOLDS))
    first_name, first = next(iter(curves.items()))
    for name, curve in list(curves.items())[1:]:
        best = best_point(curve["points"])
        target = curve["points"][best]
        matched = steps_to_match(first["points"], target)
        ratio = f" ({matched / best:.2g} of its steps)" if matched else ""
        print(f"{name}'s best: test {target['test']['accuracy']:.3f}, new_test {target['new_test']['accuracy']:.3f} at step "
              f"{best:,}; {first_name} reaches it on both files at step {matched if matched is None else f'{matched:,}'}{ratio}")
    curve_figure(curves, judge_text, args.figure)


if __name__ == "__main__":
    main()
