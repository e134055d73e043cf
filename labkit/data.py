"""i-CLEVR data: where it comes from (official or synthetic), the training set and its decode-once cache.

The label space and condition files live in :mod:`labkit.labels`, the image helpers in :mod:`labkit.images`
(both also reachable here, e.g. ``labkit.data.LabelSpace``, ``labkit.data.decode_png``).

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

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from labkit import synth
from labkit.config import LabError, resolve_path
from labkit.images import (  # noqa: F401  (the image helpers, also reachable as labkit.data.*)
    decode_png,
    encode_png,
    evaluator_view,
    image_info,
    resize_square,
    to_model_range,
    to_uint8,
    write_png,
)
from labkit.labels import (  # noqa: F401  (the label space and condition files, also reachable as labkit.data.*)
    COLORS,
    MAX_OBJECTS,
    SHAPES,
    ConditionError,
    LabelSpace,
    read_conditions,
    read_train_labels,
    require_course_objects,
)
from labkit.runtime import atomic_save, show_progress

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
        return require_course_objects(LabelSpace.from_file(objects)) if objects.exists() else LabelSpace.default()

    def conditions(self, split: str) -> list[list[str]]:
        """Label lists of ``"test"`` or ``"new_test"``."""
        return read_conditions(self.root / f"{split}.json", self.label_space)

    @property
    def judge_name(self) -> str:
        return "course checkpoint" if self.kind == "official" else "synthetic judge"

    def __str__(self) -> str:
        return f"{self.kind} i-CLEVR at {self.root}"


OFFICIAL_FILES = ("iclevr/", "train.json", "objects.json", "test.json", "new_test.json")  # the course's data
COURSE_JUDGE_FILES = ("checkpoint.pth", "evaluator.py")  # the course's evaluator (optional beside the data)


class DataError(LabError, ValueError):
    """Data that cannot be used (missing or partial course files, a wrong image); the message says which and the fix."""


def official_files_found(root: str | os.PathLike) -> list[str]:
    """Which of the course's files (:data:`OFFICIAL_FILES` and :data:`COURSE_JUDGE_FILES`) are in ``root``."""
    root = Path(root)
    found = []
    for name in OFFICIAL_FILES + COURSE_JUDGE_FILES:
        path = root / name.rstrip("/")
        if (path.is_dir() if name.endswith("/") else path.is_file()):
            found.append(name)
    return found


def official_present(root: str | os.PathLike) -> bool:
    """True when ``root`` holds the course's image folder and all four JSON files."""
    found = official_files_found(root)
    return all(name in found for name in OFFICIAL_FILES)


def resolve_source(data_config, render: bool = True, progress: bool = True) -> DataSource:
    """The data the run uses: the official files when present, else synthetic i-CLEVR.

    ``data.source``: "auto" takes the official files when all of them (:data:`OFFICIAL_FILES`) are in
    ``data.root``, the synthetic set when none of the course's files are there, and refuses a partial
    set (e.g. the JSON files or ``checkpoint.pth`` without ``iclevr/``): the test conditions, the images
    and the judge always come from the same place. "official" requires the complete set; "synthetic"
    ignores the course's files. With ``render=True`` the synthetic set is rendered (or extended) to
    ``data_config.num_scenes`` scenes first.
    """
    source = data_config.source  # "auto", "official" or "synthetic" (checked by the config)
    official_root = resolve_path(data_config.root)
    found = official_files_found(official_root)
    missing = [name for name in OFFICIAL_FILES if name not in found]
    if source in ("auto", "official") and not missing:
        return DataSource(official_root, "official")
    if source == "official" or (source == "auto" and found):
        have = f"holds {', '.join(found)} but not" if found else "does not hold"
        raise DataError(
            f"{official_root} {have} {', '.join(missing)} of the course's files (data.source = {source!r}). "
            f"Copy the missing ones from the course's download (see data/README.md), so that the course's "
            f"test conditions, images and judge are used together; or, to practise on the synthetic i-CLEVR "
            f"with its synthetic judge, set data.source = synthetic (--set data.source=synthetic): the course "
            f"files are then ignored"
        )
    root = resolve_path(data_config.synthetic_dir)
    if render:
        synth.render_dataset(root, num_scenes=data_config.num_scenes, seed=data_config.synthetic_seed, progress=progress)
    return DataSource(root, "synthetic")


