"""Sampling: DDPM, DDIM and DPM-Solver++ with classifier-free and evaluator guidance.

The loop (see :func:`sample`) is the whole story, EDM-style:

    x_T ~ N(0, I), one seed per image
    for t in scheduler.timesteps:
        ε = ε_uncond + w (ε_cond - ε_uncond)        # classifier-free guidance, one batched call
        ε = ε - s √(1-ᾱ_t) ∇ log p_judge(y | x̂0)    # optional evaluator guidance (judge-guided)
        x_{t-1} = scheduler.step(ε, t, x_t)          # DDPM / DDIM / DPM-Solver++ (diffusers)

The network's output (ε, v or x0 by ``schedule.prediction_type``) is converted to ε before
guidance, so every sampler and guidance mode works for every prediction type.
Images are reproducible per image: image i's starting noise and every noise it draws later
come from its own generator seeded ``seed + i``, so an image does not change with the batch
size or the chunking.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from tqdm.auto import tqdm

from labkit.images import EVALUATOR_SIZE, resize_to, to_uint8
from labkit.labels import LabelSpace
from labkit.runtime import autocast, resolve_precision, show_progress

SAMPLERS = ("ddpm", "ddim", "dpmsolver++")


def make_scheduler(name: str, schedule, num_inference_steps: int, clip_sample: bool = True):
    """A diffusers scheduler over ``schedule``'s betas, with its timesteps set.

    name: "ddpm", "ddim" or "dpmsolver++" (2nd-order multistep). Timesteps are spaced
    "trailing" (the first step is t = T-1, pure noise under every schedule). The model output
    handed to ``step`` is always ε (see :func:`sample`). ``clip_sample`` clips the predicted x0
    to [-1, 1] (DDPM, DDIM) or applies dynamic thresholding (DPM-Solver++).
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler  # slow to import: only when sampling

    common = dict(
        num_train_timesteps=schedule.num_train_timesteps,
        trained_betas=schedule.betas.detach().cpu().double().tolist(),
        prediction_type="epsilon",
        timestep_spacing="trailing",
    )
    if name == "ddpm":
        scheduler = DDPMScheduler(**common, variance_type="fixed_small", clip_sample=clip_sample)
    elif name == "ddim":
        scheduler = DDIMScheduler(**common, clip_sample=clip_sample, set_alpha_to_one=True)
    elif name in ("dpmsolver++", "dpm-solver++", "dpmsolver"):
        scheduler = DPMSolverMultistepScheduler(
            **common,
            algorithm_type="dpmsolver++",
            solver_order=2,
            thresholding=clip_sample,
            sample_max_value=1.0,
            lower_order_final=True,
            final_sigmas_type="zero",
        )
    else:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    num_inference_steps = min(num_inference_steps, schedule.num_train_timesteps)
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


