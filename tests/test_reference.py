"""The shipped reference model and judge: export, SHA-256 check, loading, and the files in reference/."""

from __future__ import annotations

import json

import pytest
import torch

from factories import make_tiny_config, make_training_set
from labkit import reference, synth
from labkit.model import build_model
from labkit.runtime import atomic_save
from labkit.train import EMA, train


def _fake_run_checkpoint(tmp_path, step=7):
    """A checkpoint in the trainer's format (model + EMA + config) of a tiny untrained model."""
    config = make_tiny_config(tmp_path)
    torch.manual_seed(0)
    model = build_model(config.model, config.data.image_size)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        for parameter in ema.model.parameters():
            parameter.add_(0.01)  # EMA weights differ from the raw ones: the export must take the EMA
    path = tmp_path / "last.pt"
    atomic_save({"config": config.to_dict(), "step": step, "model": model.state_dict(), "ema": ema.state_dict()}, path)
    return path, config, ema.model


def test_exported_model_loads_with_its_ema_weights_and_label(tmp_path):
    path, config, ema_model = _fake_run_checkpoint(tmp_path)
    folder = tmp_path / "reference"
    reference.export_model(path, folder, sample_overrides={"guidance_scale": 2.5}, extra={"wall_s": 12.0})
    model, schedule, loaded = reference.load_reference(device="cpu", folder=folder)
    assert model.label == "reference model (7 steps)"
    assert loaded.sample.guidance_scale == 2.5 and loaded.train.run_name == "reference"
    assert schedule.num_train_timesteps == config.diffusion.num_train_timesteps
    x = torch.randn(2, 3, 16, 16)
    labels = torch.zeros(2, 24)
    labels[0, 3] = labels[1, 5] = 1
    with torch.no_grad():
        expected = ema_model(x, torch.tensor([3, 30]), labels)
        found = model(x, torch.tensor([3, 30]), labels)
    assert torch.allclose(found, expected, atol=2e-2), (found - expected).abs().max()
    manifest = reference.read_manifest(folder)
    assert manifest[reference.MODEL_FILE]["sha256"] == reference.sha256(folder / reference.MODEL_FILE)


def test_a_changed_or_missing_file_is_refused_with_the_fix(tmp_path):
    path, _, _ = _fake_run_checkpoint(tmp_path)
    folder = tmp_path / "reference"
    reference.export_model(path, folder)
    shipped = folder / reference.MODEL_FILE
    data = bytearray(shipped.read_bytes())
    data[-10] ^= 0xFF
    shipped.write_bytes(bytes(data))
    with pytest.raises(reference.ReferenceFileError, match="SHA-256.*git checkout"):
        reference.load_reference(device="cpu", folder=folder)
    shipped.unlink()
    with pytest.raises(reference.ReferenceFileError, match="not shipped"):
        reference.load_reference(device="cpu", folder=folder)
    assert not reference.reference_available(folder)


def test_condition_files_need_no_rendering_and_match_the_rendered_set(tmp_path):
    synth.write_condition_files(tmp_path / "bare", seed=3)
    synth.render_dataset(tmp_path / "rendered", num_scenes=1, seed=3, progress=False)
    for name in ("objects.json", "test.json", "new_test.json"):
        assert (tmp_path / "bare" / name).read_bytes() == (tmp_path / "rendered" / name).read_bytes()
    test = json.loads((tmp_path / "bare" / "test.json").read_text())
    assert sum(len(objects) for objects in test) == 72


def test_snapshots_keep_the_ema_weights_of_their_step(tmp_path):
    config = make_tiny_config(tmp_path, **{"train.steps": 4, "train.snapshot_every": 2})
    result = train(config, training_set=make_training_set(tmp_path), progress=False)
    folder = config.run_dir / "checkpoints"
    assert sorted(path.name for path in folder.glob("ema_*.pt")) == ["ema_000002.pt", "ema_000004.pt"]
    snapshot = torch.load(folder / "ema_000004.pt", weights_only=True)
    assert snapshot["step"] == 4
    for key, value in result.ema_model.state_dict().items():
        assert snapshot["model"][key].dtype == torch.float16
        assert torch.allclose(snapshot["model"][key].float(), value, atol=1e-2, rtol=1e-2)


# ---- the files shipped in reference/ -----------------------------------------------------------------
def test_the_shipped_reference_model_verifies_and_samples():
    model, schedule, config = reference.load_reference(device="cpu")
    assert model.checkpoint_step > 0 and model.label.startswith("reference model (")
    assert (reference.reference_dir() / reference.MODEL_FILE).stat().st_size <= 15 * 2**20
    size = config.data.image_size
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size), torch.tensor([500]), torch.zeros(1, 24))
    assert out.shape == (1, 3, size, size) and torch.isfinite(out).all()


def test_the_shipped_judge_verifies_and_is_strong():
    from labkit.config import get_config
    from labkit.evaluate import load_shipped_judge

    config = get_config("cpu")
    judge = load_shipped_judge(config, device="cpu")
    assert judge is not None, "the shipped judge should fit the cpu profile's synthetic data"
    assert judge.holdout.accuracy >= 0.98 and judge.holdout.total >= 1000
    report = json.loads((reference.reference_dir() / reference.JUDGE_REPORT_FILE).read_text())
    assert report["renderer_version"] == synth.RENDERER_VERSION
    config.judge.use_shipped = False
    assert load_shipped_judge(config, device="cpu") is None


def test_trained_model_prefers_a_run_with_more_steps_else_the_reference(tmp_path, monkeypatch, capsys):
    from labkit import plan

    path, _, _ = _fake_run_checkpoint(tmp_path / "shipped", step=3)
    folder = tmp_path / "reference"
    reference.export_model(path, folder)
    monkeypatch.setattr(reference, "reference_dir", lambda: folder)
    config = make_tiny_config(tmp_path / "home", **{"train.steps": 2})
    config.profile = "cpu"  # the smoke profile always shows its own run
    model, _, picked = plan.trained_model(config, choice="reference")
    assert model.label == "reference model (3 steps)" and picked.train.run_name == "reference"
    assert "is not trained yet" in capsys.readouterr().out
    train(config, training_set=make_training_set(tmp_path), progress=False)
    model, _, _ = plan.trained_model(config)  # 2 steps < 3: the reference
    assert model.label.startswith("reference model")
    model, _, picked = plan.trained_model(config, choice="own")
    assert model.label == f"run {config.run_name} (2 steps)" and picked.run_name == config.run_name
    config.train.steps = 4
    train(config, training_set=make_training_set(tmp_path), progress=False)
    model, _, _ = plan.trained_model(config)
    assert model.label == f"run {config.run_name} (4 steps)"
    with pytest.raises(ValueError, match="auto, own, reference"):
        plan.trained_model(config, choice="best")
