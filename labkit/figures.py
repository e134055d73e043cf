"""Figures: image grids, the denoising row (and rows of several checkpoints), curves. Everything for
``report_figures/`` goes here.

Images are accepted as uint8 (B, 3, H, W) in [0, 255] or float (B, 3, H, W) in [-1, 1].
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torchvision.utils import make_grid

from labkit.config import resolve_path
from labkit.images import enlarge, evaluator_view, resize_square, to_model_range, to_uint8, write_png
from labkit.schedules import NoiseSchedule

REPORT_DIR = "report_figures"


def report_path(name: str, folder: str | os.PathLike | None = None) -> Path:
    """``<folder>/<name>`` (the folder is created); ``folder`` defaults to ``report_figures/`` under the
    project root, for figures that belong to no run (data, schedules). A run's figures go to its
    ``config.report_dir`` (``outputs/<run name>/report_figures/``)."""
    folder = resolve_path(folder if folder is not None else REPORT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 images pass through; float images in [-1, 1] are denormalised to uint8."""
    if images.dtype == torch.uint8:
        return images.cpu()
    return to_uint8(images.detach().cpu())


def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, upscale: int = 1) -> torch.Tensor:
    """A grid (torchvision ``make_grid``) as uint8 (3, H', W'); ``upscale`` enlarges pixels."""
    images = as_uint8(images)
    if upscale > 1:
        images = images.repeat_interleave(upscale, dim=-2).repeat_interleave(upscale, dim=-1)
    return make_grid(images, nrow=nrow, padding=padding, pad_value=255)


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save one uint8 (3, H, W) (or float in [-1, 1]) image as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(as_uint8(image[None])[0], path)
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


def save_figure(fig, name: str, dpi: int = 120, folder: str | os.PathLike | None = None) -> Path:
    """Save a matplotlib figure as ``<folder>/<name>`` (PNG; default folder ``report_figures/``, see
    :func:`report_path`) and return the path."""
    path = report_path(name, folder)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def denoising_row(trajectory: torch.Tensor, frames: int = 10) -> torch.Tensor:
    """Pick ``frames`` evenly spaced images from a trajectory, noise first, clean last.

    trajectory: (steps + 1, 3, H, W) uint8 (x_T ... x_0) -> (frames, 3, H, W) uint8.
    """
    return as_uint8(trajectory[denoising_picks(trajectory.shape[0], frames)])


def denoising_picks(count: int, frames: int = 10) -> torch.Tensor:
    """The indices :func:`denoising_row` picks: ``frames`` (2 to ``count``) evenly spaced frames of a
    ``count``-frame trajectory, the first (noise) and the last (the final image) included. -> (frames,) long."""
    frames = max(2, min(frames, count))
    return torch.linspace(0, count - 1, frames).round().long()


def denoising_column_labels(timesteps: Sequence[int], frames: int = 10) -> list[str]:
    """Captions for the columns of :func:`denoising_row`: the timestep of each frame and how far the sampling
    has come, "t=999 · 0%" … "final · 100%". timesteps: the sampler's (steps,) timesteps, as in
    ``SampleResult.timesteps`` (frame k is x at ``timesteps[k]``; the last frame is the final image)."""
    steps = len(timesteps)
    captions = []
    for index in denoising_picks(steps + 1, frames).tolist():
        where = f"t={timesteps[index]}" if index < steps else "final"
        captions.append(f"{where} · {100 * index / max(steps, 1):.0f}%")
    return captions


