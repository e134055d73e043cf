"""Small runtime helpers shared by every stage: device, precision, seeds, atomic saves."""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from dataclasses import dataclass
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


PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass(frozen=True)
class PrecisionChoice:
    """A resolved training/sampling precision and why it was chosen.

    name: "bf16", "fp16" or "fp32"; grad_scaler: True for fp16 (a GradScaler keeps small
    gradients from underflowing); reason: one sentence for the start-of-training printout.
    """

    name: str
    reason: str

    @property
    def grad_scaler(self) -> bool:
        return self.name == "fp16"

    def __str__(self) -> str:
        scaler = " with a GradScaler" if self.grad_scaler else ""
        return f"{self.name}{scaler}: {self.reason}"


def cuda_bf16_native(device: torch.device) -> tuple[bool, str]:
    """Whether the CUDA GPU ``device`` runs bf16 natively, and its name and compute capability.

    Native bf16 needs compute capability >= 8.0 (Ampere: A100, A10, L4, RTX 30xx; Hopper: H100).
    ``torch.cuda.is_bf16_supported()`` answers True on older GPUs too (T4 7.5, V100 7.0), where
    bf16 is emulated and runs many times slower than fp16; so the capability decides, and
    ``is_bf16_supported(including_emulation=False)`` is asked as well where torch has it.
    """
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    described = f"{torch.cuda.get_device_name(index)} (compute capability {major}.{minor})"
    if getattr(torch.version, "hip", None):  # ROCm GPUs run bf16 natively
        return True, described
    native = major >= 8
    try:
        native = native and bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.3: no including_emulation argument; the capability alone decides
        pass
    return native, described


def choose_precision(precision: str, device: torch.device) -> PrecisionChoice:
    """Turn ``train.precision`` ("auto", "bf16", "fp16", "fp32") into a :class:`PrecisionChoice`.

    auto: bf16 on GPUs with native bf16 (compute capability >= 8.0), fp16 with a GradScaler on
    older GPUs (T4, V100), bf16 on CPUs with native bf16 units, fp32 on other CPUs. An explicit
    choice is kept, except fp16 on a CPU (no fp16 autocast benefit there): bf16 or fp32 instead.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if device.type == "cuda":
        native, described = cuda_bf16_native(device)
        if precision == "auto":
            if native:
                return PrecisionChoice("bf16", f"{described} runs bf16 natively")
            return PrecisionChoice("fp16", f"{described} has no native bf16 (emulated bf16 is several times slower)")
        if precision == "bf16" and not native:
            return PrecisionChoice("bf16", f"as asked (train.precision = bf16), but {described} only emulates bf16: "
                                   "set train.precision = auto for fp16, several times faster here")
        return PrecisionChoice(precision, f"as asked (train.precision = {precision}) on {described}")
    cpu_native = cpu_supports_bf16()
    if precision == "fp32":
        return PrecisionChoice("fp32", "as asked (train.precision = fp32)")
    if precision == "fp16" and device.type == "cpu":
        fallback = "bf16" if cpu_native else "fp32"
        return PrecisionChoice(fallback, f"fp16 was asked, but fp16 on a CPU is emulated; {fallback} instead")
    if precision == "bf16":
        note = "" if cpu_native or device.type != "cpu" else ", but this CPU only emulates it (2-3x slower than fp32)"
        return PrecisionChoice("bf16", f"as asked (train.precision = bf16){note}")
    if device.type == "cpu" and cpu_native:
        return PrecisionChoice("bf16", "this CPU has native bf16 units (AVX512-BF16 or AMX)")
    return PrecisionChoice("fp32", f"this {device.type.upper()} has no native bf16 (it would be emulated, slower than fp32)")


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn ``"auto"`` into ``"bf16"``, ``"fp16"`` or ``"fp32"`` for ``device``
    (the name of :func:`choose_precision`'s choice; see there for the rule)."""
    return choose_precision(precision, device).name


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


def _file_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask): ``mkstemp`` makes its files 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(path: str | os.PathLike, write, mode: str) -> None:
    """Write through ``write(file)`` into a temp file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.chmod(temp_name, _file_mode())
        with os.fdopen(handle, mode) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


TEMP_SUFFIX = ".tmp"  # atomic writes go through ".<name>.<random>.tmp" beside the target


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temp file in the same folder, then rename over ``path``.

    A crash or kill mid-write leaves the previous file intact, never a truncated one (a ``kill -9``
    can leave the temp file behind: :func:`remove_stale_temp_files` clears those). The file gets the
    usual permissions (0666 less the umask), not ``mkstemp``'s 0600.
    """
    _atomic_write(path, lambda file: torch.save(obj, file), "wb")


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write text atomically (temp file + rename), with the usual permissions."""
    _atomic_write(path, lambda file: file.write(text), "w")


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files that an atomic write killed mid-way (``kill -9``, power loss) left in ``folder``.

    Call it only where no other process is writing (the start of a run). Returns the removed paths.
    """
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for path in folder.glob(f".*{TEMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def show_progress(progress: bool = True) -> bool:
    """Whether to draw progress bars: ``progress`` unless ``TQDM_DISABLE`` is set (tests, CI).

    Pass ``disable=not show_progress(progress)`` to tqdm: an explicit ``disable=False`` would
    override tqdm's own reading of ``TQDM_DISABLE``.
    """
    return bool(progress) and os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")
