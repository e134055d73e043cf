"""What a trained network does with one training step's input: its one-step x̂0, and its loss per noise level.

Both use the training recipe's own draws (x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε, labels as given) with a fixed
seed, and the model in evaluation mode without gradients; :mod:`labkit.figures` draws the results
(``network_view_figure``, ``loss_per_timestep_figure``), notebook 04 shows them.
"""

from __future__ import annotations

from typing import Sequence

import torch

from labkit.schedules import NoiseSchedule


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def one_step_x0(model, schedule: NoiseSchedule, x0: torch.Tensor, labels: torch.Tensor | None,
                timesteps: Sequence[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One image noised to each of ``timesteps`` (the same ε for all) and the network's x̂0 from one call.

    x0: (3, S, S) in [-1, 1]; labels: (24,) multi-hot (or None for an unconditional model).
    Returns (x_t, x0_hat), both float (len(timesteps), 3, S, S) on the CPU; x0_hat is not clipped.
    """
    device = _device(model)
    count = len(timesteps)
    t = torch.tensor(list(timesteps), dtype=torch.long, device=device)
    noise = torch.randn((1, *x0.shape), generator=torch.Generator().manual_seed(seed)).repeat(count, 1, 1, 1).to(device)
    clean = x0[None].float().to(device).repeat(count, 1, 1, 1)
    schedule = schedule.to(device)
    x_t = schedule.add_noise(clean, noise, t)
    y = None if labels is None else labels[None].float().to(device).repeat(count, 1)
    was_training = model.training
    model.eval()
    output = model(x_t, t, y).float()
    model.train(was_training)
    x0_hat = schedule.pred_original_sample(output, x_t, t)
    return x_t.cpu(), x0_hat.cpu()


@torch.no_grad()
def loss_per_timestep(model, schedule: NoiseSchedule, x0: torch.Tensor, labels: torch.Tensor | None,
                      buckets: int = 10, seed: int = 0, batch_size: int = 64) -> dict:
    """The network's loss per noise level: every image noised once inside each of ``buckets`` equal ranges of t.

    x0: (N, 3, S, S) in [-1, 1]; labels: (N, 24) or None. For each bucket (t drawn uniformly inside it, fixed
    seed): "loss", the mean squared error against the training target (ε, v or x0 by the schedule's
    prediction type) as the trainer computes it before weighting; "weighted", the same with the min-SNR-γ
    weights of the schedule (equal to "loss" when γ = 0); "x0_error", the mean squared error of the one-step
    x̂0. Returns those lists with "edges" (buckets + 1 timesteps) and "centres".
    """
    device = _device(model)
    schedule = schedule.to(device)
    steps = schedule.num_train_timesteps
    edges = torch.linspace(0, steps, buckets + 1).round().long().tolist()
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    result = {"edges": edges, "centres": [(a + b - 1) / 2 for a, b in zip(edges[:-1], edges[1:])],
              "loss": [], "weighted": [], "x0_error": [], "prediction_type": schedule.prediction_type,
              "min_snr_gamma": schedule.min_snr_gamma, "images": len(x0)}
    for low, high in zip(edges[:-1], edges[1:]):
        t_all = torch.randint(low, high, (len(x0),), generator=generator)
        noise_all = torch.randn(x0.shape, generator=generator)
        totals = torch.zeros(3, dtype=torch.float64)
        for start in range(0, len(x0), batch_size):
            t = t_all[start : start + batch_size].to(device)
            clean = x0[start : start + batch_size].float().to(device)
            noise = noise_all[start : start + batch_size].to(device)
            y = None if labels is None else labels[start : start + batch_size].float().to(device)
            x_t = schedule.add_noise(clean, noise, t)
            output = model(x_t, t, y).float()
            per_sample = ((output - schedule.training_target(clean, noise, t)) ** 2).mean(dim=(1, 2, 3))
            x0_error = ((schedule.pred_original_sample(output, x_t, t) - clean) ** 2).mean(dim=(1, 2, 3))
            weights = schedule.loss_weights(t) if schedule.min_snr_gamma > 0 else torch.ones_like(per_sample)
            totals += torch.stack([per_sample.sum(), (per_sample * weights).sum(), x0_error.sum()]).double().cpu()
        loss, weighted, x0_err = (totals / len(x0)).tolist()
        result["loss"].append(loss)
        result["weighted"].append(weighted)
        result["x0_error"].append(x0_err)
    model.train(was_training)
    return result
