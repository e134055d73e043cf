"""Experiments in one call each: the comparisons a lab report discusses.

    python -m labkit experiment NAME [--profile cpu] [--steps N] [--seeds N]
    labkit.experiments.run("schedules", config)            # from a notebook

Training comparisons (one run per variant, same data, seeds and number of steps, in ``runs/exp-NAME-VARIANT/``;
a finished run is reused, an unfinished one continued; the variant that keeps the profile's recipe shares
``runs/exp-base/`` with the other experiments):

- ``timesteps``: T = 100, 500, 1000 training timesteps (sampled with the same sampler and steps);
- ``schedules``: β schedules linear, quadratic, sigmoid, cosine (with their loss curves);
- ``conditioning``: labels through an embedding added in every block against labels as extra input channels;
- ``prediction``: the network predicts ε, v or x0;
- ``batch_size``: 16 against 160 images per step, at an equal number of updates.

Sampling comparisons (one trained run, ``runs/exp-base/``, or ``run_name=`` an existing one; each score is kept in
``outputs/experiments/NAME/scores.json`` and reused while the checkpoint, settings, label files and judge are the same):

- ``guidance``: the guidance scale w from 1 to 10 in steps of 0.5;
- ``samplers``: DDPM with 10 to 1000 steps, DDIM (η = 0 and 1), DPM-Solver++, with seconds per image;
- ``seeds``: the best and the mean ± standard deviation over N sampling seeds;
- ``ema``: the raw weights against the EMA weights;
- ``checkpoints``: the same label set and seed denoised by several checkpoints of the run (its EMA snapshots,
  ``train.snapshot_every``: ``exp-base`` keeps one every quarter of its steps), one row each in ``figure.png``,
  each checkpoint scored on both files (``accuracy.png``). A finished ``exp-base`` is reused as it is: one
  trained without snapshots shows one row (its last checkpoint).

Each writes ``outputs/experiments/NAME/`` (``table.json``, ``table.md``, ``figure.png``). Every accuracy
comes with one standard error (the course formula counts objects: 72 in test.json, 84 in new_test.json),
and a difference smaller than two standard errors of the difference is reported as "no measurable difference".
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from labkit import figures
from labkit.checkpoint import checkpoint_dir, find_checkpoint, load_model, read_checkpoint
from labkit.config import ConfigError, LabConfig, resolve_path, set_override
from labkit.data import resolve_source
from labkit.judge_training import load_judge
from labkit.lab import DENOISING_LABELS, SPLITS, run_train, upsample_for_output
from labkit.preflight import preflight
from labkit.runtime import atomic_write_text
from labkit.sample import sample_conditions
from labkit.train import read_log, training_seconds

TRAINING_EXPERIMENTS = {
    "timesteps": [(f"T={t}", {"diffusion.num_train_timesteps": t}) for t in (100, 500, 1000)],
    "schedules": [(name, {"diffusion.schedule": name}) for name in ("linear", "quadratic", "sigmoid", "cosine")],
    "conditioning": [("embedding", {"model.conditioning": "embedding"}), ("channels", {"model.conditioning": "channels"})],
    "prediction": [(name, {"diffusion.prediction_type": name}) for name in ("epsilon", "v_prediction", "sample")],
    "batch_size": [(f"batch {size}", {"train.batch_size": size}) for size in (16, 160)],
}
SAMPLING_EXPERIMENTS = ("guidance", "samplers", "seeds", "ema")
EXPERIMENTS = tuple(TRAINING_EXPERIMENTS) + SAMPLING_EXPERIMENTS + ("checkpoints",)
BASE_RUN = "exp-base"


# ---- accuracy with its uncertainty ---------------------------------------------------------------
def standard_error(accuracy: float, objects: int) -> float:
    """One standard error of an accuracy over ``objects`` objects (binomial): sqrt(p (1 - p) / n)."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(objects, 1))


