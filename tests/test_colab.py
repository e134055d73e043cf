"""The notebooks' first cell and labkit.colab, with Colab and Google Drive mocked."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from labkit import colab
from labkit.config import get_config, resolve_path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


def first_code_cell(path: Path) -> str:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return "".join(next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")["source"])


def bootstrap_lines(path: Path) -> str:
    """The first cell up to and including the setup call: what must be the same in every notebook."""
    text = first_code_cell(path)
    return text[: text.index("cfg = labkit.colab.setup(")]


@pytest.fixture
def fake_colab(monkeypatch):
    """``google.colab`` importable with a recording ``drive.mount``; returns the list of mount calls."""
    mounts: list[str] = []
    drive = types.SimpleNamespace(mount=lambda mountpoint: mounts.append(mountpoint))
    package = types.ModuleType("google")
    module = types.ModuleType("google.colab")
    module.drive = drive
    package.colab = module
    monkeypatch.setitem(sys.modules, "google", package)
    monkeypatch.setitem(sys.modules, "google.colab", module)
    monkeypatch.delenv("LABKIT_HOME", raising=False)
    return mounts


def test_every_notebook_starts_with_the_same_bootstrap():
    assert len(NOTEBOOKS) == 8
    first = bootstrap_lines(NOTEBOOKS[0])
    assert colab.REPOSITORY in first and colab.COLAB_CHECKOUT in first
    for path in NOTEBOOKS:
        assert bootstrap_lines(path) == first, path.name
        assert "cfg = labkit.colab.setup(seed=0)" in first_code_cell(path)
        assert "requirements.txt" not in first_code_cell(path)  # not JupyterLab, nbval or pytest on Colab


def test_bootstrap_clones_only_on_colab_without_a_checkout(fake_colab, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: calls.append(command))
    monkeypatch.setattr(sys, "path", list(sys.path))
    code = bootstrap_lines(NOTEBOOKS[0])
    monkeypatch.chdir(ROOT / "notebooks")  # opened from a checkout: ../labkit exists
    exec(code, {})
    assert calls == [] and sys.path[0] == str(ROOT)
    monkeypatch.chdir(tmp_path)  # opened from GitHub: nothing there, so it clones
    exec(code, {})
    assert calls == [["git", "clone", "-q", "--depth", "1", colab.REPOSITORY, colab.COLAB_CHECKOUT]]
    assert sys.path[0] == colab.COLAB_CHECKOUT


def test_readme_opens_every_notebook_in_colab():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    slug = colab.REPOSITORY.removeprefix("https://github.com/")
    for path in NOTEBOOKS:
        assert f"https://colab.research.google.com/github/{slug}/blob/main/notebooks/{path.name}" in readme, path.name


def requirement_names(path: Path) -> dict[str, str]:
    """{package name: the whole line} of a requirements file (comments dropped)."""
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {re.split(r"[<>=!~ ]", line)[0]: line for line in lines if line}


def test_runtime_requirements_leave_colab_packages_alone():
    runtime = requirement_names(ROOT / colab.RUNTIME_REQUIREMENTS)
    assert {"torch", "diffusers", "accelerate", "ipywidgets", "tqdm", "matplotlib", "scipy"} <= set(runtime)
    assert not {"jupyterlab", "nbval", "pytest", "ipykernel", "playwright", "-e"} & set(runtime)
    assert runtime["ipywidgets"] == "ipywidgets>=7.7,<9"  # Colab's 7.7.1 stays (ipywidgets 8 breaks its widgets)
    assert runtime["torch"] == "torch>=2.4"  # a range that admits Colab's torch, never a pin


def test_local_requirements_add_jupyterlab_with_widgets_it_can_render():
    local = requirement_names(ROOT / "requirements.txt")
    assert local["-r"] == f"-r {colab.RUNTIME_REQUIREMENTS}"  # the runtime set, plus:
    assert {"jupyterlab", "ipykernel", "nbval", "pytest", "playwright", "-e"} <= set(local)
    # JupyterLab 4 cannot render ipywidgets 7 widgets ("Click to show javascript error")
    assert local["jupyterlab"] == "jupyterlab>=4" and local["ipywidgets"] == "ipywidgets>=8,<9"
    assert "torch" not in local  # torch's range lives in the runtime set only


def test_off_colab_setup_only_reads_the_profile_and_seeds(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("nothing is installed off Colab"))
    config = colab.setup("smoke", seed=3)
    assert config.profile == "smoke" and Path.cwd() == tmp_path
    drawn = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(drawn, torch.rand(3))


def test_colab_setup_works_in_the_checkout_installs_runtime_packages_and_keeps_files_on_drive(
    fake_colab, monkeypatch, tmp_path
):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: calls.append(command))
    monkeypatch.setattr(colab, "DRIVE_MOUNTPOINT", str(tmp_path / "drive"))
    fake_colab_mount = fake_colab
    monkeypatch.setattr(colab, "_mount_with_colab", lambda mountpoint: (fake_colab_mount.append(mountpoint),
                                                                         Path(mountpoint, "MyDrive").mkdir(parents=True)))
    monkeypatch.chdir(tmp_path)
    config = colab.setup("gpu")
    assert Path.cwd() == colab.checkout_root() == ROOT
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements-colab.txt")]]
    home = tmp_path / "drive" / "MyDrive" / "labkit"
    assert fake_colab == [str(tmp_path / "drive")]
    assert all((home / name).is_dir() for name in colab.HOME_FOLDERS)
    assert resolve_path("runs") == home / "runs" and config.run_dir == home / "runs" / "gpu"


def test_keep_on_drive_on_a_mounted_drive_and_when_mounting_fails(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("LABKIT_HOME", raising=False)
    (tmp_path / "MyDrive").mkdir()
    home = colab.keep_on_drive(get_config("gpu"), mountpoint=tmp_path,
                               mount=lambda mountpoint: pytest.fail("already mounted"))
    assert home == tmp_path / "MyDrive" / "labkit" and resolve_path("outputs") == home / "outputs"
    printed = capsys.readouterr().out
    assert "every 2,000 steps (train.checkpoint_every)" in printed and "a disconnect loses at most" in printed

    monkeypatch.delenv("LABKIT_HOME")

    def refuse(mountpoint):
        raise RuntimeError("credential propagation was unsuccessful")

    assert colab.keep_on_drive(mountpoint=tmp_path / "elsewhere", mount=refuse) is None
    assert "LABKIT_HOME" not in __import__("os").environ
    assert "deletes on disconnect" in capsys.readouterr().out


def test_missing_runtime_requirements_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="requirements-colab.txt is missing"):
        colab.install_runtime(tmp_path, run=lambda *a, **k: None)


def test_set_repository_rewrites_every_copy_of_the_address(tmp_path):
    import shutil

    for relative in ("README.md", "labkit/colab.py", *[f"notebooks/{path.name}" for path in NOTEBOOKS]):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / relative, tmp_path / relative)
    changed = colab.set_repository("course-team/diffusion-lab", tmp_path)
    assert len(changed) == 2 + len(NOTEBOOKS)
    old = colab.REPOSITORY.removeprefix("https://github.com/")
    for path in changed:
        text = path.read_text(encoding="utf-8")
        assert f"github.com/{old}" not in text and "course-team/diffusion-lab" in text, path
    readme = (tmp_path / "README.md").read_text()
    assert readme.count("colab.research.google.com/github/course-team/diffusion-lab/blob/main/notebooks/") == len(NOTEBOOKS)
    with pytest.raises(ValueError, match="account/name"):
        colab.set_repository("https://github.com/x", tmp_path)
