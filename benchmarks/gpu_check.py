"""Measure the `gpu` profile on this machine's GPU and compare with the plan (a few minutes, at most 10).

    python benchmarks/gpu_check.py [--steps 20] [--warmup 5] [--json benchmarks/results/gpu_check.json]
    python benchmarks/gpu_check.py --allow-cpu     # a tiny dry run of the same code on a CPU (tests use it)

Prints and saves as JSON: the device (name, compute capability, memory), the precision labkit chooses
there and why, the `gpu` profile's training images/s through labkit's own trainer at the profile's
batch (after warm-up steps) and its peak GPU memory, the sampler's seconds per image (the profile's
sampler, steps and guidance, the 64 images of test.json + new_test.json), the projected time of the
profile's steps, and the FLOPs-based estimate of README's table for this GPU when it is one of the
listed ones. Without a GPU it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labkit.config import get_config, set_override  # noqa: E402
from labkit.runtime import choose_precision, get_device  # noqa: E402

# Public dense tensor-core peaks (TFLOP/s, no sparsity) from NVIDIA's data sheets, in the precision
# labkit chooses on each: fp16 on the T4 (no native bf16), bf16 on the others.
GPU_PEAKS = {
    "T4": ("fp16", 65.0),
    "L4": ("bf16", 121.0),
    "A100": ("bf16", 312.0),
    "H100": ("bf16", 989.0),  # SXM; the PCIe card peaks at 756
}
UTILISATION = (0.20, 0.35)  # assumed share of the peak a UNet training step reaches (an estimate)
DRY_RUN = {  # --allow-cpu: the same code at toy size
    "data.image_size": 32, "model.base_channels": 16, "model.layers_per_block": 1, "model.norm_groups": 8,
    "model.attention_head_dim": 8, "train.batch_size": 4, "train.precision": "fp32", "sample.num_inference_steps": 2,
}


def describe_device(device: torch.device) -> dict:
    """Name, compute capability and memory of a CUDA device (the CPU: its name only)."""
    if device.type != "cuda":
        return {"type": device.type, "name": "CPU"}
    properties = torch.cuda.get_device_properties(device)
    return {"type": "cuda", "name": properties.name, "compute_capability": f"{properties.major}.{properties.minor}",
            "memory_gib": properties.total_memory / 2**30, "count": torch.cuda.device_count()}


def random_training_set(config, count: int):
    """Random uint8 images with valid labels: the trainer's speed does not depend on the pixels."""
    from labkit.data import DataSource, LabelSpace, TrainingSet

    generator = torch.Generator().manual_seed(0)
    size = config.data.image_size
    images = torch.randint(0, 256, (count, 3, size, size), generator=generator, dtype=torch.uint8)
    space = LabelSpace.default()
    lists = [[space.names[j] for j in torch.randperm(24, generator=generator)[: 1 + i % 3].tolist()] for i in range(count)]
    return TrainingSet(images, space.encode(lists), [f"{i}.png" for i in range(count)], space, DataSource(ROOT, "synthetic"))


def measure_training(config, steps: int, warmup: int, device: torch.device) -> dict:
    """labkit's trainer on the profile's model and batch: images/s over ``steps`` steps after
    ``warmup`` steps, seconds per step, peak memory (GPU: allocated by torch; CPU: the process's RSS)."""
    from labkit.train import train

    rows: list[dict] = []
    training_set = random_training_set(config, max(256, 2 * config.train.batch_size))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory(prefix="labkit_gpu_check_") as folder:
        config.train.runs_dir, config.train.run_name = folder, "gpu_check"
        config.train.steps, config.train.log_every = warmup + steps, warmup if steps % warmup == 0 else 1
        config.train.preview_every = config.train.eval_every = config.train.snapshot_every = 0
        config.train.checkpoint_every = 10**9
        result = train(config, resume=False, progress=False, training_set=training_set, on_log=rows.append)
    first, last = next(row for row in rows if row["step"] == warmup), rows[-1]
    seconds_per_step = (last["elapsed_s"] - first["elapsed_s"]) / (last["step"] - first["step"])
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"batch_size": config.train.batch_size, "timed_steps": steps, "warmup_steps": warmup,
            "seconds_per_step": seconds_per_step, "images_per_s": config.train.batch_size / seconds_per_step,
            "peak_memory_gib": peak / 2**30, "peak_memory_kind": "GPU, allocated" if device.type == "cuda" else "RSS",
            "model": result.ema_model}


def measure_sampling(config, model, images: int, device: torch.device) -> dict:
    """Seconds per image of the profile's sampler on ``images`` random label sets (after a warm-up call)."""
    from labkit.schedules import NoiseSchedule
    from labkit.sample import sample

    schedule = NoiseSchedule.from_config(config.diffusion)
    labels = random_training_set(config, images).labels
    settings = dict(sampler=config.sample.sampler, num_inference_steps=config.sample.num_inference_steps,
                    guidance_scale=config.sample.guidance_scale, device=device, precision=config.train.precision,
                    progress=False, batch_size=config.sample.batch_size)
    sample(model, schedule, labels[:2], **settings)  # warm-up (kernel selection)
    result = sample(model, schedule, labels, **settings)
    return {"sampler": config.sample.sampler, "num_inference_steps": config.sample.num_inference_steps,
            "guidance_scale": config.sample.guidance_scale, "images": images,
            "network_evaluations_per_image": result.network_evaluations, "seconds_per_image": result.seconds_per_image}


