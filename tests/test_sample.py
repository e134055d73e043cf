"""Samplers: teaching steps vs diffusers, CFG, per-image seeds, chunking, trajectories, judge guidance."""

from __future__ import annotations

import pytest
import torch

from factories import make_tiny_config
from labkit.data import LabelSpace
from labkit.model import build_model
from labkit.sample import guided_epsilon, sample, sample_from_scratch
from labkit.schedules import NoiseSchedule


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config = make_tiny_config(tmp_path_factory.mktemp("sample"))
    config.diffusion.num_train_timesteps = 100
    torch.manual_seed(0)
    model = build_model(config.model, config.data.image_size).eval()
    # a random model predicts tiny outputs; scale the last layer up so guidance matters
    schedule = NoiseSchedule.from_config(config.diffusion)
    labels = LabelSpace.default().encode([["red sphere"], ["cyan cube", "gray cylinder"], ["blue cube"], ["yellow sphere"]])
    return config, model, schedule, labels


@pytest.mark.parametrize("method,eta", [("ddim", 0.0), ("ddim", 0.7), ("ddpm", 0.0)])
def test_teaching_sampler_matches_diffusers(tiny, method, eta):
    config, model, schedule, labels = tiny
    steps = 10 if method != "ddpm" else 20
    ours = sample_from_scratch(model, schedule, labels, method=method, num_inference_steps=steps, eta=eta, seed=5, guidance_scale=2.0)
    reference = sample(
        model, schedule, labels, sampler=method, num_inference_steps=steps, eta=eta, seed=5,
        guidance_scale=2.0, precision="fp32", progress=False,
    ).images
    # float32 rounding accumulated over the steps; one grey level of a PNG is 2/255 ≈ 8e-3
    assert (ours - reference).abs().max().item() < 1e-4


def test_cfg_scale_one_is_the_conditional_prediction_and_batched_equals_separate(tiny):
    config, model, schedule, labels = tiny
    x_t = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        timesteps = torch.full((4,), 40)
        # the network's output (v for the profiles' v-prediction) converted to ε, as the samplers do
        conditional = schedule.pred_epsilon(model(x_t, timesteps, labels), x_t, timesteps)
        unconditional = schedule.pred_epsilon(model(x_t, timesteps, torch.zeros_like(labels)), x_t, timesteps)
        eps_one = guided_epsilon(model, schedule, x_t, 40, labels, guidance_scale=1.0)
        batched = guided_epsilon(model, schedule, x_t, 40, labels, guidance_scale=3.0, cfg_mode="batched")
        separate = guided_epsilon(model, schedule, x_t, 40, labels, guidance_scale=3.0, cfg_mode="separate")
    assert torch.allclose(eps_one, conditional, atol=1e-6)
    assert torch.allclose(batched, separate, atol=1e-5)
    expected = unconditional + 3.0 * (conditional - unconditional)
    assert torch.allclose(batched, expected, atol=1e-5)
    assert not torch.allclose(conditional, unconditional)  # the label does reach the network


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver++"])
def test_per_image_seeds_do_not_depend_on_batch_size(tiny, sampler):
    config, model, schedule, labels = tiny
    eight = labels.repeat(2, 1)  # 8 label rows
    kwargs = dict(sampler=sampler, num_inference_steps=6, guidance_scale=2.0, seed=11, precision="fp32", progress=False)
    whole = sample(model, schedule, eight, batch_size=8, **kwargs).images
    assert torch.equal(whole, sample(model, schedule, eight, batch_size=8, **kwargs).images)  # deterministic
    one_by_one = sample(model, schedule, eight, batch_size=1, **kwargs).images
    # Same noise per image; only float rounding of batched vs single convolutions differs,
    # well under one grey level of the saved PNG (2/255 ≈ 7.8e-3).
    assert (whole - one_by_one).abs().max() < 4e-3
    alone = sample(model, schedule, eight[5:6], seeds=[11 + 5], **kwargs).images
    assert (alone[0] - whole[5]).abs().max() < 4e-3
    assert not torch.allclose(whole[0], whole[4], atol=1e-3)  # same label, different seed


