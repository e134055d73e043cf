"""The lab's performance table, in one run on this machine (about 15 minutes on 2 CPU cores).

    .venv/bin/python benchmarks/run.py [--steps 20] [--ddpm-images 64] [--training-profiles cpu,smoke]
                                       [--no-compile] [--skip-sampling] [--skip-profiles]
                                       [--json benchmarks/results/run.json]

Measures, on each profile's UNet at its resolution and batch size (training: ``cpu`` and ``smoke``;
sampling: ``cpu``):

1. matrix-multiply peak (GFLOP/s) in fp32 and bf16 (2048^3 matmuls): the machine's limit;
2. training images/s: a students'-style reference loop (fp32, a DataLoader decoding PNGs every
   epoch, ``loss.item()`` every step), the same loop with one lever at a time (cached uint8
   data, channels_last, bf16 autocast, torch.compile, sub-pixel upsampling), and ``labkit.train.train``
   itself with its automatic choices, in one process and (``cpu`` profile) as 2 data-parallel
   processes of one thread each under ``accelerate launch``; achieved GFLOP/s (3 x forward FLOPs per image, torch's flop counter)
   and its share of the matmul peak *in the row's dtype*;
3. per profile (``smoke``, ``cpu``, ``gpu``), each in a fresh process: parameters, forward FLOPs per
   image, ``labkit.train.train``'s images/s, achieved GFLOP/s and share of the matmul peak in its
   dtype, and the peak RSS (the ``gpu`` profile at batch 16 so that it finishes on a CPU);
4. sampling the 64 conditions of ``test.json`` and ``new_test.json``: DDPM-1000, DDIM-50 (eta 0 and 1),
   DPM-Solver++-20 with classifier-free guidance in one batched call and in two calls: wall time,
   network evaluations, and the judge's accuracy (course formula over both files) when a trained
   ``cpu`` run and a judge exist (``python -m labkit lab`` makes both);
5. the performance targets, each with its measured ratio.

Prints one table and writes the figures as JSON. Timings depend on what else runs on the
machine: the load average before and after is recorded, run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_data import PngFolder  # noqa: E402

from labkit import data as data_module  # noqa: E402
from labkit.config import get_config  # noqa: E402
from labkit.model import build_model, count_parameters, flops_per_image, use_subpixel_upsampling  # noqa: E402
from labkit.runtime import autocast, cpu_supports_bf16, get_device  # noqa: E402
from labkit.schedules import NoiseSchedule  # noqa: E402


# ---- 1. the machine's matmul peak ------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device | None = None, size: int = 2048, repeats: int = 6) -> float:
    """GFLOP/s of the best of ``repeats`` (size x size) @ (size x size) products in ``dtype`` on ``device``
    (default: labkit's device; 8192 on a GPU, where 2048 would not fill it)."""
    device = device or get_device()
    size = 8192 if device.type == "cuda" else size
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b  # warm-up
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


# ---- 2. training throughput --------------------------------------------------------------------------
def reference_step_rate(config, training_set, source, steps: int, *, cached: bool, channels_last: bool,
                        precision: str, compile_model: bool, subpixel: bool) -> float:
    """Images/s of a plain training loop on labkit's UNet; the flags switch one lever each.

    Reference (all flags off): fp32, NCHW, a DataLoader decoding and resizing PNGs every epoch,
    ``loss.item()`` every step, no EMA, upsampling as nearest x2 then a 3x3 conv.
    ``steps`` timed steps after 2 warm-up steps.
    """
    from labkit.train import diffusion_loss

    torch.manual_seed(0)
    device = get_device()
    model = build_model(config.model, config.data.image_size).to(device)
    use_subpixel_upsampling(model, subpixel)
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
            synchronize(device)
            start = time.perf_counter()
        x0, labels = next(stream)
        x0, labels = x0.to(device), labels.to(device)
        if channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            loss = diffusion_loss(network, schedule, x0, labels, config.train.cond_drop_prob,
                                  config.diffusion.min_snr_gamma)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()  # the students' per-step sync
    synchronize(device)
    return steps * batch_size / (time.perf_counter() - start)


def labkit_trainer_rate(config, training_set, steps: int, warmup: int = 2) -> dict:
    """Images/s of ``labkit.train.train`` (EMA, grad clipping, logging, no checkpoints) over
    ``steps`` steps after ``warmup`` steps, the same window as the reference loop's.

    The log is read every ``warmup`` steps (so the window can start after the warm-up); labkit's
    default reads it every 25-50 steps. Returns {"images_per_s", "precision", "channels_last"}
    (images_per_s is None on the other processes of a data-parallel run).
    """
    from labkit.runtime import resolve_channels_last, resolve_precision
    from labkit.train import train

    config = copy.deepcopy(config)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="labkit_bench_") as folder:
        config.train.runs_dir, config.train.run_name = folder, "bench"
        config.train.steps = warmup + steps
        config.train.log_every = warmup if steps % warmup == 0 else 1
        config.train.preview_every = config.train.eval_every = 0
        config.train.checkpoint_every = 10**9
        train(config, resume=False, progress=False, training_set=training_set, on_log=rows.append)
    device = get_device()
    precision = resolve_precision(config.train.precision, device)
    rate = None  # only the main process logs (under accelerate launch)
    if rows:
        first, last = next(row for row in rows if row["step"] == warmup), rows[-1]
        rate = (last["step"] - first["step"]) * config.train.batch_size / (last["elapsed_s"] - first["elapsed_s"])
    return {"images_per_s": rate,
            "precision": precision,
            "channels_last": resolve_channels_last(config.train.channels_last, device, precision)}


