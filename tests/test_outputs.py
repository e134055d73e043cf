"""Each run keeps its own required files; one command copies a chosen run's files into the hand-in layout."""

from __future__ import annotations

import json

import pytest
import torch

from factories import make_tiny_config
from labkit import lab
from labkit.__main__ import main
from labkit.evaluate import save_required_outputs
from labkit.data import decode_png


@pytest.fixture(autouse=True)
def project_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))


def fake_run_outputs(config, value: int) -> None:
    """32 flat images of one grey level per split in the run's outputs folder, as the sample stage writes them."""
    images = torch.full((32, 3, 8, 8), value, dtype=torch.uint8)
    for split in lab.SPLITS:
        save_required_outputs(images, split, config.outputs_dir, config.report_dir)
    (config.outputs_dir / "accuracy.txt").write_text(f"run {config.run_name}\n")


def test_runs_keep_their_own_outputs(tmp_path):
    cpu = make_tiny_config(tmp_path, **{"train.run_name": "cpu_run"})
    experiment = make_tiny_config(tmp_path, **{"train.run_name": "experiment"})
    assert cpu.outputs_dir == tmp_path / "outputs" / "cpu_run"
    assert cpu.report_dir == tmp_path / "outputs" / "cpu_run" / "report_figures"
    fake_run_outputs(cpu, 10)
    fake_run_outputs(experiment, 200)
    assert int(decode_png(cpu.outputs_dir / "images" / "test" / "0.png")[0, 0, 0]) == 10
    assert int(decode_png(experiment.outputs_dir / "images" / "test" / "0.png")[0, 0, 0]) == 200
    assert (cpu.report_dir / "test_grid.png").is_file() and (experiment.report_dir / "new_test_grid.png").is_file()
    assert len(lab.read_output_images("new_test", cpu)) == 32


def test_hand_in_copies_the_chosen_run_into_the_flat_layout(tmp_path):
    first = make_tiny_config(tmp_path, **{"train.run_name": "first"})
    second = make_tiny_config(tmp_path, **{"train.run_name": "second"})
    fake_run_outputs(first, 10)
    fake_run_outputs(second, 200)
    folder = lab.hand_in(first)
    assert folder == tmp_path / "handin"
    assert sorted(p.name for p in (folder / "images" / "test").iterdir()) == sorted(f"{i}.png" for i in range(32))
    assert int(decode_png(folder / "images" / "new_test" / "31.png")[0, 0, 0]) == 10
    assert (folder / "test_grid.png").is_file() and (folder / "report_figures" / "new_test_grid.png").is_file()
    assert json.loads((folder / lab.HANDIN_MARK).read_text())["run"] == "first"
    lab.hand_in(second)  # an earlier hand-in is replaced; the runs' own files stay
    assert int(decode_png(folder / "images" / "test" / "0.png")[0, 0, 0]) == 200
    assert (folder / "accuracy.txt").read_text() == "run second\n"
    assert (first.outputs_dir / "accuracy.txt").read_text() == "run first\n"


def test_hand_in_never_overwrites_other_files(tmp_path):
    config = make_tiny_config(tmp_path, **{"train.run_name": "mine"})
    fake_run_outputs(config, 10)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "report.md").write_text("my report\n")
    with pytest.raises(FileExistsError, match="not an earlier hand-in"):
        lab.hand_in(config, notes)
    assert (notes / "report.md").read_text() == "my report\n"


def test_the_handin_command(tmp_path, capsys):
    config = make_tiny_config(tmp_path, **{"train.run_name": "graded"})
    assert main(["handin", "--profile", "smoke", "--run-name", "graded"]) == 2
    assert "no images in" in capsys.readouterr().err  # nothing sampled yet: a message, not a traceback
    fake_run_outputs(config, 10)
    assert main(["handin", "--profile", "smoke", "--run-name", "graded", "--to", str(tmp_path / "submit")]) == 0
    assert "handed in run graded" in capsys.readouterr().out
    assert (tmp_path / "submit" / "images" / "test" / "31.png").is_file()
