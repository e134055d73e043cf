"""One validation pass before any long work: the config, the data and the judge files.

Every command of the lab calls :func:`preflight` first, so a bad ``new_test.json``, a missing
``iclevr/`` folder, a renumbered ``objects.json``, a grey 16x16 image or an unusable ``checkpoint.pth``
is reported in seconds, before decoding, training or sampling, with the file, the entry and the fix.

What is checked (each raises a :class:`~labkit.config.LabError` subclass):

1. the config (types, ranges: :meth:`~labkit.config.LabConfig.validate`);
2. where the data comes from (:func:`labkit.data.resolve_source`): the course's files complete, or none
   of them (then the synthetic i-CLEVR), never a mix;
3. ``objects.json`` holds the course's 24 objects in the course's order; ``train.json``, ``test.json``
   and ``new_test.json`` parse and name known objects; every training image listed is present, and a
   spread of them are 320x240 RGB(A) renders (the decode checks every one and stops at the first bad file);
4. the judge: the course's ``checkpoint.pth`` (and ``evaluator.py``) load into the course's ResNet18
   for official data; for synthetic data, which synthetic judge will be used (shipped, cached, or trained).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labkit import data as data_module
from labkit.config import ConfigError, LabConfig, resolve_path
from labkit.judge import course_files, judge_paths, load_course_judge, load_shipped_judge
from labkit.train import init_weights_path


@dataclass
class PreflightReport:
    """What :func:`preflight` found: the data source and one line per checked item."""

    source: data_module.DataSource
    judge: str
    lines: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "checked before starting:\n" + "\n".join(f"  {line}" for line in self.lines)


def check_init_from(config: LabConfig) -> None:
    """``train.init_from`` names weights that exist (a file, or "reference" for the shipped model, SHA-256 checked)."""
    init_from = config.train.init_from
    path = init_weights_path(init_from) if init_from else None  # the shipped model: a clear error when missing or changed
    if path is not None and not path.is_file():
        raise ConfigError(f"train.init_from = {init_from!r}: {path} does not exist; name a checkpoint "
                          f"(runs/NAME/checkpoints/last.pt or ema_XXXXXX.pt), \"reference\" for the shipped model, "
                          f"or leave it empty to train from scratch")


def check_data_files(config: LabConfig, source: data_module.DataSource) -> list[str]:
    """Check the condition files, the label space and the training images of ``source``; one line per file.

    A synthetic folder not rendered yet is skipped (labkit writes it itself).
    """
    if source.kind == "synthetic" and not source.path("train.json").is_file():
        return [f"data: synthetic i-CLEVR, rendered into {source.root} first"]
    label_space = source.label_space  # objects.json: the 24 course objects in the course's order
    train_labels = data_module.read_train_labels(source.path("train.json"), label_space)
    names = data_module.training_names(config.data, source, train_labels)
    data_module.require_images(source, names)
    looked_at = data_module.spot_check_images(source, names)
    lines = [
        f"data: {source} ({len(label_space)} objects in the course's order)",
        f"  train.json: {len(names)} training images present; {looked_at} spot-checked "
        f"({'320x240 RGB(A)' if source.kind == 'official' else 'readable'})",
    ]
    for split in ("test", "new_test"):
        conditions = source.conditions(split)
        lines.append(f"  {split}.json: {len(conditions)} label sets, {sum(map(len, conditions))} objects")
    return lines


def check_judge_files(config: LabConfig, source: data_module.DataSource) -> tuple[str, str]:
    """(judge name, one line) for the judge that will score this data; the course files are loaded to check them."""
    if source.kind == "official":
        evaluator_path, checkpoint_path = course_files(config)
        if load_course_judge(config, device="cpu") is not None:  # loads the files; raises naming a bad one
            used = f"{checkpoint_path}" + (f" through {evaluator_path.name}" if evaluator_path.is_file() else "")
            return "course checkpoint", f"judge: course checkpoint ({used}), loads into the course's ResNet18"
        return "labkit judge (trained on the official images)", (
            f"judge: no checkpoint.pth in {source.root}; a judge of the course's architecture trained here "
            f"on the official images (copy the course's checkpoint.pth there to use the course's judge)"
        )
    ignored = data_module.official_files_found(resolve_path(config.data.root))
    note = f" (the course files in {config.data.root} are ignored: data.source = synthetic)" if ignored else ""
    if load_shipped_judge(config) is not None:
        return "synthetic judge", f"judge: synthetic judge shipped in reference/{note}"
    cached = judge_paths(config)[0]
    where = f"cached at {cached}" if cached.is_file() else "trained first (it is not cached yet)"
    return "synthetic judge", f"judge: synthetic judge, {where}{note}"


def preflight(config: LabConfig, judge: bool = True, data: bool = True) -> PreflightReport:
    """Validate ``config`` and the files the run will use, before any long work; return what was checked.

    judge: also check the judge's files (commands that score); data: also check the condition files and
    images (every command but ``judge`` of a cached judge). Raises a :class:`~labkit.config.LabError`
    naming the file, the entry or the setting and the fix.
    """
    config.validate()
    check_init_from(config)
    source = data_module.resolve_source(config.data, render=False)
    report = PreflightReport(source, judge="")
    if data:
        report.lines += check_data_files(config, source)
    if judge:
        report.judge, line = check_judge_files(config, source)
        report.lines.append(line)
    return report
