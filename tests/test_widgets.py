"""labkit.widgets and labkit.sampler_comparison (which a widget calls): controls redraw deterministically."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ipywidgets")

from labkit import widgets  # noqa: E402
from labkit.labels import LabelSpace  # noqa: E402
from labkit.schedules import NoiseSchedule  # noqa: E402
from labkit.widgets import PIXELATED, ScheduleExplorer, png_size  # noqa: E402


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
    width, height = png_size(explorer.figure_png)  # shown at its own size: never stretched or blurred
    assert (explorer.image_widget.layout.width, explorer.image_widget.layout.height) == (f"{width}px", f"{height}px")
    assert width <= 600 and PIXELATED in explorer.image_widget._dom_classes
    assert explorer.pictures.captions == ["x_0", "x_t, t = 700"] and png_size(explorer.pictures.pngs[1]) == (128, 128)

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
    # one control a row, each slider wide enough for a usable track
    rows = explorer.widget.children
    assert explorer.steps_slider in rows and explorer.timestep_slider in rows
    assert explorer.timestep_slider.layout.width == "600px"


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
    width, height = png_size(stepper.image_png)  # 16x16 images enlarged x10 (integer factor), side by side
    assert (width, height) == (2 * 160 + 4, 160)
    assert stepper.image_widget.layout.width == f"{width}px" and stepper.image_widget.layout.height == "160px"
    stepper.step_slider.value = 6  # the last step shows the final image on both sides
    assert torch.equal(stepper.current_x_t, stepper.trajectory[-1])
    assert "final image" in stepper.caption.value
    stepper.play.value = 2  # the play button is linked in the kernel
    assert stepper.step == 2 and torch.equal(stepper.current_x_t, stepper.trajectory[2])


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
    # one captioned picture per image, at its own size (16x16 enlarged x8)
    assert len(slider.tiles.pngs) == 2 and all(png_size(png) == (128, 128) for png in slider.tiles.pngs)
    assert slider.tiles.captions[1].startswith("gray cube, blue cylinder") and "judge finds" in slider.tiles.captions[1]


def test_guidance_slider_is_busy_while_it_samples_and_recovers_from_errors(tiny_sampler, monkeypatch):
    import labkit.widgets as widgets_module
    from labkit.widgets import STALE, GuidanceSlider

    model, schedule, config = tiny_sampler
    slider = GuidanceSlider(model, schedule, [["red sphere"]], config, scales=(1.0, 3.0, 5.0))
    seen = []
    real = widgets_module.sample_conditions

    def watching(*args, **kwargs):
        seen.append((slider.scale_slider.disabled, slider.status.value, STALE in slider.tiles.widget._dom_classes))
        return real(*args, **kwargs)

    monkeypatch.setattr(widgets_module, "sample_conditions", watching)
    slider.scale_slider.value = 3.0
    assert seen == [(True, "<i>sampling 1 images at w = 3 …</i>", True)]
    assert not slider.scale_slider.disabled and slider.status.value == ""
    assert STALE not in slider.tiles.widget._dom_classes

    def failing(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(widgets_module, "sample_conditions", failing)
    with pytest.raises(RuntimeError):
        slider.scale_slider.value = 5.0
    assert not slider.scale_slider.disabled and "failed" in slider.status.value and "out of memory" in slider.status.value


def test_label_picker_refuses_bad_picks_with_a_message(tiny_sampler):
    from labkit.widgets import LabelPicker

    model, schedule, config = tiny_sampler
    picker = LabelPicker(model, schedule, config, num_images=2)
    assert picker.tiles.widget.children == ()  # no picture (and no placeholder) before the first generate
    picker.selector.value = ("gray cube", "red cube", "blue cube", "green cube")
    assert picker.picked == [] and "refused" in picker.message and "4 objects" in picker.message
    assert picker.generate() is None and picker.current_images is None
    assert not picker.pick(["pink cube"])
    assert "pink cube" in picker.message and "closest valid names" in picker.message
    picker.selector.value = ("red sphere", "cyan cube")
    assert picker.picked == ["red sphere", "cyan cube"] and picker.message.startswith("ready")
    images = picker.generate()
    assert images.shape == (2, 3, 16, 16)
    assert len(picker.tiles.widget.children) == 2 and picker.tiles.captions[0] == "red sphere, cyan cube<br>seed 0"
    assert not picker.button.disabled and picker.button.description == "generate"
    picker.selector.value = ("red sphere", "red sphere", "cyan cube", "gray cube", "blue cube")
    assert "refused" in picker.message
    assert picker.tiles.widget.children == () and picker.current_images is None  # old pictures go


def test_label_picker_disables_its_controls_while_sampling(tiny_sampler, monkeypatch):
    import labkit.widgets as widgets_module
    from labkit.widgets import LabelPicker

    model, schedule, config = tiny_sampler
    picker = LabelPicker(model, schedule, config, num_images=1)
    picker.selector.value = ("red sphere",)
    seen = []

    def failing(*args, **kwargs):
        seen.append((picker.button.disabled, picker.selector.disabled, picker.button.description, picker.message_widget.value))
        raise RuntimeError("boom")

    monkeypatch.setattr(widgets_module, "sample_conditions", failing)
    with pytest.raises(RuntimeError):
        picker.generate()
    assert seen == [(True, True, "sampling…", "<i>sampling 1 scenes of red sphere …</i>")]
    assert not picker.button.disabled and not picker.selector.disabled and picker.button.description == "generate"
    assert "sampling failed" in picker.message_widget.value


# ---- samplers side by side -------------------------------------------------------------------------
def synthetic_judge():
    """The judge network untrained (deterministic: no dropout), with a held-out accuracy as the synthetic judge carries."""
    from labkit.evaluate import Judge, build_evaluator_network
    from labkit.metrics import AccuracyResult

    torch.manual_seed(0)
    holdout = AccuracyResult(0.991, 991, 1000, "synthetic judge", "held-out")
    return Judge("synthetic judge", build_evaluator_network(), holdout=holdout)


TWO_SCENES = [["red sphere"], ["gray cube", "blue cylinder"]]


def test_compare_samplers_gives_the_same_images_for_the_same_setting_and_seeds(tiny_sampler):
    from labkit.sampler_comparison import SamplerSetting, compare_samplers

    model, schedule, config = tiny_sampler
    settings = [SamplerSetting("ddim", 4, 0.5), SamplerSetting("ddpm", 4), SamplerSetting("ddim", 4, 0.5)]
    rows = compare_samplers(model, schedule, TWO_SCENES, config, settings, seeds=[7, 8], judge=synthetic_judge(),
                            guidance_scale=3.0, progress=False)
    assert [row.setting for row in rows] == settings and rows[0].images.shape == (2, 3, 16, 16)
    assert torch.equal(rows[0].images, rows[2].images)  # η > 0 draws noise too: from the same per-image seeds
    assert not torch.equal(rows[0].images, rows[1].images)
    for row in rows:
        assert row.seconds_per_image > 0 and row.result.network_evaluations == 8  # 4 steps, guided (w = 3)
        assert row.accuracy.total == 3 and row.accuracy.judge == "synthetic judge"
        text = str(row)
        assert "s per image" in text and "synthetic judge, held-out 0.991" in text
    assert str(rows[1]).startswith("DDPM, 4 steps: ") and str(rows[0]).startswith("DDIM, 4 steps, η = 0.5: ")
    # without a judge: no accuracy; the seeds default to config.sample.seed + i
    plain = compare_samplers(model, schedule, TWO_SCENES, config, [("ddim", 4, 0.5)], progress=False)
    assert plain[0].accuracy is None and "accuracy" not in str(plain[0])
    again = compare_samplers(model, schedule, TWO_SCENES, config, [("ddim", 4, 0.5)], seeds=[0, 1], progress=False)
    assert torch.equal(plain[0].images, again[0].images)


def test_compare_samplers_refuses_bad_settings_before_sampling(tiny_sampler, monkeypatch):
    import labkit.sampler_comparison as comparison
    from labkit.config import ConfigError
    from labkit.sampler_comparison import SamplerSetting, check_setting, compare_samplers

    model, schedule, config = tiny_sampler
    monkeypatch.setattr(comparison, "sample_conditions", lambda *args, **kwargs: pytest.fail("sampled"))
    good = SamplerSetting("ddim", 4)
    cases = [
        (SamplerSetting("ddim", 0), r"setting 2: sample.num_inference_steps = 0 must be >= 1"),
        (SamplerSetting("euler", 10), r"setting 2: sample.sampler must be one of ddpm, ddim or dpmsolver\+\+, not 'euler'"),
        (SamplerSetting("ddim", 10, 1.5), r"setting 2: sample.eta = 1.5 must be <= 1"),
        (SamplerSetting("ddpm", 101), r"must be <= T = 100"),
        (SamplerSetting("ddpm", 2.5), r"not a whole number"),
    ]
    for bad, message in cases:
        with pytest.raises(ConfigError, match=message):
            compare_samplers(model, schedule, TWO_SCENES, config, [good, bad])
    with pytest.raises(ValueError, match="3 seeds for 2 label sets"):
        compare_samplers(model, schedule, TWO_SCENES, config, [good], seeds=[0, 1, 2])
    with pytest.raises(ValueError, match="no settings"):
        compare_samplers(model, schedule, TWO_SCENES, config, [])
    # η only counts for DDIM; whole numbers given as floats are accepted
    checked = check_setting({"sampler": "ddpm", "num_inference_steps": 5.0, "eta": 1.0}, config, 100)
    assert checked == SamplerSetting("ddpm", 5, 0.0)


def test_sampler_comparison_columns_share_labels_and_seeds(tiny_sampler):
    from labkit.sampler_comparison import SamplerSetting
    from labkit.widgets import STALE, SamplerComparison

    model, schedule, config = tiny_sampler
    settings = [SamplerSetting("ddim", 3), SamplerSetting("dpmsolver++", 3), SamplerSetting("ddim", 3)]
    comparison = SamplerComparison(model, schedule, TWO_SCENES, config, settings, seed=5, judge=synthetic_judge())
    first, second, third = comparison.columns
    assert [row.setting for row in comparison.rows] == settings and len(comparison.cache) == 2
    assert torch.equal(comparison.rows[0].images, comparison.rows[2].images)
    assert not torch.equal(comparison.rows[0].images, comparison.rows[1].images)
    assert "seeds 5…6" in comparison.caption.value
    for column in comparison.columns:  # seconds and the named judge's accuracy; one picture per label set
        assert "s per image" in column.caption.value and "synthetic judge, held-out 0.991" in column.caption.value
        assert len(column.tiles.pngs) == 2 and all(png_size(png) == (128, 128) for png in column.tiles.pngs)
        assert column.tiles.captions[1].startswith("gray cube, blue cylinder") and "judge finds" in column.tiles.captions[1]
    # η is a control of DDIM only
    assert not first.eta_box.disabled and second.eta_box.disabled
    second.sampler_dropdown.value = "ddpm"
    assert second.eta_box.disabled and STALE in second.tiles.widget._dom_classes  # the pictures are not of this setting
    first.sampler_dropdown.value = "dpmsolver++"
    assert first.eta_box.disabled
    first.sampler_dropdown.value = "ddim"
    assert not first.eta_box.disabled and STALE not in first.tiles.widget._dom_classes  # back to what it shows
    # run samples the new setting only, and the η control stays off for DDPM afterwards
    third.eta_box.value = 1.0
    comparison.run_button.click()
    assert comparison.rows[1].setting == SamplerSetting("ddpm", 3) and len(comparison.cache) == 4
    assert comparison.rows[2].setting == SamplerSetting("ddim", 3, 1.0)
    assert second.eta_box.disabled and not comparison.run_button.disabled and comparison.status.value == ""
    assert STALE not in second.tiles.widget._dom_classes and second.caption.value.count("DDPM, 3 steps") == 1


def test_sampler_comparison_refuses_a_bad_setting_and_is_busy_while_sampling(tiny_sampler, monkeypatch):
    import labkit.widgets as widgets_module
    from labkit.sampler_comparison import SamplerSetting
    from labkit.widgets import STALE, SamplerComparison

    model, schedule, config = tiny_sampler
    comparison = SamplerComparison(model, schedule, [["red sphere"]], config, [SamplerSetting("ddim", 2)] * 2, run_now=False)
    assert comparison.rows == [] and comparison.columns[0].tiles.pngs == []
    comparison.columns[1].steps_box.value = 0  # the box keeps steps within 1 … T
    assert comparison.columns[1].steps_box.value == 1
    comparison.columns[1].steps_box.max = 500  # a box that allows more than T: refused with a message
    comparison.columns[1].steps_box.value = 500
    assert comparison.run() is None
    status = comparison.status.value
    assert "refused" in status and "column 2" in status and "T = 100" in status
    comparison.columns[1].steps_box.value = 3
    seen = []

    def failing(*args, **kwargs):
        seen.append(([control.disabled for control in comparison.controls], comparison.status.value,
                     STALE in comparison.columns[0].tiles.widget._dom_classes))
        raise RuntimeError("out of memory")

    monkeypatch.setattr(widgets_module, "compare_samplers", failing)
    with pytest.raises(RuntimeError):
        comparison.run()
    assert seen == [([True] * 7, "<i>sampling 1 images with 2 settings …</i>", True)]
    assert [control.disabled for control in comparison.controls] == [False, False, False, False, False, False, False]
    assert "sampling failed" in comparison.status.value and "out of memory" in comparison.status.value
    assert STALE not in comparison.columns[0].tiles.widget._dom_classes


def test_image_captions_count_the_judges_top_k_hits():
    space = LabelSpace.default()
    wanted = [["gray cube"], ["red sphere", "cyan cube"]]

    class KnownJudge:  # finds "gray cube" first in image 0; in image 1 "red sphere", then a wrong "blue cube"
        def probabilities(self, images):
            probabilities = torch.zeros(len(images), 24)
            probabilities[0, space.index["gray cube"]] = 0.9
            probabilities[1, space.index["red sphere"]] = 0.9
            probabilities[1, space.index["blue cube"]] = 0.8
            probabilities[1, space.index["cyan cube"]] = 0.1
            return probabilities

    captions = widgets.image_captions(torch.zeros(2, 3, 32, 32), wanted, KnownJudge(), space)
    assert captions[0].startswith("gray cube") and "judge finds 1/1" in captions[0]
    assert captions[1].startswith("red sphere, cyan cube") and "judge finds 1/2" in captions[1]
    assert widgets.image_captions(torch.zeros(2, 3, 32, 32), wanted) == ["gray cube", "red sphere, cyan cube"]
