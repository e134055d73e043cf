"""The experiments: one run per variant in its own folder, tables with standard errors, figures."""

from __future__ import annotations

import json
import os

import pytest
import torch

from factories import make_tiny_config, make_training_set
from labkit import experiments, figures, synth
from labkit.config import ConfigError
from labkit.data import resolve_source
from labkit.judge import Judge, build_evaluator_network
from labkit.metrics import AccuracyResult


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
    assert runs == {experiments.BASE_RUN, "exp-conditioning-channels"}  # "embedding" is the profile's own recipe
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
    judge.holdout = AccuracyResult(0.991, 1784, 1800, "synthetic judge", "held-out")  # a judge with a known held-out accuracy
    assert experiments.judge_label(judge) == "synthetic judge (held-out accuracy 0.991)"


def test_only_a_variant_that_changes_the_recipe_trains_its_own_run(setup):
    config = setup[0]
    assert config.diffusion.schedule == "cosine" and config.diffusion.prediction_type != "epsilon"
    shared = experiments.variant_run_config(config, "schedules", "cosine", 3, {"diffusion.schedule": "cosine"})
    assert shared.run_name == experiments.BASE_RUN and shared.train.steps == 3
    own = experiments.variant_run_config(config, "prediction", "epsilon", 3, {"diffusion.prediction_type": "epsilon"})
    assert own.run_name == "exp-prediction-epsilon" and own.diffusion.prediction_type == "epsilon"
    assert not experiments.same_recipe(own, shared)


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
    assert experiments.run_checkpoints(config.run_dir.parent / experiments.BASE_RUN) == {1: "ema_000001", 2: "last"}


def test_sampling_scores_are_reused_until_the_checkpoint_or_settings_change(setup, monkeypatch):
    config, judge, conditions, label_space, training_set = setup
    first = experiments.run_sampling_experiment("seeds", config, 2, judge, conditions, label_space, progress=False,
                                                seeds=2, training_set=training_set)
    calls = []
    original = experiments.score
    monkeypatch.setattr(experiments, "score", lambda *args, **kwargs: calls.append(kwargs) or original(*args, **kwargs))
    again = experiments.run_sampling_experiment("seeds", config, 2, judge, conditions, label_space, progress=False,
                                                seeds=3, training_set=training_set)
    assert [row["test"] for row in again.rows[:2]] == [row["test"] for row in first.rows]
    assert len(calls) == 1 and calls[0]["seed"] == config.sample.seed + 2000  # only the new seed was sampled
    assert any(note.startswith("2 of 3 rows reused from") for note in again.notes)
    last = config.run_dir.parent / experiments.BASE_RUN / "checkpoints" / "last.pt"
    os.utime(last, ns=(last.stat().st_atime_ns, last.stat().st_mtime_ns + 10**9))  # the run was trained again
    experiments.run_sampling_experiment("seeds", config, 2, judge, conditions, label_space, progress=False,
                                        seeds=3, training_set=training_set)
    assert len(calls) == 4
    scores = experiments.experiment_folder("seeds") / "scores.json"
    scores.write_text('{"truncated')  # an unreadable file: everything is scored again, the file rewritten
    experiments.run_sampling_experiment("seeds", config, 2, judge, conditions, label_space, progress=False,
                                        seeds=3, training_set=training_set)
    assert len(calls) == 7 and len(json.loads(scores.read_text())) == 3


def test_sampler_variants_stay_within_the_timesteps():
    names = [name for name, _ in experiments.sampler_variants(100)]
    assert "DDPM 100" in names and "DDPM 250" not in names and "DDIM 25, η=1" in names


def test_unknown_experiment_is_refused(setup):
    config = setup[0]
    with pytest.raises(ConfigError, match="unknown experiment 'noise'.*schedules"):
        experiments.run("noise", config)


def test_checkpoints_draw_one_row_per_snapshot_in_their_own_folder(setup):
    config, judge, conditions, label_space, training_set = setup
    other = experiments.ExperimentResult("ema", judge.name, rows=[])
    other_folder = experiments.write_result(other, config)
    other_files = {path.name: path.read_bytes() for path in other_folder.iterdir()}
    result = experiments.run_checkpoints_experiment(config, 8, judge, conditions, label_space, progress=False,
                                                    training_set=training_set)
    assert [row["variant"] for row in result.rows] == ["step 2", "step 4", "step 6", "step 8"]  # every quarter
    assert [row["checkpoint"] for row in result.rows][-2:] == ["ema_000006.pt", "last.pt"]
    assert all(row["test"]["objects"] == 72 and row["new_test"]["se"] > 0 for row in result.rows)
    names = [axis.get_ylabel() for axis in result.figure.axes if axis.get_ylabel()]
    assert names == ["step 2", "step 4", "step 6", "step 8"]
    assert result.figure.axes[-1].get_title() == "" and result.figure.axes[2].get_title().startswith("final")
    folder = experiments.write_result(result, config)
    assert folder == experiments.experiment_folder("checkpoints") != other_folder
    assert sorted(path.name for path in folder.iterdir()) == ["accuracy.png", "figure.png", "table.json", "table.md"]
    table = json.loads((folder / "table.json").read_text())
    assert [row["step"] for row in table["rows"]] == [2, 4, 6, 8]
    assert "| ema_000002.pt |" in (folder / "table.md").read_text()
    assert {path.name: path.read_bytes() for path in other_folder.iterdir()} == other_files