def denoising_rows_figure(rows: dict, title: str = "", column_labels: Sequence[str] | None = None, size: int = 64,
                          scale: float = 0.95):
    """Denoising rows of several checkpoints of one run, one row each, noise on the left, the final image last.

    rows: row name (e.g. "step 300", written left of its row) -> (frames, 3, H, W) uint8 or float in [-1, 1],
    the same number of frames in each (see :func:`denoising_row`); column_labels: one caption per column
    (default: the fraction of the process, "0%" … "100%"; see :func:`denoising_column_labels`);
    size: pixels per image after whole-pixel upscaling; scale: inches per image. Returns the figure.
    """
    import matplotlib.pyplot as plt

    names = list(rows)
    frames = len(rows[names[0]]) if names else 0
    if not names or any(len(rows[name]) != frames for name in names):
        raise ValueError(f"denoising_rows_figure needs rows with the same number of frames, got "
                         f"{ {name: len(row) for name, row in rows.items()} }")
    column_labels = list(column_labels or [f"{100 * k / (frames - 1):.0f}%" for k in range(frames)])
    fig, axes = plt.subplots(len(names), frames, figsize=(scale * frames + 0.9, scale * len(names) + 0.7),
                             squeeze=False)
    for r, name in enumerate(names):
        images = enlarge(as_uint8(rows[name]), size)  # (frames, 3, size, size)
        for c in range(frames):
            axis = axes[r, c]
            axis.imshow(images[c].permute(1, 2, 0).numpy(), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(column_labels[c], fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.4, w_pad=0.2, h_pad=0.3)
    return fig


def denoising_strip(result, frames: int = 10, title: str = "", size: int = 64):
    """x_t (top row) and the model's predicted clean image x̂0 (bottom row) at ``frames`` evenly spaced
    steps of one sampled trajectory, noise on the left: the denoising stepper's frames as a still figure.

    result: a :class:`labkit.sample.SampleResult` sampled with ``return_trajectory=True`` (image 0 is
    shown); images are enlarged to ``size`` pixels (the evaluator's view of a 32x32 model).
    """
    import matplotlib.pyplot as plt

    available = [result.trajectory] + ([result.pred_x0] if result.pred_x0 is not None else [])  # x̂0: one fewer
    frames = max(2, min([frames] + [len(frames_of) for frames_of in available]))  # a short trajectory has fewer
    rows = [denoising_row(frames_of[:, 0], frames=frames) for frames_of in available]
    fig, axes = plt.subplots(len(rows), frames, figsize=(1.25 * frames, 1.35 * len(rows) + 0.4), squeeze=False)
    for r, row in enumerate(rows):
        row = as_uint8(resize_square(row, size)) if row.shape[-1] != size else row
        for c in range(frames):
            axes[r, c].imshow(row[c].permute(1, 2, 0).numpy())
            axes[r, c].axis("off")
        axes[r, 0].set_title("x_t" if r == 0 else "predicted x̂0", fontsize=8, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def sweep_figure(sweep: dict):
    """Accuracy against guidance scale for test.json and new_test.json (judge named in the title)."""
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(5, 3.2))
    for split, marker in (("test", "o"), ("new_test", "s")):
        axis.plot(sweep["scales"], sweep[split], marker=marker, label=f"{split}.json")
    if "mean" in sweep:
        axis.plot(sweep["scales"], sweep["mean"], linestyle="--", color="gray", label="mean")
    axis.set_xlabel("guidance scale w  (ε = ε_u + w(ε_c − ε_u))")
    axis.set_ylabel("accuracy")
    axis.set_ylim(0, 1.02)
    axis.set_title(f"guidance sweep, scored by the {sweep['judge']}")
    axis.grid(alpha=0.3)
    axis.legend()
    fig.tight_layout()
    return fig


def schedule_curves_figure(
    num_train_timesteps: Sequence[int] = (100, 1000),
    schedules: Sequence[str] = ("linear", "cosine", "quadratic", "sigmoid"),
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
):
    """β_t (log scale), ᾱ_t and log-SNR against t / T for each schedule and each T. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    styles = ("--", "-", ":", "-.")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for s, name in enumerate(schedules):
        for k, steps in enumerate(num_train_timesteps):
            schedule = NoiseSchedule(name, steps, beta_start=beta_start, beta_end=beta_end)
            u = (torch.arange(steps, dtype=torch.float64) + 1) / steps
            style = {"color": colors[s % len(colors)], "linestyle": styles[k % len(styles)], "linewidth": 1.4}
            label = f"{name}, T={steps}"
            axes[0].plot(u, schedule.betas, label=label, **style)
            axes[1].plot(u, schedule.alphas_cumprod, label=label, **style)
            axes[2].plot(u, schedule.log_snr, label=label, **style)
    axes[0].set_yscale("log")
    for axis, title in zip(axes, ("β_t", "ᾱ_t  (signal variance kept)", "log SNR = log(ᾱ_t / (1 − ᾱ_t))")):
        axis.set_title(title)
        axis.set_xlabel("t / T")
        axis.grid(alpha=0.3)
    axes[2].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def forward_process_figure(
    image: torch.Tensor,
    timesteps: Sequence[int] = (0, 100, 250, 500, 750, 999),
    schedules: Sequence[str] = ("linear", "cosine", "quadratic", "sigmoid"),
    num_train_timesteps: int = 1000,
    seed: int = 0,
    size: float = 1.5,
):
    """q(x_t | x_0) on one image: one row per schedule, one column per t, the same noise
    everywhere (drawn from ``seed``). image: uint8 (3, H, W) or float in [-1, 1]. Returns the figure."""
    import matplotlib.pyplot as plt

    x0 = to_model_range(image) if image.dtype == torch.uint8 else image.detach().float().cpu()
    noise = torch.randn((1, *x0.shape), generator=torch.Generator().manual_seed(seed)).expand(len(timesteps), -1, -1, -1)
    columns = torch.tensor(timesteps)
    fig, axes = plt.subplots(
        len(schedules), len(timesteps), figsize=(size * len(timesteps), size * len(schedules) + 0.3), squeeze=False
    )
    for row, name in enumerate(schedules):
        schedule = NoiseSchedule(name, num_train_timesteps)
        noisy = schedule.add_noise(x0.expand(len(timesteps), -1, -1, -1), noise, columns)  # (K, 3, H, W)
        for col, t in enumerate(timesteps):
            axis = axes[row, col]
            axis.imshow(as_uint8(noisy[col : col + 1])[0].permute(1, 2, 0).numpy())
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(f"t={t}  ᾱ={schedule.alphas_cumprod[t].item():.3f}", fontsize=7)
            if col == 0:
                axis.set_ylabel(name, fontsize=9)
    fig.suptitle(f"forward process q(x_t | x_0), T = {num_train_timesteps}, same noise in every panel", fontsize=10)
    fig.tight_layout()
    return fig


def label_statistics_figure(labels: torch.Tensor, names: Sequence[str], title: str = "training labels"):
    """Per-object counts, objects per image and the object co-occurrence of multi-hot labels (N, 24).

    Bars are drawn in each object's color; the heat map's diagonal (an object with itself) is left
    out so the pairs stay readable. Returns the figure.
    """
    import matplotlib.pyplot as plt

    labels = labels.detach().float().cpu()
    counts, per_image = labels.sum(dim=0), labels.sum(dim=1).round().long()
    together = labels.T @ labels  # (24, 24) images holding both objects
    together.fill_diagonal_(0)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), gridspec_kw={"width_ratios": [2.3, 0.7, 1.5]})
    axes[0].bar(range(len(names)), counts, color=[name.split()[0] for name in names], edgecolor="black", linewidth=0.4)
    axes[0].set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axes[0].set_title(f"images per object ({title}, {len(labels)} images)")
    sizes = sorted(set(per_image.tolist()))
    axes[1].bar(sizes, [int((per_image == k).sum()) for k in sizes], color="gray")
    axes[1].set_xticks(sizes)
    axes[1].set_title("objects per image")
    heat = axes[2].imshow(together, cmap="viridis")
    axes[2].set_xticks(range(len(names)), names, rotation=90, fontsize=5)
    axes[2].set_yticks(range(len(names)), names, fontsize=5)
    axes[2].set_title("co-occurrence (images with both)")
    fig.colorbar(heat, ax=axes[2], fraction=0.046)
    fig.tight_layout()
    return fig


def preprocessing_figure(image: torch.Tensor, size: int = 64):
    """One 320x240 image through the lab's preprocessing, and the two common alternatives.

    Top: original -> squashed square -> ``size`` px -> the evaluator's view (32 px upsampled to 64).
    Bottom: pad-then-resize and resize-then-crop. Only what anyone can reproduce is drawn; the course
    evaluator's accuracy for each (a measurement on the official training images) is quoted in notebook 01.
    image: uint8 (3, H, W). Returns the figure.
    """
    import matplotlib.pyplot as plt
    import torch.nn.functional as F

    height, width = image.shape[-2:]
    side = max(height, width)
    padded = F.pad(image, ((side - width) // 2, (side - width + 1) // 2, (side - height) // 2, (side - height + 1) // 2))
    short = F.interpolate(image[None].float(), size=(size, round(size * width / height)), mode="bilinear", antialias=True)
    left = (short.shape[-1] - size) // 2
    panels = [
        (image, f"original {width}x{height}"),
        (resize_square(image, side), f"squashed to {side}x{side}"),
        (resize_square(image, size), f"direct resize {size}x{size} (default)"),
        (evaluator_view(resize_square(image, size)[None])[0], "evaluator's view (32 -> 64)"),
        (resize_square(padded, size), "pad, then resize"),
        (short[0, :, :, left : left + size], "resize short side, crop"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.2))
    for axis, (picture, caption) in zip(axes.flat[:4].tolist() + axes.flat[5:7].tolist(), panels):
        axis.imshow(picture.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
        axis.set_title(caption, fontsize=9)
    for axis in axes.flat:
        axis.axis("off")
    fig.suptitle("preprocessing: the default is the direct (squashed) resize; below, two common alternatives")
    fig.tight_layout()
    return fig


def loss_curve_figure(rows: Sequence[dict], title: str = "training loss", smooth: int = 5):
    """Loss against step from ``log.csv`` rows (dicts with "step" and "loss"), with a moving average."""
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in rows]
    losses = [row["loss"] for row in rows]
    fig, axis = plt.subplots(figsize=(5.5, 3.2))
    axis.plot(steps, losses, alpha=0.35, label="loss (mean over each log interval)")
    if len(losses) >= smooth:
        averaged = [sum(losses[max(0, i - smooth + 1) : i + 1]) / len(losses[max(0, i - smooth + 1) : i + 1]) for i in range(len(losses))]
        axis.plot(steps, averaged, label=f"moving average of {smooth}")
    axis.set_xlabel("optimiser step")
    axis.set_ylabel("loss")
    axis.set_yscale("log")
    axis.set_title(title)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    fig.tight_layout()
    return fig


def training_accuracy_figure(rows: Sequence[dict], judge: str = "judge", title: str = "accuracy during training"):
    """Loss (left) and both files' accuracy (right) against step, from ``log.csv`` rows whose
    ``test_accuracy`` / ``new_test_accuracy`` were measured (``train.eval_every``)."""
    import matplotlib.pyplot as plt

    fig, (loss_axis, axis) = plt.subplots(1, 2, figsize=(10, 3.2))
    loss_axis.plot([row["step"] for row in rows], [row["loss"] for row in rows], alpha=0.6)
    loss_axis.set(xlabel="optimiser step", ylabel="loss", yscale="log", title="training loss")
    loss_axis.grid(alpha=0.3, which="both")
    for key, marker, name in (("test_accuracy", "o", "test.json"), ("new_test_accuracy", "s", "new_test.json")):
        scored = [row for row in rows if row.get(key) is not None]
        axis.plot([row["step"] for row in scored], [row[key] for row in scored], marker=marker, label=name)
    axis.set(xlabel="optimiser step", ylabel="accuracy", ylim=(0, 1.02), title=f"{title} (scored by the {judge})")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    fig.tight_layout()
    return fig


class LiveLossPlot:
    """A loss curve redrawn in place in a notebook while training runs.

    Pass it as ``train(config, on_log=plot)``: each log row is appended and the figure is
    redrawn every ``every`` rows (an IPython display handle, so the cell shows one figure).
    """

    def __init__(self, every: int = 1, title: str = "training loss"):
        from IPython.display import HTML, display

        self.rows: list[dict] = []
        self.every = max(1, every)
        self.title = title
        self.handle = display(HTML("<i>waiting for the first loss…</i>"), display_id=True)

    def __call__(self, row: dict) -> None:
        import matplotlib.pyplot as plt

        self.rows.append(dict(row))
        if len(self.rows) % self.every == 0:
            fig = loss_curve_figure(self.rows, self.title)
            self.handle.update(fig)
            plt.close(fig)


def network_view_figure(x0: torch.Tensor, x_t: torch.Tensor, x0_hat: torch.Tensor, timesteps: Sequence[int], title: str = ""):
    """A training image (left), noised to each t (top row) beside the network's one-step x̂0 (bottom row).

    x0: (3, S, S) in [-1, 1]; x_t, x0_hat: (n, 3, S, S) float (x̂0 is clipped to [-1, 1] for display only),
    from :func:`labkit.network_view.one_step_x0`. Returns the figure.
    """
    import matplotlib.pyplot as plt

    count = len(timesteps)
    fig, axes = plt.subplots(2, count + 1, figsize=(1.6 * (count + 1), 3.9))
    def show(axis, image, caption):
        axis.imshow(to_uint8(image.clamp(-1, 1)).permute(1, 2, 0).numpy())
        axis.set_title(caption, fontsize=8)
    show(axes[0, 0], x0, "x0 (training image)")
    for k, t in enumerate(timesteps):
        show(axes[0, k + 1], x_t[k], f"x_t, t = {t}")
        show(axes[1, k + 1], x0_hat[k], f"one-step x̂0, t = {t}")
    for axis in axes.flat:
        axis.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def loss_per_timestep_figure(losses: dict, title: str = ""):
    """The network's loss per noise level, from :func:`labkit.network_view.loss_per_timestep`: the loss on its
    training target (and min-SNR-weighted, when used) and the error of its one-step x̂0. Returns the figure."""
    import matplotlib.pyplot as plt

    target = {"epsilon": "ε", "v_prediction": "v", "sample": "x0"}[losses["prediction_type"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    axes[0].plot(losses["centres"], losses["loss"], "o-", label=f"MSE on the target {target}")
    if losses.get("min_snr_gamma", 0) > 0:
        axes[0].plot(losses["centres"], losses["weighted"], "s--", label=f"min-SNR-{losses['min_snr_gamma']:g} weighted")
    axes[0].set_ylabel("loss")
    axes[1].plot(losses["centres"], losses["x0_error"], "o-", color="C2")
    axes[1].set_ylabel("MSE of the one-step x̂0")
    for axis in axes:
        axis.set_xlabel(f"t (bucket centre; {len(losses['centres'])} buckets, {losses['images']} images each)")
        axis.set_yscale("log")
        axis.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
