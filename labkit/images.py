"""Image conventions, one helper each: PNG files <-> uint8 (3, H, W) tensors, uint8 [0, 255] <-> float [-1, 1],
resizing to a square (the training set) and to the evaluator's 64x64 input.

In the model images are float in [-1, 1] of shape (B, 3, H, W); on disk uint8 RGB PNG; the evaluator sees
64x64 in [-1, 1] (normalized with mean = std = 0.5).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

EVALUATOR_SIZE = 64  # the course evaluator's input size

def image_info(path: str | os.PathLike) -> tuple[int, int, str]:
    """(width, height, Pillow mode) of an image file, read from its header without decoding the pixels."""
    with Image.open(path) as image:
        return image.width, image.height, image.mode


def decode_png(path: str | os.PathLike) -> torch.Tensor:
    """uint8 (3, H, W) RGB tensor of an image file (PNG, or anything Pillow reads)."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))  # (H, W, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def encode_png(image: torch.Tensor, compress_level: int = 6) -> bytes:
    """PNG bytes of a uint8 (3, H, W) RGB tensor; ``compress_level`` 0 (fast) .. 9 (small)."""
    buffer = io.BytesIO()
    array = image.detach().to("cpu", torch.uint8).permute(1, 2, 0).contiguous().numpy()  # (H, W, 3)
    Image.fromarray(array, "RGB").save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def write_png(image: torch.Tensor, path: str | os.PathLike, compress_level: int = 6) -> None:
    """Save a uint8 (3, H, W) RGB tensor as a PNG file."""
    Path(path).write_bytes(encode_png(image, compress_level))


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 (B, 3, H, W) or (3, H, W) directly to (.., size, size), aspect squashed.

    Antialiased bilinear, as ``torchvision.transforms.Resize((size, size))`` does on tensors.
    """
    single = images.dim() == 3
    batch = images[None] if single else images
    if batch.shape[-2:] != (size, size):
        batch = F.interpolate(batch.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        batch = batch.round().clamp(0, 255).to(torch.uint8)
    return batch[0] if single else batch


def enlarge(images: torch.Tensor, height: int = 128) -> torch.Tensor:
    """uint8 (..., 3, h, w) -> nearest-neighbour enlarged by the integer factor that makes it about ``height`` tall
    (whole pixels: no blur on small images)."""
    factor = max(1, height // images.shape[-2])
    return images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] (the model's range; the evaluator's mean = std = 0.5)."""
    return images.float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (denormalised)."""
    return images.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def evaluator_view(images: torch.Tensor) -> torch.Tensor:
    """What the course evaluator was trained on: downsample to 32x32, upsample back to 64x64.

    float or uint8 (B, 3, H, W) -> float (B, 3, 64, 64) in the input's value range.
    """
    batch = images.float()
    small = F.interpolate(batch, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=(64, 64), mode="bilinear", align_corners=False)


def resize_to(images: torch.Tensor, size: int = EVALUATOR_SIZE) -> torch.Tensor:
    """float (B, 3, H, W) -> float (B, 3, size, size), bilinear; antialiased only when shrinking.

    The one resize of generated images: 32x32 models' images are upsampled to the evaluator's 64x64
    this way (the course evaluator's own 32 -> 64 path); the input is returned unchanged when it
    already has that size.
    """
    if images.shape[-2:] == (size, size):
        return images
    shrinking = images.shape[-1] > size or images.shape[-2] > size
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)


def as_written(images: torch.Tensor, size: int = EVALUATOR_SIZE) -> torch.Tensor:
    """float (B, 3, H, W) in [-1, 1] -> float (B, 3, size, size) in [-1, 1]: the pixels of the saved PNG files.

    :func:`resize_to`, then rounded to the 256 levels per channel that an 8-bit PNG keeps. The judge scores
    this tensor exactly as it scores the files written from it (a float image can sit on the other side
    of a decision threshold than its rounded copy), so a guidance sweep and ``evaluate`` agree. Writing it
    again with :func:`to_uint8` gives back the same bytes.
    """
    return to_model_range(to_uint8(resize_to(images, size)))
