"""The trainer: loss, CFG dropout, EMA, LR, exact resume, atomic checkpoints, data parallel."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from factories import free_port, make_tiny_config, make_training_set
from labkit.model import build_model
from labkit.reference import export_model
from labkit.schedules import NoiseSchedule
from labkit.train import EMA, diffusion_loss, drop_labels, lr_factor, read_log, snapshot_path, train, training_seconds


def fixed_batch_loss(model, schedule, x0, labels, seed=123):
    """The loss on a fixed batch with fixed t and noise (a fresh generator each time)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return diffusion_loss(model.eval(), schedule, x0, labels, cond_drop_prob=0.0, generator=generator).item()


# Measured after 30 steps (both backends): ε 0.59-0.63 of the starting loss, v 0.82-0.86. The v
# target keeps more to learn at high noise (it tends to -x0), so its loss falls more slowly at first.
@pytest.mark.parametrize("prediction_type, max_ratio", [("epsilon", 0.7), ("v_prediction", 0.92)])
@pytest.mark.parametrize("backend", ["compact", "diffusers"])
def test_both_backends_learn_through_the_trainer(tmp_path, backend, prediction_type, max_ratio):
    config = make_tiny_config(tmp_path, backend=backend, **{"train.steps": 30, "train.lr": 2e-3})
    config.diffusion.prediction_type = prediction_type
    config.train.batch_size = 4
    training_set = make_training_set(tmp_path, count=4)  # one fixed batch
    x0 = training_set.images.float() / 127.5 - 1
    labels = training_set.labels
    schedule = NoiseSchedule.from_config(config.diffusion)
    torch.manual_seed(config.train.seed)
    before = fixed_batch_loss(build_model(config.model, config.data.image_size), schedule, x0, labels)
    result = train(config, resume=False, progress=False, training_set=training_set)
    after = fixed_batch_loss(result.model, schedule, x0, labels)
    assert result.step == 30
    assert after < max_ratio * before, (before, after)


def test_cfg_dropout_rate():
    labels = torch.ones(200_000, 24)
    generator = torch.Generator().manual_seed(0)
    dropped = drop_labels(labels, 0.1, generator)
    null_rows = (dropped.sum(dim=1) == 0).float().mean().item()
    assert abs(null_rows - 0.1) < 0.003
    kept = dropped[dropped.sum(dim=1) > 0]
    assert torch.equal(kept, torch.ones_like(kept))  # kept rows are untouched
    assert torch.equal(drop_labels(labels[:10], 0.0), labels[:10])


def test_ema_update_matches_formula():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9, warmup_steps=5)
    before = ema.model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=2)  # warm-up: decay = min(0.9, 3 / 12) = 0.25
    expected = 0.25 * before + 0.75 * model.weight.detach()
    assert torch.allclose(ema.model.weight, expected, atol=1e-6)
    ema.update(model, step=100)  # after warm-up: decay = 0.9
    expected = 0.9 * expected + 0.1 * model.weight.detach()
    assert torch.allclose(ema.model.weight, expected, atol=1e-6)
    assert ema.decay_at(3) == pytest.approx(4 / 13)


