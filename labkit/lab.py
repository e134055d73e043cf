"""The lab's pipeline, stage by stage: data → train → sample → evaluate.

``python -m labkit lab`` runs all four; notebooks 01→06 walk the same stages and call these
functions for the parts they share. Every stage reads a :class:`~labkit.config.LabConfig` and
writes under the project root:

- ``data/synthetic/`` (when the official files are absent) and ``data/cache/``;
- ``runs/<run name>/`` (config.json, checkpoints/, log.csv, previews/);
- ``outputs/<run name>/``: ``images/{test,new_test}/<i>.png``, ``*_grid.png``, ``denoising_process.png``,
  ``accuracy.txt``, and the run's figures in ``report_figures/``.

The run name is ``train.run_name`` (default: the profile), so a ``cpu`` run, a ``gpu`` run and an
experiment keep their own files. :func:`hand_in` copies one run's files into the course's flat
layout (``handin/``) when a student hands them in.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from labkit import data as data_module
from labkit import figures
from labkit.checkpoint import load_model
from labkit.config import LabConfig, resolve_path
from labkit.images import as_written
from labkit.judge_training import load_judge
from labkit.metrics import top_k_selection
from labkit.outputs import (  # noqa: F401  (also reachable as labkit.lab.*)
    HANDIN_MARK,
    SPLITS,
    hand_in,
    publish_outputs,
    read_output_images,
    save_required_outputs,
    staging_folder,
    write_accuracy_summary,
)
from labkit.preflight import preflight
from labkit.runtime import get_device, resolve_precision, show_progress
from labkit.sample import sample, sample_conditions
from labkit.train import train

DENOISING_LABELS = ["red sphere", "cyan cylinder", "cyan cube"]


@dataclass
class StageTimes:
    """Wall time of each stage in seconds."""

    seconds: dict[str, float] = field(default_factory=dict)

    def record(self, name: str, start: float) -> None:
        self.seconds[name] = time.perf_counter() - start

    def __str__(self) -> str:
        return ", ".join(f"{name} {value / 60:.1f} min" for name, value in self.seconds.items())


# ---- stage 1: data ------------------------------------------------------------------------------
def run_data(config: LabConfig, progress: bool = True):
    """Find (or render) the data and decode the training set once; returns the TrainingSet."""
    source = data_module.resolve_source(config.data, progress=progress)
    training_set = data_module.load_training_set(config.data, source=source, progress=progress)
    if progress:
        counts = training_set.labels.sum(dim=1)
        print(
            f"data: {len(training_set)} training images from {source} at {config.data.image_size}px; "
            f"objects per image 1/2/3: {[int((counts == k).sum()) for k in (1, 2, 3)]}"
        )
    return training_set


# ---- stage 2: train -----------------------------------------------------------------------------
PREVIEW_LABELS = (
    ["red sphere"],
    ["cyan cube"],
    ["yellow cylinder"],
    ["gray cube", "blue sphere"],
    ["green cylinder", "purple cube"],
    ["red sphere", "cyan cylinder", "cyan cube"],
    ["brown sphere", "gray cylinder", "yellow cube"],
    ["blue cube", "red cylinder", "green sphere"],
)


def save_preview(model, schedule, config: LabConfig, step: int, device) -> Path:
    """A grid of 8 fixed label sets (fixed seeds) with the EMA weights: ``previews/step_XXXXXX.png``."""
    labels = data_module.LabelSpace.default().encode(list(PREVIEW_LABELS))
    result = sample(
        model,
        schedule,
        labels,
        sampler="ddim",
        num_inference_steps=min(25, config.sample.num_inference_steps * 2),
        guidance_scale=config.sample.guidance_scale,
        seed=1234,
        device=device,
        precision=resolve_precision(config.train.precision, torch.device(device)),
        progress=False,
    )
    path = config.run_dir / "previews" / f"step_{step:06d}.png"
    return figures.save_grid(result.images, path, nrow=8, upscale=2 if config.data.image_size <= 32 else 1)


def evaluate_during_training(model, schedule, config: LabConfig, judge, device, run_dir: Path, step: int) -> dict:
    """Accuracy of the EMA model on both files with the config's sampler (at most 25 steps), for ``log.csv``
    and ``eval.csv``; their mean picks ``best.pt``. Returns {"accuracy", "test_accuracy", "new_test_accuracy"}."""
    source = data_module.resolve_source(config.data, render=False)
    scores = {}
    for split in SPLITS:
        labels = source.label_space.encode(source.conditions(split))
        result = sample(
            model, schedule, labels, sampler=config.sample.sampler,
            num_inference_steps=min(25, config.sample.num_inference_steps), guidance_scale=config.sample.guidance_scale,
            seed=config.sample.seed, device=device,
            precision=resolve_precision(config.train.precision, torch.device(device)), progress=False,
        )
        scores[f"{split}_accuracy"] = judge.accuracy(upsample_for_output(result.images), labels, split=split).accuracy
    scores["accuracy"] = (scores["test_accuracy"] + scores["new_test_accuracy"]) / 2
    path = run_dir / "eval.csv"
    new = not path.exists()
    with path.open("a", newline="") as file:
        writer = csv.writer(file)
        if new:
            writer.writerow(["step", "test_accuracy", "new_test_accuracy", "judge"])
        writer.writerow([step, f"{scores['test_accuracy']:.4f}", f"{scores['new_test_accuracy']:.4f}", judge.name])
    return scores


def training_callbacks(config: LabConfig, judge=None, progress: bool = True) -> dict:
    """The lab's ``on_preview`` (a grid of 8 fixed label sets in ``previews/``) and, when
    ``train.eval_every > 0``, ``on_eval`` (both files' accuracy with the judge: ``log.csv`` and ``eval.csv``)
    for :func:`labkit.train.train`."""
    callbacks = {"on_preview": lambda model, schedule, step: save_preview(model, schedule, config, step, get_device())}
    if config.train.eval_every:
        judge = judge or load_judge(config, device=get_device(), progress=progress)
        callbacks["on_eval"] = lambda model, schedule, step: evaluate_during_training(
            model, schedule, config, judge, get_device(), config.run_dir, step
        )
    return callbacks


def run_train(config: LabConfig, training_set=None, progress: bool = True, resume: bool = True, judge=None, on_log=None,
              loss_fn=None):
    """Train (or finish training) the run with the lab's previews and evaluation; returns the TrainResult.
    ``loss_fn``: your own per-sample loss (see :func:`labkit.train.diffusion_loss`)."""
    callbacks = training_callbacks(config, judge, progress)
    return train(config, resume=resume, progress=progress, training_set=training_set, on_log=on_log, loss_fn=loss_fn,
                 **callbacks)


def save_training_accuracy_figure(config: LabConfig, judge_name: str) -> Path | None:
    """``training_accuracy.png`` in the run's report figures: loss and both files' accuracy against step
    (when ``train.eval_every`` scored the run); None when nothing was scored."""
    from labkit.train import read_log

    rows = read_log(config.run_dir)
    if not any(row.get("test_accuracy") is not None for row in rows):
        return None
    fig = figures.training_accuracy_figure(rows, judge=judge_name)
    path = figures.save_figure(fig, "training_accuracy.png", folder=config.report_dir)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# ---- stage 3: sample ----------------------------------------------------------------------------
# float (B, 3, S, S) in [-1, 1] -> (B, 3, 64, 64) as the course's files hold them (8-bit): what is saved and scored
upsample_for_output = as_written


def run_sample(config: LabConfig, model=None, schedule=None, progress: bool = True, judge=None) -> dict:
    """Sample test.json and new_test.json, write the course's files and the denoising row.

    Returns {"test": SampleResult, "new_test": SampleResult, "denoising": SampleResult, "paths": {...}}.
    Both condition files are read before any sampling; the whole set is written to a staging folder
    and swapped into ``outputs/<run name>/`` only when every file is written, so a failing run leaves
    the previous outputs as they were. With ``config.sample.judge_guidance_scale > 0`` the judge
    guides sampling and every file and printout says so.
    """
    source = data_module.resolve_source(config.data, render=False)
    label_space = source.label_space
    conditions = {split: source.conditions(split) for split in SPLITS}
    if model is None:
        model, schedule, _ = load_model(config=config, use_ema=config.sample.use_ema)
    guidance = {}
    if config.sample.judge_guidance_scale > 0:
        if judge is None:
            judge = load_judge(config, progress=progress)
        guidance = {"judge": judge, "judge_guidance_scale": config.sample.judge_guidance_scale}
    staging = staging_folder(config.outputs_dir)
    try:
        results = _sample_into(staging, config, model, schedule, conditions, label_space, guidance, progress)
        publish_outputs(staging, config.outputs_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    results["paths"] = {split: config.outputs_dir / "images" / split for split in SPLITS}
    results["paths"]["denoising"] = config.outputs_dir / "denoising_process.png"
    return results


def _sample_into(folder: Path, config: LabConfig, model, schedule, conditions: dict, label_space, guidance: dict,
                 progress: bool) -> dict:
    """Both files' images, grids, ``sampling.json`` and the denoising row, written into ``folder``."""
    results: dict = {}
    settings = {}
    report_folder = folder / "report_figures"
    for split in SPLITS:
        result = sample_conditions(model, schedule, conditions[split], config, label_space, progress=progress, **guidance)
        results[split] = result
        save_required_outputs(upsample_for_output(result.images), split, folder, report_folder)
        settings = dict(result.settings, judge_guided=result.judge_guided, run=str(config.run_dir))
    (folder / "sampling.json").write_text(json.dumps(settings, indent=2) + "\n")
    denoising = sample_conditions(
        model, schedule, [DENOISING_LABELS], config, label_space, return_trajectory=True, progress=False, **guidance
    )
    results["denoising"] = denoising
    title = " + ".join(DENOISING_LABELS) + (" (judge-guided)" if denoising.judge_guided else "")
    row = figures.denoising_row(denoising.trajectory[:, 0], frames=config.sample.denoise_frames)
    row = upsample_for_output(data_module.to_model_range(row))
    figures.save_grid(row, folder / "denoising_process.png", nrow=len(row))
    figures.save_grid(row, figures.report_path("denoising_process.png", report_folder), nrow=len(row))
    fig = figures.show_images(row, ncols=len(row), suptitle=f"denoising process: {title}", size=1.2)
    figures.save_figure(fig, "denoising_process_titled.png", folder=report_folder)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return results


# ---- stage 4: evaluate ----------------------------------------------------------------------------
def run_evaluate(config: LabConfig, judge=None, progress: bool = True) -> dict:
    """Score the run's saved images of both files with the judge; write ``outputs/<run name>/accuracy.txt``.

    Returns {"test": AccuracyResult, "new_test": AccuracyResult, "summary": str}.
    """
    judge = judge or load_judge(config, progress=progress)
    source = data_module.resolve_source(config.data, render=False)
    results = {}
    for split in SPLITS:
        labels = source.label_space.encode(source.conditions(split))
        images = read_output_images(split, config)
        if len(images) != len(labels):
            raise ValueError(
                f"{config.outputs_dir / 'images' / split} holds {len(images)} images but {split}.json has {len(labels)} label sets; "
                f"run the sample stage again"
            )
        results[split] = judge.accuracy(images, labels, split=split)
    summary = write_accuracy_summary({split: results[split] for split in SPLITS}, config.outputs_dir)
    sampling_path = config.outputs_dir / "sampling.json"
    if sampling_path.exists():
        sampling = json.loads(sampling_path.read_text())
        line = (
            f"images: {sampling.get('sampler')} {sampling.get('num_inference_steps')} steps, "
            f"guidance scale w = {sampling.get('guidance_scale')}"
        )
        if sampling.get("judge_guided"):
            line += f", JUDGE-GUIDED (evaluator guidance {sampling.get('judge_guidance_scale')})"
        summary += "\n" + line
        (config.outputs_dir / "accuracy.txt").write_text(summary + "\n")
    results["summary"] = summary
    return results


def run_sweep(config: LabConfig, model=None, schedule=None, judge=None, progress: bool = True) -> dict:
    """Accuracy on both files for each guidance scale in ``config.sample.sweep_scales``.

    Writes ``guidance_sweep.png`` and ``guidance_sweep.json`` into the run's ``report_figures/``; returns
    {"scales": [...], "test": [...], "new_test": [...], "best_scale": w, "judge": name}.
    """
    if model is None:
        model, schedule, _ = load_model(config=config, use_ema=config.sample.use_ema)
    judge = judge or load_judge(config, progress=progress)
    source = data_module.resolve_source(config.data, render=False)
    sweep = {"scales": list(config.sample.sweep_scales), "judge": judge.name}
    chunks = sum(-(-len(source.conditions(split)) // config.sample.batch_size) for split in SPLITS)
    total = chunks * len(sweep["scales"]) * config.sample.num_inference_steps
    bar = tqdm(total=total, desc="guidance sweep", disable=not show_progress(progress))
    for split in SPLITS:
        conditions = source.conditions(split)
        labels = source.label_space.encode(conditions)
        accuracies = []
        for scale in config.sample.sweep_scales:
            bar.set_postfix_str(f"{split}, w = {scale:g}")
            result = sample_conditions(
                model, schedule, conditions, config, source.label_space, guidance_scale=scale, progress=False,
                on_step=lambda: bar.update(1),
            )
            accuracies.append(judge.accuracy(upsample_for_output(result.images), labels, split=split).accuracy)
        sweep[split] = accuracies
    bar.close()
    means = [(a + b) / 2 for a, b in zip(sweep["test"], sweep["new_test"])]
    sweep["mean"] = means
    sweep["best_scale"] = sweep["scales"][max(range(len(means)), key=means.__getitem__)]
    fig = figures.sweep_figure(sweep)
    figures.save_figure(fig, "guidance_sweep.png", folder=config.report_dir)
    import matplotlib.pyplot as plt

    plt.close(fig)
    figures.report_path("guidance_sweep.json", config.report_dir).write_text(json.dumps(sweep, indent=2) + "\n")
    return sweep


def sample_seeds(model, schedule, config: LabConfig, names=DENOISING_LABELS, seeds=range(16), judge=None,
                 guidance_scale: float | None = None, counter=None) -> dict:
    """One scene (``names``, default the denoising row's) sampled once per seed, as the saved files hold it.

    Image i is what ``sample`` with ``seed=seeds[i]`` draws (the denoising row is seed ``config.sample.seed``),
    with the config's sampler and guidance scale unless ``guidance_scale`` is given. With a ``judge``, also
    its course-formula hits per image: how many of ``names`` are among its top-k classes (k = len(names)).
    An extra object is invisible to that count; a ``counter`` (:func:`labkit.counting.load_counter`) counts
    the objects in each image, so an added one shows.

    Returns {"images": float (S, 3, 64, 64) in [-1, 1], "seeds": [...], "hits": [...] or None,
    "counts": [...] or None, "guidance_scale": w, "titles": ["seed 0: 3/3, 4+ objects", ...]}.
    """
    label_space = data_module.resolve_source(config.data, render=False).label_space
    scale = config.sample.guidance_scale if guidance_scale is None else guidance_scale
    seeds = list(seeds)
    result = sample_conditions(model, schedule, [list(names)] * len(seeds), config, label_space, progress=False,
                               seeds=seeds, guidance_scale=scale)  # image i from seeds[i], in batches
    images = upsample_for_output(result.images)  # (S, 3, 64, 64)
    hits = counts = None
    titles = [f"seed {seed}" for seed in seeds]
    if judge is not None:
        selected, wanted, _ = top_k_selection(judge.probabilities(images), label_space.encode([list(names)] * len(seeds)))
        hits = (selected * wanted).sum(dim=1).int().tolist()
        titles = [f"{title}: {count}/{len(names)}" for title, count in zip(titles, hits)]
    if counter is not None:
        counts = counter.count(images).tolist()
        titles = [f"{title}, {count}{'+' if count == counter.max_count else ''} objects" for title, count in zip(titles, counts)]
    return {"images": images, "seeds": seeds, "hits": hits, "counts": counts, "guidance_scale": scale, "titles": titles}


# ---- the shipped reference model ---------------------------------------------------------------
def run_reference(progress: bool = True) -> dict:
    """Sample both files with the reference model into the course's layout and score them.

    Returns {"samples": ..., "accuracy": ...} as :func:`run_sample` and :func:`run_evaluate`, with the
    "model", "schedule", "config" and "judge" they used.
    """
    from labkit.judge_training import load_synthetic_judge
    from labkit.reference import load_reference

    model, schedule, config = load_reference()
    judge = load_synthetic_judge(config, device=next(model.parameters()).device, progress=progress)
    print(f"{model.label}: {config.sample.sampler} {config.sample.num_inference_steps} steps, "
          f"guidance scale w = {config.sample.guidance_scale}; judge: {judge}")
    samples = run_sample(config, model, schedule, progress=progress, judge=judge)
    accuracy = run_evaluate(config, judge=judge, progress=progress)
    return {"samples": samples, "accuracy": accuracy, "config": config, "model": model, "schedule": schedule,
            "judge": judge}


# ---- everything -----------------------------------------------------------------------------------
def run_lab(config: LabConfig, progress: bool = True, sweep: bool = True, resume: bool = True) -> dict:
    """The whole lab headlessly: data → train → sample → evaluate (→ guidance sweep)."""
    times = StageTimes()
    device = get_device()
    print(f"labkit lab: profile {config.profile}, device {device}, run {config.run_dir}")
    print(preflight(config))  # the config, both condition files, the images and the judge, before any long work

    start = time.perf_counter()
    training_set = run_data(config, progress=progress)
    times.record("data", start)

    start = time.perf_counter()
    judge = load_judge(config, device=device, progress=progress)
    times.record("judge", start)

    start = time.perf_counter()
    trained = run_train(config, training_set=training_set, progress=progress, resume=resume, judge=judge)
    times.record("train", start)
    save_training_accuracy_figure(config, judge.name)

    model, schedule, _ = load_model(config=config, use_ema=config.sample.use_ema, device=device)
    start = time.perf_counter()
    samples = run_sample(config, model, schedule, progress=progress, judge=judge)
    times.record("sample", start)

    start = time.perf_counter()
    accuracy = run_evaluate(config, judge=judge, progress=progress)
    times.record("evaluate", start)

    sweep_result = None
    if sweep and len(config.sample.sweep_scales) > 1:
        start = time.perf_counter()
        sweep_result = run_sweep(config, model, schedule, judge=judge, progress=progress)
        times.record("sweep", start)

    out = config.outputs_dir
    print()
    print(f"images:     {samples['paths']['test']}/0.png … and {samples['paths']['new_test']}/0.png …")
    print(f"grids:      {out / 'test_grid.png'}, {out / 'new_test_grid.png'}")
    print(f"denoising:  {samples['paths']['denoising']}")
    print(f"figures:    {config.report_dir}")
    print(f"run:        {config.run_dir} (step {trained.step})")
    print(f"hand in:    python -m labkit handin --run-name {config.run_name}   (copies these files to handin/)")
    if sweep_result:
        print(
            f"guidance sweep ({sweep_result['judge']}): best w = {sweep_result['best_scale']} "
            f"(mean accuracy {max(sweep_result['mean']):.3f})"
        )
    print(f"stage times: {times}")
    print()
    print(accuracy["summary"])
    return {"accuracy": accuracy, "samples": samples, "sweep": sweep_result, "times": times, "train": trained}
