"""Checks for the exercises of the student notebooks (``notebooks/student/``).

Each ``check_<name>(student_fn)`` calls the student's function on random inputs, compares it with
labkit's own implementation (``labkit.schedules``, ``labkit.sample``, ``labkit.metrics``) and either
prints ``✓ <name> correct`` or raises ``AssertionError`` with what is wrong: which term, by how
much, and the usual mistake that produces that error (α for ᾱ, a missing square root, a sign).
A function that still raises ``NotImplementedError`` gets a message saying where to write it.

| exercise | student function | checked against |
| --- | --- | --- |
| β schedules | ``beta_schedule(name, T, beta_start, beta_end)`` for "linear" and "cosine" | :func:`labkit.schedules.make_betas` |
| ᾱ | ``compute_alpha_bar(betas)`` | ``NoiseSchedule.alphas_cumprod`` |
| q(x_t \\| x_0) | ``q_sample(x0, noise, timesteps, alpha_bar)`` | ``NoiseSchedule.add_noise`` |
| posterior | ``posterior(x0, x_t, timesteps, betas) -> (mean, variance)`` | ``NoiseSchedule.posterior_mean_variance`` |
| loss | ``v_loss(model, x0, labels, timesteps, noise, alpha_bar) -> (B,)`` | ``add_noise`` + ``velocity`` + MSE, as :func:`labkit.train.diffusion_loss` |
| CFG | ``guide(eps_cond, eps_uncond, w)`` | :func:`labkit.sample.guided_epsilon` |
| DDIM step | ``ddim_step(eps, x_t, alpha_bar_t, alpha_bar_prev) -> (x_prev, x0_pred)`` | ``NoiseSchedule.ddim_step`` (η = 0) |
| accuracy | ``top_k_hits(probabilities, labels) -> (B,)`` | :func:`labkit.metrics.top_k_selection` |

The same functions, once written, plug into labkit: ``train(..., loss_fn=v_loss)``,
``sample_from_scratch(..., guide_fn=guide, ddim_step_fn=ddim_step)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from labkit.metrics import top_k_selection
from labkit.sample import guided_epsilon
from labkit.schedules import NoiseSchedule, make_betas

TOLERANCE = 1e-4


def _call(fn, *args):
    """Call the student's function; a stub still raising NotImplementedError becomes a clear AssertionError."""
    name = getattr(fn, "__name__", "your function")
    try:
        return fn(*args)
    except NotImplementedError as error:
        hint = f" (hint: {error})" if str(error) else ""
        raise AssertionError(
            f"{name} is not written yet: replace `raise NotImplementedError(...)` in its cell with your code, "
            f"run that cell, then run this check again{hint}"
        ) from None


