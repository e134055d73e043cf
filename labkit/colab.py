"""The first cell of every notebook: on Colab, set the lab up; elsewhere, only the profile and seed.

A notebook opened from GitHub in Colab has no checkout, so its first cell fetches one before it can
import ``labkit`` (a few inline lines), then calls :func:`setup`::

    import os, subprocess, sys
    if "google.colab" in sys.modules:  # Colab: find or fetch the lab's checkout
        if not os.path.isdir("../labkit") and not os.path.isdir("/content/labkit"):
            subprocess.run(["git", "clone", "-q", "--depth", "1", REPOSITORY, "/content/labkit"], check=True)
        sys.path.insert(0, os.path.abspath("..") if os.path.isdir("../labkit") else "/content/labkit")
    import labkit.colab
    cfg = labkit.colab.setup()

On Colab :func:`setup` makes the checkout the working folder, installs the lab's runtime packages
only (``requirements-colab.txt``: never Colab's own torch or ipywidgets, nor JupyterLab, nbval or
pytest, which would upgrade Colab's jupyter-client against its pins), and keeps ``data/``,
``runs/``, ``outputs/`` and ``report_figures/`` on Google Drive (``LABKIT_HOME``), because Colab
deletes the runtime's disk on disconnect. Off Colab it does nothing but read the profile and seed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from labkit.config import LabConfig, get_config
from labkit.runtime import seed_everything

REPOSITORY = "https://github.com/OWNER/labkit"  # the lab's public repository (the notebooks' first cells and README links say the same)
COLAB_CHECKOUT = "/content/labkit"  # where the first cell clones the repository
DRIVE_MOUNTPOINT = "/content/drive"
DRIVE_FOLDER = "MyDrive/labkit"  # data/, runs/, outputs/, report_figures/ live here on Google Drive
HOME_FOLDERS = ("data", "runs", "outputs", "report_figures")
RUNTIME_REQUIREMENTS = "requirements-colab.txt"


def on_colab() -> bool:
    """True inside a Google Colab runtime (its kernel has imported ``google.colab``)."""
    return "google.colab" in sys.modules


def checkout_root() -> Path:
    """The checkout this ``labkit`` was imported from (holds ``pyproject.toml`` and ``notebooks/``)."""
    return Path(__file__).resolve().parents[1]


def install_runtime(root: Path, run: Callable | None = None) -> None:
    """``pip install`` the lab's runtime packages (``requirements-colab.txt``); their ranges admit
    Colab's preinstalled torch, diffusers and ipywidgets, so pip leaves those alone."""
    requirements = root / RUNTIME_REQUIREMENTS
    if not requirements.is_file():
        raise FileNotFoundError(f"{requirements} is missing: the checkout at {root} is incomplete; clone it again")
    print(f"Installing the lab's runtime packages ({RUNTIME_REQUIREMENTS}; Colab's torch and ipywidgets stay)")
    (run or subprocess.run)([sys.executable, "-m", "pip", "install", "-q", "-r", str(requirements)], check=True)


def _mount_with_colab(mountpoint: str) -> None:
    from google.colab import drive  # only importable on Colab

    drive.mount(mountpoint)


def keep_on_drive(
    config: LabConfig | None = None,
    mountpoint: str | os.PathLike | None = None,
    folder: str = DRIVE_FOLDER,
    mount: Callable[[str], None] | None = None,
) -> Path | None:
    """Mount Google Drive (Colab asks for permission) and keep the lab's files there; returns that folder.

    Creates ``<mountpoint>/<folder>/{data,runs,outputs,report_figures}`` and sets ``LABKIT_HOME`` to
    it, so every path labkit resolves (and every ``python -m labkit`` started from this kernel)
    reads and writes there (mountpoint: default ``/content/drive``; mount: default
    ``google.colab.drive.mount``); a disconnect then loses at most the steps since the last checkpoint.
    When mounting fails or is refused, nothing changes and None is returned with the reason.
    """
    mountpoint = Path(mountpoint or DRIVE_MOUNTPOINT)
    if not (mountpoint / "MyDrive").is_dir():
        print("Mounting Google Drive so that runs survive a disconnect (Colab asks for permission) ...")
        try:
            (mount or _mount_with_colab)(str(mountpoint))
        except Exception as error:  # refused, timed out, or no Drive
            print(f"Google Drive was not mounted ({error}). data/, runs/ and outputs/ stay on this runtime's disk, "
                  "which Colab deletes on disconnect. Run this cell again to retry, or use setup(drive=False).")
            return None
    home = mountpoint / folder
    for name in HOME_FOLDERS:
        (home / name).mkdir(parents=True, exist_ok=True)
    os.environ["LABKIT_HOME"] = str(home)
    every = f"every {config.train.checkpoint_every:,} steps (train.checkpoint_every)" if config else "at each checkpoint"
    print(f"Google Drive: {', '.join(name + '/' for name in HOME_FOLDERS)} are kept in {home}.\n"
          f"Training saves a checkpoint {every}, so a disconnect loses at most the steps since the last one; "
          f"run the same cell again to resume. The course files, if you have them, go in {home / 'data'}.")
    return home


def setup(profile: str | None = None, seed: int = 0, drive: bool = True, install: bool = True) -> LabConfig:
    """The first cell's work: returns the profile's config (``profile``: default ``LABKIT_PROFILE``,
    else gpu with CUDA, else cpu) after seeding Python and torch with ``seed``.

    On Colab only, before that: the checkout becomes the working folder (so ``!python -m labkit ...``
    works in a cell), the runtime packages are installed (``install``), and with ``drive`` (the
    default) the lab's files are kept on Google Drive (:func:`keep_on_drive`).
    """
    config = get_config(profile)
    if on_colab():
        root = checkout_root()
        os.chdir(root)
        print(f"Colab: working in {root}")
        if install:
            install_runtime(root)
        if drive:
            keep_on_drive(config)
        else:
            print("drive=False: data/, runs/ and outputs/ are on this runtime's disk, which Colab deletes on disconnect.")
    seed_everything(seed)
    return config


# ---- publishing the lab under another repository ---------------------------------------------------------------
def set_repository(slug: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Write the repository ``slug`` ("account/name" on GitHub) into the README's Colab links, the
    notebooks' first cells and :data:`REPOSITORY`, in the checkout ``root`` (default: this one).

    Returns the files changed. Run once when publishing the lab: ``python -m labkit.colab --repository account/name``.
    """
    import re

    if not re.fullmatch(r"[\w.-]+/[\w.-]+", slug):
        raise ValueError(f"--repository must look like account/name (as in github.com/account/name), not {slug!r}")
    root = Path(root) if root is not None else checkout_root()
    old = REPOSITORY.removeprefix("https://github.com/")
    files = [root / "README.md", root / "labkit" / "colab.py", *sorted((root / "notebooks").glob("*.ipynb")),
             *sorted((root / "notebooks" / "student").glob("*.ipynb"))]
    changed = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        new = text.replace(f"github.com/{old}", f"github.com/{slug}").replace(f"/github/{old}/", f"/github/{slug}/")
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m labkit.colab", description="Write the lab's GitHub repository into the README's Colab links, the notebooks' first cells and labkit/colab.py.")
    parser.add_argument("--repository", required=True, metavar="ACCOUNT/NAME", help="the lab's GitHub repository")
    arguments = parser.parse_args()
    for path in set_repository(arguments.repository):
        print(f"updated {path}")
