"""Run configuration: one typed config per run, three profiles, JSON save/load.

A run is described by a single :class:`LabConfig` made of five parts
(data, model, diffusion, train, sample) plus the synthetic judge's settings.
Every checkpoint embeds it and every run folder holds it as ``config.json``.

Profiles
--------
``smoke``  tests and CI: every notebook in seconds on 2 CPU cores.
``cpu``    the default without a GPU: the whole lab in <= 30 min on 2 cores (32x32 model).
``gpu``    the real recipe for 64x64 i-CLEVR on one GPU (or Colab).

The active profile is ``LABKIT_PROFILE`` when set, else ``gpu`` when CUDA is present,
else ``cpu`` (see :func:`active_profile`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

Profile = Literal["smoke", "cpu", "gpu"]
Source = Literal["auto", "official", "synthetic"]
Backend = Literal["diffusers", "compact"]
Conditioning = Literal["embedding", "channels"]
Schedule = Literal["linear", "cosine", "quadratic", "sigmoid"]
PredictionType = Literal["epsilon", "v_prediction", "sample"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
ChannelsLayout = Union[bool, Literal["auto"]]
Sampler = Literal["ddpm", "ddim", "dpmsolver++"]

PROFILES = get_args(Profile)
TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")


class LabError(Exception):
    """A problem the user can fix: the message says what is wrong, where (file, entry or setting) and the fix.

    ``python -m labkit`` prints it as one paragraph and exits with status 2 (``--debug`` shows the
    traceback); any other exception is a bug in the lab and keeps its traceback.
    """


class ConfigError(LabError, ValueError):
    """A config value that cannot be used; the message names the setting, the value and what is allowed."""


def project_root() -> Path:
    """The folder that relative paths in a config are resolved against.

    ``LABKIT_HOME`` when set; else the checkout holding the ``labkit`` package (an editable
    install, the usual case); else the current folder. So a notebook in ``notebooks/`` and a
    command run at the top level read and write the same ``data/``, ``runs/`` and ``outputs/``.
    """
    home = os.environ.get("LABKIT_HOME")
    if home:
        return Path(home).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return checkout
    return Path.cwd()


def resolve_path(path: str | os.PathLike) -> Path:
    """An absolute path: ``path`` itself when absolute, else under :func:`project_root`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


# ---- values coerced by their annotation ------------------------------------------------------------
def _one_of(choices) -> str:
    """'a, b or c' (for messages)."""
    names = [str(choice) for choice in choices]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def describe(annotation) -> str:
    """What a setting of this annotation accepts, in words (for error messages and ``--help``)."""
    origin = get_origin(annotation)
    if origin is Literal:
        choices = get_args(annotation)
        return str(choices[0]) if len(choices) == 1 else "one of " + _one_of(choices)
    if origin in (Union, types.UnionType):
        return ", or ".join(describe(member) for member in get_args(annotation))
    if origin is tuple:
        item = get_args(annotation)[0]
        example = "[false, true]" if item is bool else "[1, 2]"
        return f"a list of {_ITEMS.get(item, describe(item))}, e.g. {example}"
    return {
        bool: "true or false (also yes/no, 1/0)",
        int: "a whole number",
        float: "a number",
        str: "a text",
    }.get(annotation, str(annotation))


def coerce(value: Any, annotation, setting: str) -> Any:
    """``value`` (from Python, JSON or a command line string) as the type ``annotation`` names.

    bool: True/False, 1/0 or the words true/false, yes/no, 1/0 (any case); int: whole numbers only
    (2.0 is 2, 1.5 is refused); float: any finite number; str: text; Literal: one of its values;
    tuple[X, ...]: a list or tuple (or its JSON text) of X. Raises :class:`ConfigError` naming
    ``setting``, the value and what is allowed.
    """
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        for member in get_args(annotation):
            try:
                return coerce(value, member, setting)
            except ConfigError:
                continue
        raise ConfigError(f"{setting} = {value!r} is not allowed; use {describe(annotation)}")
    if origin is Literal:
        choices = get_args(annotation)
        text = value.strip() if isinstance(value, str) else value
        if isinstance(text, str) and text in choices:
            return text
        raise ConfigError(f"{setting} must be one of {_one_of(choices)}, not {value!r}")
    if origin is tuple:
        return _coerce_tuple(value, get_args(annotation)[0], setting)
    coerce_scalar = _SCALARS.get(annotation)
    if coerce_scalar is None:
        raise TypeError(f"{setting}: no rule for values of type {annotation!r}")
    return coerce_scalar(value, setting)


