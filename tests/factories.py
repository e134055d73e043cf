"""Tiny configs and training sets for the tests; every path lives under a temporary folder."""

from __future__ import annotations

import importlib.util
import json
import socket
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str):
    """A script of the project that is not in a package (``benchmarks/…``, ``notebooks/…``), imported as a module."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_tiny_config(root, backend: str = "compact", **overrides):
    """The smoke profile, shrunk further, with every path under ``root``."""
    from labkit.config import get_config, set_override

    config = get_config("smoke")
    config.data.root = str(root / "data")
    config.data.synthetic_dir = str(root / "data" / "synthetic")
    config.data.cache_dir = str(root / "data" / "cache")
    config.data.image_size = 16
    config.train.runs_dir = str(root / "runs")
    config.train.preview_every = 0
    config.train.eval_every = 0
    config.train.batch_size = 8
    config.train.log_every = 1
    config.model.backend = backend
    config.model.base_channels = 16
    config.model.channel_mults = (1, 2)
    config.model.attention_levels = (False, True)
    config.model.norm_groups = 8
    config.diffusion.num_train_timesteps = 50
    for key, value in overrides.items():
        set_override(config, key, value)
    return config


def make_training_set(root, count: int = 12, size: int = 16, seed: int = 0):
    """A TrainingSet of random uint8 images with valid 1-3 object labels (no rendering)."""
    from labkit.data import DataSource, LabelSpace, TrainingSet

    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, size, size), generator=generator, dtype=torch.uint8)
    label_space = LabelSpace.default()
    lists = []
    for i in range(count):
        picks = torch.randperm(24, generator=generator)[: 1 + i % 3].tolist()
        lists.append([label_space.names[j] for j in picks])
    labels = label_space.encode(lists)
    names = [f"image_{i:03d}.png" for i in range(count)]
    return TrainingSet(images, labels, names, label_space, DataSource(root, "synthetic"))


def free_port() -> int:
    """A TCP port that no process listens on right now (the system picks it), for a data-parallel test."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_json(path, value) -> str:
    path.write_text(json.dumps(value))
    return str(path)


def make_official_folder(root, count: int = 6):
    """A small folder in the official layout: 320x240 PNGs (left half red, right half blue, a
    per-image gray bar on top), train.json, objects.json, test.json, new_test.json."""
    from labkit import data
    from labkit.data import LabelSpace

    (root / "iclevr").mkdir(parents=True)
    names = LabelSpace.default().names
    labels = {}
    for i in range(count):
        image = torch.zeros(3, 240, 320, dtype=torch.uint8)
        image[0, :, :160] = 200  # red left half
        image[2, :, 160:] = 200  # blue right half
        image[:, :40, :] = (20 * i) % 256  # a bar that tells the images apart
        name = f"CLEVR_train_{i:06d}_{i % 3}.png"
        data.write_png(image, root / "iclevr" / name)
        labels[name] = [names[(i + k * 5) % 24] for k in range(1 + i % 3)]
    write_json(root / "train.json", labels)
    write_json(root / "objects.json", LabelSpace.default().index)
    write_json(root / "test.json", [["red cube"], ["blue sphere", "gray cylinder"]])
    write_json(root / "new_test.json", [["cyan cube", "yellow sphere"]])
    return labels