def judge_label(judge) -> str:
    """The judge's name, with its held-out accuracy when known (tables, notes and figure titles carry it)."""
    return judge.name if judge.holdout is None else f"{judge.name} (held-out accuracy {judge.holdout.accuracy:.3f})"


def compare(a: dict, b: dict) -> str:
    """"A is higher", "B is higher" or "no measurable difference" (|difference| < 2 standard errors of it)."""
    difference = a["accuracy"] - b["accuracy"]
    spread = 2 * math.hypot(a["se"], b["se"])
    if abs(difference) < spread:
        return f"no measurable difference ({difference:+.3f}, 2 SE = {spread:.3f})"
    return f"{'higher' if difference > 0 else 'lower'} by {abs(difference):.3f} (2 SE = {spread:.3f})"


@dataclass
class ExperimentResult:
    """One experiment's table (one row per variant) and where its files are."""

    name: str
    judge: str
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    folder: Path | None = None
    figure: object | None = None  # the experiment's own figure.png (a matplotlib figure), else the accuracy chart

    def markdown(self) -> str:
        """The table in Markdown: each accuracy ± one standard error, then the comparisons."""
        extra = [key for key in self.rows[0] if key not in ("variant", "test", "new_test", "mean")] if self.rows else []
        head = ["variant", "test.json", "new_test.json", "mean", *extra]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows:
            cells = [row["variant"], *(f"{row[s]['accuracy']:.3f} ± {row[s]['se']:.3f}" for s in SPLITS),
                     f"{row['mean']:.3f}", *(_cell(row[key]) for key in extra)]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"accuracy by the {self.judge}; ± one standard error over the objects of each file", *self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return f"experiment {self.name}\n{self.markdown()}"

    def show(self) -> None:
        """In a notebook: the table (Markdown) and the figures; elsewhere: the table as text."""
        try:
            from IPython.display import Image, Markdown, display
        except ImportError:
            print(self)
            return
        display(Markdown(self.markdown()))
        for name in ("figure.png", "accuracy.png"):
            if self.folder is not None and (self.folder / name).exists():
                display(Image(filename=str(self.folder / name)))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def score(model, schedule, config: LabConfig, judge, conditions: dict, label_space, **overrides) -> dict:
    """Sample both files (per-image seeds) and score them: {"test": {...}, "new_test": {...}, "mean",
    "seconds_per_image"}; each split has accuracy, hits, objects and its standard error."""
    row, seconds, images = {}, 0.0, 0
    for split in SPLITS:
        start = time.perf_counter()
        result = sample_conditions(model, schedule, conditions[split], config, label_space, progress=False, **overrides)
        seconds, images = seconds + time.perf_counter() - start, images + len(conditions[split])
        labels = label_space.encode(conditions[split])
        accuracy = judge.accuracy(upsample_for_output(result.images), labels, split=split)
        row[split] = {"accuracy": accuracy.accuracy, "hits": accuracy.hits, "objects": accuracy.total,
                      "se": standard_error(accuracy.accuracy, accuracy.total)}
    row["mean"] = (row["test"]["accuracy"] + row["new_test"]["accuracy"]) / 2
    row["seconds_per_image"] = seconds / images
    return row


# ---- the runs -------------------------------------------------------------------------------------
def variant_config(config: LabConfig, run_name: str, steps: int, overrides: dict) -> LabConfig:
    """A copy of ``config`` for one variant: its own run folder and outputs, ``steps`` steps, the overrides."""
    variant = copy.deepcopy(config)
    for key, value in overrides.items():
        set_override(variant, key, value)
    variant.train.run_name = run_name
    variant.train.steps = steps
    return variant.validate()


def train_variant(config: LabConfig, progress: bool, training_set=None) -> tuple:
    """Train (or reuse, or continue) the variant's run; returns (EMA model, schedule, training minutes)."""
    result = run_train(config, training_set=training_set, progress=progress, resume=True)
    log = read_log(config.run_dir)
    minutes = training_seconds(log) / 60 if log else result.wall_s / 60  # every segment of a resumed run
    model, schedule, _ = load_model(config=config, which="last", use_ema=config.sample.use_ema)
    return model, schedule, minutes


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


