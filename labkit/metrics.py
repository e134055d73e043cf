"""The course's accuracy and what explains it: top-k hits per image, per object, per object count, failures.

For an image with k true objects the judge's k most probable classes are compared with the true ones
(:func:`top_k_selection`, ties resolved by ``torch.topk`` exactly as the course's ``compute_acc``);
the accuracy of a label file is the total of those hits over the total number of objects (72 in
test.json, 84 in new_test.json), not a mean of per-image accuracies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from labkit.labels import LabelSpace

NUM_CLASSES = 24


def _check_pair(probabilities: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if probabilities.dim() != 2 or labels.shape != probabilities.shape:
        raise ValueError(
            f"expected probabilities and labels of the same shape (B, {NUM_CLASSES}), got "
            f"{tuple(probabilities.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.detach().float().cpu()
    if not torch.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be multi-hot (0 or 1); encode label lists with LabelSpace.encode")
    return probabilities.detach().float().cpu(), labels


def top_k_selection(probabilities: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """The one top-k rule: for image i with k true labels, its k most probable classes.

    probabilities, labels: (B, 24). Returns the (B, 24) float mask of the selected classes, the
    checked (B, 24) labels on the CPU, and each image's selected classes, most probable first;
    ``(selected * labels).sum()`` counts the hits.
    """
    probabilities, labels = _check_pair(probabilities, labels)
    selected = torch.zeros_like(labels)
    top = []
    for row in range(len(labels)):
        k = int(labels[row].sum().item())
        top.append(probabilities[row].topk(k).indices.tolist() if k else [])
        selected[row, top[-1]] = 1.0
    return selected, labels, top


def course_accuracy(probabilities: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """The course's score as (hits, total), total = number of true labels over all images.

    probabilities: (B, 24); labels: (B, 24) multi-hot. accuracy = hits / total (see :func:`top_k_selection`).
    """
    selected, labels, _ = top_k_selection(probabilities, labels)
    return int((selected * labels).sum().item()), int(labels.sum().item())


@dataclass
class AccuracyResult:
    """One accuracy in the course's formula, always with the judge that produced it."""

    accuracy: float
    hits: int
    total: int
    judge: str
    split: str = ""  # e.g. "test" (printed as test.json)
    judge_holdout_accuracy: float | None = None  # the judge's own held-out accuracy, when known

    def __str__(self) -> str:
        name = f"{self.split}.json" if self.split in ("test", "new_test") else self.split  # a label file, or e.g. "held-out"
        prefix = f"{name}: " if name else "accuracy "
        held_out = f", held-out {self.judge_holdout_accuracy:.3f}" if self.judge_holdout_accuracy is not None else ""
        return f"{prefix}{self.accuracy:.3f} ({self.hits}/{self.total} objects, {self.judge}{held_out})"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def per_class_accuracy(probabilities: torch.Tensor, labels: torch.Tensor, label_space=None) -> dict[str, dict]:
    """For each object present in ``labels``: how often it is among its image's top-k classes.

    probabilities, labels: (B, 24). Returns {name: {"hits", "total", "accuracy"}} in label-index
    order; objects that appear in no image are left out. The totals add up to course_accuracy's.
    """
    label_space = label_space or LabelSpace.default()
    selected, labels, _ = top_k_selection(probabilities, labels)
    hits = (selected * labels).sum(dim=0)
    totals = labels.sum(dim=0)
    return {
        label_space.names[index]: {
            "hits": int(hits[index]),
            "total": int(totals[index]),
            "accuracy": float(hits[index] / totals[index]),
        }
        for index in range(labels.shape[1])
        if totals[index] > 0
    }


def per_object_count_accuracy(probabilities: torch.Tensor, labels: torch.Tensor) -> dict[int, dict]:
    """Accuracy split by the number of objects per image: {k: {"images", "hits", "total", "accuracy"}}.

    probabilities, labels: (B, 24). Only counts that occur are listed (1, 2, 3 for i-CLEVR).
    """
    selected, labels, _ = top_k_selection(probabilities, labels)
    hits = (selected * labels).sum(dim=1)  # (B,)
    counts = labels.sum(dim=1)
    result = {}
    for k in sorted({int(value) for value in counts.tolist()}):
        mask = counts == k
        total = int(counts[mask].sum())
        result[k] = {
            "images": int(mask.sum()),
            "hits": int(hits[mask].sum()),
            "total": total,
            "accuracy": float(hits[mask].sum() / total) if total else float("nan"),
        }
    return result


@dataclass
class FailureCase:
    """An image whose top-k classes miss at least one of its true objects."""

    index: int  # position in the label file (= the image's file name, index.png)
    wanted: list[str]
    predicted: list[str]  # the judge's top-k classes, most probable first
    missed: list[str]  # wanted but not predicted

    def __str__(self) -> str:
        return f"{self.index}.png: wanted {self.wanted}, judge saw {self.predicted}; missed {self.missed}"


def failure_cases(probabilities: torch.Tensor, labels: torch.Tensor, label_space=None) -> list[FailureCase]:
    """The images with missed labels, in file order. probabilities, labels: (B, 24).

    ``[case.index for case in failure_cases(...)]`` are the indices; each case also names what
    was wanted, what the judge saw (its top-k) and what it missed.
    """
    label_space = label_space or LabelSpace.default()
    _, labels, top = top_k_selection(probabilities, labels)
    cases = []
    for row in range(len(labels)):
        if not top[row]:
            continue
        wanted = [label_space.names[i] for i in labels[row].nonzero().flatten().tolist()]
        predicted = [label_space.names[i] for i in top[row]]
        missed = [name for name in wanted if name not in predicted]
        if missed:
            cases.append(FailureCase(row, wanted, predicted, missed))
    return cases