def test_lr_warmup_then_cosine():
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    training_set = make_training_set(tmp_path, count=20)
    straight = make_tiny_config(tmp_path / "a", **{"train.steps": 12, "train.checkpoint_every": 100})
    result = train(straight, resume=False, progress=False, training_set=training_set)

    interrupted = make_tiny_config(tmp_path / "b", **{"train.steps": 12, "train.checkpoint_every": 100})
    first = train(interrupted, resume=True, progress=False, training_set=training_set, stop_at_step=5)
    assert first.step == 5
    second = train(interrupted, resume=True, progress=False, training_set=training_set)
    assert second.step == 12

    losses_a = [row["loss"] for row in read_log(straight.run_dir)]
    losses_b = [row["loss"] for row in read_log(interrupted.run_dir)]
    assert len(losses_a) == 12 and losses_a == losses_b
    for (name, a), b in zip(result.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(result.ema_model.state_dict().values(), second.ema_model.state_dict().values()):
        assert torch.equal(a, b)


def test_channels_last_setting_resolves_per_device_and_precision():
    from labkit.runtime import resolve_channels_last

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_channels_last("auto", cuda, "bf16") and resolve_channels_last("auto", cuda, "fp16")
    assert resolve_channels_last("auto", cpu, "fp32") and not resolve_channels_last("auto", cpu, "bf16")
    assert resolve_channels_last(True, cpu, "bf16") and not resolve_channels_last("false", cuda, "bf16")
    with pytest.raises(ValueError, match="train.channels_last must be true, false or auto"):
        resolve_channels_last("sometimes", cpu, "fp32")


def test_bad_channels_last_setting_fails_before_any_training(tmp_path):
    with pytest.raises(ValueError, match="train.channels_last"):  # refused when set, before any training
        make_tiny_config(tmp_path, **{"train.steps": 2, "train.channels_last": "nhwc"})
    assert not (tmp_path / "runs").exists()


def test_memory_layout_does_not_change_the_training_maths(tmp_path):
    """fp32: the same 4 steps in NCHW and in channels_last end with the same weights (up to rounding)."""
    training_set = make_training_set(tmp_path, count=16)
    weights = []
    for layout in (False, True):
        config = make_tiny_config(tmp_path / str(layout), **{"train.steps": 4, "train.precision": "fp32"})
        config.train.channels_last = layout
        weights.append(train(config, resume=False, progress=False, training_set=training_set).model.state_dict())
    for name, value in weights[0].items():
        assert torch.allclose(value, weights[1][name], atol=1e-5, rtol=1e-4), name


def test_resume_refuses_a_different_model(tmp_path):
    training_set = make_training_set(tmp_path, count=8)
    config = make_tiny_config(tmp_path, **{"train.steps": 2})
    train(config, resume=False, progress=False, training_set=training_set)
    config.model.base_channels = 32
    config.train.steps = 4
    with pytest.raises(ValueError, match="different model config"):
        train(config, resume=True, progress=False, training_set=training_set)


def test_init_from_starts_a_new_run_at_the_other_runs_ema_weights(tmp_path):
    training_set = make_training_set(tmp_path, count=8)
    source = make_tiny_config(tmp_path / "a", **{"train.steps": 3})
    trained = train(source, resume=False, progress=False, training_set=training_set)
    tuned = make_tiny_config(tmp_path / "b", **{"train.steps": 2, "train.init_from": str(trained.last_checkpoint)})
    start = train(tuned, resume=True, progress=False, training_set=training_set, stop_at_step=0)
    for name, value in trained.ema_model.state_dict().items():  # the model and its EMA begin at the EMA weights
        assert torch.equal(start.model.state_dict()[name], value), name
        assert torch.equal(start.ema_model.state_dict()[name], value), name
    start_file = json.loads((tuned.run_dir / "initialised_from.json").read_text())
    assert start_file["step"] == 3 and start_file["init_from"] == str(trained.last_checkpoint)
    finished = train(tuned, resume=True, progress=False, training_set=training_set)
    assert finished.step == 2 and [row["step"] for row in read_log(tuned.run_dir)] == [1, 2]
    assert not torch.equal(next(iter(finished.model.parameters())), next(iter(start.model.parameters())))
    exported = export_model(finished.last_checkpoint, folder=tmp_path / "shipped")  # counts the source run's steps too
    assert torch.load(exported, weights_only=True)["step"] == 3 + 2
    tuned.model.base_channels = 32  # weights of another architecture are refused with the setting to change
    tuned.train.run_name = "other"
    with pytest.raises(ValueError, match="different model config"):
        train(tuned, resume=True, progress=False, training_set=training_set)


def test_a_fine_tune_of_a_fine_tune_counts_the_steps_and_hours_of_every_run_before_it(tmp_path):
    training_set = make_training_set(tmp_path, count=8)
    first = train(make_tiny_config(tmp_path / "a", **{"train.steps": 3}), resume=False, progress=False,
                  training_set=training_set)
    second_config = make_tiny_config(tmp_path / "b", **{"train.steps": 2, "train.snapshot_every": 2,
                                                        "train.init_from": str(first.last_checkpoint)})
    train(second_config, resume=True, progress=False, training_set=training_set)
    first_seconds = training_seconds(read_log(first.last_checkpoint.parents[1]))
    assert json.loads((second_config.run_dir / "initialised_from.json").read_text()) == {
        "init_from": str(first.last_checkpoint), "step": 3, "train_wall_s": first_seconds}
    snapshot = snapshot_path(second_config.run_dir, 2)  # a snapshot of the fine-tune: 3 + 2 steps behind it
    third_config = make_tiny_config(tmp_path / "c", **{"train.steps": 1, "train.init_from": str(snapshot)})
    train(third_config, resume=True, progress=False, training_set=training_set, stop_at_step=0)
    start = json.loads((third_config.run_dir / "initialised_from.json").read_text())
    second_seconds = training_seconds(read_log(second_config.run_dir), 2)
    assert start["step"] == 3 + 2 and second_seconds > 0
    assert start["train_wall_s"] == pytest.approx(first_seconds + second_seconds)


def test_init_from_may_add_object_attention_to_a_model_trained_without_it(tmp_path):
    training_set = make_training_set(tmp_path, count=8)
    source = make_tiny_config(tmp_path / "a", **{"train.steps": 2})
    trained = train(source, resume=False, progress=False, training_set=training_set)
    levels = [True] * len(source.model.channel_mults)
    tuned = make_tiny_config(tmp_path / "b", **{"train.steps": 2, "train.init_from": str(trained.last_checkpoint),
                                                "model.object_attention_levels": levels})
    start = train(tuned, resume=True, progress=False, training_set=training_set, stop_at_step=0)
    for name, value in trained.ema_model.state_dict().items():  # every weight it had, and the added ones start at zero output
        assert torch.equal(start.model.state_dict()[name], value), name
    added = [name for name in start.model.state_dict() if name not in trained.ema_model.state_dict()]
    assert added and all("object" in name for name in added)
    finished = train(tuned, resume=True, progress=False, training_set=training_set)
    assert finished.step == 2
    tuned.model.layers_per_block += 1  # any other change of the model is still refused
    tuned.train.run_name = "other"
    with pytest.raises(ValueError, match="different model config"):
        train(tuned, resume=True, progress=False, training_set=training_set)


def test_init_from_a_missing_file_is_refused_by_the_preflight(tmp_path):
    from labkit.config import ConfigError
    from labkit.preflight import check_init_from

    config = make_tiny_config(tmp_path, **{"train.init_from": "runs/none/checkpoints/last.pt"})
    with pytest.raises(ConfigError, match="train.init_from = 'runs/none/checkpoints/last.pt'.*does not exist"):
        check_init_from(config)


def test_fresh_start_moves_the_old_run_aside(tmp_path):
    training_set = make_training_set(tmp_path, count=8)
    config = make_tiny_config(tmp_path, **{"train.steps": 2})
    train(config, resume=False, progress=False, training_set=training_set)
    train(config, resume=False, progress=False, training_set=training_set)
    aside = [p for p in config.run_dir.parent.iterdir() if p.name.startswith(config.run_dir.name + ".old-")]
    assert len(aside) == 1 and (aside[0] / "checkpoints" / "last.pt").exists()


def test_killed_checkpoint_write_never_leaves_a_truncated_file(tmp_path):
    """Kill a process while it rewrites `last.pt` in a loop: the file always loads."""
    path = tmp_path / "last.pt"
    script = textwrap.dedent(
        f"""
        import torch
        from labkit.runtime import atomic_save
        step = 0
        while True:
            step += 1
            atomic_save({{"step": step, "weights": torch.full((2_000_000,), float(step))}}, {str(path)!r})
        """
    )
    for delay in (0.6, 0.9, 1.3):
        process = subprocess.Popen([sys.executable, "-c", script])
        deadline = time.time() + 60
        while not path.exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["weights"].numel() == 2_000_000
        assert torch.all(checkpoint["weights"] == float(checkpoint["step"]))


def test_two_process_data_parallel_run_ends_with_identical_weights(tmp_path):
    config = make_tiny_config(tmp_path, **{"train.steps": 6, "train.checkpoint_every": 3})
    config.train.precision = "fp32"
    config_path = tmp_path / "config.json"
    config.save(config_path)
    worker = Path(__file__).parent / "ddp_worker.py"
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), str(worker), str(config_path), str(tmp_path),
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert (tmp_path / "world0.txt").read_text() == "2"
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    torch.manual_seed(config.train.seed)  # rank 0's initial weights (DDP broadcasts them)
    initial = build_model(config.model, config.data.image_size).state_dict()
    changed = 0
    for name, tensor in rank0.items():
        assert torch.equal(tensor, rank1[name]), name
        changed += int(not torch.equal(tensor, initial[name]))
    assert changed > 0  # the weights did train
    checkpoint = torch.load(config.run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert checkpoint["step"] == 6 and checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2


def test_callbacks_preview_and_evaluate_during_training(tmp_path):
    """on_preview and on_eval run every preview_every / eval_every steps; a better accuracy writes best.pt."""
    config = make_tiny_config(
        tmp_path, **{"train.steps": 4, "train.preview_every": 2, "train.eval_every": 2, "train.snapshot_every": 4}
    )
    previews, evaluations, rows = [], [], []

    def on_eval(model, schedule, step):
        evaluations.append(step)
        return {2: 0.5, 4: 0.25}[step]  # the best accuracy is at step 2

    result = train(
        config, resume=False, progress=False, training_set=make_training_set(tmp_path, count=8),
        on_log=rows.append, on_eval=on_eval, on_preview=lambda model, schedule, step: previews.append(step),
    )
    assert previews == [2, 4] and evaluations == [2, 4] and [row["step"] for row in rows] == [1, 2, 3, 4]
    assert result.best_accuracy == 0.5
    best = torch.load(config.run_dir / "checkpoints" / "best.pt", weights_only=False)
    assert best["step"] == 2 and best["best_accuracy"] == 0.5
    snapshot = torch.load(config.run_dir / "checkpoints" / "ema_000004.pt", weights_only=False)
    assert snapshot["step"] == 4 and all(value.dtype == torch.float16 for value in snapshot["model"].values() if value.is_floating_point())


def test_accuracies_measured_during_training_go_to_the_log(tmp_path):
    from labkit import figures

    config = make_tiny_config(tmp_path, **{"train.steps": 5, "train.eval_every": 2, "train.log_every": 5})
    scores = {2: (0.25, 0.5), 4: (0.5, 0.75)}

    def on_eval(model, schedule, step):
        test, new_test = scores[step]
        return {"accuracy": (test + new_test) / 2, "test_accuracy": test, "new_test_accuracy": new_test}

    result = train(config, resume=False, progress=False, training_set=make_training_set(tmp_path, count=8), on_eval=on_eval)
    rows = read_log(config.run_dir)
    assert [int(row["step"]) for row in rows] == [2, 4, 5]  # a row at every evaluation, and the log steps
    assert [(row["test_accuracy"], row["new_test_accuracy"]) for row in rows] == [(0.25, 0.5), (0.5, 0.75), (None, None)]
    assert result.best_accuracy == 0.625 and (config.run_dir / "checkpoints" / "best.pt").exists()
    fig = figures.training_accuracy_figure(rows, judge="synthetic judge")
    assert len(fig.axes[1].lines) == 2


def test_training_seconds_add_up_the_segments_of_a_resumed_run():
    log = [{"step": 25, "elapsed_s": 10.0}, {"step": 50, "elapsed_s": 20.0},  # stopped after step 50
           {"step": 75, "elapsed_s": 9.0}, {"step": 100, "elapsed_s": 19.0}]  # resumed: the clock restarts at 0
    assert training_seconds(log) == pytest.approx(39.0)
    assert training_seconds(log, up_to_step=75) == pytest.approx(29.0)
    assert training_seconds([]) == 0.0
