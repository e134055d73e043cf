"""The GPU path on a CPU: precision per GPU capability, fp16 with a GradScaler, the off-device data
path, and the gpu profile's code (diffusers backend, 64x64, official layout, evaluation during
training, best.pt, resume) at toy size."""

from __future__ import annotations

import pytest
import torch

from factories import make_tiny_config, make_training_set
from labkit import runtime
from labkit.model import build_model
from labkit.runtime import choose_precision, resolve_precision
from labkit.schedules import NoiseSchedule
from labkit.train import diffusion_loss, make_batch, optimizer_step, place_training_set, read_log, train

GPUS = {  # name, compute capability, what is_bf16_supported() answers by default (emulation included)
    "Tesla T4": ((7, 5), True),
    "Tesla V100-SXM2-16GB": ((7, 0), True),
    "NVIDIA A100-SXM4-40GB": ((8, 0), True),
    "NVIDIA H100 80GB HBM3": ((9, 0), True),
}


def fake_gpu(monkeypatch, name: str) -> None:
    """Make torch.cuda describe ``name`` (capability, name, bf16 answers) without a GPU."""
    capability, emulated_answer = GPUS[name]
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return capability[0] >= 8 or (including_emulation and emulated_answer)

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)


# ---- 1. precision by capability ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, expected",
    [("Tesla T4", "fp16"), ("Tesla V100-SXM2-16GB", "fp16"), ("NVIDIA A100-SXM4-40GB", "bf16"), ("NVIDIA H100 80GB HBM3", "bf16")],
)
def test_auto_precision_follows_the_gpu_capability(monkeypatch, name, expected):
    fake_gpu(monkeypatch, name)
    assert torch.cuda.is_bf16_supported()  # the default answer is True on all four: it cannot decide
    choice = choose_precision("auto", torch.device("cuda"))
    assert choice.name == expected
    assert choice.grad_scaler == (expected == "fp16")
    major, minor = GPUS[name][0]
    assert f"{name} (compute capability {major}.{minor})" in choice.reason
    assert ("runs bf16 natively" in choice.reason) == (expected == "bf16")


def test_explicit_precision_on_a_gpu_is_kept_and_emulated_bf16_is_flagged(monkeypatch):
    fake_gpu(monkeypatch, "Tesla T4")
    assert choose_precision("fp32", torch.device("cuda")).name == "fp32"
    bf16 = choose_precision("bf16", torch.device("cuda"))
    assert bf16.name == "bf16" and "only emulates bf16" in bf16.reason and "train.precision = auto" in bf16.reason
    fake_gpu(monkeypatch, "NVIDIA H100 80GB HBM3")
    assert choose_precision("fp16", torch.device("cuda:0")).name == "fp16"


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_a_cpu_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: native)
    cpu = torch.device("cpu")
    choice = choose_precision("auto", cpu)
    assert choice.name == expected and not choice.grad_scaler
    assert ("native bf16 units" in choice.reason) == native
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("fp16", cpu) == expected  # fp16 on a CPU: bf16 where native, else fp32
    with pytest.raises(ValueError, match="train.precision must be one of auto, bf16, fp16, fp32"):
        choose_precision("half", cpu)


def test_training_prints_its_precision_and_data_path(tmp_path, capsys):
    config = make_tiny_config(tmp_path, **{"train.steps": 2, "train.precision": "fp32"})
    train(config, resume=False, progress=False, training_set=make_training_set(tmp_path, count=8))
    printed = capsys.readouterr().out
    assert "precision fp32: as asked (train.precision = fp32)" in printed
    assert "data: training set (8 images" in printed and "in cpu memory" in printed


# ---- the fp16 step ---------------------------------------------------------------------------------------------
def test_fp16_step_scales_unscales_before_clipping_and_skips_overflow(monkeypatch):
    """What this proves on a CPU (fp16 autocast and GradScaler("cpu") run on CPUs in torch >= 2.3): the
    trainer's step under fp16 autocast gives a finite loss and moves the weights through a GradScaler;
    clipping sees the true (unscaled) gradients, not ones 1024x too large; a step with an inf gradient
    is skipped (weights unchanged) and the scale halved. It says nothing about fp16 speed or numerics
    on a GPU (the GPU check measures those)."""
    torch.manual_seed(0)
    config = small_config()
    model = build_model(config.model, 16)
    schedule = NoiseSchedule.from_config(config.diffusion)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, enabled=True)
    x0, labels = torch.rand(4, 3, 16, 16) * 2 - 1, torch.zeros(4, 24)
    labels[:, 3] = 1

    def fp16_loss():
        with torch.autocast("cpu", dtype=torch.float16):
            return diffusion_loss(model, schedule, x0, labels, generator=torch.Generator().manual_seed(0))

    fp16_loss().backward()  # the true gradient norm, without a scaler
    true_norm = torch.norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])).item()
    model.zero_grad()
    seen = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm):
        parameters = list(parameters)
        seen.append(torch.norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None])).item())
        return real_clip(parameters, max_norm)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    before = [p.detach().clone() for p in model.parameters()]
    loss = fp16_loss()
    assert torch.isfinite(loss)
    optimizer_step(loss, optimizer, scaler, model.parameters(), grad_clip=1.0)
    assert seen[0] == pytest.approx(true_norm, rel=1e-3)  # unscaled before clipping
    assert scaler.get_scale() == 2.0**10  # finite gradients: the scale is kept
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))

    weights = [p.detach().clone() for p in model.parameters()]
    overflow = next(model.parameters()).sum() * float("inf")  # an inf gradient
    optimizer_step(overflow, optimizer, scaler, model.parameters(), grad_clip=1.0)
    assert scaler.get_scale() == 2.0**9
    assert all(torch.equal(a, p) for a, p in zip(weights, model.parameters()))


