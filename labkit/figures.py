"""Figures: image grids, the denoising row, curves. Everything for ``report_figures/`` goes here.

Images are accepted as uint8 (B, 3, H, W) in [0, 255] or float (B, 3, H, W) in [-1, 1].
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

REPORT_DIR = "report_figures"


def report_path(name: str) -> Path:
    """``report_figures/<name>`` under the project root (the folder is created)."""
    from labkit.config import resolve_path

    folder = resolve_path(REPORT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 images pass through; float images in [-1, 1] are denormalised to uint8."""
    if images.dtype == torch.uint8:
        return images.cpu()
    return images.detach().float().cpu().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, upscale: int = 1) -> torch.Tensor:
    """A grid (torchvision ``make_grid``) as uint8 (3, H', W'); ``upscale`` enlarges pixels."""
    from torchvision.utils import make_grid

    images = as_uint8(images)
    if upscale > 1:
        images = images.repeat_interleave(upscale, dim=-2).repeat_interleave(upscale, dim=-1)
    return make_grid(images, nrow=nrow, padding=padding, pad_value=255)


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save one uint8 (3, H, W) (or float in [-1, 1]) image as PNG."""
    from torchvision.io import write_png

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(as_uint8(image[None])[0], str(path))
    return path


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8, upscale: int = 1) -> Path:
    """Save a ``make_grid`` of ``images`` as one PNG."""
    return save_image(image_grid(images, nrow=nrow, upscale=upscale), path)


def show_images(
    images: torch.Tensor,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    size: float = 1.6,
    suptitle: str | None = None,
    fontsize: int = 7,
):
    """A matplotlib figure with one image per axis and optional titles. Returns the figure."""
    import matplotlib.pyplot as plt

    images = as_uint8(images)
    count = len(images)
    ncols = min(ncols, count)
    nrows = (count + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.3 if suptitle else 0)), squeeze=False)
    for i, axis in enumerate(axes.flat):
        axis.axis("off")
        if i < count:
            axis.imshow(images[i].permute(1, 2, 0).numpy())
            if titles is not None:
                axis.set_title(titles[i], fontsize=fontsize)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def save_figure(fig, name: str, dpi: int = 120) -> Path:
    """Save a matplotlib figure to ``report_figures/<name>`` (PNG) and return the path."""
    path = report_path(name)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