def test_trajectory_shapes_and_end_points(tiny):
    config, model, schedule, labels = tiny
    result = sample(
        model, schedule, labels[:2], sampler="ddim", num_inference_steps=7, return_trajectory=True,
        precision="fp32", progress=False,
    )
    assert result.trajectory.shape == (8, 2, 3, 16, 16) and result.trajectory.dtype == torch.uint8
    assert result.pred_x0.shape == (7, 2, 3, 16, 16)
    final = result.images.add(1).mul(127.5).round().to(torch.uint8)
    assert torch.equal(result.trajectory[-1], final)
    assert result.network_evaluations == 7 and len(result.timesteps) == 7
    assert result.timesteps[0] == 99  # "trailing": the first step starts from pure noise


def test_guidance_counts_two_network_calls_per_step(tiny):
    config, model, schedule, labels = tiny
    result = sample(model, schedule, labels[:1], sampler="dpmsolver++", num_inference_steps=5, guidance_scale=4.0, progress=False)
    assert result.network_evaluations == 10


def test_judge_guidance_moves_samples_and_is_labelled(tiny):
    from labkit.evaluate import Judge, build_evaluator_network

    config, model, schedule, labels = tiny
    torch.manual_seed(3)
    judge = Judge("synthetic judge", build_evaluator_network())
    plain = sample(model, schedule, labels[:2], sampler="ddim", num_inference_steps=5, precision="fp32", progress=False)
    guided = sample(
        model, schedule, labels[:2], sampler="ddim", num_inference_steps=5, precision="fp32", progress=False,
        judge=judge, judge_guidance_scale=50.0,
    )
    assert guided.judge_guided and not plain.judge_guided
    assert guided.settings["judge_guidance_scale"] == 50.0
    assert (guided.images - plain.images).abs().max() > 1e-3


def test_unknown_sampler_is_refused(tiny):
    config, model, schedule, labels = tiny
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(model, schedule, labels, sampler="euler", progress=False)


def test_sample_seeds_draws_one_scene_per_seed_as_saved_and_counts_the_judges_hits(tmp_path):
    from labkit import lab
    from labkit.images import as_written

    config = make_tiny_config(tmp_path)
    config.sample.sampler, config.sample.num_inference_steps, config.sample.guidance_scale = "ddim", 3, 2.0
    torch.manual_seed(0)
    model, schedule = build_model(config.model, config.data.image_size).eval(), NoiseSchedule.from_config(config.diffusion)
    space = LabelSpace.default()
    names = ["red sphere", "cyan cylinder"]

    class KnownJudge:  # image 0: both wanted objects on top; image 1: one of them, then a wrong "blue cube"
        def probabilities(self, images):
            probabilities = torch.zeros(len(images), 24)
            probabilities[:, space.index["red sphere"]] = 0.9
            probabilities[0, space.index["cyan cylinder"]] = 0.8
            probabilities[1, space.index["blue cube"]] = 0.8
            return probabilities

    drawn = lab.sample_seeds(model, schedule, config, names, seeds=[5, 7], judge=KnownJudge(), guidance_scale=1.5)
    assert drawn["images"].shape == (2, 3, 64, 64) and drawn["seeds"] == [5, 7] and drawn["guidance_scale"] == 1.5
    assert drawn["hits"] == [2, 1] and drawn["titles"] == ["seed 5: 2/2", "seed 7: 1/2"]
    alone = sample(model, schedule, space.encode([names]), sampler="ddim", num_inference_steps=3, guidance_scale=1.5,
                   seed=7, progress=False)
    assert torch.equal(drawn["images"][1], as_written(alone.images)[0])  # image i is seed i's sample, 8-bit
    plain = lab.sample_seeds(model, schedule, config, names, seeds=[7])
    assert plain["hits"] is None and plain["guidance_scale"] == 2.0 and plain["titles"] == ["seed 7"]
    assert not torch.equal(plain["images"][0], drawn["images"][1])  # the config's w = 2 here, not 1.5

    class KnownCounter:  # counts what it is given: 3 objects in image 0, "4 or more" in image 1
        max_count = 4

        def count(self, images):
            assert torch.equal(images, drawn["images"])  # it counts the images as saved
            return torch.tensor([3, 4])

    counted = lab.sample_seeds(model, schedule, config, names, seeds=[5, 7], judge=KnownJudge(), guidance_scale=1.5,
                               counter=KnownCounter())
    assert counted["counts"] == [3, 4] and plain["counts"] is None
    assert counted["titles"] == ["seed 5: 2/2, 3 objects", "seed 7: 1/2, 4+ objects"]
