"""Data-layer benchmark: synthetic rendering, the decode-once cache and loader throughput.

    .venv/bin/python benchmarks/bench_data.py [--scenes 6003] [--sizes 32 64] [--threads N] [--json PATH]

Measures, in a temporary folder (deleted afterwards unless ``--workdir`` is given):

- rendering ``scenes`` synthetic scenes (3 images each, 320x240 PNGs) with ``labkit.synth.render_dataset``;
- for each size: building the uint8 cache (decode + resize every PNG, save) and loading it back;
- loader throughput for one epoch: a torch ``DataLoader`` over a Dataset that decodes and resizes
  a PNG per item (the usual student loader), against indexing the cached uint8 tensor and
  converting to float in [-1, 1] (labkit's way).

``run`` returns the figures as a dict so an aggregate benchmark can call it. Timings depend on
the machine and on whatever else runs on it: the load average before and after is recorded.
Rendering always runs one batch per core with one torch thread each (see ``render_dataset``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labkit import data, synth  # noqa: E402
from labkit.config import DataConfig  # noqa: E402


class PngFolder(Dataset):
    """The usual loader: decode and resize one PNG per item, every epoch. Items: float (3, S, S) in [-1, 1]."""

    def __init__(self, image_dir: Path, names: list[str], size: int):
        self.image_dir, self.names, self.size = image_dir, names, size

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = data.decode_png(self.image_dir / self.names[index])
        return data.to_model_range(data.resize_square(image, self.size))


def png_loader_rate(image_dir: Path, names: list[str], size: int, batch_size: int, workers: int, seed: int = 0
                    ) -> float:
    """Images per second of one shuffled epoch through a DataLoader over :class:`PngFolder`."""
    loader = DataLoader(PngFolder(image_dir, names, size), batch_size=batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(seed))
    start = time.perf_counter()
    count = sum(len(batch) for batch in loader)
    return count / (time.perf_counter() - start)


def tensor_loader_rate(images: torch.Tensor, batch_size: int, seed: int = 0) -> float:
    """Images per second of one shuffled epoch of indexing a uint8 (N, 3, S, S) tensor + to float."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    start = time.perf_counter()
    for batch in order.split(batch_size):
        data.to_model_range(images[batch])  # float (B, 3, S, S) in [-1, 1]
    return len(images) / (time.perf_counter() - start)


def run(
    scenes: int = 6003,
    sizes: tuple[int, ...] = (32, 64),
    batch_size: int = 128,
    loader_images: int = 0,
    workers: int = 0,
    workdir: str | None = None,
    progress: bool = True,
) -> dict:
    """Run every measurement; returns a dict of the figures (seconds, images per second, MiB).

    scenes: synthetic scenes to render (3 images each; 6,003 = the official 18,009 images).
    loader_images: images in the PNG-loader epoch (0 = all; the cached loader always runs them all).
    workers: DataLoader workers for the PNG loader. workdir: keep the files there instead of a temp folder.
    """
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="labkit_bench_data_"))
    results: dict = {
        "scenes": scenes,
        "images": 3 * scenes,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_before": round(os.getloadavg()[0], 2)},
    }
    try:
        start = time.perf_counter()
        synth.render_dataset(root / "synthetic", num_scenes=scenes, seed=0, progress=progress)
        seconds = time.perf_counter() - start
        disk = sum(path.stat().st_size for path in (root / "synthetic" / "iclevr").iterdir())
        results["render"] = {"seconds": round(seconds, 2), "images_per_second": round(3 * scenes / seconds, 1),
                             "disk_mib": round(disk / 2**20, 1)}
        results["cache"], results["loader"] = {}, {}
        for size in sizes:
            config = DataConfig(synthetic_dir=str(root / "synthetic"), cache_dir=str(root / "cache"), image_size=size,
                                num_scenes=scenes, source="synthetic", root=str(root / "no_official_files"))
            source = data.DataSource(root / "synthetic", "synthetic")
            training, build = data.timed(data.load_training_set, config, source=source, progress=progress)
            _, load = data.timed(data.load_training_set, config, source=source, progress=False)
            cache_file = data.cache_path_for(config, source)
            results["cache"][str(size)] = {"build_seconds": round(build, 2), "load_seconds": round(load, 3),
                                           "file_mib": round(cache_file.stat().st_size / 2**20, 1)}
            names = training.names[:loader_images] if loader_images else training.names
            png_rate = png_loader_rate(source.image_dir, names, size, batch_size, workers)
            tensor_rate = tensor_loader_rate(training.images, batch_size)
            results["loader"][str(size)] = {
                "png_images_per_second": round(png_rate, 1), "png_images": len(names),
                "cached_images_per_second": round(tensor_rate, 1), "speedup": round(tensor_rate / png_rate, 1),
            }
    finally:
        results["machine"]["load_average_after"] = round(os.getloadavg()[0], 2)
        if not workdir:
            shutil.rmtree(root, ignore_errors=True)
    return results


def report(results: dict) -> str:
    """A readable summary of :func:`run`'s dict."""
    machine, render = results["machine"], results["render"]
    lines = [
        f"machine: {machine['cpu_count']} CPUs, torch threads {machine['torch_threads']}, load average "
        f"{machine['load_average_before']} before / {machine['load_average_after']} after "
        f"(timings are noisy when the machine is loaded)",
        f"render {results['scenes']} scenes = {results['images']} images: {render['seconds']:.1f} s "
        f"({render['images_per_second']:.0f} images/s), {render['disk_mib']:.0f} MiB of PNGs",
    ]
    for size, cache in results["cache"].items():
        loader = results["loader"][size]
        lines.append(
            f"{size:>3} px: cache build {cache['build_seconds']:.1f} s, load {cache['load_seconds']:.2f} s "
            f"({cache['file_mib']:.0f} MiB); loader {loader['png_images_per_second']:.0f} images/s decoding PNGs vs "
            f"{loader['cached_images_per_second']:.0f} images/s from the cache ({loader['speedup']:.0f}x)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=6003, help="scenes to render (3 images each)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="cache and loader image sizes")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--loader-images", type=int, default=0, help="images in the PNG-loader epoch (0 = all)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for the PNG loader")
    parser.add_argument("--workdir", default=None, help="keep the rendered files here (default: a temp folder)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for the loaders (0 = torch's default)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run(args.scenes, tuple(args.sizes), args.batch_size, args.loader_images, args.workers, args.workdir)
    print(report(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