def _to_bool(value: Any, setting: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ConfigError(f"{setting} = {value!r} is not a boolean; use {describe(bool)}")


def _to_int(value: Any, setting: str) -> int:
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip()) if any(c in value for c in ".eE") else int(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) or number != int(number):
        raise ConfigError(f"{setting} = {value!r} is not a whole number; use an integer such as 100")
    return int(number)


def _to_float(value: Any, setting: str) -> float:
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise ConfigError(f"{setting} = {value!r} is not a number; use a finite number such as 0.5 or 1e-3")
    return float(number)


def _to_str(value: Any, setting: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{setting} = {value!r} is not a text; use a string such as \"name\"")
    return value


_ITEMS = {bool: "true/false values", int: "whole numbers", float: "numbers", str: "texts"}
_SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def _coerce_tuple(value: Any, item_type, setting: str) -> tuple:
    given = value
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if not isinstance(value, (list, tuple)):
        raise ConfigError(
            f"{setting} = {given!r} is not a list; use {describe(tuple[item_type, ...])} (as JSON on the command line)"
        )
    return tuple(coerce(item, item_type, f"{setting}[{index}]") for index, item in enumerate(value))


def limit(default: Any, minimum: float | None = None, maximum: float | None = None, above: float | None = None) -> Any:
    """A dataclass field with a range, checked by :meth:`LabConfig.validate`: ``minimum <= value <= maximum``,
    ``value > above``."""
    return field(default=default, metadata={"minimum": minimum, "maximum": maximum, "above": above})


@functools.cache
def _annotations(section_cls) -> dict[str, Any]:
    hints = get_type_hints(section_cls)
    return {item.name: hints[item.name] for item in dataclasses.fields(section_cls)}


class Section:
    """A config section: every assignment is coerced to the field's annotation (see :func:`coerce`)."""

    name: ClassVar[str] = ""

    def __setattr__(self, key: str, value: Any) -> None:
        annotations = _annotations(type(self))
        if key not in annotations:
            close = difflib.get_close_matches(key, list(annotations), n=1)
            hint = f"did you mean {self.name}.{close[0]}? " if close else ""
            raise ConfigError(f"unknown setting {self.name}.{key}; {hint}{self.name} has {sorted(annotations)}")
        object.__setattr__(self, key, coerce(value, annotations[key], f"{self.name}.{key}"))

    def problems(self) -> list[str]:
        """Every value outside its range, as 'section.name = value must be ...' (empty when all are fine)."""
        found = []
        for item in dataclasses.fields(self):
            value, meta = getattr(self, item.name), item.metadata
            values = value if isinstance(value, tuple) else (value,)
            setting = f"{self.name}.{item.name} = {value!r}"
            if meta.get("minimum") is not None and any(v < meta["minimum"] for v in values):
                found.append(f"{setting} must be >= {meta['minimum']}")
            if meta.get("maximum") is not None and any(v > meta["maximum"] for v in values):
                found.append(f"{setting} must be <= {meta['maximum']}")
            if meta.get("above") is not None and any(v <= meta["above"] for v in values):
                found.append(f"{setting} must be > {meta['above']}")
        return found


@dataclass
class DataConfig(Section):
    """Where the data lives and how images are prepared for the model."""

    name: ClassVar[str] = "data"
    root: str = "data"  # official course files go here (see data/README.md)
    synthetic_dir: str = "data/synthetic"  # rendered when the official images are absent
    cache_dir: str = "data/cache"  # decode-once uint8 tensor caches
    image_size: int = limit(64, minimum=8)  # model resolution (square); 320x240 is resized directly (squashed)
    num_scenes: int = limit(6003, minimum=1)  # synthetic scenes (3 images each) rendered / used for training
    max_train_images: int = limit(0, minimum=0)  # 0 = all training images; else the first N (sorted names)
    hflip: bool = True  # random horizontal flip during training (labels are position-free)
    synthetic_seed: int = 0  # seed of the synthetic data set (scenes and test conditions)
    source: Source = "auto"  # "auto" (official when present, else synthetic), "official", "synthetic"