def run_training_experiment(name: str, config: LabConfig, steps: int, judge, conditions, label_space,
                            progress: bool, training_set=None) -> ExperimentResult:
    """One run per variant of ``TRAINING_EXPERIMENTS[name]``, scored on both files with the default sampler."""
    result = ExperimentResult(name, judge_label(judge))
    for variant, overrides in TRAINING_EXPERIMENTS[name]:
        variant_cfg = variant_run_config(config, name, variant, steps, overrides)
        model, schedule, minutes = train_variant(variant_cfg, progress, training_set)
        row = score(model, schedule, variant_cfg, judge, conditions, label_space)
        log = read_log(variant_cfg.run_dir)
        final_loss = sum(r["loss"] for r in log[-5:]) / max(1, len(log[-5:]))
        result.rows.append({"variant": variant, **row, "steps": steps, "train_minutes": minutes, "final_loss": final_loss,
                            "run": variant_cfg.run_name})
    return result


def same_recipe(first: LabConfig, second: LabConfig) -> bool:
    """Whether two configs train the same model the same way (run name and snapshots aside)."""
    def recipe(config):
        values = config.to_dict()
        values["train"] = {key: value for key, value in values["train"].items() if key not in ("run_name", "snapshot_every")}
        return values
    return recipe(first) == recipe(second)


def variant_run_config(config: LabConfig, name: str, variant: str, steps: int, overrides: dict) -> LabConfig:
    """The config of one variant's run, ``runs/exp-NAME-VARIANT/``; a variant that keeps the profile's recipe
    (e.g. T = 1000 in ``timesteps``) shares ``exp-base`` with the other experiments instead of training it again."""
    own = variant_config(config, f"exp-{name}-{_slug(variant)}", steps, overrides)
    base = base_config(config, steps)
    return base if same_recipe(own, base) else own


