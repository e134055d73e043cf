"""Measure the digit track: DDIM-50 images/s, the DDPM-1000 ratio on a subset, domain FID and its floor.

    python benchmarks/mnist_track.py --profile cpu --num-images 10000 --ddpm-images 64

Reads the finished run ``runs/mnist-<profile>/`` (train it first: python -m labkit mnist train).
Writes outputs/mnist-<profile>/bench_grid.png (64 DDIM-50 samples) and prints one line per figure.
"""

from __future__ import annotations

import argparse
import time

import torch

from labkit import fid, figures, mnist
from labkit.config import resolve_path
from labkit.train import load_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--num-images", type=int, default=10_000)
    parser.add_argument("--ddpm-images", type=int, default=64)
    parser.add_argument("--source", default="auto")
    args = parser.parse_args()
    config = mnist.mnist_config(args.profile)
    model, schedule, _ = load_model(config.run_dir, "last")
    out = resolve_path("outputs") / config.run_name
    print(f"torch threads: {torch.get_num_threads()} | step {model.checkpoint_step}")
    start = time.perf_counter()
    ddim = mnist.generate(model, schedule, args.num_images, out / "generated", "ddim", 50, progress=False)
    ddim_rate = args.num_images / (time.perf_counter() - start)
    figures.save_grid(ddim.images[:64], out / "bench_grid.png", nrow=8, upscale=3)
    start = time.perf_counter()
    mnist.generate(model, schedule, args.ddpm_images, None, "ddpm", 1000, seed=100_000, progress=False)
    ddpm_rate = args.ddpm_images / (time.perf_counter() - start)
    print(f"DDIM-50: {ddim_rate:.1f} images/s over {args.num_images} | DDPM-1000: {ddpm_rate:.2f} images/s over "
          f"{args.ddpm_images} | ratio {ddim_rate / ddpm_rate:.1f}x")
    for name, steps in (("ddpm", 1000), ("ddim", 50)):
        figures.save_grid(mnist.process_grid(model, schedule, name, steps), out / f"process_{name}.png", nrow=8, upscale=3)
    real = mnist.load_digits_set(args.source, config.data.image_size)
    held_out = mnist.load_digits_set(args.source, config.data.image_size, train=False)
    classifier = fid.train_digit_classifier(real.images, real.digits, size=config.data.image_size)
    with torch.no_grad():
        accuracy = (classifier(held_out.images).argmax(1) == held_out.digits).float().mean().item()
    print(f"digit classifier held-out accuracy: {accuracy:.3f}")
    generated = fid.load_pngs(out / "generated")
    print("generated:", mnist.describe(mnist.score(generated, real.images, classifier, real.source)))
    print("floor (held-out real):", mnist.describe(mnist.score(held_out.images, real.images, classifier, real.source)))


if __name__ == "__main__":
    main()