@dataclass
class ModelConfig(Section):
    """Conditional UNet. ``backend``: "diffusers" (UNet2DModel) or "compact" (from scratch)."""

    name: ClassVar[str] = "model"
    backend: Backend = "diffusers"
    conditioning: Conditioning = "embedding"  # "embedding" (added to the time embedding) or "channels"
    num_classes: int = limit(24, minimum=0)  # 0: an unconditional model (no label input)
    base_channels: int = limit(128, minimum=1)
    channel_mults: tuple[int, ...] = limit((1, 2, 2, 4), minimum=1)
    layers_per_block: int = limit(2, minimum=1)
    attention_levels: tuple[bool, ...] = (False, False, True, True)  # per resolution level
    attention_head_dim: int = limit(32, minimum=1)
    # per resolution level: each block also attends to the image's object tokens (compact backend, "embedding"
    # conditioning), so a position can take its shape and colour from one object; () = none
    object_attention_levels: tuple[bool, ...] = ()
    norm_groups: int = limit(32, minimum=1)
    dropout: float = limit(0.0, minimum=0.0, maximum=0.99)

    def object_levels(self) -> tuple[bool, ...]:
        """``object_attention_levels`` with () spelled out: one bool per resolution level."""
        return self.object_attention_levels or (False,) * len(self.channel_mults)


@dataclass
class DiffusionConfig(Section):
    """Forward process and training target."""

    name: ClassVar[str] = "diffusion"
    schedule: Schedule = "cosine"  # "linear", "cosine" (squaredcos_cap_v2), "quadratic", "sigmoid"
    num_train_timesteps: int = limit(1000, minimum=2)
    beta_start: float = limit(1e-4, above=0.0, maximum=0.999)  # linear / quadratic / sigmoid
    beta_end: float = limit(0.02, above=0.0, maximum=0.999)
    # "v_prediction" (default), "epsilon" or "sample" (x0). With the cosine schedule ᾱ_999 ≈ 2e-9, so
    # x̂0 from a predicted ε divides its error by √ᾱ ≈ 5e-5 near t = T; x̂0 from v does not (x̂0 = √ᾱ x_t − √(1−ᾱ) v).
    prediction_type: PredictionType = "v_prediction"
    min_snr_gamma: float = limit(5.0, minimum=0.0)  # 0 disables min-SNR-gamma weighting


@dataclass
class TrainConfig(Section):
    """Optimisation, precision, logging and checkpointing."""

    name: ClassVar[str] = "train"
    steps: int = limit(60_000, minimum=1)
    batch_size: int = limit(128, minimum=1)
    lr: float = limit(2e-4, above=0.0)
    weight_decay: float = limit(0.0, minimum=0.0)
    warmup_steps: int = limit(1000, minimum=0)
    min_lr_ratio: float = limit(0.1, minimum=0.0, maximum=1.0)  # cosine decays to lr * min_lr_ratio
    grad_clip: float = limit(1.0, minimum=0.0)  # 0 disables clipping
    cond_drop_prob: float = limit(0.1, minimum=0.0, maximum=1.0)  # classifier-free guidance: P(label -> null condition)
    ema_decay: float = limit(0.9999, minimum=0.0, maximum=1.0)
    ema_warmup_steps: int = limit(2000, minimum=0)  # decay ramps as min(decay, (1 + s) / (10 + s)) before this
    precision: Precision = "auto"  # "auto", "bf16", "fp16", "fp32"
    channels_last: ChannelsLayout = "auto"  # true, false or "auto" (see labkit.runtime.resolve_channels_last)
    compile: bool = False
    data_on_device: bool = True  # keep the uint8 training set on the device when it fits
    log_every: int = limit(50, minimum=1)  # loss is read from the device every N steps (no per-step sync)
    preview_every: int = limit(5000, minimum=0)  # 0 disables preview grids
    eval_every: int = limit(10_000, minimum=0)  # test accuracy with the judge; 0 disables
    checkpoint_every: int = limit(2000, minimum=1)
    snapshot_every: int = limit(0, minimum=0)  # keep the EMA weights (fp16) every N steps in checkpoints/ema_XXXXXX.pt; 0 = never
    seed: int = 0
    run_name: str = ""  # default: the profile name
    runs_dir: str = "runs"
    init_from: str = ""  # fine-tune: a new run starts from these weights: a checkpoint or snapshot file, or "reference"


