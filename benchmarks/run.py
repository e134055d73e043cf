"""The lab's performance table, in one run on this machine (about 10-15 minutes on 2 CPU cores).

    .venv/bin/python benchmarks/run.py [--steps 12] [--ddpm-images 32] [--training-profiles cpu,smoke]
                                       [--skip-sampling] [--skip-profiles] [--json benchmarks/results/run.json]

Measures, on each profile's UNet at its resolution and batch size (training: ``cpu`` and ``smoke``;
sampling: ``cpu``):

1. matrix-multiply peak (GFLOP/s) in fp32 and bf16 (2048^3 matmuls): the machine's limit;
2. training images/s: a students'-style reference loop (fp32, a DataLoader decoding PNGs every
   epoch, ``loss.item()`` every step), the same loop with one lever at a time (cached uint8
   data, channels_last, bf16 autocast, torch.compile), and ``labkit.train.train`` itself;
   achieved GFLOP/s (3 x forward FLOPs per image, torch's flop counter) and its share of the peak;
3. sampling the 32 ``test.json`` conditions: DDPM-1000, DDIM-50 (eta 0 and 1), DPM-Solver++-20 with
   classifier-free guidance in one batched call and in two calls: wall time, network
   evaluations, and the judge's accuracy when a trained ``cpu`` run and a judge exist;
4. per profile: parameters, forward FLOPs per image, peak RSS of a few training steps
   (each in a fresh process).

Prints one table and writes the figures as JSON. Timings depend on what else runs on the
machine: the load average before and after is recorded, run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_data import PngFolder  # noqa: E402

from labkit import data as data_module  # noqa: E402
from labkit.config import get_config  # noqa: E402
from labkit.model import build_model, count_parameters, flops_per_image  # noqa: E402
from labkit.runtime import autocast, cpu_supports_bf16, get_device  # noqa: E402
from labkit.schedules import NoiseSchedule  # noqa: E402


# ---- 1. the machine's matmul peak ------------------------------------------------------------------
def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 6) -> float:
    """GFLOP/s of the best of ``repeats`` (size x size) @ (size x size) products in ``dtype``."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


# ---- 2. training throughput --------------------------------------------------------------------------
def reference_step_rate(config, training_set, source, steps: int, *, cached: bool, channels_last: bool,
                        precision: str, compile_model: bool) -> float:
    """Images/s of a plain training loop on labkit's UNet; the flags switch one lever each.

    Reference (all flags off): fp32, NCHW, a DataLoader decoding and resizing PNGs every epoch,
    ``loss.item()`` every step, no EMA. ``steps`` timed steps after 2 warm-up steps.
    """
    from labkit.train import diffusion_loss

    torch.manual_seed(0)
    device = torch.device("cpu")
    model = build_model(config.model, config.data.image_size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    network = torch.compile(model) if compile_model else model
    schedule = NoiseSchedule.from_config(config.diffusion)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr)
    batch_size = config.train.batch_size
    if cached:
        def batches():
            generator = torch.Generator().manual_seed(0)
            while True:  # one shuffled epoch after another
                order = torch.randperm(len(training_set), generator=generator)
                for start in range(0, len(order) - batch_size + 1, batch_size):
                    index = order[start : start + batch_size]
                    yield data_module.to_model_range(training_set.images[index]), training_set.labels[index]
    else:
        folder = PngFolder(source.image_dir, training_set.names, config.data.image_size)
        labels_by_index = training_set.labels

        class WithLabels(torch.utils.data.Dataset):
            def __len__(self):
                return len(folder)

            def __getitem__(self, index):
                return folder[index], labels_by_index[index]

        loader = DataLoader(WithLabels(), batch_size=batch_size, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(0))

        def batches():
            while True:
                yield from loader
    stream = batches()
    total = 0.0
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        x0, labels = next(stream)
        if channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            loss = diffusion_loss(network, schedule, x0, labels, config.train.cond_drop_prob,
                                  config.diffusion.min_snr_gamma)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()  # the students' per-step sync
    return steps * batch_size / (time.perf_counter() - start)


def labkit_trainer_rate(config, training_set, steps: int) -> float:
    """Images/s of ``labkit.train.train`` (EMA, grad clipping, logging, no checkpoints) over ``steps`` warm steps."""
    from labkit.train import train

    config = copy.deepcopy(config)
    with tempfile.TemporaryDirectory(prefix="labkit_bench_") as folder:
        config.train.runs_dir, config.train.run_name = folder, "bench"
        config.train.steps = 2 + steps
        config.train.log_every = steps + 2  # one window; the rate is measured inside it, after the first step
        config.train.preview_every = config.train.eval_every = 0
        config.train.checkpoint_every = 10**9
        result = train(config, resume=False, progress=False, training_set=training_set)
    return result.images_per_s


