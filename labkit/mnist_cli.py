"""``python -m labkit mnist train|sample|fid``: the digit track from the command line.

    python -m labkit mnist train  [--profile cpu] [--conditional] [--source auto|mnist|stand-in] [--download] [--fresh]
    python -m labkit mnist sample [--num-images 10000] [--sampler ddim] [--steps 50]
    python -m labkit mnist fid    [--folder outputs/mnist-cpu/generated]

Runs live in ``runs/mnist-<profile>/`` (``mnist-cond-<profile>`` with ``--conditional``), with the
same layout as every run (config.json, log.csv, checkpoints/last.pt, best.pt, EMA weights inside);
training resumes from ``last.pt`` unless ``--fresh``. Generated images go to
``outputs/<run>/generated/00001.png …`` (one flat folder); process figures to ``outputs/<run>/``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from labkit import mnist
from labkit.config import PROFILES, active_profile, resolve_path, set_override


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m labkit mnist", description="unconditional (or 10-class) DDPM on digits")
    parser.add_argument("action", choices=("train", "sample", "fid"))
    parser.add_argument("--profile", choices=PROFILES, default=None, help="smoke, cpu or gpu (default: $LABKIT_PROFILE)")
    parser.add_argument("--conditional", action="store_true", help="10-class conditional model with guidance")
    parser.add_argument("--source", choices=("auto", "mnist", "stand-in"), default="auto",
                        help="auto: MNIST from data/mnist/ (or --download), else scikit-learn's digits as a stand-in")
    parser.add_argument("--download", action="store_true", help="download MNIST with torchvision (online machines)")
    parser.add_argument("--fresh", action="store_true", help="train from scratch (the old run is moved aside)")
    parser.add_argument("--num-images", type=int, default=None, help="images to generate (default: 10000; smoke: 64)")
    parser.add_argument("--sampler", default="ddim", choices=("ddim", "ddpm", "dpmsolver++"))
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: 50 for DDIM, 1000 for DDPM)")
    parser.add_argument("--folder", default=None, help="generated PNG folder (default: outputs/<run>/generated)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.NAME=VALUE")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def output_dir(config) -> Path:
    return resolve_path("outputs") / config.run_name


def run_train(config, args) -> None:
    from labkit.train import train

    digits = mnist.load_digits_set(args.source, config.data.image_size, conditional=args.conditional, download=args.download)
    print(f"training on {len(digits)} images of {digits.source}")
    result = train(config, resume=not args.fresh, progress=not args.quiet, training_set=digits)
    if result.losses:
        print(f"trained {config.run_dir} to step {result.step}; last loss {result.losses[-1][1]:.4f}")


def run_sample(config, args) -> None:
    from labkit.figures import save_grid
    from labkit.train import load_model

    model, schedule, _ = load_model(config.run_dir, "last")
    count = args.num_images or (64 if config.profile == "smoke" else 10_000)
    steps = args.steps or (1000 if args.sampler == "ddpm" else 50)
    labels = torch.eye(10)[torch.arange(count) % 10] if args.conditional else None
    folder = Path(args.folder) if args.folder else output_dir(config) / "generated"
    start = time.perf_counter()
    mnist.generate(model, schedule, count, folder, args.sampler, steps, labels=labels,
                   guidance_scale=config.sample.guidance_scale if args.conditional else 1.0, progress=not args.quiet)
    seconds = time.perf_counter() - start
    print(f"{count} images ({args.sampler}-{steps}) in {seconds:.1f} s ({count / seconds:.1f} images/s) -> {folder}")
    for name in ("ddpm", "ddim"):
        grid = mnist.process_grid(model, schedule, name, 1000 if name == "ddpm" else 50,
                                  labels=torch.eye(10)[:8] if args.conditional else None)
        print(f"{name} process figure: {save_grid(grid, output_dir(config) / f'process_{name}.png', nrow=8, upscale=2)}")


def run_fid(config, args) -> None:
    from labkit.fid import load_pngs, save_pngs, train_digit_classifier

    folder = Path(args.folder) if args.folder else output_dir(config) / "generated"
    generated = load_pngs(folder)
    size = generated.shape[-1]
    real = mnist.load_digits_set(args.source, size, train=True, download=args.download)
    held_out = mnist.load_digits_set(args.source, size, train=False, download=args.download)
    classifier = train_digit_classifier(real.images, real.digits, size=size)
    reference_folder = output_dir(config) / "real"
    if not reference_folder.exists():
        save_pngs(real.images, reference_folder)
    held_out_folder = output_dir(config) / "held_out"
    if not held_out_folder.exists():
        save_pngs(held_out.images, held_out_folder)
    print(f"generated ({len(generated)} images):")
    print(mnist.describe(mnist.score(generated, real.images, classifier, real.source, folder, reference_folder)))
    if len(generated) > len(held_out):  # FID rises as the set shrinks: compare with the floor at its size
        print(f"generated, the first {len(held_out)} (the floor's size):")
        print(mnist.describe(mnist.score(generated[:len(held_out)], real.images, classifier, real.source)))
    print(f"floor, held-out real images ({len(held_out)}):")
    print(mnist.describe(mnist.score(held_out.images, real.images, classifier, real.source, held_out_folder, reference_folder)))


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.quiet:
        import os

        os.environ["TQDM_DISABLE"] = "1"
    config = mnist.mnist_config(args.profile or active_profile(), conditional=args.conditional)
    for item in args.overrides:
        key, _, value = item.partition("=")
        set_override(config, key, value)
    {"train": run_train, "sample": run_sample, "fid": run_fid}[args.action](config, args)
    return 0
