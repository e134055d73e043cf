"""The unconditional track: DDPM on handwritten digits through the lab's trainer and samplers.

Data, in order of preference (:func:`load_digits_set`):

* MNIST through torchvision's ``MNIST``: the raw IDX files in ``data/mnist/MNIST/raw/`` (or
  ``data/mnist/raw/``), or downloaded when ``download=True`` and the machine is online.
* Offline, the **stand-in**: scikit-learn's bundled 8x8 handwritten digits (1,797 real digits,
  UCI), upscaled to the image size. It is *not* MNIST, and every figure made on it says so.

Images are grayscale turned into 3-channel RGB, uint8 (N, 3, S, S) for the trainer; the model is
unconditional (``model.num_classes = 0``: no label input at all) or class-conditional over the
10 digits (``num_classes = 10``, one-hot labels, classifier-free guidance through the same path).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from labkit.config import LabConfig, get_config, resolve_path

STAND_IN_NAME = "scikit-learn 8x8 digits, upscaled (a stand-in, not MNIST)"
MNIST_NAME = "MNIST"


@dataclass
class DigitSet:
    """Digits for the trainer: ``images`` uint8 (N, 3, S, S), ``labels`` float one-hot (N, 10) or
    None (unconditional), ``digits`` long (N,), and ``source`` (:data:`MNIST_NAME` or :data:`STAND_IN_NAME`)."""

    images: torch.Tensor
    labels: torch.Tensor | None
    digits: torch.Tensor
    source: str
    names: list[str] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return self.images.shape[0]


def _to_rgb_uint8(gray: torch.Tensor, image_size: int) -> torch.Tensor:
    """float (N, H, W) in [0, 1] -> uint8 (N, 3, S, S), bilinear resize."""
    x = gray.float()[:, None]  # (N, 1, H, W)
    if x.shape[-1] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()


def stand_in_digits(image_size: int = 28, train: bool = True, holdout: int = 297) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled digits: (uint8 (N, 3, S, S), long (N,)).

    The 1,797 images (8x8, values 0..16) are split in a fixed order: the last ``holdout`` are the
    held-out set (``train=False``), the rest the training set. Upscaled bilinearly to ``image_size``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    gray = torch.from_numpy(bunch.images).float() / 16.0  # (1797, 8, 8)
    digits = torch.from_numpy(bunch.target).long()
    gray, digits = (gray[:-holdout], digits[:-holdout]) if train else (gray[-holdout:], digits[-holdout:])
    return _to_rgb_uint8(gray, image_size), digits


def mnist_digits(root: str | Path, image_size: int = 28, train: bool = True, download: bool = False):
    """torchvision's MNIST from ``root`` (raw IDX files under ``root/MNIST/raw``): (uint8 (N,3,S,S), long (N,)).

    Raises FileNotFoundError naming the folder and the fix when the files are absent and
    ``download`` is False (or the download fails).
    """
    from torchvision.datasets import MNIST

    root = Path(root)
    try:
        dataset = MNIST(str(root), train=train, download=download)
    except (RuntimeError, OSError) as error:
        raise FileNotFoundError(
            f"MNIST not found under {root / 'MNIST' / 'raw'} ({error}). Put the four raw files there "
            "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte, optionally .gz), or pass download=True on a machine that is online, "
            "or use source='stand-in' (scikit-learn's digits) offline"
        ) from error
    gray = dataset.data.float() / 255.0  # (N, 28, 28)
    return _to_rgb_uint8(gray, image_size), dataset.targets.long()


def load_digits_set(
    source: str = "auto",
    image_size: int = 28,
    train: bool = True,
    conditional: bool = False,
    root: str | Path | None = None,
    download: bool = False,
    max_images: int = 0,
) -> DigitSet:
    """The digit images for training (``train=True``) or the held-out set.

    source: "mnist" (torchvision MNIST under ``root``, default ``data/mnist``), "stand-in"
        (scikit-learn's digits) or "auto" (MNIST when its files are present or ``download``, else
        the stand-in, with a printed note). conditional: one-hot labels (N, 10), else None.
    """
    root = Path(root) if root is not None else resolve_path("data") / "mnist"
    if source not in ("auto", "mnist", "stand-in"):
        raise ValueError(f"source must be 'auto', 'mnist' or 'stand-in', not {source!r}")
    present = (root / "MNIST" / "raw").exists()
    if source == "mnist" or (source == "auto" and (present or download)):
        images, digits = mnist_digits(root, image_size, train, download)
        name = MNIST_NAME
    else:
        if source == "auto":
            print(f"MNIST files not in {root / 'MNIST' / 'raw'}: using the offline stand-in, {STAND_IN_NAME}")
        images, digits = stand_in_digits(image_size, train)
        name = STAND_IN_NAME
    if max_images:
        images, digits = images[:max_images], digits[:max_images]
    labels = F.one_hot(digits, 10).float() if conditional else None
    return DigitSet(images, labels, digits, name, [f"{i:05d}" for i in range(len(digits))])


def mnist_config(profile: str | None = None, conditional: bool = False, **overrides) -> LabConfig:
    """The lab config for the digit track at ``profile`` (smoke, cpu, gpu).

    Linear β 1e-4 → 0.02, T = 1000, ε-prediction, AdamW 2e-4, EMA 0.999 (the assignment's
    recipe); no flips (digits are not mirror-symmetric); no i-CLEVR previews or judge. The ``cpu``
    profile trains 4,000 steps at AdamW 1e-3 with EMA 0.995 instead: at 2e-4 and EMA 0.999 its
    1,500-step run drew no readable digit (an EMA over the last 1,000 steps of so short a run averages
    its start); 4,000 steps at 1e-3 draw mostly readable ones in about 27 minutes on one core.
    Run folder: ``runs/mnist-<profile>`` (``mnist-cond-<profile>`` when conditional).
    """
    from labkit.config import set_override

    config = get_config(profile)
    name = config.profile
    sizes = {  # base channels, channel multipliers, steps, batch, learning rate, EMA decay
        "smoke": (8, (1, 2), 2, 8, 2e-4, 0.999),
        "cpu": (32, (1, 2, 2), 4000, 64, 1e-3, 0.995),
        "gpu": (64, (1, 2, 2), 60_000, 128, 2e-4, 0.999),
    }
    base, mults, steps, batch, lr, ema_decay = sizes.get(name, sizes["cpu"])
    config.data.image_size = 28 if name == "gpu" else 16 if name == "smoke" else 28
    config.data.hflip = False
    config.model = dataclasses.replace(
        config.model, backend="compact", conditioning="embedding", num_classes=10 if conditional else 0,
        base_channels=base, channel_mults=mults, layers_per_block=1,
        attention_levels=tuple([False] * (len(mults) - 1) + [True]), norm_groups=8 if base < 32 else 16,
    )
    config.diffusion = dataclasses.replace(
        config.diffusion, schedule="linear", num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
        prediction_type="epsilon", min_snr_gamma=0.0,
    )
    config.train = dataclasses.replace(
        config.train, steps=steps, batch_size=batch, lr=lr, warmup_steps=min(100, steps // 10),
        ema_decay=ema_decay, ema_warmup_steps=min(200, steps // 5), cond_drop_prob=0.1 if conditional else 0.0,
        preview_every=0, eval_every=0, snapshot_every=0, checkpoint_every=max(1, min(500, steps)),
        run_name=f"mnist-{'cond-' if conditional else ''}{name}",
    )
    config.sample = dataclasses.replace(config.sample, sampler="ddim", num_inference_steps=50, eta=0.0,
                                        guidance_scale=2.0 if conditional else 1.0)
    for dotted, value in overrides.items():
        set_override(config, dotted, value)
    return config


# ---- generation, process figures, scoring -----------------------------------------------------
def generate(model, schedule, num_images: int, folder: str | Path | None = None, sampler: str = "ddim",
             num_inference_steps: int = 50, seed: int = 0, batch_size: int = 256, labels=None,
             guidance_scale: float = 1.0, progress: bool = True):
    """``num_images`` samples (image i from seed ``seed + i``; DDIM η = 0 by default), saved as
    ``folder/00001.png …`` when ``folder`` is given (the folder then holds this set only: it is written
    beside it and swapped in, so no image of an earlier, larger set stays). labels: None (unconditional)
    or one-hot (N, 10) for a class-conditional model. Returns the :class:`labkit.sample.SampleResult`."""
    from labkit.fid import save_pngs
    from labkit.outputs import staging_folder, swap_folder
    from labkit.sample import sample

    result = sample(model, schedule, labels, sampler=sampler, num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale, eta=0.0, seed=seed, batch_size=batch_size,
                    num_images=None if labels is not None else num_images, progress=progress)
    if folder is not None:
        target = Path(folder).resolve()  # a relative folder is under the current one, as before
        staging = staging_folder(target)
        save_pngs(result.images, staging)
        swap_folder(staging, target)
    return result


def process_grid(model, schedule, sampler: str = "ddim", num_inference_steps: int = 50, rows: int = 8,
                 columns: int = 8, seed: int = 0, labels=None, progress: bool = True) -> torch.Tensor:
    """The process figure: ``rows`` samples (one per row) at ``columns`` evenly spaced steps of the
    reverse process, from x_T (left) to x_0 (right), with a progress bar unless ``progress=False``.
    Returns uint8 (rows * columns, 3, S, S)."""
    from labkit.sample import sample

    result = sample(model, schedule, labels, sampler=sampler, num_inference_steps=num_inference_steps,
                    eta=0.0, seed=seed, num_images=None if labels is not None else rows,
                    return_trajectory=True, progress=progress)
    trajectory = result.trajectory  # (N + 1, rows, 3, S, S) uint8
    picks = torch.linspace(0, trajectory.shape[0] - 1, columns).round().long()
    return trajectory[picks].transpose(0, 1).reshape(rows * columns, *trajectory.shape[2:])


def score(generated: torch.Tensor, reference: torch.Tensor, classifier, source: str,
          generated_folder: str | Path | None = None, reference_folder: str | Path | None = None) -> dict:
    """Named scores of ``generated`` against ``reference`` (uint8 (N, 3, S, S) each).

    Always ``domain FID`` (digit-classifier features); ``FID`` (pytorch-fid, Inception) only when
    both folders are given and its weights load. ``source`` names the real-image set."""
    from labkit.fid import domain_fid, inception_fid

    scores = {"domain FID": domain_fid(classifier, generated, reference), "reference": source}
    if generated_folder is not None and reference_folder is not None:
        standard = inception_fid(generated_folder, reference_folder)
        if standard is not None:
            scores["FID"] = standard
    return scores


def describe(scores: dict) -> str:
    """One line per score, each with its name and the real-image set it is measured against."""
    lines = [f"domain FID (digit-classifier features, not Inception FID) = {scores['domain FID']:.3f} vs {scores['reference']}"]
    if "FID" in scores:
        lines.append(f"FID (pytorch-fid Inception-v3) = {scores['FID']:.3f} vs {scores['reference']}")
    return "\n".join(lines)
