"""Reliability: every input checked before long work, no wrong submission that looks official, no output
overwritten by a failing run, training that saves before it dies, and errors written for people.

Each test sets up a project home in tmp_path (LABKIT_HOME), breaks one thing, and checks the message
and that nothing already saved changed (file digests before and after).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from factories import make_official_folder, make_tiny_config, make_training_set, write_json
from labkit import lab, synth
from labkit.__main__ import main
from labkit.checkpoint import read_checkpoint
from labkit.config import get_config
from labkit.data import DataError, LabelSpace, load_training_set, write_png
from labkit.labels import ConditionError
from labkit.preflight import preflight
from labkit.train import train

CHECKOUT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh project home: data/, runs/, outputs/ of this test only."""
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    return tmp_path


def digests(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) and its SHA-256."""
    if not folder.exists():
        return {}
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def failing_on_call(function, call: int, message: str):
    """``function`` that raises RuntimeError(message) on its ``call``-th call (counting from 1)."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise RuntimeError(message)
        return function(*args, **kwargs)

    return wrapper


def tiny_run(home: Path, steps: int = 2, **overrides):
    """A trained tiny model in runs/tiny/ with the synthetic condition files (no rendering)."""
    config = make_tiny_config(home, **{"train.steps": steps, "train.run_name": "tiny", **overrides})
    config.data.synthetic_dir = str(home / "data" / "synthetic")
    config.sample.num_inference_steps = 2
    config.sample.denoise_frames = 2
    synth.write_condition_files(home / "data" / "synthetic", seed=config.data.synthetic_seed)
    train(config, resume=False, progress=False, training_set=make_training_set(home, count=8))
    return config


def tiny_cli_flags(config) -> list[str]:
    """``--set`` flags that give the command line the same run as ``config``."""
    flags = ["--profile", "smoke"]
    for key in ("data.image_size", "model.base_channels", "model.norm_groups", "diffusion.num_train_timesteps",
                "sample.num_inference_steps", "sample.denoise_frames", "train.run_name"):
        section, name = key.split(".")
        flags += ["--set", f"{key}={getattr(getattr(config, section), name)}"]
    flags += ["--set", "model.channel_mults=[1,2]", "--set", "model.attention_levels=[false,true]"]
    return flags


# ---- 1. the data and the judge come from one place, checked before any long work -----------------
def test_course_files_without_iclevr_are_refused_before_any_work(home, capsys):
    data_root = home / "data"
    data_root.mkdir()
    labels = LabelSpace.default()
    write_json(data_root / "objects.json", labels.index)
    write_json(data_root / "train.json", {"CLEVR_train_000000_0.png": ["red cube"]})
    write_json(data_root / "test.json", [["red cube"]])
    write_json(data_root / "new_test.json", [["blue sphere"]])
    (data_root / "checkpoint.pth").write_bytes(b"course weights would be here")
    before = digests(home)

    status, out, err = run_cli(["lab", "--profile", "smoke"], capsys)
    assert status == 2
    assert "but not iclevr/" in err and "data.source=synthetic" in err and "Traceback" not in err
    assert digests(home) == before  # nothing rendered, trained, sampled or written
    assert not (home / "runs").exists() and not (home / "outputs").exists()

    # asked for explicitly, the synthetic data comes with its own judge, never the course checkpoint
    config = get_config("smoke", **{"data.source": "synthetic"})
    report = preflight(config)
    assert report.source.kind == "synthetic" and report.judge == "synthetic judge"
    assert "course files" in report.lines[-1] and "ignored" in report.lines[-1]


def test_a_bad_new_test_file_stops_the_lab_before_training(home, capsys):
    make_official_folder(home / "data")
    write_json(home / "data" / "new_test.json", [["cyan cube", "yellow sphere"], ["red cone"]])
    before = digests(home)
    start = time.perf_counter()
    status, _, err = run_cli(["lab", "--profile", "smoke"], capsys)
    assert status == 2 and time.perf_counter() - start < 30
    assert "new_test.json, entry 1: unknown object 'red cone'" in err and "Traceback" not in err
    assert digests(home) == before and not (home / "runs").exists()


