"""benchmarks/gpu_check.py: refuses a CPU with a clear message, and its --allow-cpu dry run writes every figure."""

from __future__ import annotations

import json

import pytest

from factories import load_script


@pytest.fixture(scope="module")
def gpu_check():
    return load_script("benchmarks/gpu_check.py")


def test_without_a_gpu_it_says_it_needs_one(gpu_check, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(gpu_check, "get_device", lambda: __import__("torch").device("cpu"))
    assert gpu_check.main(["--json", str(tmp_path / "x.json")]) == 2
    assert "gpu_check needs a CUDA GPU and found none" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_dry_run_on_a_cpu_measures_and_saves_every_figure(gpu_check, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(gpu_check, "get_device", lambda: __import__("torch").device("cpu"))
    path = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--allow-cpu", "--steps", "2", "--warmup", "1", "--images", "2", "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert result["dry_run"] and result["device"]["name"] == "CPU" and result["profile"] == "gpu"
    assert result["precision"]["name"] == "fp32" and result["training"]["batch_size"] == 4
    assert result["training"]["images_per_s"] > 0 and result["training"]["peak_memory_gib"] > 0
    assert result["sampling"]["seconds_per_image"] > 0 and result["sampling"]["network_evaluations_per_image"] == 4
    assert result["profile_steps"] == 60_000 and result["projected_hours_for_profile_steps"] > 0
    printed = capsys.readouterr().out
    assert "a dry run on a CPU" in printed and "projected: 60,000 steps in" in printed


def test_plan_matches_the_listed_gpus(gpu_check):
    h100 = gpu_check.plan_for("NVIDIA H100 80GB HBM3", 3 * 52.5e9, 7_680_000)
    assert h100["gpu"] == "H100" and h100["precision"] == "bf16"
    assert h100["images_per_s"][1] == pytest.approx(0.35 * 989e12 / 157.5e9)
    assert gpu_check.plan_for("Tesla T4", 1e9, 1)["precision"] == "fp16"
    assert gpu_check.plan_for("Quadro RTX 6000", 1e9, 1) is None