def small_config():
    from labkit.config import get_config

    config = get_config("smoke")
    config.model.base_channels, config.model.norm_groups = 16, 8
    config.diffusion.num_train_timesteps = 50
    return config


# ---- 2. the batch lands on the model's device --------------------------------------------------------------------
def test_make_batch_moves_a_host_set_to_the_model_device():
    """The set stays on the CPU, the model is elsewhere ("meta" stands for the GPU here): the batch
    lands on the model's device and the flip mask is drawn on the generator's device, then moved."""
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    indices = torch.tensor([0, 3, 5, 7])
    batch = make_batch(images, indices, hflip=True, generator=torch.Generator().manual_seed(0),
                       channels_last=True, device="meta")
    assert batch.device.type == "meta" and batch.shape == (4, 3, 8, 8) and batch.dtype == torch.float32
    same = make_batch(images, indices, hflip=False, generator=None, channels_last=False)
    assert same.device.type == "cpu"
    assert torch.equal(same, images[indices].float() / 127.5 - 1)


def test_place_training_set_keeps_the_set_in_host_memory_when_asked_or_too_large(monkeypatch):
    images, labels = torch.zeros(6, 3, 8, 8, dtype=torch.uint8), torch.zeros(6, 24)
    kept, _, why = place_training_set(images, labels, torch.device("cuda"), data_on_device=False)
    assert kept is images and "train.data_on_device = false" in why and "pinned memory, non-blocking" in why
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 10**10))  # 1000 bytes free
    kept, _, why = place_training_set(images, labels, torch.device("cuda"), data_on_device=True)
    assert kept is images and "over 30% of the GPU's free" in why
    on_cpu = place_training_set(images, labels, torch.device("cpu"), data_on_device=False)
    assert on_cpu[0] is images and "the model's device" in on_cpu[2]


def test_trainer_runs_with_the_set_off_the_device(tmp_path):
    config = make_tiny_config(tmp_path, **{"train.steps": 3, "train.data_on_device": False})
    result = train(config, resume=False, progress=False, training_set=make_training_set(tmp_path, count=8))
    assert result.step == 3 and all(torch.isfinite(torch.tensor(loss)) for _, loss in result.losses)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the host-to-GPU copy)")
def test_trainer_on_a_gpu_with_the_set_in_host_memory(tmp_path, capsys):
    config = make_tiny_config(tmp_path, **{"train.steps": 3, "train.data_on_device": False})
    result = train(config, resume=False, progress=False, training_set=make_training_set(tmp_path, count=8))
    assert result.step == 3
    assert "pinned memory, non-blocking" in capsys.readouterr().out
    assert len(read_log(config.run_dir)) == 3


# ---- 3. the gpu profile's code path at toy size ------------------------------------------------------------------
def toy_gpu_config(tmp_path, data_root):
    """The gpu profile (diffusers UNet2DModel, 64x64, official data) with tiny widths and a few steps."""
    from labkit.config import get_config

    return get_config("gpu", **{
        "data.root": str(data_root), "data.synthetic_dir": str(tmp_path / "no_synthetic"),
        "data.cache_dir": str(tmp_path / "cache"), "train.runs_dir": str(tmp_path / "runs"),
        "model.base_channels": 16, "model.layers_per_block": 1, "model.norm_groups": 8, "model.attention_head_dim": 8,
        "train.steps": 4, "train.batch_size": 4, "train.log_every": 1, "train.eval_every": 2,
        "train.checkpoint_every": 2, "train.preview_every": 4, "sample.num_inference_steps": 2,
        "train.precision": "fp32",  # a GPU would choose bf16 or fp16 (tested above); on a CPU fp32 is the fast one here
    })


def test_gpu_profile_code_path_at_toy_size_with_evaluation_best_and_resume(tmp_path, capsys):
    from labkit import synth
    from labkit.evaluate import Judge, build_evaluator_network
    from labkit.lab import training_callbacks
    from labkit.train import load_model

    data_root = synth.render_dataset(tmp_path / "official", num_scenes=2, progress=False)  # official layout, 6 images
    config = toy_gpu_config(tmp_path, data_root)
    assert config.model.backend == "diffusers" and config.data.image_size == 64
    judge = Judge("untrained judge (test)", build_evaluator_network(), device="cpu")
    callbacks = training_callbacks(config, judge, progress=False)  # the lab's previews and evaluation, as run_train passes them
    first = train(config, resume=True, progress=False, stop_at_step=2, **callbacks)
    assert first.step == 2
    best = config.run_dir / "checkpoints" / "best.pt"
    assert best.exists() and first.best_accuracy is not None
    second = train(config, resume=True, progress=False, **callbacks)
    printed = capsys.readouterr().out
    assert second.step == 4 and f"resumed {config.run_dir} at step 2" in printed
    assert "data: training set (6 images" in printed
    rows = (config.run_dir / "eval.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["step", "2", "4"]
    assert torch.load(best, weights_only=False)["step"] in (2, 4)
    assert (config.run_dir / "previews" / "step_000004.png").exists()
    assert [int(row["step"]) for row in read_log(config.run_dir)] == [1, 2, 3, 4]
    model, _, saved = load_model(config.run_dir)
    assert saved.model.backend == "diffusers" and model.checkpoint_step in (2, 4)
    assert model(torch.zeros(1, 3, 64, 64), torch.tensor([5]), torch.zeros(1, 24)).shape == (1, 3, 64, 64)
