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


# ---- sampling widgets --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sampler(tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from factories import make_tiny_config

    from labkit.model import build_model
    from labkit.schedules import NoiseSchedule

    config = make_tiny_config(tmp_path_factory.mktemp("widgets"))
    config.diffusion.num_train_timesteps = 100
    config.sample.sampler = "ddim"
    config.sample.num_inference_steps = 6
    config.train.precision = "fp32"
    torch.manual_seed(0)
    model = build_model(config.model, config.data.image_size).eval()
    return model, NoiseSchedule.from_config(config.diffusion), config


def test_denoising_stepper_shows_the_step_the_slider_points_at(tiny_sampler):
    from labkit.widgets import DenoisingStepper

    model, schedule, config = tiny_sampler
    stepper = DenoisingStepper.from_model(model, schedule, ["red sphere", "cyan cube"], config, seed=3)
    assert torch.equal(stepper.current_x_t, stepper.trajectory[0])  # starts at pure noise
    first_png = stepper.image_png
    stepper.step_slider.value = 4
    assert stepper.step == 4
    assert torch.equal(stepper.current_x_t, stepper.trajectory[4])
    assert torch.equal(stepper.current_pred_x0, stepper.pred_x0[4])
    assert stepper.image_png != first_png and stepper.image_widget.value == stepper.image_png
    stepper.step_slider.value = 6  # the last step shows the final image on both sides
    assert torch.equal(stepper.current_x_t, stepper.trajectory[-1])
    assert "final image" in stepper.caption.value


def test_guidance_slider_caches_each_scale(tiny_sampler):
    from labkit.evaluate import Judge, build_evaluator_network
    from labkit.widgets import GuidanceSlider

    model, schedule, config = tiny_sampler
    judge = Judge("synthetic judge", build_evaluator_network())
    slider = GuidanceSlider(model, schedule, [["red sphere"], ["gray cube", "blue cylinder"]], config, scales=(1.0, 5.0), judge=judge)
    at_one = slider.current_images.clone()
    slider.scale_slider.value = 5.0
    assert slider.scale == 5.0 and set(slider.cache) == {1.0, 5.0}
    assert not torch.allclose(slider.current_images, at_one)
    assert "synthetic judge" in slider.caption.value
    cached = slider.cache[5.0][0]
    slider.scale_slider.value = 1.0
    slider.scale_slider.value = 5.0
    assert slider.cache[5.0][0] is cached  # not sampled again


def test_label_picker_refuses_bad_picks_with_a_message(tiny_sampler):
    from labkit.widgets import LabelPicker

    model, schedule, config = tiny_sampler
    picker = LabelPicker(model, schedule, config, num_images=2)
    picker.selector.value = ("gray cube", "red cube", "blue cube", "green cube")
    assert picker.picked == [] and "refused" in picker.message and "4 objects" in picker.message
    assert picker.generate() is None and picker.current_images is None
    assert not picker.pick(["pink cube"])
    assert "pink cube" in picker.message and "closest valid names" in picker.message
    picker.selector.value = ("red sphere", "cyan cube")
    assert picker.picked == ["red sphere", "cyan cube"] and picker.message.startswith("ready")
    images = picker.generate()
    assert images.shape == (2, 3, 16, 16)
