"""The trained network's view: one-step x̂0 and the loss per noise level (a tiny untrained model, shapes and consistency)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import torch

from factories import make_tiny_config, make_training_set
from labkit import figures
from labkit.model import build_model
from labkit.network_view import loss_per_timestep, one_step_x0
from labkit.schedules import NoiseSchedule
from labkit.train import diffusion_loss


def tiny(tmp_path):
    config = make_tiny_config(tmp_path)
    torch.manual_seed(0)
    model = build_model(config.model, config.data.image_size)
    schedule = NoiseSchedule.from_config(config.diffusion)
    training_set = make_training_set(tmp_path, count=6, size=config.data.image_size)
    x0 = training_set.images.float() / 127.5 - 1
    return model, schedule, x0, training_set.labels


def test_one_step_x0_inverts_the_noising_for_a_perfect_answer(tmp_path):
    model, schedule, x0, labels = tiny(tmp_path)
    x_t, x0_hat = one_step_x0(model, schedule, x0[0], labels[0], [1, 10, 40], seed=0)
    assert x_t.shape == x0_hat.shape == (3, *x0.shape[1:])
    assert model.training  # left as it was found

    class Oracle(torch.nn.Module):  # answers with the true v, so x̂0 must be x0
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, y):
            noise = torch.randn((1, *x0.shape[1:]), generator=torch.Generator().manual_seed(0))
            return schedule.training_target(x0[:1].repeat(len(x), 1, 1, 1), noise.repeat(len(x), 1, 1, 1), t)

    _, perfect = one_step_x0(Oracle(), schedule, x0[0], labels[0], [1, 10, 40], seed=0)
    assert (perfect - x0[0]).abs().max() < 1e-4


def test_loss_per_timestep_has_one_value_per_bucket_and_draws(tmp_path):
    model, schedule, x0, labels = tiny(tmp_path)
    losses = loss_per_timestep(model, schedule, x0, labels, buckets=5, seed=0, batch_size=4)
    assert losses["edges"] == [0, 10, 20, 30, 40, 50]
    assert len(losses["loss"]) == len(losses["weighted"]) == len(losses["x0_error"]) == 5
    again = loss_per_timestep(model, schedule, x0, labels, buckets=5, seed=0)  # seeded; batches change only rounding
    for key in ("loss", "weighted", "x0_error"):
        assert torch.allclose(torch.tensor(losses[key]), torch.tensor(again[key]), rtol=1e-5)
    # the average over the buckets is of the same size as the trainer's own loss on these images
    trainer = diffusion_loss(model, schedule, x0, labels, cond_drop_prob=0.0, generator=torch.Generator().manual_seed(0))
    assert 0.2 < sum(losses["loss"]) / 5 / trainer.item() < 5
    fig = figures.loss_per_timestep_figure(losses, title="tiny")
    assert len(fig.axes) == 2
    fig = figures.network_view_figure(x0[0], x0[:3], x0[:3], [1, 2, 3], title="tiny")
    assert len(fig.axes) == 8
