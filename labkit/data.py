"""i-CLEVR data: label space, condition files, the training set and its decode-once cache.

Layout accepted as distributed by the course (and written the same way by
:mod:`labkit.synth` when the official images are absent)::

    <root>/objects.json      {"gray cube": 0, ..., "yellow cylinder": 23}
    <root>/train.json        {"CLEVR_train_001032_0.png": ["yellow sphere"], ...}
    <root>/test.json         [["gray cube"], ["red cube", "blue sphere"], ...]   (32 lists)
    <root>/new_test.json     (32 lists)
    <root>/iclevr/*.png      320x240 RGB renders

Preprocessing (the lab's default): the 320x240 image is resized *directly* to a square
(aspect squashed), because the course evaluator was trained on squashed images; cropping
or padding first costs tens of accuracy points with that evaluator.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

SHAPES = ("cube", "sphere", "cylinder")
COLORS = ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")
MAX_OBJECTS = 3


class ConditionError(ValueError):
    """A label or condition file that cannot be used; the message says where and how to fix it."""


# ---- label space ------------------------------------------------------------------------
class LabelSpace:
    """The 24 object names and their indices; multi-hot encode/decode.

    The built-in order is ``index = shape * 8 + color`` (the course's ``objects.json``).
    """

    def __init__(self, name_to_index: dict[str, int], source: str = "built-in"):
        self.source = source
        indices = sorted(name_to_index.values())
        if indices != list(range(len(indices))):
            raise ConditionError(
                f"{source}: indices must be 0..{len(indices) - 1} with no gaps or repeats, "
                f"got {indices}"
            )
        self.index = dict(name_to_index)
        self.names = [name for name, _ in sorted(name_to_index.items(), key=lambda item: item[1])]

    @classmethod
    def default(cls) -> "LabelSpace":
        """The course's 24 objects: 3 shapes x 8 colors, index = shape * 8 + color."""
        return cls(
            {f"{color} {shape}": s * len(COLORS) + c for s, shape in enumerate(SHAPES) for c, color in enumerate(COLORS)}
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "LabelSpace":
        """Read ``objects.json`` (a dict name -> index)."""
        values = _read_json(path)
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in values.items()
        ):
            raise ConditionError(
                f"{path}: expected a JSON object mapping object names to integer indices, "
                f'like {{"gray cube": 0, "red cube": 1}}'
            )
        return cls(values, source=str(path))

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"LabelSpace({len(self)} objects from {self.source})"

    def closest(self, name: str, count: int = 3) -> list[str]:
        """The valid names closest to ``name`` (for error messages)."""
        return difflib.get_close_matches(name, self.names, n=count, cutoff=0.0)

    def check(self, objects: Sequence[str], where: str = "labels") -> list[str]:
        """Validate one label list (1-3 distinct known names); returns it as a list."""
        if isinstance(objects, str) or not isinstance(objects, (list, tuple)):
            raise ConditionError(
                f"{where}: expected a list of object names like [\"red sphere\"], got {objects!r}"
            )
        if not 1 <= len(objects) <= MAX_OBJECTS:
            raise ConditionError(
                f"{where}: {len(objects)} objects in {list(objects)}; each image has 1 to "
                f"{MAX_OBJECTS} objects"
            )
        for name in objects:
            if name not in self.index:
                raise ConditionError(
                    f"{where}: unknown object {name!r}; closest valid names: "
                    f"{', '.join(self.closest(str(name)))}"
                )
        duplicates = sorted({name for name in objects if list(objects).count(name) > 1})
        if duplicates:
            raise ConditionError(
                f"{where}: object {duplicates[0]!r} appears more than once in {list(objects)}; "
                f"each object appears at most once per image"
            )
        return list(objects)

    def encode(self, label_lists: Sequence[Sequence[str]]) -> torch.Tensor:
        """Multi-hot encode. (B lists of names) -> float tensor (B, 24)."""
        multi_hot = torch.zeros(len(label_lists), len(self))
        for row, objects in enumerate(label_lists):
            for name in self.check(objects, where=f"label list {row}"):
                multi_hot[row, self.index[name]] = 1.0
        return multi_hot

    def decode(self, multi_hot: torch.Tensor) -> list[list[str]]:
        """(B, 24) or (24,) multi-hot -> lists of names (in index order)."""
        if multi_hot.dim() == 1:
            multi_hot = multi_hot[None]
        return [[self.names[i] for i in row.nonzero().flatten().tolist()] for row in multi_hot]


# ---- condition files ----------------------------------------------------------------------
def _read_json(path: str | os.PathLike):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; see data/README.md for where the course files go")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConditionError(f"{path}: not valid JSON ({error}); fix the file or re-download it") from error


def read_conditions(path: str | os.PathLike, label_space: LabelSpace | None = None) -> list[list[str]]:
    """Read and validate ``test.json`` / ``new_test.json``: a JSON list of label lists."""
    label_space = label_space or LabelSpace.default()
    values = _read_json(path)
    if not isinstance(values, list) or not values:
        raise ConditionError(
            f"{path}: expected a non-empty JSON list of label lists like "
            f'[["red sphere"], ["gray cube", "cyan cylinder"]], got {type(values).__name__}'
        )
    return [label_space.check(objects, where=f"{path}, entry {i}") for i, objects in enumerate(values)]


def read_train_labels(path: str | os.PathLike, label_space: LabelSpace | None = None) -> dict[str, list[str]]:
    """Read and validate ``train.json``: a JSON object file name -> label list."""
    label_space = label_space or LabelSpace.default()
    values = _read_json(path)
    if not isinstance(values, dict) or not values:
        raise ConditionError(
            f"{path}: expected a non-empty JSON object mapping image file names to label lists, "
            f'like {{"CLEVR_train_001032_0.png": ["yellow sphere"]}}'
        )
    return {
        name: label_space.check(objects, where=f"{path}, entry {name!r}") for name, objects in values.items()
    }


# ---- where the data comes from ------------------------------------------------------------
@dataclass
class DataSource:
    """A folder in the official layout: the course files, or the synthetic renders."""

    root: Path
    kind: str  # "official" or "synthetic"

    @property
    def image_dir(self) -> Path:
        return self.root / "iclevr"

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def label_space(self) -> LabelSpace:
        objects = self.root / "objects.json"
        return LabelSpace.from_file(objects) if objects.exists() else LabelSpace.default()

    def conditions(self, split: str) -> list[list[str]]:
        """Label lists of ``"test"`` or ``"new_test"``."""
        return read_conditions(self.root / f"{split}.json", self.label_space)

    @property
    def judge_name(self) -> str:
        return "course checkpoint" if self.kind == "official" else "synthetic judge"

    def __str__(self) -> str:
        return f"{self.kind} i-CLEVR at {self.root}"


def official_present(root: str | os.PathLike) -> bool:
    """True when ``root`` holds the course's image folder and train.json."""
    root = Path(root)
    return (root / "iclevr").is_dir() and (root / "train.json").is_file()


def resolve_source(data_config, render: bool = True, progress: bool = True) -> DataSource:
    """The data the run uses: the official files when present, else synthetic i-CLEVR.

    With ``render=True`` the synthetic set is rendered (or extended) to
    ``data_config.num_scenes`` scenes first.
    """
    from labkit.config import resolve_path

    source = data_config.source  # "auto", "official" or "synthetic" (checked by the config)
    official_root = resolve_path(data_config.root)
    if source in ("auto", "official") and official_present(official_root):
        return DataSource(official_root, "official")
    if source == "official":
        raise FileNotFoundError(
            f"data.source is 'official' but {official_root}/iclevr/ and {official_root}/train.json "
            f"were not found; copy the course files there (see data/README.md) or use source='auto'"
        )
    root = resolve_path(data_config.synthetic_dir)
    if render:
        from labkit import synth

        synth.render_dataset(root, num_scenes=data_config.num_scenes, seed=data_config.synthetic_seed, progress=progress)
    return DataSource(root, "synthetic")


# ---- images ---------------------------------------------------------------------------------
def decode_png(path: str | os.PathLike) -> torch.Tensor:
    """uint8 (3, H, W) RGB tensor of an image file (PNG, or anything Pillow reads)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))  # (H, W, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def encode_png(image: torch.Tensor, compress_level: int = 6) -> bytes:
    """PNG bytes of a uint8 (3, H, W) RGB tensor; ``compress_level`` 0 (fast) .. 9 (small)."""
    import io

    from PIL import Image

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


# ---- the training set and its cache -----------------------------------------------------------
@dataclass
class TrainingSet:
    """Decoded training images (uint8, N x 3 x S x S) with multi-hot labels (N x 24)."""

    images: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    label_space: LabelSpace
    source: DataSource

    def __len__(self) -> int:
        return len(self.names)

    def label_lists(self) -> list[list[str]]:
        return self.label_space.decode(self.labels)


def _cache_key(source: DataSource, names: Sequence[str], image_size: int) -> str:
    digest = hashlib.sha1()
    digest.update(f"{source.root.resolve()}|{image_size}|squash-bilinear-aa|v1".encode())
    for name in names:
        stat = (source.image_dir / name).stat()
        digest.update(f"{name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:16]


def _training_names(data_config, source: DataSource, train_labels: dict[str, list[str]]) -> list[str]:
    """The training images in use, sorted: a synthetic folder's first ``num_scenes`` scenes (it may
    hold more, rendered for another profile), then the first ``max_train_images`` when set."""
    names = sorted(train_labels)
    if source.kind == "synthetic":
        names = names[: 3 * data_config.num_scenes]
    if data_config.max_train_images:
        names = names[: data_config.max_train_images]
    return names


def load_training_set(
    data_config,
    source: DataSource | None = None,
    progress: bool = True,
    use_cache: bool = True,
) -> TrainingSet:
    """The training set at ``data_config.image_size``, decoded once and cached as uint8.

    The first call decodes every PNG (progress bar) and writes
    ``<cache_dir>/<kind>_<size>px_<key>.pt``; later calls load that file in seconds.
    The key covers the folder, the file names, sizes and modification times and the
    size, so a changed data set is never served from a stale cache.
    """
    from tqdm.auto import tqdm

    from labkit.runtime import show_progress

    source = source or resolve_source(data_config, progress=progress)
    label_space = source.label_space
    train_labels = read_train_labels(source.path("train.json"), label_space)
    names = _training_names(data_config, source, train_labels)
    missing = [name for name in names if not (source.image_dir / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"{source.path('train.json')} lists {len(missing)} images missing from {source.image_dir}, "
            f"e.g. {missing[0]!r}; copy the complete iclevr/ folder from the course files"
        )
    labels = label_space.encode([train_labels[name] for name in names])
    size = data_config.image_size
    from labkit.config import resolve_path

    cache_path = resolve_path(data_config.cache_dir) / f"{source.kind}_{size}px_{_cache_key(source, names, size)}.pt"
    if use_cache and cache_path.exists():
        cached = torch.load(cache_path, weights_only=True)
        return TrainingSet(cached["images"], labels, names, label_space, source)

    images = torch.empty(len(names), 3, size, size, dtype=torch.uint8)

    def decode(i: int) -> None:
        try:
            image = decode_png(source.image_dir / names[i])
        except (OSError, ValueError, RuntimeError) as error:  # Pillow: OSError for truncated or unknown files
            raise RuntimeError(f"{source.image_dir / names[i]}: cannot decode it ({error}); the file is damaged, "
                               f"copy it again (or delete the synthetic folder to render it again)") from error
        images[i] = resize_square(image, size)

    # One image per task on one thread per core, each with a single torch thread: on a busy 2-core
    # machine, torch's own threads inside each small decode/resize made this 3x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
            done = pool.map(decode, range(len(names)))
            try:
                for _ in tqdm(done, total=len(names), desc=f"decode {source.kind} PNGs -> {size}px",
                              disable=not show_progress(progress)):
                    pass
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # report the first error without decoding the rest
                raise
    finally:
        torch.set_num_threads(threads)
    if use_cache:
        from labkit.runtime import atomic_save

        atomic_save({"images": images, "names": names}, cache_path)
    return TrainingSet(images, labels, names, label_space, source)


def cache_path_for(data_config, source: DataSource) -> Path:
    """Where :func:`load_training_set` keeps (or would keep) the cache for this set."""
    names = _training_names(data_config, source, read_train_labels(source.path("train.json"), source.label_space))
    from labkit.config import resolve_path

    size = data_config.image_size
    return resolve_path(data_config.cache_dir) / f"{source.kind}_{size}px_{_cache_key(source, names, size)}.pt"


def timed(function, *args, **kwargs):
    """Run ``function`` and return (result, seconds)."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start