# ---- 3. sampling -------------------------------------------------------------------------------------
def sampling_rows(config, ddpm_images: int) -> list[dict]:
    """Wall time, network evaluations and (when a trained run and judge exist) accuracy per sampler."""
    from labkit import lab
    from labkit.sample import sample_conditions

    source = data_module.resolve_source(config.data, render=False)
    conditions = source.conditions("test")
    labels = source.label_space.encode(conditions)
    judge = None
    try:
        from labkit.evaluate import judge_paths, load_course_judge, load_judge
        from labkit.train import find_checkpoint, load_model

        find_checkpoint(config.run_dir)
        model, schedule, _ = load_model(config=config)
        trained = True
        if load_course_judge(config) is not None or judge_paths(config)[0].is_file():
            judge = load_judge(config, progress=False)  # never trains one here
    except FileNotFoundError:
        model = build_model(config.model, config.data.image_size).eval()
        schedule = NoiseSchedule.from_config(config.diffusion)
        trained = False
    rows = []
    for name, steps, eta, mode, count in (
        ("ddpm", schedule.num_train_timesteps, 0.0, "batched", ddpm_images),
        ("ddim", 50, 0.0, "batched", 32),
        ("ddim", 50, 1.0, "batched", 32),
        ("dpmsolver++", 20, 0.0, "batched", 32),
        ("dpmsolver++", 20, 0.0, "separate", 32),
    ):
        result = sample_conditions(model, schedule, conditions[:count], config, source.label_space, sampler=name,
                                   num_inference_steps=steps, eta=eta, cfg_mode=mode, progress=False)
        if eta:
            name = f"{name} eta={eta:g}"
        row = {"sampler": name, "steps": steps, "cfg": mode, "images": count,
               "network_evaluations_per_image": result.network_evaluations,
               "seconds_per_image": result.wall_s / count, "accuracy": None}
        if trained and judge is not None:
            accuracy = judge.accuracy(lab.upsample_for_output(result.images), labels[:count], split="test")
            row["accuracy"], row["judge"] = accuracy.accuracy, judge.name
        rows.append(row)
    return rows, trained


# ---- 4. per profile --------------------------------------------------------------------------------
RSS_CHILD = """
import json, resource, sys, tempfile, torch
sys.path.insert(0, {root!r})
from labkit.config import get_config
from labkit.train import train
sys.path.insert(0, {tests!r})
from factories import make_training_set
config = get_config({profile!r})
config.train.batch_size = min(config.train.batch_size, {batch})
folder = tempfile.mkdtemp()
config.train.runs_dir, config.train.run_name, config.train.steps = folder, "rss", 2
config.train.log_every, config.train.preview_every, config.train.eval_every = 1, 0, 0
training_set = make_training_set(__import__("pathlib").Path(folder), count=max(64, config.train.batch_size),
                                 size=config.data.image_size)
train(config, resume=False, progress=False, training_set=training_set)
print(json.dumps({{"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "batch_size": config.train.batch_size}}))
"""


def profile_rows(gpu_batch_for_rss: int) -> list[dict]:
    """FLOPs and parameters of each profile's model; peak RSS of 2 training steps in a fresh process
    (at the profile's batch size, except the gpu profile: ``gpu_batch_for_rss`` so that it finishes on a CPU)."""
    rows = []
    for profile in ("smoke", "cpu", "gpu"):
        config = get_config(profile)
        with torch.device("meta"):
            model = build_model(config.model, config.data.image_size)
        flops = flops_per_image(model)
        child = RSS_CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"), profile=profile,
                                 batch=gpu_batch_for_rss if profile == "gpu" else 10**6)
        output = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=900,
                                env={**os.environ, "TQDM_DISABLE": "1"})
        rss = json.loads(output.stdout.strip().splitlines()[-1]) if output.returncode == 0 else {"error": output.stderr[-500:]}
        rows.append({"profile": profile, "backend": config.model.backend, "image_size": config.data.image_size,
                     "parameters": count_parameters(model), "forward_gflops_per_image": flops / 1e9,
                     "train_rss": rss})
    return rows


