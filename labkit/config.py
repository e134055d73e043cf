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
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES = ("smoke", "cpu", "gpu")


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


@dataclass
class DataConfig:
    """Where the data lives and how images are prepared for the model."""

    root: str = "data"  # official course files go here (see data/README.md)
    synthetic_dir: str = "data/synthetic"  # rendered when the official images are absent
    cache_dir: str = "data/cache"  # decode-once uint8 tensor caches
    image_size: int = 64  # model resolution (square); 320x240 is resized directly (squashed)
    num_scenes: int = 6003  # synthetic scenes (3 images each) rendered / used for training
    max_train_images: int = 0  # 0 = all training images; else the first N (sorted names)
    hflip: bool = True  # random horizontal flip during training (labels are position-free)
    synthetic_seed: int = 0  # seed of the synthetic data set (scenes and test conditions)
    source: str = "auto"  # "auto" (official when present, else synthetic), "official", "synthetic"


@dataclass
class ModelConfig:
    """Conditional UNet. ``backend``: "diffusers" (UNet2DModel) or "compact" (from scratch)."""

    backend: str = "diffusers"
    conditioning: str = "embedding"  # "embedding" (added to the time embedding) or "channels"
    num_classes: int = 24
    base_channels: int = 128
    channel_mults: tuple[int, ...] = (1, 2, 2, 4)
    layers_per_block: int = 2
    attention_levels: tuple[bool, ...] = (False, False, True, True)  # per resolution level
    attention_head_dim: int = 32
    norm_groups: int = 32
    dropout: float = 0.0


@dataclass
class DiffusionConfig:
    """Forward process and training target."""

    schedule: str = "cosine"  # "linear", "cosine" (squaredcos_cap_v2), "quadratic", "sigmoid"
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4  # linear / quadratic / sigmoid
    beta_end: float = 0.02
    # "v_prediction" (default), "epsilon" or "sample" (x0). With the cosine schedule ᾱ_999 ≈ 2e-9, so
    # x̂0 from a predicted ε divides its error by √ᾱ ≈ 5e-5 near t = T; x̂0 from v does not (x̂0 = √ᾱ x_t − √(1−ᾱ) v).
    prediction_type: str = "v_prediction"
    min_snr_gamma: float = 5.0  # 0 disables min-SNR-gamma weighting


@dataclass
class TrainConfig:
    """Optimisation, precision, logging and checkpointing."""

    steps: int = 60_000
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    cond_drop_prob: float = 0.1  # classifier-free guidance: P(label -> null condition)
    ema_decay: float = 0.9999
    ema_warmup_steps: int = 2000  # decay ramps as min(decay, (1 + s) / (10 + s)) before this
    precision: str = "auto"  # "auto", "bf16", "fp16", "fp32"
    channels_last: bool | str = "auto"  # True, False or "auto" (see labkit.runtime.resolve_channels_last)
    compile: bool = False
    data_on_device: bool = True  # keep the uint8 training set on the device when it fits
    log_every: int = 50  # loss is read from the device every N steps (no per-step sync)
    preview_every: int = 5000  # 0 disables preview grids
    eval_every: int = 10_000  # test accuracy with the judge; 0 disables
    checkpoint_every: int = 2000
    snapshot_every: int = 0  # keep the EMA weights (fp16) every N steps in checkpoints/ema_XXXXXX.pt; 0 = never
    seed: int = 0
    run_name: str = ""  # default: the profile name
    runs_dir: str = "runs"


@dataclass
class SampleConfig:
    """Sampling defaults: sampler, steps, guidance and the guidance sweep."""

    sampler: str = "dpmsolver++"  # "ddpm", "ddim", "dpmsolver++"
    num_inference_steps: int = 25
    guidance_scale: float = 3.0  # eps = eps_uncond + w * (eps_cond - eps_uncond); w = 1: plain conditional
    eta: float = 0.0  # DDIM only
    batch_size: int = 64  # cap: larger label lists are sampled in chunks
    seed: int = 0  # image i of a label file uses seed + i
    use_ema: bool = True
    sweep_scales: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)
    denoise_frames: int = 10  # images in the denoising-process row
    judge_guidance_scale: float = 0.0  # evaluator guidance; 0 = off (the default)


