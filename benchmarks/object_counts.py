"""What the accuracy does not see, in numbers: objects counted in the reference model's images.

For each guidance scale w, samples test.json and new_test.json with several seed sets (seed s:
image i from seed s + i, as ``python -m labkit sample`` with ``sample.seed = s``), scores them with
the synthetic judge (course formula) and counts their objects with :mod:`labkit.counting`: the
fraction drawn with exactly the asked-for number of objects, with extra ones, with missing ones.
The denoising row's scene is counted over 32 seeds as well. Prints a table; ``--out`` saves JSON.

    python benchmarks/object_counts.py                      # w = 1, 2, 3, 4, 5; 8 seed sets
    python benchmarks/object_counts.py --guidance 2 3 --seed-sets 4
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from labkit import lab
from labkit import data as data_module
from labkit.counting import count_summary, load_counter
from labkit.judge_training import load_synthetic_judge
from labkit.metrics import course_accuracy
from labkit.reference import load_reference
from labkit.sample import sample_conditions


def score(model, schedule, config, judge, counter, label_lists, label_space, w: float, seed: int) -> dict:
    """One seed set of one file at guidance w: judge hits and object counts."""
    result = sample_conditions(model, schedule, label_lists, config, label_space, progress=False, seed=seed, guidance_scale=w)
    images = lab.upsample_for_output(result.images)  # (N, 3, 64, 64), as the saved PNGs hold them
    hits, total = course_accuracy(judge.probabilities(images), label_space.encode(label_lists))
    counts = counter.count(images)
    wanted = torch.tensor([len(labels) for labels in label_lists])
    return {"hits": hits, "total": total, "counts": counts.tolist(), "wanted": wanted.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 5.0])
    parser.add_argument("--seed-sets", type=int, default=8, help="seed sets 0, 1000, 2000, ...")
    parser.add_argument("--scene-seeds", type=int, default=32, help="seeds for the denoising row's scene")
    parser.add_argument("--out", default=None, help="save the table as JSON here")
    args = parser.parse_args()

    model, schedule, config = load_reference()
    judge = load_synthetic_judge(config, progress=False)
    source = data_module.resolve_source(config.data, render=False)
    counter = load_counter(config, progress=False)
    print(f"{model.label}; judge: {judge}; counter: {counter}")
    files = {split: source.conditions(split) for split in ("test", "new_test")}
    rows = []
    for w in args.guidance:
        start, row = time.perf_counter(), {"guidance_scale": w}
        for split, label_lists in files.items():
            parts = [score(model, schedule, config, judge, counter, label_lists, source.label_space, w, 1000 * s)
                     for s in range(args.seed_sets)]
            counts = torch.tensor([c for part in parts for c in part["counts"]])
            wanted = torch.tensor([c for part in parts for c in part["wanted"]])
            hits, total = sum(p["hits"] for p in parts), sum(p["total"] for p in parts)
            row[split] = {"accuracy": hits / total, "hits": hits, "total": total, **count_summary(counts, wanted)}
        scene = lab.sample_seeds(model, schedule, config, seeds=range(args.scene_seeds), judge=judge, guidance_scale=w)
        scene_counts = counter.count(scene["images"])
        row["scene"] = {"all_three_by_judge": sum(h == 3 for h in scene["hits"]), "counts": scene_counts.tolist(),
                        **count_summary(scene_counts, torch.full_like(scene_counts, 3))}
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        print(f"w = {w:g}: " + "; ".join(
            f"{split} acc {row[split]['accuracy']:.3f}, exact {row[split]['exact']:.3f}, extra {row[split]['extra']:.3f}, "
            f"missing {row[split]['missing']:.3f}" for split in files)
            + f"; scene: judge 3/3 in {row['scene']['all_three_by_judge']}/{args.scene_seeds}, counted exactly 3 in "
            f"{round(row['scene']['exact'] * args.scene_seeds)}, extra in {round(row['scene']['extra'] * args.scene_seeds)}"
            f" ({row['seconds']:.0f} s)", flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            checkout = str(Path(__file__).resolve().parents[1])
            json.dump({"model": model.label, "judge": str(judge).replace(checkout, "<checkout>"), "counter": str(counter),
                       "seed_sets": args.seed_sets, "rows": rows}, handle, indent=1)
        print("saved", args.out)


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