def base_config(config: LabConfig, steps: int) -> LabConfig:
    """The config of ``exp-base``: the profile's recipe at ``steps`` steps, keeping the EMA weights every quarter of
    them (``train.snapshot_every``, for ``checkpoints``). A finished ``exp-base`` is reused whatever its snapshots."""
    return variant_config(config, BASE_RUN, steps, {"train.snapshot_every": max(1, steps // 4)})


def base_model(config: LabConfig, steps: int, run_name: str | None, progress: bool, training_set=None):
    """The run the sampling experiments use: ``run_name`` when given (it must be trained), else ``exp-base``."""
    if run_name:
        base = copy.deepcopy(config)
        base.train.run_name = run_name
        model, schedule, saved = load_model(config=base, use_ema=True)
        return model, schedule, saved
    base = base_config(config, steps)
    model, schedule, _ = train_variant(base, progress, training_set)
    return model, schedule, base


def sampler_variants(num_train_timesteps: int) -> list[tuple[str, dict]]:
    """DDPM at 10 … 1000 steps (at most T), DDIM η = 0 and 1, DPM-Solver++ at 10, 20 and 25 steps."""
    variants = [(f"DDPM {n}", {"sampler": "ddpm", "num_inference_steps": n})
                for n in (10, 25, 50, 100, 250, 1000) if n <= num_train_timesteps]
    variants += [(f"DDIM 25, η={eta:g}", {"sampler": "ddim", "num_inference_steps": 25, "eta": eta}) for eta in (0.0, 1.0)]
    variants += [(f"DPM-Solver++ {n}", {"sampler": "dpmsolver++", "num_inference_steps": n}) for n in (10, 20, 25)]
    return variants


def run_sampling_experiment(name: str, config: LabConfig, steps: int, judge, conditions, label_space, progress: bool,
                            run_name: str | None = None, seeds: int = 10, training_set=None) -> ExperimentResult:
    """``guidance``, ``samplers``, ``seeds`` or ``ema`` on one trained run."""
    model, schedule, base = base_model(config, steps, run_name, progress, training_set)
    result = ExperimentResult(name, judge_label(judge))
    if name == "guidance":
        variants = [(f"w={1 + 0.5 * i:g}", {"guidance_scale": 1 + 0.5 * i}) for i in range(19)]
    elif name == "samplers":
        variants = sampler_variants(base.diffusion.num_train_timesteps)
    elif name == "seeds":
        variants = [(f"seed {base.sample.seed + 1000 * k}", {"seed": base.sample.seed + 1000 * k}) for k in range(seeds)]
    else:  # ema
        raw, _, _ = load_model(config=base, which="last", use_ema=False)
        variants = [("raw weights", {"model": raw}), ("EMA weights", {"model": model})]
    cache_path = experiment_folder(name) / "scores.json"
    cache, reused = read_scores(cache_path), 0
    for variant, overrides in variants:
        chosen = overrides.pop("model", model)
        key = score_key(chosen, base, judge, conditions, variant, overrides)  # None: nothing to recognise it by
        if key in cache:
            reused += 1
            row = cache[key]
        else:
            row = score(chosen, schedule, base, judge, conditions, label_space, **overrides)
            if key is not None:
                cache[key] = row
                atomic_write_text(json.dumps(cache, indent=1) + "\n", cache_path)  # a kill mid-write keeps the old file
        result.rows.append({"variant": variant, **row})
    result.notes.append(f"run: {base.run_name} (step {getattr(model, 'checkpoint_step', '?')})")
    if reused:
        result.notes.append(f"{reused} of {len(variants)} rows reused from {cache_path} (the same checkpoint, settings, "
                            f"label files and judge; their seconds per image are from that earlier run)")
    return result


def read_scores(path: Path) -> dict:
    """The kept scores of a sampling experiment ({key: row}); {} when there are none or the file is unreadable
    (then every row is scored again and the file rewritten)."""
    try:
        scores = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return scores if isinstance(scores, dict) else {}


def score_key(model, config: LabConfig, judge, conditions: dict, variant: str, overrides: dict) -> str | None:
    """What a sampling experiment's score depends on, as a string: the checkpoint file (path, size, time, step),
    the variant and its settings, the run's sampling config, the label files and the judge. None for a model
    that was not read from a checkpoint file (``model.checkpoint_path``, set by :func:`load_model`)."""
    path = getattr(model, "checkpoint_path", None)
    if path is None or not Path(path).exists():
        return None
    stat = Path(path).stat()
    checkpoint = [str(path), stat.st_size, stat.st_mtime_ns, getattr(model, "checkpoint_step", None)]
    labels = hashlib.sha256(json.dumps(conditions, sort_keys=True).encode()).hexdigest()[:16]
    return json.dumps({"checkpoint": checkpoint, "variant": variant, "settings": overrides,
                       "sample": config.to_dict()["sample"], "labels": labels, "judge": judge_label(judge)}, sort_keys=True)


# ---- several checkpoints of one run ---------------------------------------------------------------
def run_checkpoints(run_dir, max_rows: int = 8) -> dict[int, str]:
    """A run's checkpoints by training step, in order: {step: name for :func:`load_model`}.

    Each EMA snapshot (``ema_XXXXXX``) and ``last`` (which takes the place of a snapshot of its own step: full
    precision); when there are more than ``max_rows`` (default 8), that many evenly spaced ones, the last kept.
    """
    folder = checkpoint_dir(run_dir)
    found = {int(path.stem[len("ema_"):]): path.stem for path in folder.glob("ema_*.pt")
             if path.stem[len("ema_"):].isdigit()}
    last = find_checkpoint(run_dir, "last")  # a clear error when the run has no checkpoint
    found[int(read_checkpoint(last)["step"])] = "last"
    steps = sorted(found)
    if len(steps) > max_rows:
        steps = [steps[i] for i in sorted(set(torch.linspace(0, len(steps) - 1, max_rows).round().long().tolist()))]
    return {step: found[step] for step in steps}


def checkpoint_rows(run_dir, labels=DENOISING_LABELS, seed: int | None = None, frames: int | None = None,
                    config: LabConfig | None = None, on_checkpoint=None, max_rows: int = 8) -> dict[str, torch.Tensor]:
    """One denoising row per checkpoint of ``run_dir`` (:func:`run_checkpoints`): the same label set, the same seed.

    labels: object names (default :data:`labkit.lab.DENOISING_LABELS`); seed: default ``config.sample.seed``;
    frames: default ``config.sample.denoise_frames``; config: the sampling settings (default: each checkpoint's own).
    on_checkpoint(step, model, schedule, result): called with each loaded model and its ``SampleResult`` (e.g. to
    score it). Returns {"step 300": uint8 (frames, 3, S, S), ...} in training order, noise first, the final image last.
    """
    rows = {}
    for step, which in run_checkpoints(run_dir, max_rows).items():
        model, schedule, saved = load_model(run_dir, which=which, use_ema=True)
        settings = config or saved
        result = sample_conditions(model, schedule, [list(labels)], settings, return_trajectory=True, progress=False,
                                   seed=settings.sample.seed if seed is None else seed,
                                   image_size=saved.data.image_size)
        rows[f"step {step}"] = figures.denoising_row(result.trajectory[:, 0], frames or settings.sample.denoise_frames)
        if on_checkpoint is not None:
            on_checkpoint(step, model, schedule, result)
    return rows


def snapshot_run(config: LabConfig, steps: int, run_name: str | None, progress: bool, training_set=None) -> LabConfig:
    """The run the ``checkpoints`` experiment reads, as the config to sample it with: ``run_name`` when given (it
    must be trained; its own config), else ``exp-base`` (:func:`base_config`) trained, reused or continued."""
    if run_name:
        named = copy.deepcopy(config)
        named.train.run_name = run_name
        find_checkpoint(named.run_dir, "last")  # a clear error when the run is not trained
        saved = LabConfig.load(named.run_dir / "config.json")  # its settings, without loading its weights
        saved.train.runs_dir, saved.train.run_name = config.train.runs_dir, run_name
        return saved
    base = base_config(config, steps)
    run_train(base, training_set=training_set, progress=progress, resume=True)
    return base


def run_checkpoints_experiment(config: LabConfig, steps: int, judge, conditions, label_space, progress: bool,
                               run_name: str | None = None, training_set=None) -> ExperimentResult:
    """``checkpoints``: :func:`checkpoint_rows` of the run (:func:`snapshot_run`) as the figure, each checkpoint
    scored on both files (a table row "step N" with its file)."""
    run = snapshot_run(config, steps, run_name, progress, training_set)
    files = run_checkpoints(run.run_dir)
    result = ExperimentResult("checkpoints", judge_label(judge))
    timesteps = []

    def score_checkpoint(step, model, schedule, trajectory):
        timesteps[:] = trajectory.timesteps
        row = score(model, schedule, run, judge, conditions, label_space)
        result.rows.append({"variant": f"step {step}", **row, "step": step, "checkpoint": f"{files[step]}.pt"})

    rows = checkpoint_rows(run.run_dir, DENOISING_LABELS, config=run, on_checkpoint=score_checkpoint)
    sampler = f"{run.sample.sampler}, {len(timesteps)} steps, w = {run.sample.guidance_scale:g}"
    title = f"{' + '.join(DENOISING_LABELS)}\n{run.run_name} at each checkpoint: seed {run.sample.seed}, {sampler}"
    result.figure = figures.denoising_rows_figure(
        rows, title, column_labels=figures.denoising_column_labels(timesteps, run.sample.denoise_frames))
    result.notes.append(f"run: {run.run_name} ({checkpoint_dir(run.run_dir)}); label set {DENOISING_LABELS}, "
                        f"seed {run.sample.seed}, {sampler}")
    if not any(checkpoint_dir(run.run_dir).glob("ema_*.pt")):
        result.notes.append(f"{run.run_name} keeps no EMA snapshots (trained with train.snapshot_every = 0): one row; "
                            f"pass run_name= a run trained with --set train.snapshot_every=N for more")
    return result


# ---- conclusions, figure, files --------------------------------------------------------------------
def add_comparisons(result: ExperimentResult) -> None:
    """Each variant against the best one (by the mean of both files), per file, and the seeds' spread."""
    if not result.rows:
        return
    best = max(result.rows, key=lambda row: row["mean"])
    result.notes.append(f"best: {best['variant']} (mean {best['mean']:.3f})")
    for row in result.rows:
        if row is best:
            continue
        verdicts = [f"{split}.json {compare(row[split], best[split])}" for split in SPLITS]
        result.notes.append(f"{row['variant']} against {best['variant']}: " + "; ".join(verdicts))
    if result.name == "seeds":
        means = [row["mean"] for row in result.rows]
        average = sum(means) / len(means)
        spread = math.sqrt(sum((m - average) ** 2 for m in means) / max(1, len(means) - 1))
        result.notes.append(f"over {len(means)} seeds: mean {average:.3f} ± {spread:.3f} (standard deviation), "
                            f"best {max(means):.3f}, worst {min(means):.3f}")


def label_positions(xs: list[float], ys: list[float], near: float = 2.0, gap: float = 0.06) -> list[tuple[float, float]]:
    """Where to write the labels of points (xs increasing on a log scale, ys in accuracy units): a point alone keeps
    its label beside it; the labels of a cluster (each x within a factor ``near`` of the previous) are stacked
    ``gap`` apart from two gaps above the cluster's highest point, at its first x, so they do not overlap."""
    clusters: list[list[int]] = []
    for i, x in enumerate(xs):
        if clusters and x < near * xs[clusters[-1][-1]]:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    positions: list[tuple[float, float]] = [(0.0, 0.0)] * len(xs)
    for cluster in clusters:
        if len(cluster) == 1:
            positions[cluster[0]] = (xs[cluster[0]], ys[cluster[0]])
            continue
        top = max(ys[i] for i in cluster) + 2 * gap  # clear of the error bars
        for row, i in enumerate(cluster):
            positions[i] = (xs[cluster[0]], top + row * gap)
    return positions


def experiment_figure(result: ExperimentResult, runs: dict | None = None):
    """Accuracy ± one standard error per variant (both files); the training experiments add the loss curves,
    ``samplers`` plots accuracy against seconds per image, ``guidance`` against w."""
    import matplotlib.pyplot as plt

    with_loss = bool(runs)
    fig, axes = plt.subplots(1, 2 if with_loss else 1, figsize=(11 if with_loss else 6.5, 3.6), squeeze=False)
    axis = axes[0][0]
    labels = [row["variant"] for row in result.rows]
    for offset, split, marker in ((-0.15, "test", "o"), (0.15, "new_test", "s")):
        values = [row[split]["accuracy"] for row in result.rows]
        errors = [row[split]["se"] for row in result.rows]
        if result.name == "samplers":
            xs = [row["seconds_per_image"] for row in result.rows]
            axis.set_xscale("log")
            axis.set_xlabel("seconds per image")
        elif result.name == "guidance":
            xs = [1 + 0.5 * i for i in range(len(values))]
            axis.set_xlabel("guidance scale w  (ε = ε_u + w(ε_c − ε_u))")
        else:
            xs = [i + offset for i in range(len(values))]
            axis.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        axis.errorbar(xs, values, yerr=errors, fmt=marker, capsize=3, label=f"{split}.json", linestyle="-" if result.name == "guidance" else "none")
    if result.name == "samplers":
        rows = sorted(result.rows, key=lambda row: row["seconds_per_image"])
        places = label_positions([row["seconds_per_image"] for row in rows], [row["mean"] for row in rows])
        for row, place in zip(rows, places):
            point = (row["seconds_per_image"], row["mean"])
            arrow = None if place == point else {"arrowstyle": "-", "lw": 0.4, "alpha": 0.5}
            axis.annotate(row["variant"], point, xytext=place, fontsize=6, alpha=0.8, arrowprops=arrow)
    axis.set_ylabel("accuracy (± 1 SE)")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"{result.name}: scored by the {result.judge}", fontsize=9)
    if with_loss:
        loss_axis = axes[0][1]
        for variant, rows in runs.items():
            loss_axis.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=variant, alpha=0.8)
        loss_axis.set_yscale("log")
        loss_axis.set_xlabel("optimiser step")
        loss_axis.set_ylabel("training loss")
        loss_axis.grid(alpha=0.3, which="both")
        loss_axis.legend(fontsize=8)
        loss_axis.set_title("training loss (its scale depends on the schedule and the target)", fontsize=9)
    fig.tight_layout()
    return fig


def experiment_folder(name: str) -> Path:
    """``outputs/experiments/NAME/`` under the project root."""
    return resolve_path("outputs") / "experiments" / name


def write_result(result: ExperimentResult, config: LabConfig) -> Path:
    """``table.json``, ``table.md`` and ``figure.png`` in the experiment's folder (``accuracy.png`` too when the
    experiment draws its own figure)."""
    import matplotlib.pyplot as plt

    folder = experiment_folder(result.name)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"experiment": result.name, "judge": result.judge, "profile": config.profile, "rows": result.rows,
               "notes": result.notes}
    (folder / "table.json").write_text(json.dumps(payload, indent=2) + "\n")
    (folder / "table.md").write_text(f"# experiment: {result.name}\n\n{result.markdown()}\n")
    runs = {row["variant"]: read_log(resolve_path(config.train.runs_dir) / row["run"]) for row in result.rows if "run" in row}
    fig = experiment_figure(result, runs)
    if result.figure is not None:  # the experiment's own figure; the accuracy chart beside it
        fig.savefig(folder / "accuracy.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        fig = result.figure
    fig.savefig(folder / "figure.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    result.folder = folder
    return folder


def run(name: str, config: LabConfig, steps: int | None = None, run_name: str | None = None, seeds: int = 10,
        progress: bool = True) -> ExperimentResult:
    """Run experiment ``name`` (one of :data:`EXPERIMENTS`) at ``steps`` training steps per run (default: the
    profile's ``train.steps``); write its table and figure to ``outputs/experiments/NAME/`` and return it."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    steps = steps or config.train.steps
    if steps < 1 or seeds < 1:
        raise ConfigError(f"experiment {name}: steps ({steps}) and seeds ({seeds}) must be >= 1")
    preflight(config)
    judge = load_judge(config, progress=progress)
    source = resolve_source(config.data, progress=progress)
    conditions = {split: source.conditions(split) for split in SPLITS}
    start = time.perf_counter()
    if name in TRAINING_EXPERIMENTS:
        result = run_training_experiment(name, config, steps, judge, conditions, source.label_space, progress)
    elif name == "checkpoints":
        result = run_checkpoints_experiment(config, steps, judge, conditions, source.label_space, progress,
                                            run_name=run_name)
    else:
        result = run_sampling_experiment(name, config, steps, judge, conditions, source.label_space, progress,
                                         run_name=run_name, seeds=seeds)
    add_comparisons(result)
    trained = f"the run {run_name}" if run_name and name not in TRAINING_EXPERIMENTS else f"{steps} steps per run"
    result.notes.append(f"wall time of this call {time.perf_counter() - start:.0f} s ({config.profile} profile, {trained}; "
                        f"runs and scores kept from an earlier call are reused, not redone)")
    write_result(result, config)
    return result