# ---- 3. sampling -------------------------------------------------------------------------------------
SAMPLERS = (  # name, steps (None: all training steps), eta, cfg mode
    ("ddpm", None, 0.0, "batched"),
    ("ddim", 50, 0.0, "batched"),
    ("ddim", 50, 1.0, "batched"),
    ("dpmsolver++", 20, 0.0, "batched"),
    ("dpmsolver++", 20, 0.0, "separate"),
)


def sampling_rows(config, ddpm_images: int) -> tuple[list[dict], bool]:
    """Wall time, network evaluations and (when a trained run and judge exist) accuracy per sampler,
    on the conditions of test.json followed by new_test.json (DDPM on the first ``ddpm_images``)."""
    from labkit import lab
    from labkit.sample import sample_conditions

    source = data_module.resolve_source(config.data, render=False)
    conditions = [labels for split in lab.SPLITS for labels in source.conditions(split)]
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
    for name, steps, eta, mode in SAMPLERS:
        steps = steps or schedule.num_train_timesteps
        count = ddpm_images if name == "ddpm" else len(conditions)
        result = sample_conditions(model, schedule, conditions[:count], config, source.label_space, sampler=name,
                                   num_inference_steps=steps, eta=eta, cfg_mode=mode, progress=False)
        row = {"sampler": f"{name} eta={eta:g}" if eta else name, "steps": steps, "cfg": mode, "images": count,
               "guidance_scale": config.sample.guidance_scale, "precision": result.settings["precision"],
               "network_evaluations_per_image": result.network_evaluations,
               "seconds_per_image": result.wall_s / count, "accuracy": None}
        if trained and judge is not None:
            accuracy = judge.accuracy(lab.upsample_for_output(result.images), labels[:count])  # over both files
            row.update(accuracy=accuracy.accuracy, hits=accuracy.hits, objects=accuracy.total, judge=judge.name)
        rows.append(row)
    return rows, trained


# ---- 4. per profile, each in a fresh process ------------------------------------------------------------
PROFILE_CHILD = """
import json, resource, sys, pathlib, tempfile
sys.path[:0] = [{root!r}, {benchmarks!r}, {tests!r}]
from factories import make_training_set
from labkit.config import get_config
from run import labkit_trainer_rate
config = get_config({profile!r})
config.train.batch_size = min(config.train.batch_size, {batch})
training_set = make_training_set(pathlib.Path(tempfile.mkdtemp()), count=max(64, 2 * config.train.batch_size),
                                 size=config.data.image_size)
rate = labkit_trainer_rate(config, training_set, steps={steps}, warmup=2)
rate.update(rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, batch_size=config.train.batch_size)
import torch
if torch.cuda.is_available():
    rate["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
print(json.dumps(rate))
"""