def image_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image (CPU, so an image is the same on CPU and GPU)."""
    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]


def initial_noise(generators: Sequence[torch.Generator], shape: tuple[int, int, int]) -> torch.Tensor:
    """x_T: (B, C, H, W) standard normal, row i drawn from ``generators[i]``."""
    return torch.cat([torch.randn((1, *shape), generator=g) for g in generators])


def guided_epsilon(
    model,
    schedule,
    x_t: torch.Tensor,
    timestep: int,
    labels: torch.Tensor,
    guidance_scale: float = 1.0,
    cfg_mode: str = "batched",
    precision: str = "fp32",
    guide_fn=None,
) -> torch.Tensor:
    """ε for one step with classifier-free guidance: ε_u + w (ε_c − ε_u).

    x_t: (B, 3, H, W); labels: (B, 24); the null condition is the all-zero label.
    w = 1 is plain conditional (one network call). ``cfg_mode="batched"`` evaluates the
    conditional and unconditional branches in one call on the doubled batch (2B);
    ``"separate"`` makes two calls (same result, slower; kept for comparison).
    guide_fn(eps_cond, eps_uncond, w): replaces the formula (the student notebook's ``guide``).
    """
    device = x_t.device
    timesteps = torch.full((x_t.shape[0],), int(timestep), device=device, dtype=torch.long)

    def network(x, t, y):
        with autocast(device, precision):
            output = model(x, t, y)
        return schedule.pred_epsilon(output.float(), x, t)

    if guidance_scale == 1.0:
        return network(x_t, timesteps, labels)
    null = torch.zeros_like(labels)
    if cfg_mode == "batched":
        eps_cond, eps_uncond = network(
            torch.cat([x_t, x_t]), torch.cat([timesteps, timesteps]), torch.cat([labels, null])
        ).chunk(2)
    elif cfg_mode == "separate":
        eps_cond = network(x_t, timesteps, labels)
        eps_uncond = network(x_t, timesteps, null)
    else:
        raise ValueError(f"cfg_mode must be 'batched' or 'separate', not {cfg_mode!r}")
    if guide_fn is not None:
        return guide_fn(eps_cond, eps_uncond, guidance_scale)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def judge_log_likelihood(judge, x0: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ log p(wanted) + Σ log(1 − p(unwanted)) under the judge's sigmoid outputs, per image (B,).

    x0: (B, 3, H, W) in [-1, 1] (resized to 64x64 as the evaluator expects); differentiable.
    """
    x = resize_to(x0, EVALUATOR_SIZE)
    probabilities = judge.network(x.to(judge.device)).float().clamp(1e-6, 1 - 1e-6)  # (B, 24)
    labels = labels.to(probabilities.device)
    return (labels * probabilities.log() + (1 - labels) * (1 - probabilities).log()).sum(dim=1)


def judge_guidance(judge, schedule, x_t, eps, timestep: int, labels, scale: float) -> torch.Tensor:
    """Evaluator guidance: ε ← ε − s √(1−ᾱ_t) ∇_{x̂0} log p_judge(y | x̂0), x̂0 from (x_t, ε)."""
    alpha_prod_t = schedule.alphas_cumprod[int(timestep)].to(x_t.device)
    with torch.enable_grad():
        pred_original_sample = ((x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()).clamp(-1, 1)
        pred_original_sample = pred_original_sample.detach().requires_grad_(True)
        log_likelihood = judge_log_likelihood(judge, pred_original_sample, labels).sum()
        (gradient,) = torch.autograd.grad(log_likelihood, pred_original_sample)
    return eps - scale * (1 - alpha_prod_t).sqrt() * gradient.to(eps.device)


@dataclass
class SampleResult:
    """Images and what it took to make them.

    images: float (B, 3, H, W) in [-1, 1] on the CPU.
    trajectory: uint8 (steps + 1, B, 3, H, W): x_T, ..., x_0 (when asked for).
    pred_x0: uint8 (steps, B, 3, H, W): the predicted clean image at each step.
    """

    images: torch.Tensor
    timesteps: list[int]
    network_evaluations: int  # per image; a CFG step counts 2
    wall_s: float
    trajectory: torch.Tensor | None = None
    pred_x0: torch.Tensor | None = None
    judge_guided: bool = False
    settings: dict = field(default_factory=dict)

    @property
    def seconds_per_image(self) -> float:
        return self.wall_s / max(1, len(self.images))


@dataclass
class SampleSettings:
    """How :func:`sample` samples (the defaults of its keyword arguments)."""

    sampler: str = "dpmsolver++"  # "ddpm", "ddim" or "dpmsolver++"
    num_inference_steps: int = 20
    guidance_scale: float = 1.0  # w in ε = ε_u + w (ε_c − ε_u); 1 = conditional only
    eta: float = 0.0  # DDIM only
    batch_size: int = 64  # images per network call (x2 with CFG)
    judge_guidance_scale: float = 0.0  # evaluator guidance; 0 = off
    cfg_mode: str = "batched"  # "batched" (one call on 2B) or "separate" (two calls)
    clip_sample: bool = True
    precision: str = "fp32"  # resolved: "bf16", "fp16" or "fp32"

    def step_kwargs(self, generators: list[torch.Generator]) -> dict:
        """Extra arguments of ``scheduler.step``: per-image generators for DDPM and DDIM, ``eta`` for DDIM."""
        if self.sampler == "ddim":
            return {"eta": self.eta, "generator": generators}
        return {"generator": generators} if self.sampler == "ddpm" else {}


@dataclass
class ChunkResult:
    """One chunk of :func:`sample`: images (b, 3, S, S) and, when asked for, uint8 trajectory and x̂0 per step."""

    images: torch.Tensor
    timesteps: list[int]
    trajectory: list[torch.Tensor] = field(default_factory=list)
    pred_x0: list[torch.Tensor] = field(default_factory=list)


def sample_chunk(
    model, schedule, labels: torch.Tensor, seeds: Sequence[int], size: int, settings: SampleSettings,
    judge=None, return_trajectory: bool = False, on_step=None,
) -> ChunkResult:
    """The sampling loop for one chunk of images (labels (b, 24) on the model's device, or None for an
    unconditional model; one seed per image)."""
    generators = image_generators(seeds)
    scheduler = make_scheduler(settings.sampler, schedule, settings.num_inference_steps, clip_sample=settings.clip_sample)
    device = next(model.parameters()).device
    x_t = initial_noise(generators, (3, size, size)).to(device)  # x_T, (b, 3, S, S)
    result = ChunkResult(images=x_t, timesteps=[int(t) for t in scheduler.timesteps])
    if return_trajectory:
        result.trajectory.append(to_uint8(x_t).cpu())
    for timestep in scheduler.timesteps:
        eps = guided_epsilon(
            model, schedule, x_t, int(timestep), labels, settings.guidance_scale, settings.cfg_mode, settings.precision
        )
        if judge is not None:
            eps = judge_guidance(judge, schedule, x_t, eps, int(timestep), labels, settings.judge_guidance_scale)
        if return_trajectory:
            alpha_prod_t = schedule.alphas_cumprod[int(timestep)]
            result.pred_x0.append(to_uint8((x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()).cpu())
        x_t = scheduler.step(eps, timestep, x_t, **settings.step_kwargs(generators)).prev_sample
        if return_trajectory:
            result.trajectory.append(to_uint8(x_t).cpu())
        if on_step is not None:
            on_step()
    result.images = x_t.float().clamp(-1, 1).cpu()
    return result


@torch.no_grad()
def sample(
    model,
    schedule,
    labels: torch.Tensor,
    sampler: str = "dpmsolver++",
    num_inference_steps: int = 20,
    guidance_scale: float = 1.0,
    eta: float = 0.0,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    batch_size: int = 64,
    return_trajectory: bool = False,
    judge=None,
    judge_guidance_scale: float = 0.0,
    cfg_mode: str = "batched",
    clip_sample: bool = True,
    device: str | torch.device | None = None,
    precision: str = "auto",
    progress: bool = True,
    image_size: int | None = None,
    num_images: int | None = None,
    on_step=None,
) -> SampleResult:
    """Generate one image per label row (or ``num_images`` images with ``labels=None``).

    labels=None: an unconditional model (``model.num_classes = 0``); ``num_images`` (or ``seeds``)
    sets how many images, and guidance does not apply.

    labels: (B, 24) multi-hot (all-zero rows sample unconditionally).
    sampler / num_inference_steps: "ddpm", "ddim" (with ``eta``) or "dpmsolver++".
    guidance_scale: w in ε = ε_u + w (ε_c − ε_u); 1 = conditional only, no guidance.
    seed / seeds: image i uses ``seeds[i]`` (default ``seed + i``).
    batch_size: at most this many images per network call (x2 with CFG); larger label sets
        are sampled in chunks (:func:`sample_chunk`), with identical results.
    judge / judge_guidance_scale: evaluator guidance (off when the scale is 0); results are
        marked ``judge_guided``.
    on_step: called with no argument after every sampling step of every chunk (an outer progress
        bar or a widget's status line); there are ``ceil(B / batch_size) * num_inference_steps``.
    Returns a :class:`SampleResult` with CPU tensors (trajectory and x̂0 as uint8 when asked for).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    settings = SampleSettings(
        sampler, num_inference_steps, guidance_scale, eta, batch_size, judge_guidance_scale, cfg_mode, clip_sample,
        resolve_precision(precision, device),
    )
    if labels is None:
        count = num_images if num_images is not None else len(seeds or [])
        settings.guidance_scale = 1.0  # no label, so no guidance: one network call per step
    else:
        count = labels.shape[0]
    seeds = list(seeds) if seeds is not None else [seed + i for i in range(count)]
    if len(seeds) != count:
        raise ValueError(f"{len(seeds)} seeds for {count} label rows; give one seed per image")
    size = image_size or getattr(model, "sample_size", None) or _infer_size(model)
    guide = judge if judge is not None and judge_guidance_scale > 0 else None
    schedule = schedule.to(device)
    labels = None if labels is None else labels.float().to(device)
    start = time.perf_counter()
    starts = range(0, count, batch_size)
    bar = tqdm(total=len(starts) * num_inference_steps, desc=f"sample {sampler}", disable=not show_progress(progress))
    chunks = [
        sample_chunk(model, schedule, None if labels is None else labels[i : i + batch_size], seeds[i : i + batch_size],
                     size, settings, guide,
                     return_trajectory, on_step=lambda: (bar.update(1), on_step and on_step()))
        for i in starts
    ]
    bar.close()
    return collect_chunks(chunks, settings, time.perf_counter() - start, judge_guided=guide is not None)


def collect_chunks(chunks: list[ChunkResult], settings: SampleSettings, wall_s: float, judge_guided: bool) -> SampleResult:
    """One :class:`SampleResult` from the chunks of :func:`sample`, in label order."""
    timesteps = chunks[-1].timesteps if chunks else []
    with_trajectory = bool(chunks and chunks[0].trajectory)
    return SampleResult(
        images=torch.cat([chunk.images for chunk in chunks]),
        timesteps=timesteps,
        network_evaluations=len(timesteps) * (1 if settings.guidance_scale == 1.0 else 2),
        wall_s=wall_s,
        trajectory=torch.cat([torch.stack(c.trajectory) for c in chunks], dim=1) if with_trajectory else None,
        pred_x0=torch.cat([torch.stack(c.pred_x0) for c in chunks], dim=1) if with_trajectory else None,
        judge_guided=judge_guided,
        settings=dict(
            dataclasses.asdict(settings), num_inference_steps=len(timesteps),
            judge_guidance_scale=settings.judge_guidance_scale if judge_guided else 0.0,
        ),
    )


@torch.no_grad()
def sample_from_scratch(
    model,
    schedule,
    labels: torch.Tensor,
    method: str = "ddim",
    num_inference_steps: int = 50,
    guidance_scale: float = 1.0,
    eta: float = 0.0,
    seed: int = 0,
    clip_sample: bool = True,
    image_size: int | None = None,
    precision: str = "fp32",
    guide_fn=None,
    ddim_step_fn=None,
) -> torch.Tensor:
    """The teaching sampler: the same loop as :func:`sample`, with labkit's own DDPM/DDIM steps.

    Uses the scheduler's timesteps and draws noise exactly as diffusers does (one generator
    per image), so for the same seeds it returns the same images as ``sample(sampler=method)``.
    labels: (B, 24) -> images float (B, 3, S, S) in [-1, 1].
    Your own pieces (the student notebook's exercises) can replace labkit's:
    guide_fn(eps_cond, eps_uncond, w) -> ε (classifier-free guidance) and, for ``method="ddim"``
    with η = 0, ddim_step_fn(eps, x_t, alpha_bar_t, alpha_bar_prev) -> (x_prev, x0_pred) (no
    clipping of x̂0 there: compare with ``clip_sample=False``).
    """
    device = next(model.parameters()).device
    size = image_size or _infer_size(model)
    generators = image_generators([seed + i for i in range(labels.shape[0])])
    timesteps = make_scheduler(method, schedule, num_inference_steps).timesteps.tolist()  # e.g. [999, 979, ...]
    step_size = schedule.num_train_timesteps // len(timesteps)
    labels = labels.float().to(device)
    x_t = initial_noise(generators, (3, size, size)).to(device)  # x_T, (B, 3, S, S)
    for index, timestep in enumerate(timesteps):
        eps = guided_epsilon(model, schedule, x_t, timestep, labels, guidance_scale, "batched", precision, guide_fn)
        if method == "ddim" and ddim_step_fn is not None:
            prev_timestep = timestep - step_size
            alpha_bar = schedule.alphas_cumprod.to(x_t.device)
            alpha_bar_t = alpha_bar[timestep].reshape(1, 1, 1, 1).expand(len(x_t), 1, 1, 1)
            alpha_bar_prev = (alpha_bar[prev_timestep] if prev_timestep >= 0 else torch.ones((), device=x_t.device))
            x_t, _ = ddim_step_fn(eps, x_t, alpha_bar_t, alpha_bar_prev.reshape(1, 1, 1, 1).expand(len(x_t), 1, 1, 1))
        elif method == "ddpm":  # the next timestep of the list (diffusers' DDPMScheduler.previous_timestep)
            prev_timestep = timesteps[index + 1] if index + 1 < len(timesteps) else -1
            x_t, _ = schedule.ddpm_step(
                eps_to_output(schedule, eps, x_t, timestep), timestep, x_t,
                generator=generators if timestep > 0 else None, prev_timestep=prev_timestep, clip_sample=clip_sample,
            )
        elif method == "ddim":  # t - T // steps, as diffusers' DDIMScheduler
            prev_timestep = timestep - step_size
            x_t, _ = schedule.ddim_step(
                eps_to_output(schedule, eps, x_t, timestep), timestep, prev_timestep, x_t, eta=eta,
                generator=generators if eta > 0 else None, clip_sample=clip_sample,
            )
        else:
            raise ValueError(f"the teaching sampler knows 'ddpm' and 'ddim', not {method!r}")
    return x_t.float().clamp(-1, 1).cpu()


def eps_to_output(schedule, eps: torch.Tensor, x_t: torch.Tensor, timestep: int) -> torch.Tensor:
    """ε -> the schedule's prediction type (identity for ε-prediction models)."""
    if schedule.prediction_type == "epsilon":
        return eps
    timesteps = torch.full((x_t.shape[0],), int(timestep), device=x_t.device, dtype=torch.long)
    alpha_prod_t = schedule.alphas_cumprod.to(x_t.device)[timesteps].reshape(-1, 1, 1, 1)
    x0 = (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()
    if schedule.prediction_type == "sample":
        return x0
    return alpha_prod_t.sqrt() * eps - (1 - alpha_prod_t).sqrt() * x0  # v = √ᾱ ε − √(1−ᾱ) x0


def _infer_size(model) -> int:
    for name in ("image_size", "sample_size"):
        value = getattr(model, name, None)
        if value:
            return int(value)
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "sample_size", None):
        return int(config.sample_size)
    raise ValueError("cannot tell the model's image size; pass image_size=")


def sample_conditions(
    model,
    schedule,
    label_lists: Sequence[Sequence[str]],
    config,
    label_space=None,
    **overrides,
) -> SampleResult:
    """Sample one image per label list with the config's sampling defaults (overridable)."""
    label_space = label_space or LabelSpace.default()
    settings = dict(
        sampler=config.sample.sampler,
        num_inference_steps=config.sample.num_inference_steps,
        guidance_scale=config.sample.guidance_scale,
        eta=config.sample.eta,
        seed=config.sample.seed,
        batch_size=config.sample.batch_size,
        precision=config.train.precision,
        image_size=config.data.image_size,
    )
    settings.update(overrides)
    return sample(model, schedule, label_space.encode(label_lists), **settings)