@dataclass
class JudgeConfig:
    """The synthetic judge: a ResNet18 of the course evaluator's architecture."""

    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    num_holdout_scenes: int = 300  # extra rendered scenes, never trained on
    min_accuracy: float = 0.98  # below this the lab warns loudly that the judge is weak
    filename: str = "judge.pth"  # in synthetic_dir
    use_shipped: bool = True  # use the judge shipped in reference/ when it fits the synthetic data (no training)


@dataclass
class LabConfig:
    """Everything one run needs. Saved as ``config.json`` and inside every checkpoint."""

    profile: str = "gpu"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)

    # ---- derived paths -------------------------------------------------------------
    @property
    def run_name(self) -> str:
        return self.train.run_name or self.profile

    @property
    def run_dir(self) -> Path:
        return resolve_path(self.train.runs_dir) / self.run_name

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
        """Build a config from a (possibly partial) nested dict; unknown keys are an error."""
        parts = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in parts:
                raise ValueError(f"unknown config section {key!r}; expected one of {sorted(parts)}")
            if key == "profile":
                kwargs[key] = value
                continue
            section_cls = _SECTIONS[key]
            kwargs[key] = _build_section(section_cls, value, key)
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LabConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "diffusion": DiffusionConfig,
    "train": TrainConfig,
    "sample": SampleConfig,
    "judge": JudgeConfig,
}


def _build_section(section_cls, values: dict[str, Any], section: str):
    known = {f.name: f for f in dataclasses.fields(section_cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(
                f"unknown setting {section}.{key}; expected one of {sorted(known)}"
            )
        default = getattr(section_cls(), key)
        kwargs[key] = tuple(value) if isinstance(default, tuple) else value
    return section_cls(**kwargs)


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
            eval_every=0,
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
            raise ValueError(
                f"LABKIT_PROFILE={name!r} is not a profile; use one of {', '.join(PROFILES)}"
            )
        return name
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def get_config(profile: str | None = None, **overrides: Any) -> LabConfig:
    """The config of ``profile`` (default: :func:`active_profile`), with dotted overrides.

    Example: ``get_config("cpu", **{"train.steps": 100})``.
    """
    name = (profile or active_profile()).lower()
    if name not in _PROFILE_BUILDERS:
        raise ValueError(f"unknown profile {name!r}; use one of {', '.join(PROFILES)}")
    config = _PROFILE_BUILDERS[name]()
    for dotted, value in overrides.items():
        set_override(config, dotted, value)
    return config


def set_override(config: LabConfig, dotted: str, value: Any) -> None:
    """Set ``section.name`` on ``config`` (value may be a string, parsed as JSON if possible)."""
    if "." not in dotted:
        raise ValueError(f"override {dotted!r} must look like section.name, e.g. train.steps")
    section_name, key = dotted.split(".", 1)
    if section_name not in _SECTIONS:
        raise ValueError(f"unknown config section {section_name!r} in {dotted!r}")
    section = getattr(config, section_name)
    if not hasattr(section, key):
        names = sorted(f.name for f in dataclasses.fields(section))
        raise ValueError(f"unknown setting {dotted!r}; {section_name} has {names}")
    current = getattr(section, key)
    if isinstance(value, str) and not isinstance(current, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"cannot parse {dotted}={value!r} as JSON") from error
    if isinstance(current, tuple):
        value = tuple(value)
    elif isinstance(current, bool):
        value = bool(value)
    elif isinstance(current, float) and isinstance(value, int):
        value = float(value)
    setattr(section, key, value)
