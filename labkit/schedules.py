"""The diffusion maths: β schedules, the forward process q(x_t | x_0), the posterior, and the
DDPM and DDIM reverse steps, with conversions between the ε, x0 and v parameterisations.

Papers and equations named in the comments:

* DDPM, Ho et al. 2020: eq. 4 (q(x_t | x_0) in closed form), eq. 6-7 (the posterior
  q(x_{t-1} | x_t, x_0)), eq. 11 (the mean from a predicted ε), eq. 15 (x_0 from ε).
* DDIM, Song et al. 2021: eq. 12 (the generalised step; η = 0 is deterministic), eq. 16 (σ_t(η)).
* v-prediction, Salimans & Ho 2022: v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x_0.
* min-SNR-γ loss weighting, Hang et al. 2023.
* The cosine schedule, Nichol & Dhariwal 2021 (diffusers ``squaredcos_cap_v2``).

Conventions: schedule tensors are computed in float64 and stored as float32 (like
denoising-diffusion-pytorch); images are float (B, C, H, W); ``timesteps`` are (B,) long
tensors (a plain int is broadcast to the batch); ``extract`` gathers one value per sample
as (B, 1, 1, 1). Every function that draws noise takes explicit ``noise`` or a ``generator``
(a ``torch.Generator`` or a list with one generator per image).

The steps reproduce diffusers' ``DDPMScheduler.step`` (``variance_type="fixed_small"``) and
``DDIMScheduler.step`` (``set_alpha_to_one=True`` by default); ``tests/test_schedules.py``
checks both against diffusers on random inputs.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

SCHEDULES = ("linear", "cosine", "quadratic", "sigmoid")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

# Our schedule name -> the diffusers ``beta_schedule`` computing the same betas
# (only ``DDPMScheduler`` knows "sigmoid"; every scheduler accepts ``trained_betas``).
DIFFUSERS_BETA_SCHEDULES = {
    "linear": "linear",
    "cosine": "squaredcos_cap_v2",
    "quadratic": "scaled_linear",
    "sigmoid": "sigmoid",
}

COSINE_OFFSET = 0.008  # s in Nichol & Dhariwal 2021
MAX_BETA = 0.999  # cap of the cosine schedule's betas (diffusers' max_beta)

Generators = torch.Generator | Sequence[torch.Generator] | None


def make_betas(
    name: str,
    num_train_timesteps: int,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> torch.Tensor:
    """The β schedule ``name`` as a float64 tensor of shape (num_train_timesteps,).

    * ``"linear"``: ``linspace(beta_start, beta_end, T)`` (DDPM).
    * ``"cosine"``: Nichol & Dhariwal's schedule, equal to diffusers ``squaredcos_cap_v2``:
      ᾱ(u) = cos²((u + s) / (1 + s) · π/2) with s = 0.008, and
      β_i = min(1 − ᾱ((i + 1)/T) / ᾱ(i/T), 0.999). ``beta_start``/``beta_end`` are unused.
    * ``"quadratic"``: ``linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2`` (the original
      DDPM code's "quad"). diffusers' ``scaled_linear`` computes exactly this formula, so
      the two coincide for the same ``beta_start``/``beta_end`` (up to float32 rounding in
      diffusers); they differ in practice only because Stable Diffusion configs use
      ``scaled_linear`` with beta_start = 0.00085, beta_end = 0.012.
    * ``"sigmoid"``: ``sigmoid(linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start``,
      the GeoDiff schedule of diffusers' ``DDPMScheduler(beta_schedule="sigmoid")``. Its
      betas never quite reach ``beta_start`` and ``beta_end`` (sigmoid(±6) = 0.0025 / 0.9975).
    """
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
    steps = num_train_timesteps
    if name == "linear":
        return torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    if name == "cosine":
        def alpha_bar(u: torch.Tensor) -> torch.Tensor:
            return torch.cos((u + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

        u = torch.arange(steps + 1, dtype=torch.float64) / steps  # (T + 1,)
        betas = 1 - alpha_bar(u[1:]) / alpha_bar(u[:-1])
        return betas.clamp(max=MAX_BETA)
    if name == "quadratic":
        return torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    if name == "sigmoid":
        return torch.sigmoid(torch.linspace(-6, 6, steps, dtype=torch.float64)) * (beta_end - beta_start) + beta_start
    raise ValueError(f"unknown beta schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def extract(values: torch.Tensor, timesteps: torch.Tensor | int, broadcast_shape: Sequence[int]) -> torch.Tensor:
    """Gather ``values[timesteps]`` and reshape for broadcasting against an image batch.

    values: (T,); timesteps: (B,) long (or an int, used for the whole batch);
    broadcast_shape: the batch's shape (B, C, H, W) -> (B, 1, 1, 1) on ``values``' device.
    """
    batch = broadcast_shape[0]
    if not torch.is_tensor(timesteps) or timesteps.dim() == 0:
        timesteps = torch.full((batch,), int(timesteps), dtype=torch.long, device=values.device)
    if timesteps.shape != (batch,):
        raise ValueError(
            f"timesteps must have shape ({batch},) for a batch of shape {tuple(broadcast_shape)}, "
            f"got {tuple(timesteps.shape)}"
        )
    out = values.gather(0, timesteps.to(values.device).long())  # (B,)
    return out.reshape(batch, *([1] * (len(broadcast_shape) - 1)))


def draw_noise(
    shape: Sequence[int],
    generator: Generators = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise of ``shape`` (B, ...), reproducible per image.

    ``generator``: None (global RNG), one ``torch.Generator`` (drawn in one call, like
    ``torch.randn``), or a list of B generators (image i drawn from generator i, so an image's
    noise does not depend on the batch it is in). Noise is drawn on each generator's device
    and moved to ``device``, as diffusers' ``randn_tensor`` does.
    """
    shape = tuple(shape)
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}; pass one per image")
        images = [torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=dtype) for g in generator]
        return torch.cat(images).to(device)
    rand_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=rand_device, dtype=dtype).to(device)