def training_table(profile: str, steps: int, with_compile: bool, fp32_peak: float) -> dict:
    """Images/s of the reference loop, each lever alone and labkit's trainer on ``profile``'s UNet and batch."""
    config = get_config(profile)
    source = data_module.resolve_source(config.data)
    training_set = data_module.load_training_set(config.data, source=source)
    with torch.device("meta"):
        forward_flops = flops_per_image(build_model(config.model, config.data.image_size))
    variants = [
        ("reference (fp32, PNG DataLoader, .item() per step)", dict(cached=False, channels_last=False, precision="fp32", compile_model=False)),
        ("+ cached uint8 data", dict(cached=True, channels_last=False, precision="fp32", compile_model=False)),
        ("+ channels_last", dict(cached=False, channels_last=True, precision="fp32", compile_model=False)),
        ("+ bf16 autocast", dict(cached=False, channels_last=False, precision="bf16", compile_model=False)),
    ]
    if with_compile:
        variants.append(("+ torch.compile", dict(cached=False, channels_last=False, precision="fp32", compile_model=True)))
    rows = []
    for name, flags in variants:
        try:
            rate = reference_step_rate(config, training_set, source, steps, **flags)
        except Exception as error:  # e.g. no compiler for torch.compile on this machine
            print(f"{name}: failed ({type(error).__name__}: {error})")
            continue
        rows.append({"variant": name, "images_per_s": rate})
    rows.append({"variant": f"labkit trainer ({config.train.precision} -> "
                            f"{'bf16' if cpu_supports_bf16() else 'fp32'}, channels_last, cached, EMA)",
                 "images_per_s": labkit_trainer_rate(config, training_set, steps)})
    reference = rows[0]["images_per_s"]
    for row in rows:
        row["speedup"] = row["images_per_s"] / reference
        row["achieved_gflops"] = row["images_per_s"] * 3 * forward_flops / 1e9
        row["share_of_fp32_matmul_peak"] = row["achieved_gflops"] / fp32_peak
    return {"model": f"{profile} profile ({config.model.backend}, {config.data.image_size}px, "
                     f"batch {config.train.batch_size})",
            "forward_gflops_per_image": forward_flops / 1e9, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per variant (default 20)")
    parser.add_argument("--ddpm-images", type=int, default=32, help="test.json images sampled with DDPM-1000")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile lever")
    parser.add_argument("--training-profiles", default="cpu,smoke", help="profiles whose UNet the training table measures")
    parser.add_argument("--skip-sampling", action="store_true", help="leave out the sampling table")
    parser.add_argument("--skip-profiles", action="store_true", help="leave out the per-profile FLOPs and RSS table")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "run.json"))
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    started = time.perf_counter()
    results: dict = {"machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                 "torch": torch.__version__, "native_bf16": cpu_supports_bf16(),
                                 "device": str(get_device()), "load_average_before": os.getloadavg()[0]}}

    results["matmul_gflops"] = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}

    results["training"] = [training_table(name, args.steps, not args.no_compile, results["matmul_gflops"]["fp32"])
                           for name in args.training_profiles.split(",")]
    config = get_config("cpu")
    if not args.skip_sampling:
        results["sampling"], trained = sampling_rows(config, args.ddpm_images)
        results["sampling_model"] = "trained cpu run" if trained else "untrained cpu-profile UNet (timings only)"
    if not args.skip_profiles:
        results["profiles"] = profile_rows(gpu_batch_for_rss=16)
    results["machine"]["load_average_after"] = os.getloadavg()[0]
    results["wall_s"] = time.perf_counter() - started
    print_table(results)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nfigures written to {path}")


def print_table(results: dict) -> None:
    machine = results["machine"]
    print(f"\nmachine: {machine['cpu_count']} cores, {machine['torch_threads']} torch threads, torch {machine['torch']}, "
          f"native bf16: {machine['native_bf16']}, load {machine['load_average_before']:.2f} -> {machine['load_average_after']:.2f}")
    peaks = results["matmul_gflops"]
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    for training in results["training"]:
        print(f"\ntraining, {training['model']}, {training['forward_gflops_per_image']:.3f} forward GFLOPs/image")
        print(f"{'variant':58s} {'img/s':>7s} {'x ref':>6s} {'GFLOP/s':>8s} {'% fp32 peak':>11s}")
        for row in training["rows"]:
            print(f"{row['variant']:58s} {row['images_per_s']:7.1f} {row['speedup']:6.2f} {row['achieved_gflops']:8.1f} "
                  f"{100 * row['share_of_fp32_matmul_peak']:10.1f}%")
    if "sampling" not in results:
        print(f"\nbenchmark wall time {results['wall_s']:.0f} s")
        return
    print(f"\nsampling test.json ({results['sampling_model']})")
    print(f"{'sampler':14s} {'steps':>5s} {'cfg':>9s} {'net evals':>9s} {'s/image':>8s} {'x DDPM':>7s} {'accuracy':>9s}")
    ddpm = results["sampling"][0]["seconds_per_image"]
    for row in results["sampling"]:
        accuracy = f"{row['accuracy']:.3f}" if row["accuracy"] is not None else "-"
        print(f"{row['sampler']:14s} {row['steps']:5d} {row['cfg']:>9s} {row['network_evaluations_per_image']:9d} "
              f"{row['seconds_per_image']:8.3f} {ddpm / row['seconds_per_image']:7.1f} {accuracy:>9s}")
    if results["sampling"][0]["accuracy"] is not None:
        print(f"(accuracy by the {results['sampling'][0]['judge']})")
    if "profiles" in results:
        print(f"\n{'profile':8s} {'backend':10s} {'size':>4s} {'parameters':>11s} {'GFLOPs/img':>10s} {'train RSS MiB':>14s}")
        for row in results["profiles"]:
            rss = row["train_rss"]
            rss_text = f"{rss['rss_mib']:.0f} (b{rss['batch_size']})" if "rss_mib" in rss else "failed"
            print(f"{row['profile']:8s} {row['backend']:10s} {row['image_size']:4d} {row['parameters']:11,d} "
                  f"{row['forward_gflops_per_image']:10.3f} {rss_text:>14s}")
    print(f"\nbenchmark wall time {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
