"""Samplers side by side: the same label sets and per-image seeds under several (sampler, steps, η).

    rows = compare_samplers(model, schedule, conditions["test"][:4], config,
                            [SamplerSetting("ddpm", 20), SamplerSetting("ddim", 20), SamplerSetting("dpmsolver++", 20)],
                            judge=judge)
    for row in rows:
        print(row)   # DDIM, 20 steps, η = 0: 0.031 s per image, 40 network evaluations per image; accuracy …

Image i starts from seed ``seeds[i]`` under every setting, so two pictures at the same place differ
only by the sampler, and one setting sampled twice gives the same pictures. Each row is timed
(sampling only, not the judge) and, with a judge, scored with the course formula over its label
sets. :class:`labkit.widgets.SamplerComparison` shows the rows as columns.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Sequence

from labkit.config import ConfigError
from labkit.images import as_written
from labkit.labels import LabelSpace
from labkit.metrics import AccuracyResult
from labkit.sample import SampleResult, sample_conditions

SAMPLER_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpmsolver++": "DPM-Solver++"}


@dataclass(frozen=True)
class SamplerSetting:
    """One setting of a comparison.

    sampler: "ddpm", "ddim" or "dpmsolver++" (default, 2nd-order multistep).
    num_inference_steps: sampling steps, 1 … T (default 20).
    eta: DDIM's η in [0, 1] (default 0: deterministic; 1: as much fresh noise per step as DDPM);
        the other samplers ignore it.
    """

    sampler: str = "dpmsolver++"
    num_inference_steps: int = 20
    eta: float = 0.0

    def __str__(self) -> str:
        text = f"{SAMPLER_NAMES.get(self.sampler, self.sampler)}, {self.num_inference_steps} steps"
        return text + (f", η = {self.eta:g}" if self.sampler == "ddim" else "")


# equal step budgets, 20 steps each: the classic DDPM steps through all T timesteps, the DDPM step here can skip
DEFAULT_SETTINGS = (SamplerSetting("ddpm", 20), SamplerSetting("ddim", 20, 0.0), SamplerSetting("dpmsolver++", 20))


def check_setting(setting, config, num_train_timesteps: int, where: str = "setting") -> SamplerSetting:
    """``setting`` (a :class:`SamplerSetting`, or a dict or tuple of its fields) checked by the config's
    own rules for ``sample.sampler``, ``sample.num_inference_steps`` and ``sample.eta``, and steps <= T.

    Returns the setting with its values coerced (2.0 steps is 2) and η = 0 for samplers other than
    DDIM. Raises :class:`ConfigError` starting with ``where`` (e.g. "column 2") and naming the value.
    """
    if isinstance(setting, dict):
        setting = SamplerSetting(**setting)
    elif isinstance(setting, (tuple, list)):
        setting = SamplerSetting(*setting)
    section = copy.copy(config.sample)  # assignments are coerced and checked as in a config
    try:
        section.sampler = setting.sampler
        section.num_inference_steps = setting.num_inference_steps
        section.eta = setting.eta
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    problems = [text for text in section.problems() if text.startswith(("sample.num_inference_steps", "sample.eta"))]
    if section.num_inference_steps > num_train_timesteps:
        problems.append(f"sample.num_inference_steps = {section.num_inference_steps} must be <= "
                        f"T = {num_train_timesteps} (the model's training timesteps)")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    eta = section.eta if section.sampler == "ddim" else 0.0
    return SamplerSetting(section.sampler, section.num_inference_steps, eta)


@dataclass
class ComparisonRow:
    """One setting's result: ``result`` (a :class:`SampleResult`: images float (B, 3, H, W) in [-1, 1],
    timesteps, wall_s, network evaluations per image) and ``accuracy`` (None without a judge)."""

    setting: SamplerSetting
    result: SampleResult
    accuracy: AccuracyResult | None = None

    @property
    def images(self):
        return self.result.images

    @property
    def seconds_per_image(self) -> float:
        return self.result.seconds_per_image

    def __str__(self) -> str:
        text = (f"{self.setting}: {self.seconds_per_image:.3f} s per image, "
                f"{self.result.network_evaluations} network evaluations per image")
        return text if self.accuracy is None else f"{text}; {self.accuracy}"


def compare_samplers(
    model,
    schedule,
    label_lists: Sequence[Sequence[str]],
    config,
    settings: Sequence = DEFAULT_SETTINGS,
    seeds: Sequence[int] | None = None,
    judge=None,
    label_space=None,
    guidance_scale: float | None = None,
    progress: bool = True,
    on_step=None,
) -> list[ComparisonRow]:
    """Sample ``label_lists`` once per setting with the same per-image seeds; time and score each.

    label_lists: B label sets (lists of object names, e.g. ``conditions["test"][:4]``).
    settings: one :class:`SamplerSetting` (or dict / tuple of its fields) per row, default
        :data:`DEFAULT_SETTINGS`; all are checked (:func:`check_setting`) before anything is sampled.
    seeds: B seeds; image i uses ``seeds[i]`` in every row (default ``config.sample.seed + i``).
    judge: a :class:`labkit.judge.Judge`; each row's accuracy is the course formula over the B label
        sets and names the judge (and its held-out accuracy when known). None: no accuracy.
    guidance_scale: w in ε = ε_u + w (ε_c − ε_u), the same for every row (default the config's).
    progress / on_step: a progress bar per row; ``on_step`` is called after each sampling step of
        every row (``ceil(B / config.sample.batch_size) * steps`` per row).
    Returns one :class:`ComparisonRow` per setting, in order; its seconds count the sampling only (not the
    judge, nor one untimed step of one image first, which takes the first call's costs off the first row).
    """
    label_space = label_space or LabelSpace.default()
    if not label_lists:
        raise ValueError("no label sets to sample; pass at least one, e.g. conditions['test'][:4]")
    labels = label_space.encode(label_lists)  # (B, 24); refuses unknown names before any sampling
    checked = [check_setting(setting, config, schedule.num_train_timesteps, where=f"setting {index + 1}")
               for index, setting in enumerate(settings)]
    if not checked:
        raise ValueError("no settings to compare; pass at least one SamplerSetting")
    seeds = [config.sample.seed + index for index in range(len(label_lists))] if seeds is None else list(seeds)
    if len(seeds) != len(label_lists):
        raise ValueError(f"{len(seeds)} seeds for {len(label_lists)} label sets; give one seed per image")
    scale = config.sample.guidance_scale if guidance_scale is None else float(guidance_scale)
    # one step of one image first, so that no row's seconds include the schedulers' import or the network's first call
    sample_conditions(model, schedule, label_lists[:1], config, label_space, sampler=checked[0].sampler,
                      num_inference_steps=1, seeds=seeds[:1], guidance_scale=scale, progress=False)
    rows = []
    for setting in checked:
        result = sample_conditions(
            model, schedule, label_lists, config, label_space, sampler=setting.sampler,
            num_inference_steps=setting.num_inference_steps, eta=setting.eta, seeds=seeds,
            guidance_scale=scale, progress=progress, on_step=on_step,
        )
        accuracy = None if judge is None else judge.accuracy(as_written(result.images), labels)
        rows.append(ComparisonRow(setting, result, accuracy))
    return rows


def steps_of(settings: Sequence[SamplerSetting], num_images: int, batch_size: int) -> int:
    """The sampling steps :func:`compare_samplers` takes for ``settings`` (its ``on_step`` calls)."""
    return math.ceil(num_images / batch_size) * sum(setting.num_inference_steps for setting in settings)
