"""Learning per unit of compute: labkit's recipe against a students'-style recipe, same steps.

    .venv/bin/python benchmarks/learning.py [--steps 900] [--json benchmarks/results/learning.json]

Both runs train the ``cpu`` profile's UNet on the same data with the same seeds, batch size,
learning rate and number of optimiser steps. They differ only in the recipe:

- labkit: the profile's recipe (cosine schedule, v-prediction, min-SNR-5 weighting, EMA weights,
  automatic precision and layout, and the profile's sampler: DPM-Solver++ with 20 steps);
- students' style: linear β schedule, ε-prediction, no min-SNR weighting, raw (non-EMA) weights,
  fp32, DDPM sampling with all 1,000 steps.

Each run then samples ``test.json`` and ``new_test.json`` (same guidance scale, same seeds) and
the synthetic judge (or the course checkpoint) scores them. Prints a table, writes
``report_figures/learning_per_compute.png`` (accuracy and loss), ``report_figures/learning_samples.png``
(the first 16 test.json images of each recipe) and the figures as JSON. Runs are kept in
``runs/learning_*`` and resumed, so a second call only samples and scores.
Takes about 2 x (steps x batch / images per second) plus sampling: about 25 minutes at 900 steps on
2 cores with native bf16 (the students' fp32 training and DDPM-1000 sampling are most of it).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labkit import data as data_module  # noqa: E402
from labkit import figures, lab  # noqa: E402
from labkit.config import get_config  # noqa: E402
from labkit.evaluate import load_judge  # noqa: E402
from labkit.sample import sample_conditions  # noqa: E402
from labkit.train import load_model, read_log, train, training_seconds  # noqa: E402


def recipes(steps: int, ablations: bool = False) -> dict:
    """The two recipes (and with ``ablations``, labkit's recipe minus one part at a time), by name."""
    base = get_config("cpu")
    base.train.steps = steps
    base.train.preview_every = base.train.eval_every = 0
    labkit_recipe = copy.deepcopy(base)
    labkit_recipe.train.run_name = f"learning_labkit_{steps}"
    students = copy.deepcopy(base)
    students.train.run_name = f"learning_students_{steps}"
    students.diffusion.schedule = "linear"
    students.diffusion.min_snr_gamma = 0.0
    students.diffusion.prediction_type = "epsilon"
    students.train.precision = "fp32"
    students.sample.use_ema = False
    students.sample.sampler = "ddpm"
    students.sample.num_inference_steps = students.diffusion.num_train_timesteps
    found = {"labkit": labkit_recipe, "students' style": students}
    if ablations:  # labkit's recipe with one part taken away; "no EMA" reuses labkit's run
        for name, section, key, value in (("- v: ε-prediction", "diffusion", "prediction_type", "epsilon"),
                                          ("- cosine: linear", "diffusion", "schedule", "linear"),
                                          ("- min-SNR", "diffusion", "min_snr_gamma", 0.0),
                                          ("- EMA", "sample", "use_ema", False)):
            variant = copy.deepcopy(labkit_recipe)
            setattr(getattr(variant, section), key, value)
            if section != "sample":
                variant.train.run_name = f"learning_labkit_{section}_{key}_{value}_{steps}"
            found[f"labkit {name}"] = variant
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=get_config("cpu").train.steps,
                        help="optimiser steps per recipe (default: the cpu profile's)")
    parser.add_argument("--ablations", action="store_true",
                        help="also train labkit's recipe without v-prediction, the cosine schedule or min-SNR, and "
                             "sample it without EMA (one change each; about 6 more minutes per trained variant)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "learning.json"))
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    configs = recipes(args.steps, args.ablations)
    first = next(iter(configs.values()))
    source = data_module.resolve_source(first.data)
    training_set = data_module.load_training_set(first.data, source=source)
    judge = load_judge(first)
    results = {"steps": args.steps, "batch_size": first.train.batch_size, "judge": judge.name, "recipes": {}}
    samples = {}
    for name, config in configs.items():
        train(config, resume=True, progress=True, training_set=training_set)  # resumes or skips a finished run
        log = read_log(config.run_dir)
        train_s = training_seconds(log)
        model, schedule, _ = load_model(config=config, which="last", use_ema=config.sample.use_ema)
        row = {"train_wall_s": train_s, "images_per_s": args.steps * config.train.batch_size / train_s,
               "sampler": f"{config.sample.sampler}-{config.sample.num_inference_steps}",
               "prediction_type": config.diffusion.prediction_type, "schedule": config.diffusion.schedule,
               "loss": [entry["loss"] for entry in log]}
        for split in lab.SPLITS:
            conditions = source.conditions(split)
            result = sample_conditions(model, schedule, conditions, config, source.label_space, progress=False)
            accuracy = judge.accuracy(lab.upsample_for_output(result.images), source.label_space.encode(conditions),
                                      split=split)
            row[split] = accuracy.accuracy
            row["hits"], row["objects"] = row.get("hits", 0) + accuracy.hits, row.get("objects", 0) + accuracy.total
            row[f"{split}_sample_s"] = result.wall_s
            if split == "test":
                samples[name] = result.images[:16]
        row["both"] = row["hits"] / row["objects"]  # the course formula over both files
        results["recipes"][name] = row
        print(f"{name}: test {row['test']:.3f}, new_test {row['new_test']:.3f} ({judge.name}); "
              f"train {train_s:.0f} s at {row['images_per_s']:.1f} img/s")

    print(f"\n{args.steps} steps of batch {results['batch_size']}, accuracy by the {judge.name}")
    print(f"{'recipe':28s} {'test':>6s} {'new_test':>9s} {'both':>6s} {'sampler':>16s} {'train s':>8s}")
    for name, row in results["recipes"].items():
        print(f"{name:28s} {row['test']:6.3f} {row['new_test']:9.3f} {row['both']:6.3f} {row['sampler']:>16s} "
              f"{row['train_wall_s']:8.0f}")
    ours, theirs = results["recipes"]["labkit"], results["recipes"]["students' style"]
    gain = ours["both"] - theirs["both"]
    results["accuracy_gain"] = gain
    print(f"labkit's recipe: {gain:+.3f} accuracy over both files ({ours['hits']}/{ours['objects']} vs "
          f"{theirs['hits']}/{theirs['objects']} objects) at equal steps, in "
          f"{ours['train_wall_s'] / theirs['train_wall_s']:.2f}x the training time")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(6 + 1.3 * len(results["recipes"]), 3.5))
    names = list(results["recipes"])
    for offset, split in enumerate(lab.SPLITS):
        left.bar([i + 0.4 * offset for i in range(len(names))], [results["recipes"][n][split] for n in names],
                 width=0.4, label=split)
    left.set_xticks([i + 0.2 for i in range(len(names))], names, rotation=20 if len(names) > 2 else 0, ha="right" if len(names) > 2 else "center", fontsize=8)
    left.set_ylim(0, 1)
    left.set_ylabel(f"accuracy ({judge.name})")
    left.legend()
    left.set_title(f"{args.steps} steps of batch {results['batch_size']}")
    plotted_runs = set()
    for name in names:
        run_name = configs[name].train.run_name
        if run_name not in plotted_runs:  # "labkit - EMA" shares labkit's run, hence its loss
            plotted_runs.add(run_name)
            right.plot(results["recipes"][name]["loss"], label=name)
    right.set_xlabel(f"log row (every {first.train.log_every} steps)")
    right.set_ylabel("training loss (each recipe's own weighting)")
    right.set_yscale("log")
    right.legend()
    figures.save_figure(fig, "learning_per_compute.png")

    shown = names[:2]  # labkit and the students' style
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 1.9), squeeze=False)
    axes = axes[0]
    for axis, name in zip(axes, shown):
        row = results["recipes"][name]
        axis.imshow(figures.image_grid(samples[name], nrow=8, upscale=2).permute(1, 2, 0).numpy())
        axis.set_title(f"{name}: {row['sampler']}, test.json {row['test']:.3f}", fontsize=9)
        axis.axis("off")
    fig.suptitle(f"the first 16 test.json conditions after {args.steps} steps (same seeds; {judge.name})", fontsize=9)
    fig.tight_layout()
    figures.save_figure(fig, "learning_samples.png")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {path}, report_figures/learning_per_compute.png and learning_samples.png")


if __name__ == "__main__":
    main()
