"""The experiments: one run per variant in its own folder, tables with standard errors, figures."""

from __future__ import annotations

import json

import pytest

from factories import make_tiny_config, make_training_set
from labkit import experiments, synth
from labkit.config import ConfigError
from labkit.data import resolve_source
from labkit.judge import Judge, build_evaluator_network


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    config = make_tiny_config(tmp_path, **{"train.steps": 2})
    config.sample.num_inference_steps = 2
    synth.write_condition_files(tmp_path / "data" / "synthetic", seed=config.data.synthetic_seed)
    source = resolve_source(config.data, render=False)
    conditions = {split: source.conditions(split) for split in experiments.SPLITS}
    judge = Judge("synthetic judge", build_evaluator_network(), "cpu")
    return config, judge, conditions, source.label_space, make_training_set(tmp_path, count=8)


def test_standard_error_and_the_two_se_rule():
    assert experiments.standard_error(0.5, 100) == pytest.approx(0.05)
    same = {"accuracy": 0.60, "se": 0.05}
    assert "no measurable difference" in experiments.compare({"accuracy": 0.65, "se": 0.05}, same)
    assert experiments.compare({"accuracy": 0.90, "se": 0.03}, same).startswith("higher by 0.300")


def test_a_training_experiment_keeps_one_run_per_variant(setup):
    config, judge, conditions, label_space, training_set = setup
    result = experiments.run_training_experiment("conditioning", config, 2, judge, conditions, label_space,
                                                 progress=False, training_set=training_set)
    assert [row["variant"] for row in result.rows] == ["embedding", "channels"]
    runs = {row["run"] for row in result.rows}
    assert runs == {"exp-conditioning-embedding", "exp-conditioning-channels"}
    for row in result.rows:
        assert (config.run_dir.parent / row["run"] / "checkpoints" / "last.pt").exists()
        assert row["test"]["objects"] == 72 and row["new_test"]["objects"] == 84
        assert row["test"]["se"] == pytest.approx(experiments.standard_error(row["test"]["accuracy"], 72))
    experiments.add_comparisons(result)
    folder = experiments.write_result(result, config)
    table = json.loads((folder / "table.json").read_text())
    assert table["experiment"] == "conditioning" and len(table["rows"]) == 2
    assert "± " in (folder / "table.md").read_text() and (folder / "figure.png").stat().st_size > 1000
    assert any("against" in note for note in result.notes)


def test_sampling_experiments_share_one_base_run(setup):
    config, judge, conditions, label_space, training_set = setup
    ema = experiments.run_sampling_experiment("ema", config, 2, judge, conditions, label_space, progress=False,
                                              training_set=training_set)
    assert [row["variant"] for row in ema.rows] == ["raw weights", "EMA weights"]
    seeds = experiments.run_sampling_experiment("seeds", config, 2, judge, conditions, label_space, progress=False,
                                                seeds=3, training_set=training_set)
    assert len(seeds.rows) == 3
    experiments.add_comparisons(seeds)
    assert any(note.startswith("over 3 seeds: mean") for note in seeds.notes)
    assert [path.name for path in config.run_dir.parent.iterdir()] == [experiments.BASE_RUN]


def test_sampler_variants_stay_within_the_timesteps():
    names = [name for name, _ in experiments.sampler_variants(100)]
    assert "DDPM 100" in names and "DDPM 250" not in names and "DDIM 25, η=1" in names


def test_unknown_experiment_is_refused(setup):
    config = setup[0]
    with pytest.raises(ConfigError, match="unknown experiment 'noise'.*schedules"):
        experiments.run("noise", config)
