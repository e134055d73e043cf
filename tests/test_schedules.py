"""labkit.schedules against diffusers' DDPMScheduler / DDIMScheduler and the closed forms.

Two references for the reverse steps:

* diffusers' own ``step`` code run in float64 (its ``alphas_cumprod`` replaced by the float64
  cumulative product of the same betas): the same algorithm without float32 rounding. Our
  float32 steps must agree to 1e-5.
* stock diffusers in float32. Its ``1 - alpha_prod_t / alpha_prod_t_prev`` cancels at small t
  (β ≈ 1e-4) and its float32 cumulative product drifts, so it is itself off the float64 result
  by up to ~2e-4 at t < 10 and near t = T - 1 and by up to ~3e-5 elsewhere; the bounds are
  3e-4 and 5e-5 (the measured float32 error, with margin).
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor

from labkit.config import DiffusionConfig
from labkit.schedules import (
    DIFFUSERS_BETA_SCHEDULES,
    SCHEDULES,
    NoiseSchedule,
    draw_noise,
    extract,
    make_betas,
)

ALPHA_BAR_TOLERANCE = 1e-6
STEP_TOLERANCE = 1e-5
FLOAT32_DIFFUSERS_TOLERANCE = 3e-4  # stock diffusers' own float32 error at t < 10 (see above)
DDIM_SCHEDULES = ("linear", "cosine", "quadratic")  # those DDIMScheduler knows by name


def diffusers_ddpm(name: str, steps: int, float64: bool = False, **kwargs) -> DDPMScheduler:
    scheduler = DDPMScheduler(
        num_train_timesteps=steps, beta_schedule=DIFFUSERS_BETA_SCHEDULES[name], clip_sample=False, **kwargs
    )
    if float64:
        betas = make_betas(name, steps)
        scheduler.betas = betas
        scheduler.alphas = 1 - betas
        scheduler.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


def diffusers_ddim(name: str, steps: int, float64: bool = False, **kwargs) -> DDIMScheduler:
    kwargs.setdefault("clip_sample", False)
    if name in DDIM_SCHEDULES:
        scheduler = DDIMScheduler(num_train_timesteps=steps, beta_schedule=DIFFUSERS_BETA_SCHEDULES[name], **kwargs)
    else:
        scheduler = DDIMScheduler(num_train_timesteps=steps, trained_betas=make_betas(name, steps).tolist(), **kwargs)
    if float64:
        alphas_cumprod = torch.cumprod(1 - make_betas(name, steps), dim=0)
        scheduler.alphas_cumprod = alphas_cumprod
        set_alpha_to_one = scheduler.config.set_alpha_to_one
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if set_alpha_to_one else alphas_cumprod[0]
    return scheduler


def realistic_inputs(schedule: NoiseSchedule, timestep: int, generator: torch.Generator, batch: int = 2, size: int = 8):
    """x_t from an x0 in [-1, 1] and a model output = the true target + 10% error."""
    shape = (batch, 3, size, size)
    x0 = torch.rand(shape, generator=generator) * 2 - 1
    noise = torch.randn(shape, generator=generator)
    timesteps = torch.full((batch,), timestep)
    x_t = schedule.add_noise(x0, noise, timesteps)
    model_output = schedule.training_target(x0, noise, timesteps) + 0.1 * torch.randn(shape, generator=generator)
    return x_t, model_output


def float32_bound(timestep: int, steps: int = 1000) -> float:
    """Allowed gap to stock (float32) diffusers: its own rounding error, largest at t < 10
    (cancellation in 1 - ᾱ_t/ᾱ_prev) and in the last 1% of steps (drift of its float32 ᾱ)."""
    return FLOAT32_DIFFUSERS_TOLERANCE if timestep < 10 or timestep >= 0.99 * steps else 5 * STEP_TOLERANCE


def step_grid(steps: int) -> list[int]:
    return sorted({0, 1, 2, 3, 5, 9, 20, steps // 3, steps // 2, steps - 2, steps - 1} | set(range(0, steps, 37)))


# ---- betas and ᾱ ------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [100, 1000])
@pytest.mark.parametrize("name", SCHEDULES)
def test_alphas_cumprod_match_diffusers_ddpm(name, steps):
    ours = NoiseSchedule(name, steps)
    theirs = diffusers_ddpm(name, steps)
    assert ours.alphas_cumprod.dtype == torch.float32 and ours.alphas_cumprod.shape == (steps,)
    assert (ours.alphas_cumprod - theirs.alphas_cumprod).abs().max() <= ALPHA_BAR_TOLERANCE
    assert (ours.betas - theirs.betas).abs().max() <= 1e-7


@pytest.mark.parametrize("name", DDIM_SCHEDULES)
def test_alphas_cumprod_match_diffusers_ddim(name):
    ours = NoiseSchedule(name, 1000)
    theirs = diffusers_ddim(name, 1000)
    assert (ours.alphas_cumprod - theirs.alphas_cumprod).abs().max() <= ALPHA_BAR_TOLERANCE


def test_betas_are_float64_and_in_range():
    for name in SCHEDULES:
        betas = make_betas(name, 1000)
        assert betas.dtype == torch.float64 and betas.shape == (1000,)
        assert 0 < betas.min() and betas.max() <= 0.999, name
        assert torch.all(betas[1:] >= betas[:-1] - 1e-12), f"{name} betas must not decrease"


def test_quadratic_closed_form():
    start, end, steps = 1e-4, 0.02, 1000
    betas = make_betas("quadratic", steps, start, end)
    for i in (0, 1, 250, 500, 998, 999):
        root = math.sqrt(start) + i / (steps - 1) * (math.sqrt(end) - math.sqrt(start))
        assert betas[i].item() == pytest.approx(root**2, rel=1e-12, abs=0)
    assert betas[0].item() == pytest.approx(start, rel=1e-12) and betas[-1].item() == pytest.approx(end, rel=1e-12)


def test_quadratic_equals_diffusers_scaled_linear_with_stable_diffusion_endpoints():
    ours = make_betas("quadratic", 1000, 0.00085, 0.012)
    theirs = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).betas
    assert ((ours - theirs.double()) / ours).abs().max() <= 3e-7  # float32 rounding in diffusers


def test_sigmoid_closed_form():
    start, end, steps = 1e-4, 0.02, 1000
    betas = make_betas("sigmoid", steps, start, end)
    for i in (0, 1, 499, 500, 999):
        u = -6 + 12 * i / (steps - 1)
        assert betas[i].item() == pytest.approx(1 / (1 + math.exp(-u)) * (end - start) + start, rel=1e-12)


def test_cosine_closed_form_and_cap():
    steps = 1000
    betas = make_betas("cosine", steps)

    def alpha_bar(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    for i in (0, 1, 500, 990):
        expected = min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999)
        assert betas[i].item() == pytest.approx(expected, rel=1e-10)
    assert betas[-1].item() == 0.999  # the last beta hits the cap
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    assert alphas_cumprod[steps // 2].item() == pytest.approx(alpha_bar(0.5 + 1 / steps) / alpha_bar(0), rel=1e-9)


def test_unknown_schedule_names_the_valid_ones():
    with pytest.raises(ValueError, match="linear, cosine, quadratic, sigmoid"):
        make_betas("scaled_linear", 10)
    with pytest.raises(ValueError, match="epsilon"):
        NoiseSchedule("linear", 10, prediction_type="eps")


def test_schedule_tensors_and_posterior_formulas():
    schedule = NoiseSchedule("linear", 50)
    betas = make_betas("linear", 50)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    for name in NoiseSchedule.tensor_names:
        tensor = getattr(schedule, name)
        assert tensor.dtype == torch.float32 and tensor.shape == (50,), name
    assert torch.allclose(schedule.alphas_cumprod_prev.double(), previous)
    assert torch.allclose(schedule.snr.double(), alphas_cumprod / (1 - alphas_cumprod), rtol=1e-6)
    assert torch.allclose(schedule.posterior_variance.double(), betas * (1 - previous) / (1 - alphas_cumprod), rtol=1e-6)
    assert schedule.posterior_variance[0] == 0 and schedule.posterior_log_variance_clipped[0].item() == pytest.approx(math.log(1e-20))


# ---- forward process and conversions -------------------------------------------------------
@pytest.mark.parametrize("name", SCHEDULES)
def test_add_noise_and_velocity_match_diffusers(name):
    schedule, theirs = NoiseSchedule(name, 1000), diffusers_ddpm(name, 1000)
    generator = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(8, 3, 8, 8, generator=generator), torch.randn(8, 3, 8, 8, generator=generator)
    timesteps = torch.tensor([0, 1, 2, 10, 300, 500, 998, 999])
    assert schedule.add_noise(x0, noise, timesteps).shape == (8, 3, 8, 8)
    assert (schedule.add_noise(x0, noise, timesteps) - theirs.add_noise(x0, noise, timesteps)).abs().max() <= STEP_TOLERANCE
    assert (schedule.velocity(x0, noise, timesteps) - theirs.get_velocity(x0, noise, timesteps)).abs().max() <= STEP_TOLERANCE
    # float64 reference of eq. 4
    alphas_cumprod = torch.cumprod(1 - make_betas(name, 1000), 0)[timesteps].reshape(-1, 1, 1, 1)
    reference = alphas_cumprod.sqrt() * x0.double() + (1 - alphas_cumprod).sqrt() * noise.double()
    assert (schedule.add_noise(x0, noise, timesteps).double() - reference).abs().max() <= 2e-6


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_conversions_recover_x0_and_noise(prediction_type):
    schedule = NoiseSchedule("cosine", 1000, prediction_type=prediction_type)
    generator = torch.Generator().manual_seed(2)
    x0 = torch.rand(6, 3, 8, 8, generator=generator) * 2 - 1
    noise = torch.randn(6, 3, 8, 8, generator=generator)
    timesteps = torch.tensor([1, 10, 200, 500, 800, 950])
    x_t = schedule.add_noise(x0, noise, timesteps)
    target = schedule.training_target(x0, noise, timesteps)
    expected = {"epsilon": noise, "sample": x0, "v_prediction": schedule.velocity(x0, noise, timesteps)}
    assert torch.equal(target, expected[prediction_type])
    assert (schedule.pred_original_sample(target, x_t, timesteps) - x0).abs().max() <= 1e-4
    assert (schedule.pred_epsilon(target, x_t, timesteps) - noise).abs().max() <= 1e-4


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_pred_original_sample_matches_diffusers(prediction_type):
    schedule = NoiseSchedule("linear", 1000, prediction_type=prediction_type)
    theirs = diffusers_ddpm("linear", 1000, prediction_type=prediction_type)
    generator = torch.Generator().manual_seed(3)
    for timestep in (5, 400, 999):
        x_t, model_output = realistic_inputs(schedule, timestep, generator)
        ours = schedule.pred_original_sample(model_output, x_t, torch.full((2,), timestep))
        reference = theirs.step(model_output, timestep, x_t, generator=generator).pred_original_sample
        assert (ours - reference).abs().max() <= STEP_TOLERANCE


def test_min_snr_weights_follow_the_formula():
    timesteps = torch.tensor([0, 10, 100, 500, 900, 999])
    gamma = 5.0
    for prediction_type, formula in (
        ("epsilon", lambda snr: min(snr, gamma) / snr),
        ("v_prediction", lambda snr: min(snr, gamma) / (snr + 1)),
        ("sample", lambda snr: min(snr, gamma)),
    ):
        schedule = NoiseSchedule("cosine", 1000, prediction_type=prediction_type, min_snr_gamma=gamma)
        alphas_cumprod = torch.cumprod(1 - make_betas("cosine", 1000), 0)
        weights = schedule.loss_weights(timesteps)
        assert weights.shape == (6,) and weights.dtype == torch.float32
        for weight, t in zip(weights.tolist(), timesteps.tolist()):
            snr = (alphas_cumprod[t] / (1 - alphas_cumprod[t])).item()
            assert weight == pytest.approx(formula(snr), rel=1e-5), (prediction_type, t)
    schedule = NoiseSchedule("cosine", 1000, min_snr_gamma=gamma)
    assert schedule.loss_weights(timesteps)[0] < 0.01 and schedule.loss_weights(timesteps)[-1] == 1.0
    assert torch.equal(schedule.loss_weights(timesteps, gamma=0), torch.ones(6))


# ---- reverse steps -----------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name", SCHEDULES)
def test_ddpm_step_matches_diffusers(name, prediction_type):
    steps = 1000
    schedule = NoiseSchedule(name, steps, prediction_type=prediction_type)
    float64 = diffusers_ddpm(name, steps, float64=True, prediction_type=prediction_type)
    float32 = diffusers_ddpm(name, steps, prediction_type=prediction_type)
    generator = torch.Generator().manual_seed(4)
    for timestep in step_grid(steps):
        x_t, model_output = realistic_inputs(schedule, timestep, generator)
        # same noise as diffusers draws in float64 from the same seed
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(timestep), dtype=torch.float64)
        ours, _ = schedule.ddpm_step(model_output, timestep, x_t, noise=noise.float())
        reference = float64.step(
            model_output.double(), timestep, x_t.double(), generator=torch.Generator().manual_seed(timestep)
        ).prev_sample
        assert (ours.double() - reference).abs().max() <= STEP_TOLERANCE, timestep
        ours, _ = schedule.ddpm_step(model_output, timestep, x_t, generator=torch.Generator().manual_seed(timestep))
        reference = float32.step(model_output, timestep, x_t, generator=torch.Generator().manual_seed(timestep)).prev_sample
        assert (ours - reference).abs().max() <= float32_bound(timestep), timestep


def test_ddpm_step_clip_and_t0():
    schedule = NoiseSchedule("linear", 100)
    theirs = DDPMScheduler(num_train_timesteps=100, clip_sample=True)
    generator = torch.Generator().manual_seed(5)
    x_t, model_output = torch.randn(2, 3, 8, 8, generator=generator), torch.randn(2, 3, 8, 8, generator=generator)
    ours, x0 = schedule.ddpm_step(model_output, 60, x_t, generator=torch.Generator().manual_seed(0), clip_sample=True)
    reference = theirs.step(model_output, 60, x_t, generator=torch.Generator().manual_seed(0))
    assert x0.abs().max() <= 1.0
    assert (ours - reference.prev_sample).abs().max() <= STEP_TOLERANCE
    # t = 0: no noise, so the result ignores the noise argument
    first, _ = schedule.ddpm_step(model_output, 0, x_t, noise=torch.zeros_like(x_t))
    second, _ = schedule.ddpm_step(model_output, 0, x_t, noise=torch.ones_like(x_t))
    assert torch.equal(first, second)


def test_ddpm_step_per_sample_timesteps_equal_single_steps():
    schedule = NoiseSchedule("cosine", 1000)
    generator = torch.Generator().manual_seed(6)
    x_t, model_output, noise = (torch.randn(3, 3, 8, 8, generator=generator) for _ in range(3))
    timesteps = torch.tensor([0, 17, 640])
    batched, _ = schedule.ddpm_step(model_output, timesteps, x_t, noise=noise)
    for i, t in enumerate(timesteps.tolist()):
        single, _ = schedule.ddpm_step(model_output[i : i + 1], t, x_t[i : i + 1], noise=noise[i : i + 1])
        assert torch.allclose(batched[i : i + 1], single, atol=1e-6)


def test_strided_ddpm_step_matches_diffusers_after_set_timesteps():
    schedule = NoiseSchedule("cosine", 1000)
    theirs = diffusers_ddpm("cosine", 1000, float64=True)
    theirs.set_timesteps(10)
    generator = torch.Generator().manual_seed(7)
    timesteps = theirs.timesteps.tolist()
    for i, timestep in enumerate(timesteps):
        prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        x_t, model_output = realistic_inputs(schedule, timestep, generator)
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        ours, _ = schedule.ddpm_step(model_output, timestep, x_t, noise=noise.float(), prev_timestep=prev)
        reference = theirs.step(model_output.double(), timestep, x_t.double(), generator=torch.Generator().manual_seed(i))
        assert (ours.double() - reference.prev_sample).abs().max() <= STEP_TOLERANCE, timestep


@pytest.mark.parametrize("set_alpha_to_one", [True, False])
@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("name", SCHEDULES)
def test_ddim_step_matches_diffusers(name, eta, set_alpha_to_one):
    steps = 1000
    schedule = NoiseSchedule(name, steps)
    float64 = diffusers_ddim(name, steps, float64=True, set_alpha_to_one=set_alpha_to_one)
    float32 = diffusers_ddim(name, steps, set_alpha_to_one=set_alpha_to_one)
    for scheduler in (float64, float32):
        scheduler.set_timesteps(20)
    timesteps = float32.timesteps.tolist()
    stride = steps // 20
    generator = torch.Generator().manual_seed(8)
    for timestep in timesteps:
        x_t, model_output = realistic_inputs(schedule, timestep, generator)
        noise = torch.randn(x_t.shape, generator=generator)
        ours, _ = schedule.ddim_step(
            model_output, timestep, timestep - stride, x_t, eta=eta, noise=noise, set_alpha_to_one=set_alpha_to_one
        )
        reference = float64.step(model_output.double(), timestep, x_t.double(), eta=eta, variance_noise=noise.double())
        assert (ours.double() - reference.prev_sample).abs().max() <= STEP_TOLERANCE, timestep
        reference = float32.step(model_output, timestep, x_t, eta=eta, variance_noise=noise)
        assert (ours - reference.prev_sample).abs().max() <= float32_bound(timestep), timestep


def test_ddim_with_eta_one_and_single_steps_is_the_ddpm_step():
    schedule = NoiseSchedule("linear", 1000)
    generator = torch.Generator().manual_seed(9)
    for timestep in (1, 50, 700):
        x_t, model_output = realistic_inputs(schedule, timestep, generator)
        noise = torch.randn(x_t.shape, generator=generator)
        ddim, _ = schedule.ddim_step(model_output, timestep, timestep - 1, x_t, eta=1.0, noise=noise)
        ddpm, _ = schedule.ddpm_step(model_output, timestep, x_t, noise=noise)
        assert (ddim - ddpm).abs().max() <= 1e-5


def test_posterior_mean_is_the_ddpm_step_mean():
    schedule = NoiseSchedule("cosine", 1000)
    generator = torch.Generator().manual_seed(10)
    x_t, model_output = realistic_inputs(schedule, 300, generator, batch=3)
    timesteps = torch.full((3,), 300)
    step_mean, x0 = schedule.ddpm_step(model_output, 300, x_t, noise=torch.zeros_like(x_t))
    mean, variance, log_variance = schedule.posterior_mean_variance(x0, x_t, timesteps)
    assert mean.shape == (3, 3, 8, 8) and variance.shape == (3, 1, 1, 1) and log_variance.shape == (3, 1, 1, 1)
    assert (mean - step_mean).abs().max() <= 1e-5
    assert torch.allclose(log_variance.exp(), variance, rtol=1e-5)


# ---- noise, helpers, config ---------------------------------------------------------------------
def test_draw_noise_matches_diffusers_randn_tensor_and_is_per_image():
    single = draw_noise((2, 3, 4, 4), torch.Generator().manual_seed(11))
    assert torch.equal(single, randn_tensor((2, 3, 4, 4), generator=torch.Generator().manual_seed(11)))
    generators = [torch.Generator().manual_seed(seed) for seed in (3, 4, 5)]
    ours = draw_noise((3, 3, 4, 4), generators)
    theirs = randn_tensor((3, 3, 4, 4), generator=[torch.Generator().manual_seed(seed) for seed in (3, 4, 5)])
    assert torch.equal(ours, theirs)
    alone = draw_noise((1, 3, 4, 4), [torch.Generator().manual_seed(4)])
    assert torch.equal(alone[0], ours[1])  # image 1's noise does not depend on its batch
    with pytest.raises(ValueError, match="one per image"):
        draw_noise((2, 3, 4, 4), generators)


def test_extract_shapes_and_errors():
    values = torch.arange(10.0)
    out = extract(values, torch.tensor([3, 7]), (2, 3, 5, 5))
    assert out.shape == (2, 1, 1, 1) and out.flatten().tolist() == [3.0, 7.0]
    assert extract(values, 4, (3, 3, 5, 5)).flatten().tolist() == [4.0, 4.0, 4.0]
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        extract(values, torch.tensor([1, 2, 3]), (2, 3, 5, 5))


@pytest.mark.parametrize("name", SCHEDULES)
def test_diffusers_kwargs_reproduce_the_schedule(name):
    schedule = NoiseSchedule(name, 1000, prediction_type="v_prediction")
    kwargs = schedule.diffusers_kwargs()
    assert kwargs["prediction_type"] == "v_prediction" and len(kwargs["trained_betas"]) == 1000
    for scheduler_class in (DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler):
        scheduler = scheduler_class(**kwargs)
        assert (scheduler.alphas_cumprod - schedule.alphas_cumprod).abs().max() <= ALPHA_BAR_TOLERANCE, scheduler_class


def test_from_config_to_config_and_device():
    config = DiffusionConfig(schedule="sigmoid", num_train_timesteps=200, prediction_type="v_prediction", min_snr_gamma=3.0)
    schedule = NoiseSchedule.from_config(config)
    assert schedule.num_train_timesteps == 200 and schedule.prediction_type == "v_prediction"
    rebuilt = NoiseSchedule(**schedule.to_config())
    assert torch.equal(rebuilt.alphas_cumprod, schedule.alphas_cumprod) and rebuilt.min_snr_gamma == 3.0
    assert schedule.to("cpu") is schedule and schedule.device.type == "cpu"
    assert "sigmoid" in repr(schedule)