def plan_for(device_name: str, train_flops_per_image: float, images_to_train: int) -> dict | None:
    """README's FLOPs-based estimate for a listed GPU (None for others)."""
    for key, (precision, peak) in GPU_PEAKS.items():
        if key in device_name:
            rates = [share * peak * 1e12 / train_flops_per_image for share in UTILISATION]
            return {"gpu": key, "precision": precision, "peak_tflops": peak, "utilisation": list(UTILISATION),
                    "images_per_s": rates, "hours": [images_to_train / rate / 3600 for rate in rates]}
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed training steps first (cuDNN autotuning, allocator)")
    parser.add_argument("--images", type=int, default=64, help="images to sample (test.json + new_test.json: 64)")
    parser.add_argument("--profile", default="gpu", help="the profile to measure (default gpu)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.NAME=VALUE",
                        help="override a config value, e.g. --set train.batch_size=64 (repeatable)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json",
                        help="where to save the figures")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run a tiny dry run on a CPU (checks the code path; its figures mean nothing for a GPU)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = get_device()
    if device.type != "cuda" and not args.allow_cpu:
        print("gpu_check needs a CUDA GPU and found none (torch.cuda.is_available() is False). On Colab choose "
              "Runtime -> Change runtime type -> a GPU; on a CPU, benchmarks/run.py measures the CPU profiles, and "
              "--allow-cpu runs a tiny dry run of this check.", file=sys.stderr)
        return 2
    from labkit.model import build_model, flops_per_image

    config = get_config(args.profile)
    overrides = dict(DRY_RUN) if device.type != "cuda" else {}
    overrides.update(item.split("=", 1) for item in args.overrides)
    for key, value in overrides.items():
        set_override(config, key, value)
    steps, images_to_train = config.train.steps, config.train.steps * config.train.batch_size
    choice = choose_precision(config.train.precision, device)
    with torch.device("meta"):
        flops = flops_per_image(build_model(config.model, config.data.image_size))
    start = time.perf_counter()
    try:
        training = measure_training(config, args.steps, args.warmup, device)
    except torch.cuda.OutOfMemoryError:
        memory = describe_device(device).get("memory_gib", 0)
        print(f"the {args.profile} profile's batch of {config.train.batch_size} does not fit in this GPU's {memory:.0f} GiB; "
              f"measure a smaller one with --set train.batch_size={config.train.batch_size // 2} (and train with the same "
              f"--set)", file=sys.stderr)
        return 3
    sampling = measure_sampling(config, training.pop("model"), args.images, device)
    result = {
        "device": describe_device(device), "torch": torch.__version__, "profile": args.profile,
        "overrides": {key: str(value) for key, value in overrides.items()}, "dry_run": device.type != "cuda",
        "precision": {"name": choice.name, "grad_scaler": choice.grad_scaler, "reason": choice.reason},
        "forward_gflops_per_image": flops / 1e9, "training": training, "sampling": sampling,
        "achieved_tflops": training["images_per_s"] * 3 * flops / 1e12,
        "projected_hours_for_profile_steps": steps * training["seconds_per_step"] / 3600, "profile_steps": steps,
        "plan": plan_for(describe_device(device)["name"], 3 * flops, images_to_train),
        "check_wall_s": time.perf_counter() - start,
    }
    report(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.json}")
    return 0


def report(result: dict) -> None:
    """The figures as a few readable lines."""
    device, training, sampling, plan = result["device"], result["training"], result["sampling"], result["plan"]
    capability = f", compute capability {device['compute_capability']}, {device['memory_gib']:.0f} GiB" if "memory_gib" in device else ""
    print(f"device: {device['name']}{capability}" + ("  (a dry run on a CPU: figures mean nothing for a GPU)" if result["dry_run"] else ""))
    print(f"precision: {result['precision']['name']}" + (" with a GradScaler" if result["precision"]["grad_scaler"] else "")
          + f": {result['precision']['reason']}")
    print(f"training ({result['profile']} profile, batch {training['batch_size']}): {training['images_per_s']:.1f} images/s, "
          f"{training['seconds_per_step']:.3f} s/step, peak memory {training['peak_memory_gib']:.2f} GiB "
          f"({training['peak_memory_kind']}); {result['achieved_tflops']:.1f} TFLOP/s achieved")
    print(f"sampling ({sampling['sampler']}, {sampling['num_inference_steps']} steps, w = {sampling['guidance_scale']}): "
          f"{sampling['seconds_per_image']:.4f} s/image")
    print(f"projected: {result['profile_steps']:,} steps in {result['projected_hours_for_profile_steps']:.2f} hours here")
    if plan:
        low, high = plan["hours"][1], plan["hours"][0]
        print(f"README's estimate for a {plan['gpu']} ({plan['precision']}, {plan['peak_tflops']:.0f} TFLOP/s peak at "
              f"{plan['utilisation'][0]:.0%}-{plan['utilisation'][1]:.0%}): {low:.1f}-{high:.1f} hours")


if __name__ == "__main__":
    sys.exit(main())