def profile_rows(peaks: dict, gpu_batch: int, steps: int) -> list[dict]:
    """Per profile: parameters and forward FLOPs of its model; in a fresh process, ``labkit.train.train``
    at the profile's batch size (the gpu profile at ``gpu_batch``) for 2 warm-up and ``steps`` timed
    steps: images/s, achieved GFLOP/s, share of the matmul peak in its dtype, peak RSS."""
    rows = []
    for profile in ("smoke", "cpu", "gpu"):
        config = get_config(profile)
        with torch.device("meta"):
            model = build_model(config.model, config.data.image_size)
        flops = flops_per_image(model)
        child = PROFILE_CHILD.format(root=str(ROOT), benchmarks=str(ROOT / "benchmarks"), tests=str(ROOT / "tests"),
                                     profile=profile, batch=gpu_batch if profile == "gpu" else 10**6,
                                     steps=steps)
        output = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=1200,
                                env={**os.environ, "TQDM_DISABLE": "1"})
        row = {"profile": profile, "backend": config.model.backend, "image_size": config.data.image_size,
               "parameters": count_parameters(model), "forward_gflops_per_image": flops / 1e9}
        if output.returncode == 0:
            measured = json.loads(output.stdout.strip().splitlines()[-1])
            row.update(measured)
            row["achieved_gflops"] = measured["images_per_s"] * 3 * flops / 1e9
            row["share_of_matmul_peak"] = row["achieved_gflops"] / peaks[measured["precision"]]
        else:
            row["error"] = output.stderr[-800:]
        rows.append(row)
    return rows


DATA_PARALLEL_CHILD = """
import json, sys
sys.path[:0] = [{root!r}, {benchmarks!r}]
import torch
from accelerate import PartialState
from labkit import data as data_module
from labkit.config import get_config
from run import labkit_trainer_rate
torch.set_num_threads(1)
config = get_config({profile!r})
training_set = data_module.load_training_set(config.data, source=data_module.resolve_source(config.data, render=False))
rate = labkit_trainer_rate(config, training_set, steps={steps})
if PartialState().is_main_process:
    print("RESULT " + json.dumps(rate))
"""


def data_parallel_rate(profile: str, steps: int, processes: int = 2) -> dict | None:
    """``labkit.train.train`` as ``processes`` data-parallel processes of one thread each
    (``accelerate launch``, gloo on CPU), same global batch; None when the launch fails."""
    child = DATA_PARALLEL_CHILD.format(root=str(ROOT), benchmarks=str(ROOT / "benchmarks"), profile=profile, steps=steps)
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as file:
        file.write(child)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", "29561", file.name]
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=900,
                                env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})
    finally:
        os.unlink(file.name)
    lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
    if output.returncode != 0 or not lines:
        print(f"data-parallel run failed: {output.stderr[-800:]}")
        return None
    return json.loads(lines[-1][len("RESULT "):])


# ---- 2b. the training table ---------------------------------------------------------------------------
def training_table(profile: str, steps: int, with_compile: bool, peaks: dict, with_data_parallel: bool = True) -> dict:
    """Images/s of the reference loop, each lever alone and labkit's trainer on ``profile``'s UNet and batch."""
    config = get_config(profile)
    source = data_module.resolve_source(config.data)
    training_set = data_module.load_training_set(config.data, source=source)
    with torch.device("meta"):
        forward_flops = flops_per_image(build_model(config.model, config.data.image_size))
    reference = dict(cached=False, channels_last=False, precision="fp32", compile_model=False, subpixel=False)
    variants = [
        ("reference (fp32, PNG DataLoader, .item() per step)", reference),
        ("+ cached uint8 data", {**reference, "cached": True}),
        ("+ channels_last", {**reference, "channels_last": True}),
        ("+ bf16 autocast", {**reference, "precision": "bf16"}),
        ("+ sub-pixel upsampling", {**reference, "subpixel": True}),
    ]
    if with_compile:
        variants.append(("+ torch.compile", {**reference, "compile_model": True}))
    rows = []
    for name, flags in variants:
        try:
            rate = reference_step_rate(config, training_set, source, steps, **flags)
        except Exception as error:  # e.g. no compiler for torch.compile on this machine
            print(f"{name}: failed ({type(error).__name__}: {error})")
            continue
        rows.append({"variant": name, "images_per_s": rate, "precision": flags["precision"]})
    trainer = labkit_trainer_rate(config, training_set, steps)
    layout = "channels_last" if trainer["channels_last"] else "NCHW"
    rows.append({"variant": f"labkit trainer ({config.train.precision} -> {trainer['precision']}, {layout}, cached, EMA)",
                 "images_per_s": trainer["images_per_s"], "precision": trainer["precision"]})
    if with_data_parallel and get_device().type == "cpu" and (os.cpu_count() or 1) >= 2:
        parallel = data_parallel_rate(profile, steps)
        if parallel is not None:
            rows.append({"variant": "labkit trainer, 2 processes x 1 thread (accelerate launch)",
                         "images_per_s": parallel["images_per_s"], "precision": parallel["precision"]})
    reference_rate = rows[0]["images_per_s"]
    for row in rows:
        row["speedup"] = row["images_per_s"] / reference_rate
        row["achieved_gflops"] = row["images_per_s"] * 3 * forward_flops / 1e9
        row["share_of_matmul_peak"] = row["achieved_gflops"] / peaks[row["precision"]]
    return {"profile": profile,
            "model": f"{profile} profile ({config.model.backend}, {config.data.image_size}px, batch {config.train.batch_size})",
            "forward_gflops_per_image": forward_flops / 1e9, "rows": rows}