@pytest.mark.parametrize("change, words", [
    ("drop_last", ["23 objects", "missing 'yellow cylinder'", "restore the course's original objects.json"]),
    ("extra", ["25 objects", "unknown 'pink cube'"]),
    ("swap", ["'gray cube' has index 1", "course's objects.json gives it 0", "reordered"]),
])
def test_objects_json_must_hold_the_course_objects_in_order(home, change, words):
    make_official_folder(home / "data")
    index = dict(LabelSpace.default().index)
    if change == "drop_last":
        index.pop("yellow cylinder")
    elif change == "extra":
        index["pink cube"] = 24
    else:
        index["gray cube"], index["red cube"] = 1, 0
    write_json(home / "data" / "objects.json", index)
    with pytest.raises(ConditionError) as error:
        preflight(get_config("smoke"), judge=False)
    assert "objects.json" in str(error.value)
    for word in words:
        assert word in str(error.value)


def test_a_small_grayscale_image_is_refused_by_name(home):
    make_official_folder(home / "data")
    bad = home / "data" / "iclevr" / "CLEVR_train_000003_0.png"
    from PIL import Image

    Image.new("L", (16, 16), 128).save(bad)
    with pytest.raises(DataError, match=r"CLEVR_train_000003_0.png: a 16x16 L image.*320x240 RGB\(A\)"):
        preflight(get_config("smoke"), judge=False)


def test_the_decode_checks_every_image_not_only_the_spot_checked_ones(home):
    make_official_folder(home / "data", count=40)
    config = get_config("smoke")
    source_names = sorted(p.name for p in (home / "data" / "iclevr").iterdir())
    picks = {round(i * 39 / 15) for i in range(16)}
    hidden = next(i for i in range(40) if i not in picks)  # an image the quick look skips
    write_png(torch.zeros(3, 100, 100, dtype=torch.uint8), home / "data" / "iclevr" / source_names[hidden])
    preflight(config, judge=False)  # the spot check passes ...
    with pytest.raises(DataError, match=f"{source_names[hidden]}: a 100x100 RGB image"):
        load_training_set(config.data, progress=False)  # ... the decode stops at the bad file


def test_evaluator_without_checkpoint_and_a_wrong_checkpoint_name_the_fix(home):
    make_official_folder(home / "data")
    (home / "data" / "evaluator.py").write_text("class evaluation_model:\n    pass\n")
    from labkit.judge import EvaluatorFileError

    with pytest.raises(EvaluatorFileError, match="evaluator.py is present but .*checkpoint.pth is not"):
        preflight(get_config("smoke"))
    (home / "data" / "evaluator.py").unlink()
    from labkit.judge import build_evaluator_network

    state = build_evaluator_network().state_dict()
    state.pop("fc.0.bias")
    state["layer9.weight"] = torch.zeros(1)
    torch.save({"model": state}, home / "data" / "checkpoint.pth")
    with pytest.raises(EvaluatorFileError) as error:
        preflight(get_config("smoke"))
    message = str(error.value)
    assert "1 keys missing (fc.0.bias)" in message and "1 unexpected keys (layer9.weight)" in message


def test_official_data_without_checkpoint_says_which_judge_it_trains(home):
    make_official_folder(home / "data")
    report = preflight(get_config("smoke"))
    assert report.judge == "labkit judge (trained on the official images)"
    assert "trained here on the official images" in report.lines[-1]
    assert "meanwhile" not in str(report)


# ---- 2. a failing run leaves the previous outputs as they were ---------------------------------------
def test_a_failing_sampling_run_changes_no_output(home, monkeypatch):
    config = tiny_run(home)
    lab.run_sample(config, progress=False)
    (config.outputs_dir / "report_figures" / "loss.png").write_bytes(b"an earlier figure")
    before = digests(config.outputs_dir)
    assert len([name for name in before if name.startswith("images/")]) == 64

    real = lab.sample_conditions
    monkeypatch.setattr(lab, "sample_conditions", failing_on_call(real, 2, "the machine ran out of memory"))  # new_test
    with pytest.raises(RuntimeError, match="out of memory"):
        lab.run_sample(config, progress=False)
    assert digests(config.outputs_dir) == before
    assert not any(path.name.endswith(".partial") for path in config.outputs_dir.parent.iterdir())

    monkeypatch.setattr(lab, "sample_conditions", real)  # a successful run replaces the set, keeps other figures
    lab.run_sample(config, progress=False)
    after = digests(config.outputs_dir)
    assert after["report_figures/loss.png"] == before["report_figures/loss.png"]
    assert sorted(after) == sorted(before)