def test_the_same_checkpoint_and_seed_give_the_same_image(setup):
    config, judge, conditions, label_space, training_set = setup
    base = experiments.snapshot_run(config, 4, None, progress=False, training_set=training_set)
    first = experiments.checkpoint_rows(base.run_dir, seed=5, frames=3, config=base)
    again = experiments.checkpoint_rows(base.run_dir, seed=5, frames=3, config=base)
    assert list(first) == ["step 1", "step 2", "step 3", "step 4"]
    assert all(row.shape == (3, 3, 16, 16) and row.dtype == torch.uint8 for row in first.values())
    assert all(torch.equal(first[name][-1], again[name][-1]) for name in first)
    other_seed = experiments.checkpoint_rows(base.run_dir, seed=6, frames=3, config=base)
    assert not torch.equal(first["step 4"][0], other_seed["step 4"][0])  # x_T: other noise


def test_a_finished_base_run_is_reused_with_or_without_snapshots(setup):
    config, judge, conditions, label_space, training_set = setup
    unsnapped = experiments.variant_config(config, experiments.BASE_RUN, 2, {})  # an exp-base from before snapshots
    experiments.train_variant(unsnapped, progress=False, training_set=training_set)
    last = config.run_dir.parent / experiments.BASE_RUN / "checkpoints" / "last.pt"
    written = last.stat().st_mtime_ns
    base = experiments.snapshot_run(config, 2, None, progress=False, training_set=training_set)
    assert base.train.snapshot_every == 1 and last.stat().st_mtime_ns == written  # reused, not trained again
    assert experiments.run_checkpoints(base.run_dir) == {2: "last"}
    assert list(experiments.checkpoint_rows(base.run_dir, frames=2, config=base)) == ["step 2"]
    experiments.base_model(config, 2, None, progress=False, training_set=training_set)
    named = experiments.snapshot_run(config, 99, experiments.BASE_RUN, progress=False)  # as it is, whatever the steps
    assert named.run_dir == base.run_dir and last.stat().st_mtime_ns == written


def test_run_checkpoints_keeps_at_most_max_rows_with_the_last(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    for step in range(100, 1000, 100):
        (folder / f"ema_{step:06d}.pt").write_bytes(b"")
    (folder / "ema_000100.pt.tmp").write_bytes(b"")
    torch.save({"step": 950}, folder / "last.pt")
    every = experiments.run_checkpoints(tmp_path / "run", max_rows=20)
    assert list(every) == [*range(100, 1000, 100), 950] and every[950] == "last" and every[100] == "ema_000100"
    assert list(experiments.run_checkpoints(tmp_path / "run", max_rows=4)) == [100, 400, 700, 950]


def test_denoising_rows_figure_labels_rows_and_columns():
    import matplotlib.pyplot as plt

    rows = {f"step {step}": torch.zeros(4, 3, 8, 8, dtype=torch.uint8) for step in (10, 20)}
    captions = figures.denoising_column_labels([99, 66, 33], frames=4)
    assert captions == ["t=99 · 0%", "t=66 · 33%", "t=33 · 67%", "final · 100%"]
    fig = figures.denoising_rows_figure(rows, "a title", column_labels=captions)
    assert len(fig.axes) == 8 and [axis.get_title() for axis in fig.axes[:4]] == captions
    assert [fig.axes[0].get_ylabel(), fig.axes[4].get_ylabel()] == ["step 10", "step 20"]
    assert fig.axes[0].images[0].get_array().shape == (64, 64, 3)  # 8 px enlarged by whole pixels
    plt.close(fig)
    with pytest.raises(ValueError, match="same number of frames"):
        figures.denoising_rows_figure({"a": torch.zeros(4, 3, 8, 8), "b": torch.zeros(3, 3, 8, 8)})


def test_close_sampler_labels_are_stacked_and_far_ones_stay_on_their_point():
    from labkit.experiments import label_positions

    xs = [0.06, 0.5, 0.6, 0.62, 9.0]  # seconds per image, increasing
    ys = [0.3, 0.2, 0.4, 0.3, 0.35]
    places = label_positions(xs, ys, gap=0.05)
    assert places[0] == (0.06, 0.3) and places[4] == (9.0, 0.35)  # alone: beside the point
    assert [place[0] for place in places[1:4]] == [0.5] * 3  # a cluster: one column, stacked above its highest point
    assert [round(place[1], 3) for place in places[1:4]] == [0.5, 0.55, 0.6]
