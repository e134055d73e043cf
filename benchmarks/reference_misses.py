"""Which objects the shipped reference model misses: both files, its own sampler and guidance scale.

    LABKIT_HOME=... .venv/bin/python benchmarks/reference_misses.py

Prints the scenes with a miss, the missed objects by shape, and, pairing each missed object with a
wrongly picked one of the same scene (in name order), how many kept the colour and changed the shape
and how many the other way round. Judged by the synthetic judge (named, with its held-out accuracy).
"""

from __future__ import annotations

import collections
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")

from labkit import lab, reference  # noqa: E402
from labkit.data import resolve_source  # noqa: E402
from labkit.judge_training import load_judge  # noqa: E402
from labkit.metrics import top_k_selection  # noqa: E402
from labkit.sample import sample_conditions  # noqa: E402

SHAPES = ("cube", "sphere", "cylinder")


def misses_of_split(model, schedule, config, source, judge, split: str):
    """[(asked names, missed names, wrongly picked names)] for each scene of ``split``."""
    conditions = source.conditions(split)
    result = sample_conditions(model, schedule, conditions, config, source.label_space, progress=False)
    probabilities = judge.probabilities(lab.upsample_for_output(result.images))  # (B, 24)
    _, _, picks = top_k_selection(probabilities, source.label_space.encode(conditions))
    scenes = []
    for names, picked in zip(conditions, picks):
        picked_names = {source.label_space.names[index] for index in picked}
        scenes.append((names, sorted(set(names) - picked_names), sorted(picked_names - set(names))))
    return scenes


def main() -> None:
    model, schedule, config = reference.load_reference("cpu")
    source = resolve_source(config.data, render=False)
    judge = load_judge(config, progress=False)
    print(f"{model.label}, {config.sample.sampler}-{config.sample.num_inference_steps}, "
          f"w = {config.sample.guidance_scale} | {judge}")
    scenes = [scene for split in lab.SPLITS for scene in misses_of_split(model, schedule, config, source, judge, split)]
    asked = collections.Counter(name.split()[1] for names, _, _ in scenes for name in names)
    missed = collections.Counter(name.split()[1] for _, lost, _ in scenes for name in lost)
    pairs = [(lost_name, picked) for _, lost, extra in scenes for lost_name, picked in zip(lost, extra)]
    same_colour = sum(a.split()[0] == b.split()[0] for a, b in pairs)
    same_shape = sum(a.split()[1] == b.split()[1] for a, b in pairs)
    print(f"scenes with a miss: {sum(bool(lost) for _, lost, _ in scenes)} of {len(scenes)}; "
          f"objects missed: {sum(missed.values())} of {sum(asked.values())}")
    print("missed / asked by shape: " + ", ".join(f"{shape} {missed[shape]} / {asked[shape]}" for shape in SHAPES))
    print(f"a missed object and a wrong pick of its scene: {len(pairs)} pairs; the same colour with another shape: "
          f"{same_colour}; the same shape in another colour: {same_shape}; both differ: {len(pairs) - same_colour - same_shape}")


if __name__ == "__main__":
    main()
