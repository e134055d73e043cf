"""Run-time estimates and trained models without surprise runs (labkit.plan)."""

from __future__ import annotations

import pytest
import torch

import labkit
from factories import make_tiny_config, make_training_set
from labkit import plan
from labkit.train import train


def test_measured_step_time_is_scaled_to_the_profile_batch(tmp_path):
    config = make_tiny_config(tmp_path, **{"train.batch_size": 16})
    timing = plan.measure_step_time(config, measured_batch=4, steps=1)
    assert timing.measured_batch == 4 and timing.batch_size == 16 and timing.seconds_per_step > 0
    assert timing.images_per_s == pytest.approx(16 / timing.seconds_per_step)
    assert "scaled from batch 4" in timing.describe()
    config.train.steps = 100
    assert plan.projected_seconds(config, timing, from_step=40) == pytest.approx(60 * timing.seconds_per_step)


def test_format_duration():
    assert [plan.format_duration(s) for s in (40, 600, 3 * 3600, 5 * 86400)] == ["40 s", "10 min", "3.0 hours", "5.0 days"]


def test_a_missing_run_is_not_trained_unless_asked(tmp_path):
    config = make_tiny_config(tmp_path, **{"train.steps": 3})
    with pytest.raises(plan.ModelMissing) as missing:
        plan.ensure_trained(config)
    message = str(missing.value)
    assert "No trained model for the smoke profile" in message and "last.pt does not exist" in message
    assert "would take about" in message and "an estimate: 3 steps x" in message and "measured over" in message
    assert "python -m labkit train --profile smoke" in message and "train=True" in message
    assert not config.run_dir.exists()  # nothing was started


def test_training_starts_when_asked_and_a_finished_run_is_reused(tmp_path, monkeypatch):
    config = make_tiny_config(tmp_path, **{"train.steps": 3})
    training_set = make_training_set(tmp_path, count=8)
    assert plan.ensure_trained(config, train=True, progress=False, training_set=training_set) == config.run_dir
    assert plan.run_progress(config) == 3
    monkeypatch.setattr(plan, "measure_step_time", lambda *a, **k: pytest.fail("a finished run needs no estimate"))
    assert plan.ensure_trained(config) == config.run_dir
    model, schedule, saved = plan.trained_model(config)
    assert model.checkpoint_step == 3 and saved.run_name == config.run_name


def test_an_unfinished_run_is_used_with_its_logged_rate(tmp_path, capsys, monkeypatch):
    config = make_tiny_config(tmp_path, **{"train.steps": 6, "train.checkpoint_every": 2})
    train(config, progress=False, training_set=make_training_set(tmp_path, count=8), stop_at_step=2)
    monkeypatch.setattr(plan, "measure_step_time", lambda *a, **k: pytest.fail("the log has the rate"))
    model, _, _ = plan.trained_model(config)
    printed = capsys.readouterr().out
    assert model.checkpoint_step == 2
    assert "is unfinished: step 2 of 6" in printed and "Training the rest here would take about" in printed
    assert "logged in" in printed and "Sampling from the unfinished run (step 2)" in printed


def test_a_stand_in_model_is_used_when_the_run_is_missing(tmp_path, capsys, monkeypatch):
    config = make_tiny_config(tmp_path, **{"train.steps": 3})
    fake_timing = plan.StepTiming(0.5, 8, 8, "cpu", "fp32", "measured over 2 steps")
    monkeypatch.setattr(plan, "measure_step_time", lambda *a, **k: fake_timing)
    stand_in = (torch.nn.Identity(), "schedule", make_tiny_config(tmp_path / "reference", **{"train.run_name": "reference"}))
    assert plan.trained_model(config, fallback=lambda cfg: stand_in) is stand_in
    printed = capsys.readouterr().out
    assert "would take about 2 s" in printed and "Using the reference model meanwhile (reference, 16x16" in printed
    with pytest.raises(plan.ModelMissing):
        plan.trained_model(config, fallback=lambda cfg: None)
    with pytest.raises(plan.ModelMissing):
        plan.trained_model(config, fallback=None)


def test_reference_model_is_the_shipped_one_or_none(monkeypatch, tmp_path):
    from labkit import reference
    from labkit.runtime import atomic_save
    from labkit.model import build_model

    config = make_tiny_config(tmp_path)
    folder = tmp_path / "reference"
    monkeypatch.setattr(reference, "reference_dir", lambda: folder)
    assert plan.reference_model(config) is None  # nothing shipped
    model = build_model(config.model, config.data.image_size)
    atomic_save({"config": config.to_dict(), "step": 5, "model": model.state_dict(), "ema": None}, tmp_path / "last.pt")
    reference.export_model(tmp_path / "last.pt", folder)
    loaded, _, loaded_config = plan.reference_model(config)
    assert loaded.label == "reference model (5 steps)" and loaded_config.run_name == "reference"
    (folder / reference.MODEL_FILE).write_bytes(b"not the shipped file")
    with pytest.raises(reference.ReferenceFileError, match="SHA-256"):  # a damaged file is an error, not "none shipped"
        plan.reference_model(config)