@dataclass
class SampleConfig(Section):
    """Sampling defaults: sampler, steps, guidance and the guidance sweep."""

    name: ClassVar[str] = "sample"
    sampler: Sampler = "dpmsolver++"  # "ddpm", "ddim", "dpmsolver++"
    num_inference_steps: int = limit(25, minimum=1)
    guidance_scale: float = limit(3.0, minimum=0.0)  # eps = eps_uncond + w * (eps_cond - eps_uncond); w = 1: plain conditional
    eta: float = limit(0.0, minimum=0.0, maximum=1.0)  # DDIM only
    batch_size: int = limit(64, minimum=1)  # cap: larger label lists are sampled in chunks
    seed: int = 0  # image i of a label file uses seed + i
    use_ema: bool = True
    sweep_scales: tuple[float, ...] = limit((1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0), minimum=0.0)
    denoise_frames: int = limit(10, minimum=2)  # images in the denoising-process row
    judge_guidance_scale: float = limit(0.0, minimum=0.0)  # evaluator guidance; 0 = off (the default)


@dataclass
class JudgeConfig(Section):
    """The synthetic judge: a ResNet18 of the course evaluator's architecture."""

    name: ClassVar[str] = "judge"
    steps: int = limit(3000, minimum=1)
    batch_size: int = limit(128, minimum=1)
    lr: float = limit(2e-3, above=0.0)
    num_holdout_scenes: int = limit(300, minimum=1)  # extra rendered scenes, never trained on
    min_accuracy: float = limit(0.98, minimum=0.0, maximum=1.0)  # below this the lab warns loudly that the judge is weak
    filename: str = "judge.pth"  # in synthetic_dir
    use_shipped: bool = True  # use the judge shipped in reference/ when it fits the synthetic data (no training)


@dataclass
class CounterConfig(Section):
    """The object counter (:mod:`labkit.counting`): a small CNN trained on renders of 1 to 5 objects."""

    name: ClassVar[str] = "counter"
    num_scenes: int = limit(3000, minimum=1)  # 5-object scenes; their prefixes give 5 x num_scenes images
    num_holdout_scenes: int = limit(200, minimum=1)  # scenes from another stream, never trained on
    steps: int = limit(1500, minimum=1)
    batch_size: int = limit(128, minimum=1)
    lr: float = limit(2e-3, above=0.0)
    seed: int = 0


_SECTIONS: dict[str, type[Section]] = {
    "data": DataConfig,
    "model": ModelConfig,
    "diffusion": DiffusionConfig,
    "train": TrainConfig,
    "sample": SampleConfig,
    "judge": JudgeConfig,
    "counter": CounterConfig,
}


def model_problems(model: ModelConfig, image_size: int) -> list[str]:
    """Why ``model`` cannot be built at ``image_size`` (empty when it can), each naming the setting to change."""
    found = []
    if len(model.attention_levels) != len(model.channel_mults):
        found.append(
            f"model.attention_levels has {len(model.attention_levels)} entries but model.channel_mults has "
            f"{len(model.channel_mults)}; give one bool per resolution level"
        )
    if model.object_attention_levels:
        if len(model.object_attention_levels) != len(model.channel_mults):
            found.append(
                f"model.object_attention_levels has {len(model.object_attention_levels)} entries but "
                f"model.channel_mults has {len(model.channel_mults)}; give one bool per resolution level, or () for none"
            )
        if model.backend != "compact" or model.conditioning != "embedding" or model.num_classes == 0:
            found.append(
                "model.object_attention_levels needs model.backend = 'compact', model.conditioning = 'embedding' and "
                "labels (num_classes > 0); "
                "set object_attention_levels = () for this model"
            )
    for mult in model.channel_mults:
        width = model.base_channels * mult
        if width % model.norm_groups:
            found.append(
                f"model.norm_groups={model.norm_groups} must divide every level's channels, but "
                f"{model.base_channels} x {mult} = {width}; change norm_groups or base_channels"
            )
            break
    for mult, attention, objects in zip(model.channel_mults, model.attention_levels, model.object_levels()):
        if (attention or objects) and (model.base_channels * mult) % model.attention_head_dim:
            found.append(
                f"model.attention_head_dim={model.attention_head_dim} must divide {model.base_channels * mult} "
                f"channels at an attention level; change attention_head_dim or base_channels"
            )
            break
    factor = 2 ** (len(model.channel_mults) - 1)
    if image_size % factor:
        found.append(
            f"image_size={image_size} must be divisible by 2^(levels - 1) = {factor} for "
            f"{len(model.channel_mults)} resolution levels; change data.image_size or model.channel_mults"
        )
    return found


