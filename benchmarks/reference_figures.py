"""The README's pictures of the shipped reference model, made again from reference/model.pt.

    .venv/bin/python benchmarks/reference_figures.py [--out docs]

Samples ``test.json`` and ``new_test.json`` of the synthetic i-CLEVR (seed 0) with the reference
model and its own sampler and guidance scale (one seed per image), scores them with the synthetic
judge, and writes ``docs/reference_test.png``, ``docs/reference_new_test.png`` (each grid titled
with its accuracy and the judge's held-out accuracy) and ``docs/reference_denoising.png`` (the
denoising process for red sphere + cyan cylinder + cyan cube: x_t on top, the model's x̂0 below) and
``docs/reference_denoising_seeds.png`` (the same three objects from ``--seeds`` seeds at the model's w, or
at ``--seeds-guidance W`` into ``reference_denoising_seeds_wW.png``, each titled with the judge's count of
them; the course's top-k accuracy does not see an extra object, so look at them too).
Also writes the course's files to ``outputs/`` as ``python -m labkit sample --reference`` does.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from labkit import figures, lab  # noqa: E402


def grid_figure(images, title: str, path: Path) -> None:
    grid = figures.image_grid(lab.upsample_for_output(images), nrow=8)
    fig, axis = plt.subplots(figsize=(9, 4.9))
    axis.imshow(grid.permute(1, 2, 0).numpy())
    axis.axis("off")
    axis.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def seeds_figure(model, schedule, config, judge, seeds: int, path: Path, guidance_scale: float) -> list[int]:
    """The denoising row's objects from seeds 0 .. ``seeds`` - 1 at ``guidance_scale``, titled with the judge's
    hits; returns the hits."""
    drawn = lab.sample_seeds(model, schedule, config, seeds=range(seeds), judge=judge, guidance_scale=guidance_scale)
    count = len(lab.DENOISING_LABELS)
    found = sum(hits == count for hits in drawn["hits"])
    title = (f"{' + '.join(lab.DENOISING_LABELS)}, seeds 0-{seeds - 1}, {model.label}, w = {guidance_scale:g}\n"
             f"the {judge.name} finds all {count} in {found} of {seeds} (top-k: an extra object goes unseen)")
    fig = figures.show_images(drawn["images"], drawn["titles"], ncols=8, size=1.25, suptitle=title, fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"{title}; hits per seed {drawn['hits']}".replace("\n", ": "))
    return drawn["hits"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--seeds", type=int, default=32, help="seeds of the denoising row's objects to draw (default 32)")
    parser.add_argument("--seeds-guidance", type=float, default=None,
                        help="guidance scale of that figure (default: the reference model's own)")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    results = lab.run_reference(progress=False)
    model, config = results["model"], results["config"]
    args.out.mkdir(parents=True, exist_ok=True)
    settings = f"{config.sample.sampler}, {config.sample.num_inference_steps} steps, w = {config.sample.guidance_scale:g}"
    for split in lab.SPLITS:
        accuracy = results["accuracy"][split]
        title = (f"{split}.json, {model.label}, {settings}\naccuracy {accuracy.accuracy:.3f} "
                 f"({accuracy.hits}/{accuracy.total} objects) by the {accuracy.judge} "
                 f"(held-out {accuracy.judge_holdout_accuracy:.3f})")
        grid_figure(results["samples"][split].images, title, args.out / f"reference_{split}.png")
    title = f"{' + '.join(lab.DENOISING_LABELS)}: noise (left) to image (right), {model.label}"
    fig = figures.denoising_strip(results["samples"]["denoising"], frames=10, title=title)
    fig.savefig(args.out / "reference_denoising.png", dpi=100)
    plt.close(fig)
    judge = results["judge"]
    scale = config.sample.guidance_scale if args.seeds_guidance is None else args.seeds_guidance
    name = "reference_denoising_seeds.png" if args.seeds_guidance is None else f"reference_denoising_seeds_w{scale:g}.png"
    seeds_figure(model, results["schedule"], config, judge, args.seeds, args.out / name, scale)
    print(results["accuracy"]["summary"])
    print(f"figures in {args.out}")


if __name__ == "__main__":
    main()
