"""The README's pictures of the shipped reference model, made again from reference/model.pt.

    .venv/bin/python benchmarks/reference_figures.py [--out docs]

Samples ``test.json`` and ``new_test.json`` of the synthetic i-CLEVR (seed 0) with the reference
model and its own sampler and guidance scale (one seed per image), scores them with the synthetic
judge, and writes ``docs/reference_test.png``, ``docs/reference_new_test.png`` (each grid titled
with its accuracy and the judge's held-out accuracy) and ``docs/reference_denoising.png`` (the
denoising process for red sphere + cyan cylinder + cyan cube: x_t on top, the model's x̂0 below).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
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
    print(results["accuracy"]["summary"])
    print(f"figures in {args.out}")


if __name__ == "__main__":
    main()