def _tensor(value, name: str, shape=None) -> torch.Tensor:
    if not torch.is_tensor(value):
        raise AssertionError(f"{name} should be a torch tensor, got {type(value).__name__}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise AssertionError(f"{name} should have shape {tuple(shape)}, got {tuple(value.shape)}")
    return value.detach().double()


def _error(got: torch.Tensor, want: torch.Tensor) -> float:
    return (got.double() - want.double()).abs().max().item()


def _close(got: torch.Tensor, want: torch.Tensor, tolerance: float = TOLERANCE) -> bool:
    return got.shape == want.shape and _error(got, want) <= tolerance * max(1.0, want.abs().max().item())


def _relative_close(got: torch.Tensor, want: torch.Tensor, rtol: float) -> bool:
    """Elementwise relative closeness (for values of very different sizes, like β from 1e-5 to 0.999)."""
    return got.shape == want.shape and bool(((got.double() - want.double()).abs() <= rtol * want.double().abs() + 1e-12).all())


def _diagnose(got: torch.Tensor, candidates: dict[str, torch.Tensor], relative: float | None = None) -> str:
    """The first known mistake that reproduces ``got``, as a sentence (or "")."""
    for mistake, value in candidates.items():
        if value.shape != got.shape:
            continue
        if (_relative_close(got, value, relative) if relative else _close(got, value)):
            return f" It matches {mistake}."
    return ""


FLOAT32_NOTE = (" The difference is of the size of float32 rounding: keep the computation in float64 (the β given to "
                "you are float64; in float32, 1 − ᾱ_0 = β_0 ≈ 4e-5 keeps only 3 digits).")


def _ok(message: str) -> None:
    print(f"✓ {message}")


# ---- 02: schedules, forward process, posterior -----------------------------------------------
def check_beta_schedule(beta_schedule_fn) -> None:
    """``beta_schedule_fn(name, num_train_timesteps, beta_start=1e-4, beta_end=0.02)`` -> β (T,) for "linear" and "cosine"."""
    for name in ("linear", "cosine"):
        for steps in (1000, 50):
            want = make_betas(name, steps, 1e-4, 0.02)
            got = _tensor(_call(beta_schedule_fn, name, steps, 1e-4, 0.02), f"beta_schedule({name!r}, {steps})", (steps,))
            if _relative_close(got, want, 1e-2):  # float32 arithmetic is fine too (β_0 ≈ 4e-5 keeps ~3 digits)
                continue
            index = int(((got - want).abs() / (want.abs() + 1e-12)).argmax())  # the largest relative difference
            message = (f"beta_schedule({name!r}, T={steps}) is wrong: at index {index} it gives {got[index].item():.6g}, "
                       f"labkit gives {want[index].item():.6g} (largest difference {_error(got, want):.3g}).")
            candidates = {"a decreasing schedule (β must grow with t)": want.flip(0)}
            if name == "linear":
                candidates["linspace over T + 1 points"] = torch.linspace(1e-4, 0.02, steps + 1, dtype=torch.float64)[:steps]
            else:
                u = torch.arange(steps + 1, dtype=torch.float64) / steps

                def cosine(offset=0.008, power=2, cap=0.999):
                    f = torch.cos((u + offset) / (1 + offset) * math.pi / 2) ** power
                    result = 1 - f[1:] / f[:-1]
                    return result.clamp(max=cap) if cap else result

                candidates.update({
                    "the cosine schedule without the offset s = 0.008": cosine(offset=0.0),
                    "cos instead of cos² for ᾱ(u)": cosine(power=1),
                    "the cosine schedule without the cap β ≤ 0.999 (the last β is 1: ᾱ_T = 0 exactly)": cosine(cap=None),
                    "ᾱ(u) itself, not β_i = 1 − ᾱ((i+1)/T) / ᾱ(i/T)": (torch.cos((u[1:] + 0.008) / 1.008 * math.pi / 2) ** 2),
                })
            raise AssertionError(message + _diagnose(got, candidates, relative=1e-2))
    _ok("beta_schedule correct: linear and cosine schedules equal labkit's make_betas for T = 1000 and T = 50")


def check_alpha_bar(compute_alpha_bar_fn) -> None:
    """``compute_alpha_bar_fn(betas)``: ᾱ_t = ∏_{s ≤ t} (1 − β_s), shape (T,)."""
    for name in ("linear", "cosine"):
        schedule = NoiseSchedule(name, 1000)
        betas = make_betas(name, 1000).float()
        want = schedule.alphas_cumprod.double()
        got = _tensor(_call(compute_alpha_bar_fn, betas.clone()), "compute_alpha_bar(betas)", (1000,))
        if _close(got, want, 1e-5):
            continue
        index = int((got - want).abs().argmax())
        raise AssertionError(
            f"compute_alpha_bar is wrong for the {name} schedule: ᾱ_{index} = {got[index].item():.6g}, should be "
            f"{want[index].item():.6g}." + _diagnose(got, {
                "α_t = 1 − β_t: ᾱ_t is the running product of the α_s": 1 - betas.double(),
                "the running product of the β_s, not of the α_s = 1 − β_s": torch.cumprod(betas.double(), 0),
                "ᾱ shifted by one step (ᾱ_{t-1}): ᾱ_0 is already 1 − β_0": schedule.alphas_cumprod_prev.double(),
                "sqrt(ᾱ_t): return ᾱ_t itself": want.sqrt(),
                "1 − ᾱ_t": 1 - want,
            })
        )
    _ok("compute_alpha_bar correct: ᾱ_t = ∏ (1 − β_s) for the linear and cosine schedules")


def _random_images(seed: int, batch: int = 4, size: int = 8):
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
    noise = torch.randn(batch, 3, size, size, generator=generator)
    return x0, noise


def _coefficient(fn_of_input, like: torch.Tensor) -> torch.Tensor:
    """The per-sample factor c_b of a map x -> c_b x (probed with x = 1): (B,)."""
    return fn_of_input(torch.ones_like(like)).double().flatten(1).mean(dim=1)


def check_q_sample(q_sample_fn) -> None:
    """``q_sample_fn(x0, noise, timesteps, alpha_bar)``: x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε, per sample."""
    schedule = NoiseSchedule("cosine", 1000)
    alpha_bar = schedule.alphas_cumprod.clone()
    x0, noise = _random_images(0)
    timesteps = torch.tensor([0, 250, 500, 900])
    want = schedule.add_noise(x0, noise, timesteps)
    got = _tensor(_call(q_sample_fn, x0, noise, timesteps, alpha_bar), "x_t", want.shape)
    if _close(got, want):
        _ok("q_sample correct: x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε for every sample's own t")
        return
    zero = torch.zeros_like(x0)
    signal = _coefficient(lambda ones: _call(q_sample_fn, ones, zero, timesteps, alpha_bar), x0)
    noise_part = _coefficient(lambda ones: _call(q_sample_fn, zero, ones, timesteps, alpha_bar), x0)
    a = alpha_bar[timesteps].double()
    for label, got_c, want_c, known in (
        ("x0", signal, a.sqrt(), {"ᾱ_t: the square root is missing": a, "sqrt(1 − ᾱ_t): the coefficients of x0 and ε are swapped": (1 - a).sqrt(),
                                  "the coefficient for t = timesteps[0] used for the whole batch": a[:1].sqrt().expand(4)}),
        ("ε", noise_part, (1 - a).sqrt(), {"1 − ᾱ_t: the square root is missing": 1 - a, "sqrt(ᾱ_t): the coefficients of x0 and ε are swapped": a.sqrt(),
                                           "−sqrt(1 − ᾱ_t): wrong sign": -(1 - a).sqrt(),
                                           "the coefficient for t = timesteps[0] used for the whole batch": (1 - a[:1]).sqrt().expand(4)}),
    ):
        if not _close(got_c, want_c):
            raise AssertionError(
                f"q_sample is wrong: the coefficient of {label} at t = {timesteps.tolist()} is "
                f"{[round(v, 4) for v in got_c.tolist()]}, should be {[round(v, 4) for v in want_c.tolist()]}."
                + _diagnose(got_c, known)
            )
    raise AssertionError(f"q_sample is wrong (largest difference {_error(got, want):.3g}) although both coefficients are right: "
                         "is x_t a linear combination of x0 and noise only?")


def check_posterior(posterior_fn) -> None:
    """``posterior_fn(x0, x_t, timesteps, betas) -> (mean, variance)`` of q(x_{t-1} | x_t, x0) (DDPM eq. 6-7);
    ``betas`` is float64 (T,)."""
    schedule = NoiseSchedule("cosine", 1000)
    betas = make_betas("cosine", 1000)  # float64: in float32, 1 − ᾱ_0 = β_0 loses 3 digits
    x0, x_t = _random_images(1)
    timesteps = torch.tensor([0, 1, 400, 999])
    want_mean, want_variance, _ = schedule.posterior_mean_variance(x0, x_t, timesteps)
    result = _call(posterior_fn, x0, x_t, timesteps, betas)
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise AssertionError("posterior should return two things: (mean, variance)")
    mean = _tensor(result[0], "the posterior mean", want_mean.shape)
    variance = _tensor(torch.as_tensor(result[1]), "the posterior variance").broadcast_to(want_mean.shape)
    zero = torch.zeros_like(x0)
    coef1 = _coefficient(lambda ones: _call(posterior_fn, ones, zero, timesteps, betas)[0], x0)
    coef2 = _coefficient(lambda ones: _call(posterior_fn, zero, ones, timesteps, betas)[0], x0)
    alpha_bar = torch.cumprod(1 - betas, dim=0)  # float64 (labkit's tensors are float32)
    a = alpha_bar[timesteps]
    a_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])[timesteps]
    beta = betas[timesteps]
    want1, want2 = schedule.posterior_mean_coef1.double()[timesteps], schedule.posterior_mean_coef2.double()[timesteps]
    for got_c, want_c in ((coef1, want1), (coef2, want2)):
        if not _close(got_c, want_c) and _close(got_c, want_c, 1e-2) and _close(got_c[2:], want_c[2:]):
            raise AssertionError(f"the posterior mean's coefficients are off at t = 0 or 1 by {_error(got_c, want_c):.2g}."
                                 + FLOAT32_NOTE)
    if not _close(coef1, want1):
        raise AssertionError(
            f"the posterior mean's coefficient of x0 at t = {timesteps.tolist()} is {[round(v, 5) for v in coef1.tolist()]}, "
            f"should be sqrt(ᾱ_(t-1)) β_t / (1 − ᾱ_t) = {[round(v, 5) for v in want1.tolist()]}." + _diagnose(coef1, {
                "the coefficient of x_t: the two are swapped": want2,
                "β_t / (1 − ᾱ_t) without sqrt(ᾱ_(t-1))": beta / (1 - a),
                "ᾱ_(t-1) β_t / (1 − ᾱ_t): the square root is missing": a_prev * beta / (1 - a),
            }) + " At t = 0, ᾱ_(t-1) is 1 (nothing left to undo)."
        )
    if not _close(coef2, want2):
        raise AssertionError(
            f"the posterior mean's coefficient of x_t at t = {timesteps.tolist()} is {[round(v, 5) for v in coef2.tolist()]}, "
            f"should be sqrt(α_t) (1 − ᾱ_(t-1)) / (1 − ᾱ_t) = {[round(v, 5) for v in want2.tolist()]}." + _diagnose(coef2, {
                "the coefficient of x0: the two are swapped": want1,
                "sqrt(ᾱ_t) (1 − ᾱ_(t-1)) / (1 − ᾱ_t): α_t (one step), not ᾱ_t, belongs here": a.sqrt() * (1 - a_prev) / (1 - a),
                "α_t (1 − ᾱ_(t-1)) / (1 − ᾱ_t): the square root is missing": (1 - beta) * (1 - a_prev) / (1 - a),
            })
        )
    if not _close(mean, want_mean):
        raise AssertionError(f"the posterior mean is off by {_error(mean, want_mean):.3g} although both coefficients are right")
    got_v, want_v = variance[:, 0, 0, 0], want_variance.double()[:, 0, 0, 0]
    if not _close(got_v, want_v, 1e-5):
        raise AssertionError(
            f"the posterior variance at t = {timesteps.tolist()} is {[f'{v:.4g}' for v in got_v.tolist()]}, should be "
            f"β̃_t = (1 − ᾱ_(t-1)) / (1 − ᾱ_t) β_t = {[f'{v:.4g}' for v in want_v.tolist()]}." + _diagnose(got_v, {
                "β_t: that is DDPM's other choice of σ_t² (\"fixed_large\"), not the variance of q(x_(t-1) | x_t, x0)": beta,
                "sqrt(β̃_t), a standard deviation: return the variance": want_v.sqrt(),
            })
        )
    _ok("posterior correct: mean coefficients and variance β̃_t match labkit's for t = 0, 1, 400, 999")


