"""The 24 i-CLEVR objects and the course's condition files (objects.json, train.json, test.json, new_test.json).

Names are "<color> <shape>"; the built-in index is ``shape * 8 + color`` (the course's ``objects.json``).
Labels in the model are multi-hot float tensors of shape (B, 24); each image holds 1 to 3 distinct objects.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Sequence

import torch

from labkit.config import LabError

SHAPES = ("cube", "sphere", "cylinder")
COLORS = ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")
MAX_OBJECTS = 3


class ConditionError(LabError, ValueError):
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


def require_course_objects(space: LabelSpace) -> LabelSpace:
    """Check that ``space`` (read from an ``objects.json``) holds the course's 24 objects in the course's order.

    The judge's 24 outputs follow that order, so a missing, extra or renumbered object would score the
    wrong objects without any error. Returns ``space``; raises :class:`ConditionError` naming the difference.
    """
    expected = LabelSpace.default()
    if space.index == expected.index:
        return space
    fix = "restore the course's original objects.json (3 shapes x 8 colours, index = shape * 8 + colour)"
    missing = [name for name in expected.names if name not in space.index]
    unknown = [name for name in space.names if name not in expected.index]
    if missing or unknown:
        parts = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + (
            [f"unknown {', '.join(map(repr, unknown))}"] if unknown else [])
        raise ConditionError(f"{space.source}: {len(space)} objects, not the course's 24 ({'; '.join(parts)}); {fix}")
    moved = next(name for name in expected.names if space.index[name] != expected.index[name])
    raise ConditionError(
        f"{space.source}: {moved!r} has index {space.index[moved]}, but the course's objects.json gives it "
        f"{expected.index[moved]}; the judge's outputs follow the course's order, so a reordered file would "
        f"score the wrong objects. {fix[0].upper() + fix[1:]}"
    )


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
