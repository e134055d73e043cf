"""Small runtime helpers shared by every stage: device, precision, seeds, atomic saves."""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch


def get_device(preferred: str | None = None) -> torch.device:
    """CUDA when present (or ``preferred``), else CPU. Never calls ``.cuda()`` blindly."""
    if preferred:
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


_CPU_FLAGS: set[str] | None = None


def _cpu_flags() -> set[str]:
    global _CPU_FLAGS
    if _CPU_FLAGS is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
            line = next((line for line in text.splitlines() if line.startswith("flags")), "")
            _CPU_FLAGS = set(line.split(":", 1)[-1].split())
        except OSError:  # not Linux
            _CPU_FLAGS = set()
    return _CPU_FLAGS


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 arithmetic (AMX-BF16 or AVX512-BF16).

    oneDNN also runs bf16 on plain AVX-512 CPUs, but emulated: there a bf16 convolution is
    2-3x *slower* than fp32 (measured on a 2-core AVX-512 VNNI Xeon without AMX: matmul
    59 GFLOP/s in bf16 against 227 in fp32), so ``"auto"`` precision only picks bf16 when
    the hardware has it.
    """
    flags = _cpu_flags()
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn ``"auto"`` into ``"bf16"``, ``"fp16"`` or ``"fp32"`` for ``device``.

    auto: bf16 on CUDA GPUs that support it (Ampere+), fp16 on older GPUs,
    bf16 on CPUs with bf16 units, fp32 otherwise.
    """
    if precision not in ("auto", "bf16", "fp16", "fp32"):
        raise ValueError(f"precision must be auto, bf16, fp16 or fp32, not {precision!r}")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            return "bf16" if cpu_supports_bf16() else "fp32"
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_supports_bf16():
        return "bf16"
    return "fp32"


def resolve_channels_last(setting: bool | str, device: torch.device, precision: str) -> bool:
    """Turn ``train.channels_last`` (``True``, ``False`` or ``"auto"``) into a bool.

    auto: channels_last on CUDA (tensor-core convolutions want NHWC) and for fp32 on CPU; NCHW
    for bf16 on CPU. Measured on the ``cpu``-profile UNet (2-core AMD EPYC with AVX512-BF16,
    batch 64, images/s): fp32 NCHW 99-105, fp32 channels_last 110-118; bf16 NCHW 178-189, bf16
    channels_last 155. In channels_last, oneDNN's convolutions are faster, but CPU GroupNorm's
    backward is 3-4x slower at 32x32 and 16x16, and under bf16 that outweighs the convolutions.
    """
    if isinstance(setting, str):
        lowered = setting.strip().lower()
        if lowered not in ("auto", "true", "false"):
            raise ValueError(f"train.channels_last must be true, false or auto, not {setting!r}")
        if lowered != "auto":
            return lowered == "true"
        if device.type == "cuda":
            return True
        return precision == "fp32"
    return bool(setting)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """An autocast context for a resolved precision (no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, and torch (CPU and every CUDA device)."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # numpy is optional
        pass


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temp file in the same folder, then rename over ``path``.

    A crash or kill mid-write leaves the previous file intact, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write text atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


def show_progress(progress: bool = True) -> bool:
    """Whether to draw progress bars: ``progress`` unless ``TQDM_DISABLE`` is set (tests, CI).

    Pass ``disable=not show_progress(progress)`` to tqdm: an explicit ``disable=False`` would
    override tqdm's own reading of ``TQDM_DISABLE``.
    """
    return bool(progress) and os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")