OFFICIAL_IMAGE_SIZE = (320, 240)  # (width, height) of the course's i-CLEVR renders
IMAGE_MODES = ("RGB", "RGBA")


def check_image(path: Path, kind: str) -> None:
    """Refuse an image that is not a 320x240 RGB(A) render (official data): a resized, cropped or grey copy
    would be squashed to the model's size without a word and teach the model the wrong pictures."""
    try:
        width, height, mode = image_info(path)
    except (OSError, ValueError) as error:  # Pillow: OSError (UnidentifiedImageError) for damaged files
        raise DataError(f"{path}: cannot read it as an image ({error}); {_copy_again(kind)}") from error
    if kind == "official" and ((width, height) != OFFICIAL_IMAGE_SIZE or mode not in IMAGE_MODES):
        raise DataError(
            f"{path}: a {width}x{height} {mode} image, but the course's i-CLEVR images are "
            f"{OFFICIAL_IMAGE_SIZE[0]}x{OFFICIAL_IMAGE_SIZE[1]} RGB(A) renders; {_copy_again(kind)}"
        )


def _copy_again(kind: str) -> str:
    if kind == "official":
        return "copy the file again from the course's iclevr/ folder (unconverted, not resized)"
    return "delete the synthetic folder's iclevr/ to render it again (python -m labkit data)"


def require_images(source: "DataSource", names: Sequence[str]) -> None:
    """Every training image that train.json lists must be in ``iclevr/``; the error names the first missing one."""
    missing = [name for name in names if not (source.image_dir / name).is_file()]
    if missing:
        fix = ("copy the complete iclevr/ folder from the course's download" if source.kind == "official"
               else "delete the synthetic folder's iclevr/ and train.json to render them again (python -m labkit data)")
        raise DataError(
            f"{source.path('train.json')} lists {len(missing)} images missing from {source.image_dir}, "
            f"e.g. {missing[0]!r}; {fix}"
        )


def spot_check_images(source: "DataSource", names: Sequence[str], count: int = 16) -> int:
    """:func:`check_image` on ``count`` evenly spaced images (first and last included): a quick look
    before any long work; the decode checks every image. Returns how many were looked at."""
    if not names:
        return 0
    picks = sorted({round(i * (len(names) - 1) / max(1, count - 1)) for i in range(count)})
    for index in picks:
        check_image(source.image_dir / names[index], source.kind)
    return len(picks)


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


def training_names(data_config, source: DataSource, train_labels: dict[str, list[str]]) -> list[str]:
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
    source = source or resolve_source(data_config, progress=progress)
    label_space = source.label_space
    train_labels = read_train_labels(source.path("train.json"), label_space)
    names = training_names(data_config, source, train_labels)
    require_images(source, names)
    labels = label_space.encode([train_labels[name] for name in names])
    size = data_config.image_size
    cache_path = resolve_path(data_config.cache_dir) / f"{source.kind}_{size}px_{_cache_key(source, names, size)}.pt"
    if use_cache and cache_path.exists():
        cached = torch.load(cache_path, weights_only=True)
        return TrainingSet(cached["images"], labels, names, label_space, source)

    images = torch.empty(len(names), 3, size, size, dtype=torch.uint8)

    def decode(i: int) -> None:
        path = source.image_dir / names[i]
        check_image(path, source.kind)
        try:
            image = decode_png(path)
        except (OSError, ValueError, RuntimeError) as error:  # Pillow: OSError for truncated or unknown files
            raise DataError(f"{path}: cannot decode it ({error}); the file is damaged, {_copy_again(source.kind)}") from error
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
        atomic_save({"images": images, "names": names}, cache_path)
    return TrainingSet(images, labels, names, label_space, source)


def cache_path_for(data_config, source: DataSource) -> Path:
    """Where :func:`load_training_set` keeps (or would keep) the cache for this set."""
    names = training_names(data_config, source, read_train_labels(source.path("train.json"), source.label_space))
    size = data_config.image_size
    return resolve_path(data_config.cache_dir) / f"{source.kind}_{size}px_{_cache_key(source, names, size)}.pt"


def timed(function, *args, **kwargs):
    """Run ``function`` and return (result, seconds)."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start