# ---- 5. targets ----------------------------------------------------------------------------------------
def targets(results: dict) -> list[dict]:
    """Each performance target with its measured figure and whether it is met."""
    found = []
    for training in results.get("training", []):
        if training["profile"] == "cpu":
            for row in training["rows"]:
                if row["variant"].startswith("labkit trainer"):
                    ratio = row["speedup"]
                    found.append({"target": f"{row['variant']} >= 2x the reference loop (cpu-profile UNet)",
                                  "measured": f"{ratio:.2f}x", "met": ratio >= 2.0})
    rows = {(row["sampler"], row["cfg"]): row for row in results.get("sampling", [])}
    ddpm, fast = rows.get(("ddpm", "batched")), rows.get(("dpmsolver++", "batched"))
    if ddpm and fast:
        speedup = ddpm["seconds_per_image"] / fast["seconds_per_image"]
        found.append({"target": "DPM-Solver++-20 (batched CFG) >= 40x faster per image than DDPM-1000",
                      "measured": f"{speedup:.1f}x", "met": speedup >= 40})
        if ddpm["accuracy"] is not None and ddpm["images"] == fast["images"]:
            gap = fast["accuracy"] - ddpm["accuracy"]
            found.append({"target": "... with accuracy within 0.02 of DDPM-1000",
                          "measured": f"{fast['accuracy']:.3f} vs {ddpm['accuracy']:.3f} ({gap:+.3f}, {ddpm['judge']})",
                          "met": gap >= -0.02})
    for row in results.get("profiles", []):
        if row["profile"] == "gpu" and "share_of_matmul_peak" in row:
            share = row["share_of_matmul_peak"]
            found.append({"target": "training at >= 30% of the matmul peak in its dtype (gpu-profile UNet)",
                          "measured": f"{100 * share:.0f}% of the {row['precision']} peak", "met": share >= 0.30})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per variant (default 20)")
    parser.add_argument("--ddpm-images", type=int, default=64,
                        help="conditions sampled with DDPM-1000 (default 64: all of test.json and new_test.json)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile lever")
    parser.add_argument("--training-profiles", default="cpu,smoke", help="profiles whose UNet the training table measures")
    parser.add_argument("--gpu-batch", type=int, default=None,
                        help="batch of the gpu-profile UNet in the per-profile rows (default: 16 on a CPU, the profile's on a GPU)")
    parser.add_argument("--skip-sampling", action="store_true", help="leave out the sampling table")
    parser.add_argument("--skip-profiles", action="store_true", help="leave out the per-profile table")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "run.json"))
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    started = time.perf_counter()
    results: dict = {"machine": {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                 "torch": torch.__version__, "native_bf16": cpu_supports_bf16(),
                                 "device": str(get_device()), "load_average_before": os.getloadavg()[0]},
                     "date": time.strftime("%Y-%m-%d")}

    results["matmul_gflops"] = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    if get_device().type == "cuda":
        results["matmul_gflops"]["fp16"] = matmul_peak(torch.float16)
    peaks = results["matmul_gflops"]
    results["training"] = [training_table(name, args.steps, not args.no_compile, peaks, with_data_parallel=name == "cpu")
                           for name in args.training_profiles.split(",") if name]
    if not args.skip_profiles:
        gpu_batch = args.gpu_batch or (16 if get_device().type == "cpu" else get_config("gpu").train.batch_size)
        results["profiles"] = profile_rows(peaks, gpu_batch=gpu_batch, steps=4)
    if not args.skip_sampling:
        results["sampling"], trained = sampling_rows(get_config("cpu"), args.ddpm_images)
        results["sampling_model"] = "trained cpu run" if trained else "untrained cpu-profile UNet (timings only)"
    results["targets"] = targets(results)
    results["machine"]["load_average_after"] = os.getloadavg()[0]
    results["wall_s"] = time.perf_counter() - started
    print_table(results)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nfigures written to {path}")


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def print_table(results: dict) -> None:
    machine = results["machine"]
    print(f"\nmachine: {machine['cpu']}, {machine['cpu_count']} cores, {machine['torch_threads']} torch threads, "
          f"torch {machine['torch']}, native bf16: {machine['native_bf16']}, "
          f"load {machine['load_average_before']:.2f} -> {machine['load_average_after']:.2f}")
    peaks = results["matmul_gflops"]
    print(f"matmul peak on {machine['device']}: " + ", ".join(f"{dtype} {value:.0f} GFLOP/s" for dtype, value in peaks.items()))
    for training in results["training"]:
        print(f"\ntraining, {training['model']}, {training['forward_gflops_per_image']:.3f} forward GFLOPs/image")
        print(f"{'variant':62s} {'img/s':>7s} {'x ref':>6s} {'GFLOP/s':>8s} {'% peak (dtype)':>15s}")
        for row in training["rows"]:
            print(f"{row['variant']:62s} {row['images_per_s']:7.1f} {row['speedup']:6.2f} {row['achieved_gflops']:8.1f} "
                  f"{100 * row['share_of_matmul_peak']:8.1f}% {row['precision']:>5s}")
    if "profiles" in results:
        print(f"\n{'profile':8s} {'backend':10s} {'size':>4s} {'parameters':>11s} {'GFLOPs/img':>10s} {'batch':>5s} "
              f"{'img/s':>7s} {'GFLOP/s':>8s} {'% peak (dtype)':>15s} {'RSS MiB':>8s}")
        for row in results["profiles"]:
            if "error" in row:
                print(f"{row['profile']:8s} failed: {row['error'][-300:]}")
                continue
            gpu_memory = f"  GPU {row['gpu_peak_mib']:.0f} MiB" if "gpu_peak_mib" in row else ""
            print(f"{row['profile']:8s} {row['backend']:10s} {row['image_size']:4d} {row['parameters']:11,d} "
                  f"{row['forward_gflops_per_image']:10.3f} {row['batch_size']:5d} {row['images_per_s']:7.2f} "
                  f"{row['achieved_gflops']:8.1f} {100 * row['share_of_matmul_peak']:8.1f}% {row['precision']:>5s} "
                  f"{row['rss_mib']:8.0f}{gpu_memory}")
    if "sampling" in results:
        print(f"\nsampling test.json + new_test.json ({results['sampling_model']})")
        print(f"{'sampler':14s} {'steps':>5s} {'cfg':>9s} {'images':>6s} {'net evals':>9s} {'s/image':>8s} {'x DDPM':>7s} "
              f"{'accuracy':>9s}")
        ddpm = results["sampling"][0]["seconds_per_image"]
        for row in results["sampling"]:
            accuracy = f"{row['accuracy']:.3f}" if row["accuracy"] is not None else "-"
            print(f"{row['sampler']:14s} {row['steps']:5d} {row['cfg']:>9s} {row['images']:6d} "
                  f"{row['network_evaluations_per_image']:9d} {row['seconds_per_image']:8.3f} "
                  f"{ddpm / row['seconds_per_image']:7.1f} {accuracy:>9s}")
        first = results["sampling"][0]
        if first["accuracy"] is not None:
            print(f"(accuracy: top-k hits / objects over both files, by the {first['judge']}, w = {first['guidance_scale']:g})")
    if results.get("targets"):
        print("\ntargets")
        for target in results["targets"]:
            print(f"  [{'met' if target['met'] else 'SHORT'}] {target['target']}: {target['measured']}")
    print(f"\nbenchmark wall time {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
