"""The typed config: values coerced by their annotation, every bad value refused up front with a clear message."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from labkit.__main__ import main
from labkit.config import ConfigError, LabConfig, coerce, get_config

# (override, value as typed on a command line, words the message must hold)
BAD_VALUES = [
    ("data.hflip", "maybe", ["data.hflip", "'maybe'", "true or false", "yes/no"]),
    ("train.steps", "1.5", ["train.steps", "'1.5'", "whole number"]),
    ("train.steps", "abc", ["train.steps", "'abc'", "whole number"]),
    ("model.backend", "unet", ["model.backend", "'unet'", "diffusers or compact"]),
    ("train.precision", "bf17", ["train.precision", "'bf17'", "auto, bf16, fp16 or fp32"]),
    ("sample.sweep_scales", "3", ["sample.sweep_scales", "'3'", "a list of numbers"]),
    ("sample.sampler", "euler", ["sample.sampler", "'euler'", "ddpm, ddim or dpmsolver++"]),
    ("diffusion.schedule", "scaled_linear", ["diffusion.schedule", "linear, cosine, quadratic or sigmoid"]),
    ("diffusion.prediction_type", "eps", ["diffusion.prediction_type", "epsilon, v_prediction or sample"]),
    ("data.source", "web", ["data.source", "auto, official or synthetic"]),
    ("model.conditioning", "cross_attention", ["model.conditioning", "embedding or channels"]),
    ("train.channels_last", "sometimes", ["train.channels_last", "'sometimes'", "true or false", "auto"]),
    ("train.stepz", "3", ["unknown setting train.stepz", "did you mean train.steps"]),
    ("train.steps", "0", ["train.steps = 0", ">= 1"]),
    ("sample.guidance_scale", "-1", ["sample.guidance_scale = -1.0", ">= 0"]),
    ("model.channel_mults", "[1, 2, 2]", ["model.attention_levels has 2 entries", "channel_mults has 3"]),
]


@pytest.mark.parametrize("setting, value, words", BAD_VALUES, ids=[f"{s}={v}" for s, v, _ in BAD_VALUES])
def test_get_config_refuses_bad_values(setting, value, words):
    with pytest.raises(ConfigError) as error:
        get_config("smoke", **{setting: value})
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("setting, value, words", BAD_VALUES, ids=[f"{s}={v}" for s, v, _ in BAD_VALUES])
def test_the_command_line_refuses_bad_values_with_a_message(setting, value, words, capsys):
    assert main(["train", "--profile", "smoke", "--set", f"{setting}={value}"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    for word in words:
        assert word in captured.err
    assert "Traceback" not in captured.err


def test_the_command_line_prints_no_traceback_for_a_scalar_list():
    completed = subprocess.run(
        [sys.executable, "-m", "labkit", "sample", "--profile", "smoke", "--set", "sample.sweep_scales=3"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert "sample.sweep_scales = '3' is not a list" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize("text, expected", [("true", True), ("no", False), ("YES", True), ("0", False), (1, True), (False, False)])
def test_booleans_are_strict(text, expected):
    assert get_config("smoke", **{"data.hflip": text}).data.hflip is expected


def test_values_are_coerced_by_annotation():
    config = get_config(
        "smoke",
        **{
            "train.steps": "500",
            "train.lr": "1e-3",
            "sample.guidance_scale": 2,
            "sample.sweep_scales": "[1, 2.5]",
            "model.channel_mults": [1, 2],
            "model.attention_levels": [False, True],
            "train.channels_last": "no",
        },
    )
    assert config.train.steps == 500 and isinstance(config.train.steps, int)
    assert config.train.lr == 1e-3
    assert config.sample.guidance_scale == 2.0 and isinstance(config.sample.guidance_scale, float)
    assert config.sample.sweep_scales == (1.0, 2.5)
    assert config.model.channel_mults == (1, 2) and config.model.attention_levels == (False, True)
    assert config.train.channels_last is False
    assert get_config("smoke", **{"train.channels_last": "auto"}).train.channels_last == "auto"
    assert get_config("smoke", **{"train.steps": 6e4}).train.steps == 60000


def test_assignments_are_checked_at_once():
    config = get_config("smoke")
    with pytest.raises(ConfigError, match=r"train.steps = 1.5 is not a whole number"):
        config.train.steps = 1.5
    with pytest.raises(ConfigError, match="sample.sampler must be one of ddpm, ddim or dpmsolver\\+\\+, not 'dpm'"):
        config.sample.sampler = "dpm"
    with pytest.raises(ConfigError, match="profile must be one of smoke, cpu or gpu"):
        config.profile = "tpu"
    assert config.train.steps == 40 and config.sample.sampler == "ddim"  # the refused values left nothing behind


def test_from_dict_and_load_check_every_value(tmp_path):
    with pytest.raises(ConfigError, match=r"train.steps = 'abc' is not a whole number"):
        LabConfig.from_dict({"train": {"steps": "abc"}})
    with pytest.raises(ConfigError, match="unknown setting model.widht"):
        LabConfig.from_dict({"model": {"widht": 3}})
    with pytest.raises(ConfigError, match="unknown config section 'training'"):
        LabConfig.from_dict({"training": {}})
    config = get_config("cpu")
    path = tmp_path / "config.json"
    config.save(path)
    assert LabConfig.load(path) == config
    saved = json.loads(path.read_text())
    saved["judge"]["min_accuracy"] = 1.5
    path.write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match=r"config.json: bad settings: judge.min_accuracy = 1.5 must be <= 1.0"):
        LabConfig.load(path)


def test_all_range_problems_are_listed_together():
    with pytest.raises(ConfigError, match=r"judge.steps = 0 must be >= 1; judge.lr = -1.0 must be > 0.0"):
        get_config("smoke", **{"judge.steps": 0, "judge.lr": -1})


def test_run_names_are_plain_names():
    with pytest.raises(ConfigError, match="train.run_name = '../elsewhere' must be a plain name"):
        get_config("smoke", **{"train.run_name": "../elsewhere"})


def test_unknown_profile_names_the_choices(monkeypatch):
    with pytest.raises(ConfigError, match="profile must be one of smoke, cpu or gpu, not 'tpu'"):
        get_config("tpu")
    monkeypatch.setenv("LABKIT_PROFILE", "laptop")
    with pytest.raises(ConfigError, match="LABKIT_PROFILE must be one of smoke, cpu or gpu, not 'laptop'"):
        get_config()


def test_coerce_names_the_setting():
    with pytest.raises(ConfigError, match=r"x.y\[1\] = 'b' is not a whole number"):
        coerce([1, "b"], tuple[int, ...], "x.y")