@dataclass
class LabConfig:
    """Everything one run needs. Saved as ``config.json`` and inside every checkpoint.

    Every value is coerced to its annotation when it is set (a bad type or choice raises
    :class:`ConfigError` at once); ranges and settings that depend on each other are checked by
    :meth:`validate`, which :func:`get_config`, :meth:`load`, the command line and every stage run
    before any work.
    """

    profile: Profile = "gpu"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    counter: CounterConfig = field(default_factory=CounterConfig)

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "profile":
            value = coerce(value, Profile, "profile")
        elif key in _SECTIONS:
            if isinstance(value, dict):
                value = _build_section(_SECTIONS[key], value)
            elif not isinstance(value, _SECTIONS[key]):
                raise ConfigError(f"config section {key} must be a {_SECTIONS[key].__name__}, not {type(value).__name__}")
        else:
            raise ConfigError(f"unknown config part {key!r}; expected profile or one of {sorted(_SECTIONS)}")
        object.__setattr__(self, key, value)

    # ---- derived paths -------------------------------------------------------------
    @property
    def run_name(self) -> str:
        return self.train.run_name or self.profile

    @property
    def run_dir(self) -> Path:
        return resolve_path(self.train.runs_dir) / self.run_name

    @property
    def outputs_dir(self) -> Path:
        """``outputs/<run name>/``: the run's required files (images, grids, accuracy), never shared with another run."""
        return resolve_path("outputs") / self.run_name

    @property
    def report_dir(self) -> Path:
        """``outputs/<run name>/report_figures/``: the figures made from this run."""
        return self.outputs_dir / "report_figures"

    # ---- checks ------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Every value out of range and every pair of settings that do not fit together."""
        found = [problem for name in _SECTIONS for problem in getattr(self, name).problems()]
        found += model_problems(self.model, self.data.image_size)
        for setting, value in (("train.run_name", self.train.run_name), ("judge.filename", self.judge.filename)):
            if value != Path(value).name or value in (".", ".."):
                found.append(f"{setting} = {value!r} must be a plain name without folders, e.g. 'cpu_long'")
        if not self.judge.filename:
            found.append("judge.filename = '' must be a file name such as 'judge.pth'")
        if not self.sample.sweep_scales:
            found.append("sample.sweep_scales = () must hold at least one guidance scale, e.g. [1, 3, 5]")
        return found

    def validate(self) -> "LabConfig":
        """Raise :class:`ConfigError` listing every problem of :meth:`problems`; returns the config."""
        found = self.problems()
        if found:
            raise ConfigError("bad settings: " + "; ".join(found) + " (fix them in the config or with --set)")
        return self

    # ---- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "LabConfig":
        """Build and validate a config from a (possibly partial) nested dict; unknown keys are an error."""
        if not isinstance(values, dict):
            raise ConfigError(f"a config must be a JSON object with the sections {sorted(_SECTIONS)}, not {type(values).__name__}")
        known = ["profile", *_SECTIONS]
        for key in values:
            if key not in known:
                raise ConfigError(f"unknown config section {key!r}; expected one of {sorted(known)}")
        return cls(**values).validate()

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LabConfig":
        """Read a ``config.json``; a bad value names the file, the setting and what is allowed."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from None
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None


def _build_section(section_cls: type[Section], values: dict[str, Any]) -> Section:
    if not isinstance(values, dict):
        raise ConfigError(f"config section {section_cls.name} must be a JSON object of settings, not {values!r}")
    section = section_cls()
    for key, value in values.items():
        setattr(section, key, value)
    return section


# ---- profiles ---------------------------------------------------------------------------
def smoke_profile() -> LabConfig:
    """Tests and CI: tiny data, tiny model, a few dozen steps. Results are not meaningful."""
    return LabConfig(
        profile="smoke",
        data=DataConfig(
            synthetic_dir="data/synthetic_smoke",
            cache_dir="data/cache",
            image_size=32,
            num_scenes=32,
        ),
        model=ModelConfig(
            backend="compact",
            base_channels=16,
            channel_mults=(1, 2),
            layers_per_block=1,
            attention_levels=(False, True),
            attention_head_dim=16,
            norm_groups=8,
        ),
        diffusion=DiffusionConfig(num_train_timesteps=100),
        train=TrainConfig(
            steps=40,
            batch_size=16,
            lr=1e-3,
            warmup_steps=5,
            ema_decay=0.99,
            ema_warmup_steps=10,
            log_every=10,
            preview_every=20,
            eval_every=0,
            checkpoint_every=20,
        ),
        sample=SampleConfig(
            sampler="ddim",
            num_inference_steps=5,
            batch_size=32,
            sweep_scales=(1.0, 4.0),
            denoise_frames=6,
        ),
        judge=JudgeConfig(steps=30, batch_size=32, num_holdout_scenes=16, filename="judge.pth", use_shipped=False),
        counter=CounterConfig(num_scenes=48, num_holdout_scenes=8, steps=60, batch_size=32),
    )


def cpu_profile() -> LabConfig:
    """The whole lab on 2 CPU cores in <= 30 minutes: 32x32 model, bf16 where supported."""
    return LabConfig(
        profile="cpu",
        data=DataConfig(image_size=32, num_scenes=3000),
        model=ModelConfig(
            backend="compact",
            base_channels=32,
            channel_mults=(1, 2, 4, 4),
            layers_per_block=1,
            attention_levels=(False, False, True, True),
            attention_head_dim=32,
            norm_groups=8,
        ),
        diffusion=DiffusionConfig(num_train_timesteps=1000),
        train=TrainConfig(
            steps=900,
            batch_size=64,
            lr=1e-3,
            warmup_steps=100,
            ema_decay=0.995,  # averages about the last 200 steps: a short run must not average its start
            ema_warmup_steps=200,
            log_every=25,
            preview_every=450,
            eval_every=300,  # both files scored by the judge (DPM-Solver++-20): log.csv's accuracy columns, ~15 s each
            checkpoint_every=300,
        ),
        # With v-prediction the 900-step model samples about as well with DPM-Solver++-20 as with DDIM-50,
        # in 40 instead of 100 network calls (synthetic judge, w = 3, both files; one standard error ≈ 0.04).
        # One run: 0.380 vs 0.376 (eta 0) and 0.340 (eta 1); another (benchmarks/run.py): 0.327 vs 0.340
        # (eta 0) and 0.385 (eta 1), DDPM-1000 0.288. With ε-prediction: 0.249 (DPM-Solver++-20), 0.312
        # (DDIM-50, eta 1) in the first run, 0.237 (DPM-Solver++-20) in benchmarks/learning.py --ablations.
        sample=SampleConfig(
            sampler="dpmsolver++",
            num_inference_steps=20,
            sweep_scales=(1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0),
        ),
        judge=JudgeConfig(steps=1000, batch_size=64),
    )


def gpu_profile() -> LabConfig:
    """The real recipe: 64x64 i-CLEVR, diffusers UNet2DModel, bf16, one GPU."""
    return LabConfig(profile="gpu")


_PROFILE_BUILDERS = {"smoke": smoke_profile, "cpu": cpu_profile, "gpu": gpu_profile}


def active_profile() -> str:
    """``LABKIT_PROFILE`` when set, else ``gpu`` with CUDA, else ``cpu``."""
    name = os.environ.get("LABKIT_PROFILE", "").strip().lower()
    if name:
        if name not in PROFILES:
            raise ConfigError(f"LABKIT_PROFILE must be one of {_one_of(PROFILES)}, not {name!r}")
        return name
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def get_config(profile: str | None = None, **overrides: Any) -> LabConfig:
    """The config of ``profile`` (default: :func:`active_profile`), with dotted overrides, validated.

    Example: ``get_config("cpu", **{"train.steps": 100})``. Override values may be Python values
    or strings as typed on a command line (``"500"``, ``"no"``, ``"[1, 3, 5]"``); a bad one raises
    :class:`ConfigError` naming the setting, the value and what is allowed.
    """
    name = (profile or active_profile()).strip().lower()
    if name not in _PROFILE_BUILDERS:
        raise ConfigError(f"profile must be one of {_one_of(PROFILES)}, not {name!r}")
    config = _PROFILE_BUILDERS[name]()
    for dotted, value in overrides.items():
        set_override(config, dotted, value)
    return config.validate()


def set_override(config: LabConfig, dotted: str, value: Any) -> None:
    """Set ``section.name`` on ``config``; the value is coerced by the setting's type (see :func:`coerce`).

    Ranges and settings that depend on each other are checked by ``config.validate()`` once all
    overrides are in.
    """
    if "." not in dotted:
        raise ConfigError(f"override {dotted!r} must look like section.name, e.g. train.steps")
    section_name, key = dotted.split(".", 1)
    if section_name not in _SECTIONS:
        raise ConfigError(f"unknown config section {section_name!r} in {dotted!r}; use one of {sorted(_SECTIONS)}")
    setattr(getattr(config, section_name), key, value)
