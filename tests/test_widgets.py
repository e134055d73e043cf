"""labkit.widgets: the schedule explorer redraws on control changes, deterministically."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ipywidgets")

from labkit.schedules import NoiseSchedule  # noqa: E402
from labkit.widgets import ScheduleExplorer  # noqa: E402


def sample_image():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, 16, 16), generator=generator, dtype=torch.uint8)


def expected_x_t(explorer: ScheduleExplorer, name: str, steps: int, timestep: int) -> torch.Tensor:
    return NoiseSchedule(name, steps).add_noise(explorer.x0, explorer.noise, torch.tensor([timestep]))[0]


def test_setting_the_t_slider_redraws_with_the_fixed_noise():
    explorer = ScheduleExplorer(sample_image(), schedule="cosine", num_train_timesteps=1000, timestep=100)
    assert explorer.state == ("cosine", 1000, 100)
    before, png_before = explorer.current_noisy_image.clone(), bytes(explorer.figure_png)
    assert torch.equal(before, expected_x_t(explorer, "cosine", 1000, 100))

    explorer.timestep_slider.value = 700
    assert explorer.state == ("cosine", 1000, 700)
    assert (explorer.current_noisy_image - before).abs().max() > 0.1
    assert torch.equal(explorer.current_noisy_image, expected_x_t(explorer, "cosine", 1000, 700))
    assert bytes(explorer.image_widget.value) == explorer.figure_png != png_before

    # the noise is fixed by the seed: another explorer shows the same x_t
    again = ScheduleExplorer(sample_image(), schedule="cosine", num_train_timesteps=1000, timestep=700)
    assert torch.equal(again.current_noisy_image, explorer.current_noisy_image)


def test_schedule_and_T_controls():
    explorer = ScheduleExplorer(sample_image(), schedule="cosine", num_train_timesteps=1000, timestep=900)
    explorer.schedule_dropdown.value = "linear"
    assert torch.equal(explorer.current_noisy_image, expected_x_t(explorer, "linear", 1000, 900))
    redraws = []
    original = explorer.redraw
    explorer.redraw = lambda: (redraws.append(explorer.state), original())
    explorer.steps_slider.value = 100  # t = 900 no longer exists: clamped to T - 1, one redraw
    assert explorer.state == ("linear", 100, 99) and explorer.timestep_slider.max == 99
    assert redraws == [("linear", 100, 99)]
    assert torch.equal(explorer.current_noisy_image, expected_x_t(explorer, "linear", 100, 99))


def test_float_image_and_bad_arguments():
    image = sample_image().float() / 127.5 - 1
    explorer = ScheduleExplorer(image, timestep=0)
    assert torch.allclose(explorer.x0[0], image)
    with pytest.raises(ValueError, match=r"shape \(3, H, W\)"):
        ScheduleExplorer(image[None])
    with pytest.raises(ValueError, match="not among the choices"):
        ScheduleExplorer(image, schedule="scaled_linear")