@pytest.mark.parametrize("flags, words", [
    (["sample", "--steps", "-3"], ["sample.num_inference_steps = -3", ">= 1"]),
    (["sample", "--set", "sample.num_inference_steps=0"], ["sample.num_inference_steps = 0"]),
    (["train", "--set", "train.steps=-5"], ["train.steps = -5", ">= 1"]),
    (["train", "--set", "train.steps=0"], ["train.steps = 0"]),
    (["train", "--set", "train.steps=1.5"], ["train.steps", "whole number"]),
    (["train", "--set", "train.batch_size=0"], ["train.batch_size = 0"]),
    (["train", "--set", "train.checkpoint_every=0"], ["train.checkpoint_every = 0"]),
    (["train", "--set", "train.log_every=0"], ["train.log_every = 0"]),
])
def test_bad_settings_are_refused_and_nothing_saved_changes(home, capsys, flags, words):
    config = tiny_run(home)
    lab.run_sample(config, progress=False)
    before = digests(home)
    command, rest = flags[0], flags[1:]
    status, out, err = run_cli([command, *tiny_cli_flags(config), *rest], capsys)
    assert status == 2 and "Traceback" not in err
    for word in words:
        assert word in err
    assert digests(home) == before


def test_the_cli_shows_the_traceback_only_with_debug(home, capsys):
    status, _, err = run_cli(["sample", "--profile", "smoke", "--set", "data.source=official"], capsys)
    assert status == 2 and "error:" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(DataError):
        main(["sample", "--profile", "smoke", "--set", "data.source=official", "--debug"])