class NoiseSchedule:
    """A β schedule and everything derived from it (float32 tensors of shape (T,)).

    Build from explicit arguments or from a ``DiffusionConfig`` with :meth:`from_config`.

    Tensors (index t = 0 .. T-1, so ``alphas_cumprod[0] = 1 - betas[0]``):
    ``betas`` β_t, ``alphas`` α_t = 1 − β_t, ``alphas_cumprod`` ᾱ_t, ``alphas_cumprod_prev``
    ᾱ_{t-1} (1 at t = 0), ``sqrt_alphas_cumprod``, ``sqrt_one_minus_alphas_cumprod``,
    ``one_minus_alphas_cumprod``, ``log_alphas_cumprod``, ``snr`` ᾱ_t / (1 − ᾱ_t), ``log_snr``, ``posterior_variance`` β̃_t (DDPM eq. 7),
    ``posterior_log_variance_clipped`` (log of β̃_t clamped at 1e-20),
    ``posterior_mean_coef1`` (multiplies x_0) and ``posterior_mean_coef2`` (multiplies x_t).

    Args:
        schedule: "linear", "cosine" (default), "quadratic" or "sigmoid" (see :func:`make_betas`).
        num_train_timesteps: T (default 1000).
        beta_start, beta_end: the β range of linear / quadratic / sigmoid (1e-4, 0.02).
        prediction_type: what the network predicts: "epsilon" (default), "v_prediction", "sample".
        min_snr_gamma: γ of min-SNR-γ loss weighting; 0 (default) disables it.
    """

    tensor_names = (
        "betas",
        "alphas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "one_minus_alphas_cumprod",
        "log_alphas_cumprod",
        "snr",
        "log_snr",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
    )

    def __init__(
        self,
        schedule: str = "cosine",
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction_type: str = "epsilon",
        min_snr_gamma: float = 0.0,
    ):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"unknown prediction_type {prediction_type!r}; choose one of {', '.join(PREDICTION_TYPES)}"
            )
        if min_snr_gamma < 0:
            raise ValueError(f"min_snr_gamma must be >= 0 (0 disables it), got {min_snr_gamma}")
        self.schedule = schedule
        self.num_train_timesteps = int(num_train_timesteps)
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        self.prediction_type = prediction_type
        self.min_snr_gamma = float(min_snr_gamma)

        # all in float64, stored as float32 (lucidrains' denoising-diffusion-pytorch)
        betas = make_betas(schedule, self.num_train_timesteps, beta_start, beta_end)  # (T,)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        one_minus = 1.0 - alphas_cumprod
        snr = alphas_cumprod / one_minus
        # DDPM eq. 7: β̃_t = (1 − ᾱ_{t-1}) / (1 − ᾱ_t) · β_t, and the posterior mean's coefficients
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / one_minus
        values = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": one_minus.sqrt(),
            "one_minus_alphas_cumprod": one_minus,
            "log_alphas_cumprod": torch.cumsum(torch.log1p(-betas), dim=0),
            "snr": snr,
            "log_snr": snr.log(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / one_minus,
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * alphas.sqrt() / one_minus,
        }
        for name in self.tensor_names:
            setattr(self, name, values[name].float())

    # ---- construction and description ------------------------------------------------------
    @classmethod
    def from_config(cls, diffusion_config) -> "NoiseSchedule":
        """Build from a :class:`labkit.config.DiffusionConfig` (schedule, T, β range,
        prediction_type, min_snr_gamma)."""
        return cls(
            schedule=diffusion_config.schedule,
            num_train_timesteps=diffusion_config.num_train_timesteps,
            beta_start=diffusion_config.beta_start,
            beta_end=diffusion_config.beta_end,
            prediction_type=diffusion_config.prediction_type,
            min_snr_gamma=diffusion_config.min_snr_gamma,
        )

    def to_config(self) -> dict:
        """The constructor arguments as a JSON-friendly dict (``NoiseSchedule(**d)`` rebuilds it)."""
        return {
            "schedule": self.schedule,
            "num_train_timesteps": self.num_train_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "prediction_type": self.prediction_type,
            "min_snr_gamma": self.min_snr_gamma,
        }

    def diffusers_kwargs(self) -> dict:
        """Keyword arguments for any diffusers scheduler to use exactly these betas.

        ``trained_betas`` (a list of T floats) takes precedence over ``beta_schedule`` in every
        diffusers scheduler; ``beta_schedule`` is the equivalent diffusers name, kept so the
        scheduler's config documents the schedule. Example::

            DDIMScheduler(**schedule.diffusers_kwargs(), clip_sample=False)
        """
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "beta_schedule": DIFFUSERS_BETA_SCHEDULES[self.schedule],
            "trained_betas": make_betas(
                self.schedule, self.num_train_timesteps, self.beta_start, self.beta_end
            ).tolist(),
            "prediction_type": self.prediction_type,
        }

    def to(self, device: torch.device | str) -> "NoiseSchedule":
        """Move every schedule tensor to ``device`` (in place); returns ``self``."""
        for name in self.tensor_names:
            setattr(self, name, getattr(self, name).to(device))
        return self

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={value!r}" for key, value in self.to_config().items())
        return f"NoiseSchedule({settings})"

    def _extract(self, name: str, timesteps, like: torch.Tensor) -> torch.Tensor:
        values = getattr(self, name)
        return extract(values, timesteps, like.shape).to(device=like.device, dtype=like.dtype)

    # ---- forward process and training targets -------------------------------------------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0) (DDPM eq. 4): x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε.

        x0, noise: (B, C, H, W); timesteps: (B,) long -> x_t (B, C, H, W).
        """
        return (
            self._extract("sqrt_alphas_cumprod", timesteps, x0) * x0
            + self._extract("sqrt_one_minus_alphas_cumprod", timesteps, x0) * noise
        )

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x_0 (Salimans & Ho 2022; diffusers ``get_velocity``)."""
        return (
            self._extract("sqrt_alphas_cumprod", timesteps, x0) * noise
            - self._extract("sqrt_one_minus_alphas_cumprod", timesteps, x0) * x0
        )

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the network learns to output for ``prediction_type``: ε, v or x_0. (B, C, H, W)."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.velocity(x0, noise, timesteps)
        return x0

    def loss_weights(self, timesteps: torch.Tensor, gamma: float | None = None) -> torch.Tensor:
        """min-SNR-γ weights (Hang et al. 2023), one per sample: (B,) float32.

        With SNR_t = ᾱ_t / (1 − ᾱ_t), the weight makes the MSE on the prediction equal to
        min(SNR_t, γ) times the MSE on x_0: ε-prediction min(SNR, γ) / SNR, v-prediction
        min(SNR, γ) / (SNR + 1), x_0-prediction min(SNR, γ). ``gamma`` defaults to
        ``min_snr_gamma``; γ = 0 gives weights of 1 (plain MSE).
        """
        gamma = self.min_snr_gamma if gamma is None else float(gamma)
        snr = self.snr.to(timesteps.device)[timesteps]  # (B,)
        if gamma <= 0:
            return torch.ones_like(snr)
        clipped = snr.clamp(max=gamma)
        if self.prediction_type == "epsilon":
            return clipped / snr
        if self.prediction_type == "v_prediction":
            return clipped / (snr + 1)
        return clipped

    # ---- conversions between ε, x_0 and v --------------------------------------------------
    def pred_original_sample(self, model_output: torch.Tensor, x_t: torch.Tensor, timesteps) -> torch.Tensor:
        """x_0 predicted from the network output, (B, C, H, W): ε: (x_t − sqrt(1−ᾱ) ε) / sqrt(ᾱ)
        (DDPM eq. 15); v: sqrt(ᾱ) x_t − sqrt(1−ᾱ) v; x_0: the output itself."""
        sqrt_alpha_prod_t = self._extract("sqrt_alphas_cumprod", timesteps, x_t)
        sqrt_beta_prod_t = self._extract("sqrt_one_minus_alphas_cumprod", timesteps, x_t)
        if self.prediction_type == "epsilon":
            return (x_t - sqrt_beta_prod_t * model_output) / sqrt_alpha_prod_t
        if self.prediction_type == "v_prediction":
            return sqrt_alpha_prod_t * x_t - sqrt_beta_prod_t * model_output
        return model_output

    def pred_epsilon(self, model_output: torch.Tensor, x_t: torch.Tensor, timesteps) -> torch.Tensor:
        """ε predicted from the network output, (B, C, H, W): v: sqrt(ᾱ) v + sqrt(1−ᾱ) x_t;
        x_0: (x_t − sqrt(ᾱ) x_0) / sqrt(1−ᾱ) (DDPM eq. 4 solved for ε); ε: the output itself."""
        sqrt_alpha_prod_t = self._extract("sqrt_alphas_cumprod", timesteps, x_t)
        sqrt_beta_prod_t = self._extract("sqrt_one_minus_alphas_cumprod", timesteps, x_t)
        if self.prediction_type == "epsilon":
            return model_output
        if self.prediction_type == "v_prediction":
            return sqrt_alpha_prod_t * model_output + sqrt_beta_prod_t * x_t
        return (x_t - sqrt_alpha_prod_t * model_output) / sqrt_beta_prod_t

    # ---- the posterior and the reverse steps -------------------------------------------------
    def posterior_mean_variance(self, x0: torch.Tensor, x_t: torch.Tensor, timesteps):
        """q(x_{t-1} | x_t, x_0) (DDPM eq. 6-7): (mean (B, C, H, W), variance (B, 1, 1, 1),
        log_variance (B, 1, 1, 1)), with mean = coef1 · x_0 + coef2 · x_t."""
        mean = self._extract("posterior_mean_coef1", timesteps, x_t) * x0 + self._extract(
            "posterior_mean_coef2", timesteps, x_t
        ) * x_t
        variance = self._extract("posterior_variance", timesteps, x_t)
        log_variance = self._extract("posterior_log_variance_clipped", timesteps, x_t)
        return mean, variance, log_variance

    def _timesteps(self, timestep, batch: int, device) -> torch.Tensor:
        if torch.is_tensor(timestep) and timestep.dim() == 1:
            return timestep.to(device).long()
        return torch.full((batch,), int(timestep), dtype=torch.long, device=device)

    def _step_terms(self, timesteps: torch.Tensor, prev_timesteps: torch.Tensor, like: torch.Tensor, set_alpha_to_one: bool):
        """ᾱ_t, ᾱ_prev, 1 − ᾱ_t, 1 − ᾱ_prev and β_{t→prev} = 1 − ᾱ_t / ᾱ_prev, each (B, 1, 1, 1).

        Below t = 0, ᾱ_prev is 1 (``set_alpha_to_one``) or ᾱ_0, as in diffusers. Each term is
        read from a tensor computed in float64: ``1 − ᾱ_t / ᾱ_prev`` evaluated in float32
        cancels catastrophically at small t (β ≈ 1e-4 loses ~3 of float32's 7 digits), so
        β_{t→prev} is β_t for single steps and −expm1(log ᾱ_t − log ᾱ_prev) for strided ones.
        """
        below = prev_timesteps < 0  # (B,)
        prev = prev_timesteps.clamp(min=0)
        alpha_prod_t = self._extract("alphas_cumprod", timesteps, like)
        beta_prod_t = self._extract("one_minus_alphas_cumprod", timesteps, like)
        alpha_prod_t_prev = self._extract("alphas_cumprod", prev, like)
        beta_prod_t_prev = self._extract("one_minus_alphas_cumprod", prev, like)
        log_ratio = self._extract("log_alphas_cumprod", timesteps, like) - self._extract("log_alphas_cumprod", prev, like)
        strided_beta = -torch.expm1(log_ratio)
        single = (prev == timesteps - 1).reshape(alpha_prod_t.shape)
        current_beta_t = torch.where(single, self._extract("betas", timesteps, like), strided_beta)
        if set_alpha_to_one:
            shaped = below.reshape(alpha_prod_t.shape)
            alpha_prod_t_prev = torch.where(shaped, torch.ones_like(alpha_prod_t_prev), alpha_prod_t_prev)
            beta_prod_t_prev = torch.where(shaped, torch.zeros_like(beta_prod_t_prev), beta_prod_t_prev)
            current_beta_t = torch.where(shaped, beta_prod_t, current_beta_t)
        return alpha_prod_t, alpha_prod_t_prev, beta_prod_t, beta_prod_t_prev, current_beta_t

    def ddpm_step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        x_t: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: Generators = None,
        prev_timestep: int | torch.Tensor | None = None,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One ancestral DDPM step x_t -> x_prev, as diffusers ``DDPMScheduler.step`` with
        ``variance_type="fixed_small"``.

        model_output, x_t: (B, C, H, W); timestep: an int or (B,) long; ``prev_timestep``
        defaults to timestep − 1 (pass a smaller one for strided sampling, as diffusers does
        after ``set_timesteps``). Noise: ``noise`` (B, C, H, W) or drawn from ``generator``
        (see :func:`draw_noise`); no noise is added at t = 0 (nor drawn, for an int timestep).
        ``clip_sample`` clamps the predicted x_0 to ±``clip_sample_range`` (default off;
        diffusers' default is on).
        Returns (x_prev, pred_original_sample), both (B, C, H, W).
        """
        if noise is not None and generator is not None:
            raise ValueError("pass either noise or generator to ddpm_step, not both")
        batch = x_t.shape[0]
        timesteps = self._timesteps(timestep, batch, x_t.device)  # (B,)
        prev_timesteps = timesteps - 1 if prev_timestep is None else self._timesteps(prev_timestep, batch, x_t.device)

        # 1. compute alphas, betas (ᾱ_prev = 1 below t = 0)
        alpha_prod_t, alpha_prod_t_prev, beta_prod_t, beta_prod_t_prev, current_beta_t = self._step_terms(
            timesteps, prev_timesteps, x_t, set_alpha_to_one=True
        )
        current_alpha_t = 1 - current_beta_t

        # 2. predicted x_0 (DDPM eq. 15 for ε-prediction)
        pred_original_sample = self.pred_original_sample(model_output, x_t, timesteps)

        # 3. clip the predicted x_0
        if clip_sample:
            pred_original_sample = pred_original_sample.clamp(-clip_sample_range, clip_sample_range)

        # 4-5. posterior mean μ̃_t(x_t, x_0) (DDPM eq. 7)
        pred_original_sample_coeff = alpha_prod_t_prev**0.5 * current_beta_t / beta_prod_t
        current_sample_coeff = current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t
        pred_prev_sample = pred_original_sample_coeff * pred_original_sample + current_sample_coeff * x_t

        # 6. add noise of variance β̃_t (DDPM eq. 7, "fixed_small"), except at t = 0
        variance = (beta_prod_t_prev / beta_prod_t * current_beta_t).clamp(min=1e-20)
        per_sample = torch.is_tensor(timestep) and timestep.dim() == 1
        if not per_sample and int(timestep) == 0:  # nothing drawn, as in diffusers (no device sync)
            return pred_prev_sample, pred_original_sample
        nonzero = timesteps > 0  # (B,)
        if noise is None:
            noise = draw_noise(x_t.shape, generator, device=x_t.device, dtype=x_t.dtype)
        x_prev = pred_prev_sample + nonzero.to(x_t.dtype).reshape(variance.shape) * variance**0.5 * noise
        return x_prev, pred_original_sample

    def ddim_step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        prev_timestep: int | torch.Tensor,
        x_t: torch.Tensor,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
        generator: Generators = None,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        set_alpha_to_one: bool = True,
        use_clipped_model_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDIM step x_t -> x_prev (Song et al. 2021 eq. 12), as diffusers
        ``DDIMScheduler.step``.

        model_output, x_t: (B, C, H, W); timestep, prev_timestep: ints or (B,) long.
        A ``prev_timestep`` below 0 (the last step) uses ᾱ = 1 when ``set_alpha_to_one``
        (diffusers' default), else ᾱ_0. ``eta`` = 0 is deterministic; η > 0 adds
        σ_t(η) = η · sqrt((1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev)) (eq. 16) times ``noise``
        or noise drawn from ``generator``; η = 1 with single steps is DDPM's ancestral step.
        ``clip_sample`` (default off; diffusers' default is on) clamps the predicted x_0.
        Returns (x_prev, pred_original_sample), both (B, C, H, W).
        """
        if noise is not None and generator is not None:
            raise ValueError("pass either noise or generator to ddim_step, not both")
        batch = x_t.shape[0]
        timesteps = self._timesteps(timestep, batch, x_t.device)  # (B,)
        prev_timesteps = self._timesteps(prev_timestep, batch, x_t.device)

        # 2. compute alphas, betas
        alpha_prod_t, alpha_prod_t_prev, beta_prod_t, beta_prod_t_prev, current_beta_t = self._step_terms(
            timesteps, prev_timesteps, x_t, set_alpha_to_one=set_alpha_to_one
        )

        # 3. predicted x_0 and ε ("predicted x_0" of eq. 12)
        pred_original_sample = self.pred_original_sample(model_output, x_t, timesteps)
        pred_epsilon = self.pred_epsilon(model_output, x_t, timesteps)

        # 4. clip the predicted x_0
        if clip_sample:
            pred_original_sample = pred_original_sample.clamp(-clip_sample_range, clip_sample_range)

        # 5. σ_t(η) (eq. 16)
        variance = beta_prod_t_prev / beta_prod_t * current_beta_t
        std_dev_t = eta * variance**0.5
        if use_clipped_model_output:
            pred_epsilon = (x_t - alpha_prod_t**0.5 * pred_original_sample) / beta_prod_t**0.5

        # 6. "direction pointing to x_t" of eq. 12
        pred_sample_direction = (beta_prod_t_prev - std_dev_t**2).clamp(min=0) ** 0.5 * pred_epsilon

        # 7. x_prev without the random noise of eq. 12, then the noise
        x_prev = alpha_prod_t_prev**0.5 * pred_original_sample + pred_sample_direction
        if eta > 0:
            if noise is None:
                noise = draw_noise(x_t.shape, generator, device=x_t.device, dtype=x_t.dtype)
            x_prev = x_prev + std_dev_t * noise
        return x_prev, pred_original_sample
