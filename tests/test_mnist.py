"""The digit track: unconditional and 10-class models, MNIST IDX files, the stand-in, train-sample-score."""

from __future__ import annotations

import struct

import pytest
import torch

from labkit import mnist
from labkit.fid import load_pngs, train_digit_classifier
from labkit.model import build_model
from labkit.sample import sample
from labkit.schedules import NoiseSchedule
from labkit.train import load_model, train


def write_idx(root, split: str, count: int, seed: int = 0) -> torch.Tensor:
    """Tiny MNIST-format files (IDX, uncompressed) under root/MNIST/raw; returns the digits."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8, generator=generator)
    digits = torch.randint(0, 10, (count,), dtype=torch.uint8, generator=generator)
    prefix = "train" if split == "train" else "t10k"
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, count, 28, 28) + images.numpy().tobytes())
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, count) + digits.numpy().tobytes())
    return digits.long()


def tiny_config(tmp_path, conditional=False, steps=4):
    return mnist.mnist_config("smoke", conditional=conditional, **{"train.runs_dir": str(tmp_path / "runs"), "train.steps": steps})


def test_unconditional_model_has_no_label_input_and_rejects_labels(tmp_path):
    config = tiny_config(tmp_path)
    model = build_model(config.model, 16)
    assert model.num_classes == 0 and model.label_embedding is None
    x_t = torch.zeros(2, 3, 16, 16)
    assert model(x_t, torch.tensor([1, 2]), None).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="labels=None exactly when"):
        model(x_t, torch.tensor([1, 2]), torch.zeros(2, 10))


def test_class_conditional_model_requires_labels(tmp_path):
    config = tiny_config(tmp_path, conditional=True)
    model = build_model(config.model, 16)
    assert model.num_classes == 10
    with pytest.raises(ValueError, match="labels=None exactly when"):
        model(torch.zeros(1, 3, 16, 16), torch.tensor([3]), None)


def test_mnist_idx_files_load_through_torchvision(tmp_path):
    digits = write_idx(tmp_path, "train", 5)
    write_idx(tmp_path, "test", 3, seed=1)
    train_set = mnist.load_digits_set("mnist", 16, root=tmp_path, conditional=True)
    assert train_set.source == mnist.MNIST_NAME
    assert train_set.images.shape == (5, 3, 16, 16) and train_set.images.dtype == torch.uint8
    assert torch.equal(train_set.digits, digits) and train_set.labels.shape == (5, 10)
    assert len(mnist.load_digits_set("auto", 16, train=False, root=tmp_path)) == 3


def test_missing_mnist_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST not found under .*raw files"):
        mnist.load_digits_set("mnist", root=tmp_path / "empty")


def test_stand_in_is_real_digits_named_as_a_stand_in(tmp_path, capsys):
    held_out = mnist.load_digits_set("auto", 28, train=False, root=tmp_path / "none")
    assert "using the offline stand-in" in capsys.readouterr().out
    assert held_out.source == mnist.STAND_IN_NAME and "not MNIST" in held_out.source
    assert held_out.images.shape == (297, 3, 28, 28) and held_out.labels is None
    assert set(held_out.digits.tolist()) == set(range(10))
    assert len(mnist.load_digits_set("stand-in", 28)) == 1500


def test_train_resume_generate_and_score_offline(tmp_path):
    config = tiny_config(tmp_path, steps=2)
    digits = mnist.load_digits_set("stand-in", config.data.image_size, max_images=64)
    train(config, resume=False, progress=False, training_set=digits)
    config.train.steps = 4
    assert train(config, resume=True, progress=False, training_set=digits).step == 4
    model, schedule, _ = load_model(config.run_dir, "last")
    result = mnist.generate(model, schedule, 6, tmp_path / "generated", num_inference_steps=3, batch_size=4, progress=False)
    mnist.generate(model, schedule, 2, tmp_path / "smaller", num_inference_steps=3, progress=False)
    mnist.generate(model, schedule, 6, tmp_path / "smaller", num_inference_steps=3, progress=False)
    mnist.generate(model, schedule, 3, tmp_path / "smaller", num_inference_steps=3, progress=False)
    assert sorted(p.name for p in (tmp_path / "smaller").iterdir()) == ["00001.png", "00002.png", "00003.png"]
    assert result.images.shape == (6, 3, 16, 16)
    generated = load_pngs(tmp_path / "generated")
    assert sorted(p.name for p in (tmp_path / "generated").iterdir())[-1] == "00006.png"
    classifier = train_digit_classifier(digits.images, digits.digits, steps=3, batch_size=16, size=16)
    scores = mnist.score(generated, digits.images[:32], classifier, digits.source)
    assert scores["domain FID"] > 0 and "FID" not in scores
    assert "not Inception FID" in mnist.describe(scores) and "not MNIST" in mnist.describe(scores)


def test_process_grid_and_guided_class_conditional_sampling(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(tmp_path, conditional=True)
    model = build_model(config.model, 16).eval()
    schedule = NoiseSchedule.from_config(config.diffusion)
    grid = mnist.process_grid(model, schedule, "ddpm", 10, rows=2, columns=4, labels=torch.eye(10)[:2])
    assert grid.shape == (8, 3, 16, 16) and grid.dtype == torch.uint8
    guided = sample(model, schedule, torch.eye(10)[:2], "ddim", 3, guidance_scale=2.0, progress=False)
    assert guided.network_evaluations == 6
    unconditional = build_model(tiny_config(tmp_path).model, 16).eval()
    plain = sample(unconditional, schedule, None, "ddim", 3, guidance_scale=2.0, num_images=2, progress=False)
    assert plain.images.shape == (2, 3, 16, 16) and plain.network_evaluations == 3


def test_profiles_keep_the_assignment_recipe_except_the_cpu_optimiser():
    gpu, cpu = mnist.mnist_config("gpu"), mnist.mnist_config("cpu")
    for config in (gpu, cpu):  # linear 1e-4 -> 0.02, T = 1000, ε-prediction, DDIM-50 with η = 0, no label input
        assert (config.diffusion.schedule, config.diffusion.beta_start, config.diffusion.beta_end) == ("linear", 1e-4, 0.02)
        assert config.diffusion.prediction_type == "epsilon" and config.diffusion.num_train_timesteps == 1000
        assert (config.sample.sampler, config.sample.num_inference_steps, config.sample.eta) == ("ddim", 50, 0.0)
        assert config.model.num_classes == 0
    assert (gpu.train.lr, gpu.train.ema_decay) == (2e-4, 0.999)
    assert (cpu.train.steps, cpu.train.lr, cpu.train.ema_decay) == (4000, 1e-3, 0.995)