# ---- 04: the training loss ------------------------------------------------------------------
class _ProbeModel(torch.nn.Module):
    """A fixed stand-in for the UNet: a deterministic function of (x_t, t, labels) that records its inputs."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, timesteps, labels):
        self.calls.append((x.detach().clone(), timesteps.detach().clone(), None if labels is None else labels.detach().clone()))
        scale = (timesteps.float() / 1000.0).reshape(-1, 1, 1, 1)
        shift = 0.0 if labels is None else labels.float().sum(dim=1).reshape(-1, 1, 1, 1) * 0.05
        return 0.5 * x * (1 - scale) - 0.3 * scale + shift


def reference_v_loss(model, x0, labels, timesteps, noise, alpha_bar) -> torch.Tensor:
    """The per-sample v-prediction MSE that labkit trains with (before min-SNR weights): (B,)."""
    schedule = NoiseSchedule("cosine", len(alpha_bar), prediction_type="v_prediction")
    schedule.alphas_cumprod = alpha_bar
    schedule.sqrt_alphas_cumprod, schedule.sqrt_one_minus_alphas_cumprod = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    x_t = schedule.add_noise(x0, noise, timesteps)
    target = schedule.training_target(x0, noise, timesteps)
    prediction = model(x_t, timesteps, labels)
    return F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))


def check_v_loss(loss_fn) -> None:
    """``loss_fn(model, x0, labels, timesteps, noise, alpha_bar) -> (B,)``: per-sample MSE between the
    model's output on (x_t, t, labels) and v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x0."""
    alpha_bar = NoiseSchedule("cosine", 1000).alphas_cumprod.clone()
    x0, noise = _random_images(2)
    timesteps = torch.tensor([5, 300, 600, 950])
    labels = torch.zeros(4, 24)
    labels[0, 3] = labels[1, [1, 7]] = labels[2, [2, 9, 20]] = 1
    model = _ProbeModel()
    got = _call(loss_fn, model, x0, labels, timesteps, noise, alpha_bar)
    got = _tensor(got, "the loss")
    if got.dim() == 0:
        raise AssertionError("v_loss should return one loss per sample, shape (B,) = (4,): average over (C, H, W) only "
                             "(labkit applies the min-SNR weights per sample, then takes the mean)")
    got = _tensor(got, "the loss", (4,))
    want = reference_v_loss(_ProbeModel(), x0, labels, timesteps, noise, alpha_bar).double()
    if _close(got, want, 1e-5):
        _ok("v_loss correct: per-sample MSE against v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x0, the network fed x_t")
        return
    if not model.calls:
        raise AssertionError("v_loss never called the model: compute model(x_t, timesteps, labels)")
    x_in, t_in, y_in = model.calls[0]
    a = alpha_bar[timesteps].reshape(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    if not _close(x_in, x_t):
        raise AssertionError("the model's input is not x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε (largest difference "
                             f"{_error(x_in, x_t):.3g})." + _diagnose(x_in, {"x0: the network must see the noisy image": x0,
                                                                            "a·x0 + (1−a)·ε: the square roots are missing": a * x0 + (1 - a) * noise}))
    if not torch.equal(t_in, timesteps):
        raise AssertionError("pass the timesteps to the model unchanged: model(x_t, timesteps, labels)")
    if y_in is None or not torch.equal(y_in, labels):
        raise AssertionError("pass the labels to the model: model(x_t, timesteps, labels) (the trainer has already dropped some for CFG)")
    prediction = _ProbeModel()(x_t, timesteps, labels)
    v = a.sqrt() * noise - (1 - a).sqrt() * x0

    def mse(target):
        return ((prediction - target) ** 2).mean(dim=(1, 2, 3)).double()

    raise AssertionError(
        f"v_loss gives {[round(v_, 5) for v_ in got.tolist()]}, should be {[round(v_, 5) for v_ in want.tolist()]}." + _diagnose(got, {
            "the ε target: the profiles predict v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x0": mse(noise),
            "the x0 target: the profiles predict v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x0": mse(x0),
            "−v: the sign of v is flipped (v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x0)": mse(-v),
            "a v without square roots: v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x0": mse(a * noise - (1 - a) * x0),
            "a summed, not averaged, squared error": ((prediction - v) ** 2).sum(dim=(1, 2, 3)).double(),
            "the mean absolute error: use the squared error": (prediction - v).abs().mean(dim=(1, 2, 3)).double(),
        })
    )


# ---- 05: guidance and the DDIM step -------------------------------------------------------------
class _FixedEpsilon(torch.nn.Module):
    """A stand-in network whose ε is eps_cond for labelled rows and eps_uncond for the null (all-zero) label."""

    def __init__(self, eps_cond, eps_uncond):
        super().__init__()
        self.eps_cond, self.eps_uncond = eps_cond, eps_uncond

    def forward(self, x, timesteps, labels):
        half = len(self.eps_cond)
        conditional = labels.sum(dim=1) > 0
        rows = torch.arange(len(x)) % half
        return torch.where(conditional.reshape(-1, 1, 1, 1), self.eps_cond[rows], self.eps_uncond[rows])


def check_guide(guide_fn) -> None:
    """``guide_fn(eps_cond, eps_uncond, w)``: classifier-free guidance ε_u + w (ε_c − ε_u), w = 1 conditional only."""
    eps_cond, eps_uncond = _random_images(3)
    schedule = NoiseSchedule("cosine", 1000)
    labels = torch.zeros(4, 24)
    labels[:, 5] = 1
    model = _FixedEpsilon(eps_cond, eps_uncond)
    for w in (1.0, 3.0, 0.0, 7.5):
        want = guided_epsilon(model, schedule, torch.zeros_like(eps_cond), 500, labels, guidance_scale=w).double()
        got = _tensor(_call(guide_fn, eps_cond.clone(), eps_uncond.clone(), w), f"guide(..., w={w})", want.shape)
        if _close(got, want):
            continue
        raise AssertionError(
            f"guide is wrong for w = {w} (largest difference {_error(got, want):.3g}); labkit uses ε = ε_u + w (ε_c − ε_u), so w = 1 "
            "gives ε_c and w = 0 gives ε_u." + _diagnose(got, {
                "the (w + 1) convention ε_c + w (ε_c − ε_u): here w multiplies the difference, as in diffusers": eps_cond + w * (eps_cond - eps_uncond),
                "ε_c + w (ε_u − ε_c): the difference points the wrong way": eps_cond + w * (eps_uncond - eps_cond),
                "ε_u + w (ε_u − ε_c): the difference points the wrong way": eps_uncond + w * (eps_uncond - eps_cond),
                "w ε_c + (1 − w) ε_u with c and u swapped": w * eps_uncond + (1 - w) * eps_cond,
                "ε_u + w ε_c: subtract ε_u inside the bracket": eps_uncond + w * eps_cond,
            })
        )
    _ok("guide correct: ε = ε_u + w (ε_c − ε_u) for w = 0, 1, 3, 7.5")


def check_ddim_step(ddim_step_fn) -> None:
    """``ddim_step_fn(eps, x_t, alpha_bar_t, alpha_bar_prev) -> (x_prev, x0_pred)``, deterministic DDIM (η = 0);
    ``alpha_bar_t``, ``alpha_bar_prev`` are (B, 1, 1, 1) tensors."""
    schedule = NoiseSchedule("cosine", 1000)
    x_t, eps = _random_images(4)
    for t, prev in ((500, 450), (999, 949), (40, -10)):
        a_t = schedule.alphas_cumprod[t].reshape(1, 1, 1, 1).expand(4, 1, 1, 1).clone()
        a_prev = (schedule.alphas_cumprod[prev] if prev >= 0 else torch.tensor(1.0)).reshape(1, 1, 1, 1).expand(4, 1, 1, 1).clone()
        want_prev, want_x0 = schedule.ddim_step(eps, t, prev, x_t, eta=0.0)
        result = _call(ddim_step_fn, eps.clone(), x_t.clone(), a_t, a_prev)
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise AssertionError("ddim_step should return two things: (x_prev, x0_pred)")
        got_prev = _tensor(result[0], "x_prev", x_t.shape)
        got_x0 = _tensor(result[1], "x0_pred", x_t.shape)
        a, ap = a_t.double(), a_prev.double()
        where = f"t = {t} → {max(prev, -1)}" + (" (the last step: ᾱ_prev = 1)" if prev < 0 else "")
        if not _close(got_x0, want_x0, 1e-4):
            raise AssertionError(
                f"x0_pred is wrong at {where} (largest difference {_error(got_x0, want_x0):.3g}); "
                "x̂0 = (x_t − sqrt(1 − ᾱ_t) ε̂) / sqrt(ᾱ_t)." + _diagnose(got_x0, {
                    "(x_t − (1 − ᾱ_t) ε̂) / ᾱ_t: the square roots are missing": (x_t - (1 - a) * eps) / a,
                    "(x_t + sqrt(1 − ᾱ_t) ε̂) / sqrt(ᾱ_t): wrong sign": (x_t + (1 - a).sqrt() * eps) / a.sqrt(),
                    "x_t − sqrt(1 − ᾱ_t) ε̂ without the division by sqrt(ᾱ_t)": x_t - (1 - a).sqrt() * eps,
                })
            )
        if not _close(got_prev, want_prev, 1e-4):
            signal, direction = ap.sqrt() * want_x0, (1 - ap).sqrt() * eps
            raise AssertionError(
                f"x_prev is wrong at {where} (largest difference {_error(got_prev, want_prev):.3g}) although x0_pred is right; "
                "x_prev = sqrt(ᾱ_prev) x̂0 + sqrt(1 − ᾱ_prev) ε̂." + _diagnose(got_prev, {
                    "ᾱ_prev x̂0 + (1 − ᾱ_prev) ε̂: the square roots are missing": ap * want_x0 + (1 - ap) * eps,
                    "sqrt(ᾱ_prev) x̂0 − sqrt(1 − ᾱ_prev) ε̂: the direction term has the wrong sign": signal - direction,
                    "sqrt(ᾱ_t) x̂0 + sqrt(1 − ᾱ_t) ε̂, which is x_t again: use ᾱ_prev": a.sqrt() * want_x0 + (1 - a).sqrt() * eps,
                    "sqrt(ᾱ_prev) x̂0 only: the direction term sqrt(1 − ᾱ_prev) ε̂ is missing": signal,
                })
            )
    _ok("ddim_step correct: x̂0 and x_prev equal labkit's DDIM step (η = 0) at t = 500, 999 and the last step")


# ---- 06: the course's accuracy ------------------------------------------------------------------
def check_top_k_hits(top_k_hits_fn) -> None:
    """``top_k_hits_fn(probabilities, labels) -> (B,)``: for each image with k true objects, how many of the
    judge's k most probable classes are true. The course accuracy is hits.sum() / labels.sum()."""
    generator = torch.Generator().manual_seed(5)
    probabilities = torch.rand(32, 24, generator=generator)
    labels = torch.zeros(32, 24)
    for row in range(32):
        k = 1 + row % 3
        labels[row, torch.randperm(24, generator=generator)[:k]] = 1
        if row % 4 == 0:  # make some images easy, so hits vary from 0 to k
            probabilities[row] = probabilities[row] * 0.5 + labels[row] * 0.5
    selected, checked, _ = top_k_selection(probabilities, labels)
    want = (selected * checked).sum(dim=1).double()
    got = _tensor(_call(top_k_hits_fn, probabilities.clone(), labels.clone()), "hits per image", (32,))
    if _close(got, want, 1e-6):
        _ok(f"top_k_hits correct: {int(want.sum())} hits of {int(labels.sum())} objects, accuracy "
            f"{want.sum().item() / labels.sum().item():.3f} (total hits / total objects, as the course computes it)")
        return
    k = labels.sum(dim=1).double()
    above_half = ((probabilities > 0.5).float() * labels).sum(dim=1).double()
    top3 = torch.zeros_like(labels).scatter(1, probabilities.topk(3, dim=1).indices, 1.0)
    raise AssertionError(
        f"top_k_hits is wrong for {int((got - want).abs().gt(1e-6).sum())} of 32 images; first image {int((got - want).abs().argmax())}: "
        f"got {got[int((got - want).abs().argmax())].item():.3g}, should be {want[int((got - want).abs().argmax())].item():.3g}." + _diagnose(got, {
            "the hits divided by k (a per-image accuracy): return the count; the course divides total hits by total objects": want / k,
            "a 0.5 threshold: take each image's k most probable classes, k = its number of true objects": above_half,
            "a fixed k = 3: k is each image's own number of true objects": (top3 * labels).sum(dim=1).double(),
        })
    )