def test_ctrl_c_in_a_command_is_one_line_and_exit_status_130(home, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("labkit.__main__.run_command", interrupted)
    status, _, err = run_cli(["train", "--profile", "smoke"], capsys)
    assert status == 130 and "stopped (Ctrl-C)" in err and "Traceback" not in err
    with pytest.raises(KeyboardInterrupt):
        main(["train", "--profile", "smoke", "--debug"])


def test_resume_with_another_model_is_a_message_not_a_traceback(home, capsys):
    config = tiny_run(home)
    status, _, err = run_cli(["train", *tiny_cli_flags(config), "--set", "model.base_channels=32",
                              "--set", "train.steps=4"], capsys)
    assert status == 2 and "different model config" in err and "train.run_name" in err


# ---- 3. training saves before it dies -------------------------------------------------------------------
def weights(model) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_failing_evaluation_keeps_its_step_and_resume_matches(home):
    training_set = make_training_set(home, count=12)
    overrides = {"train.steps": 8, "train.checkpoint_every": 100, "train.eval_every": 3}
    straight = make_tiny_config(home / "straight", **overrides)
    reference = train(straight, resume=False, progress=False, training_set=training_set,
                      on_eval=lambda model, schedule, step: 0.5)

    config = make_tiny_config(home / "broken", **overrides)

    def broken_eval(model, schedule, step):
        if step == 6:
            raise ValueError("new_test.json, entry 3: unknown object")
        return 0.5

    with pytest.raises(ValueError, match="unknown object"):
        train(config, resume=False, progress=False, training_set=training_set, on_eval=broken_eval)
    assert read_checkpoint(config.run_dir / "checkpoints" / "last.pt")["step"] == 6  # no step lost
    resumed = train(config, resume=True, progress=False, training_set=training_set,
                    on_eval=lambda model, schedule, step: 0.5)
    assert resumed.step == 8
    assert_same_weights(weights(resumed.model), weights(reference.model))
    assert_same_weights(weights(resumed.ema_model), weights(reference.ema_model))


def test_a_crash_inside_a_step_or_with_broken_weights_keeps_the_last_checkpoint(home, monkeypatch):
    from labkit import train as train_module

    training_set = make_training_set(home, count=12)
    config = make_tiny_config(home, **{"train.steps": 8, "train.checkpoint_every": 2})
    real_step = train_module.optimizer_step
    monkeypatch.setattr(train_module, "optimizer_step", failing_on_call(real_step, 5, "CUDA out of memory"))  # step 5
    with pytest.raises(RuntimeError, match="out of memory"):
        train(config, resume=False, progress=False, training_set=training_set)
    last = config.run_dir / "checkpoints" / "last.pt"
    assert read_checkpoint(last)["step"] == 4  # the half-done step 5 was not saved over it

    monkeypatch.setattr(train_module, "optimizer_step", real_step)
    saved = last.read_bytes()

    def poisons_then_fails(row):
        if row["step"] == 5:
            with torch.no_grad():
                next(train_module_model[0].parameters()).fill_(float("nan"))
            raise RuntimeError("loss is nan")

    train_module_model = []
    real_build = train_module.build_state

    def remember_model(setup):
        state = real_build(setup)
        train_module_model.append(state.model)
        return state

    monkeypatch.setattr(train_module, "build_state", remember_model)
    with pytest.raises(RuntimeError, match="loss is nan"):
        train(config, resume=True, progress=False, training_set=training_set, on_log=poisons_then_fails)
    assert last.read_bytes() == saved  # NaN weights never replace a good checkpoint


def test_ctrl_c_stops_between_steps_and_resume_matches(home):
    training_set = make_training_set(home, count=12)
    straight = make_tiny_config(home / "straight", **{"train.steps": 7, "train.checkpoint_every": 100})
    reference = train(straight, resume=False, progress=False, training_set=training_set)

    config = make_tiny_config(home / "stopped", **{"train.steps": 7, "train.checkpoint_every": 100})

    def press_ctrl_c(row):
        if row["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(config, resume=False, progress=False, training_set=training_set, on_log=press_ctrl_c)
    assert signal.getsignal(signal.SIGINT) is handler  # the handler is put back
    assert read_checkpoint(config.run_dir / "checkpoints" / "last.pt")["step"] == 3
    resumed = train(config, resume=True, progress=False, training_set=training_set)
    assert_same_weights(weights(resumed.model), weights(reference.model))


def test_stale_temp_files_are_removed_and_files_get_the_usual_permissions(home, capsys):
    training_set = make_training_set(home, count=8)
    config = make_tiny_config(home, **{"train.steps": 2})
    stale = config.run_dir / "checkpoints" / ".last.pt.abc123.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    train(config, resume=True, progress=False, training_set=training_set)
    assert not stale.exists() and "removed" in capsys.readouterr().out
    umask = os.umask(0)
    os.umask(umask)
    assert (config.run_dir / "checkpoints" / "last.pt").stat().st_mode & 0o777 == 0o666 & ~umask


KILLED_RUN = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from factories import make_tiny_config, make_training_set
    from labkit.train import train
    torch.set_num_threads(1)
    config = make_tiny_config(Path({root!r}), **{{"train.steps": {steps}, "train.checkpoint_every": 1}})
    said = []

    def say_training(row):  # once, at the first logged step: the parent's clock starts when steps run
        if not said:
            print("training", flush=True)
            said.append(1)

    train(config, resume=True, progress=False, training_set=make_training_set(Path({data!r}), count=12), on_log=say_training)
    print("finished", flush=True)
""")


def test_training_killed_at_random_moments_resumes_to_the_uninterrupted_weights(home):
    """kill -9 at random moments (a checkpoint is written every step, so many kills land mid-write):
    the run resumes from its last checkpoint to the same weights as a run never interrupted."""
    steps = 30
    torch.set_num_threads(1)  # the killed runs use one thread too: the same arithmetic
    training_set = make_training_set(home / "data", count=12)
    straight = make_tiny_config(home / "straight", **{"train.steps": steps, "train.checkpoint_every": 1})
    reference = train(straight, resume=False, progress=False, training_set=training_set)

    rng = random.Random(0)
    trials, kills, deadline, killed_at = 0, 0, time.monotonic() + 30, []
    while time.monotonic() < deadline or trials < 3:
        root = home / f"trial{trials}"
        script = KILLED_RUN.format(tests=str(CHECKOUT / "tests"), root=str(root), steps=steps, data=str(home / "data"))
        env = dict(os.environ, OMP_NUM_THREADS="1")
        for _ in range(3):  # kill the same run up to three times, then let it finish
            process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
            if any(line.strip() == "training" for line in iter(process.stdout.readline, "")):  # else: finished
                time.sleep(rng.uniform(0.0, 1.0))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait()
            last = root / "runs" / "smoke" / "checkpoints" / "last.pt"
            killed_at.append(read_checkpoint(last)["step"] if last.exists() else 0)
        config = make_tiny_config(root, **{"train.steps": steps, "train.checkpoint_every": 1})
        train(config, resume=True, progress=False, training_set=training_set)
        final = read_checkpoint(config.run_dir / "checkpoints" / "last.pt")
        assert_same_weights(final["model"], weights(reference.model))
        assert final["step"] == steps
        assert_same_weights(final["ema"], weights(reference.ema_model))
        assert not list((config.run_dir / "checkpoints").glob(".*.tmp"))
        trials += 1
    print(f"{trials} runs, {kills} kills (last checkpoint then: steps {killed_at}), each resumed to the "
          f"uninterrupted weights")
    assert kills >= 3 and any(0 < step < steps for step in killed_at)  # some kills landed mid-run
