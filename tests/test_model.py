"""labkit.model: shapes, conditioning, the null label, helpers, and that both backends learn."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from labkit.config import ModelConfig, get_config
from labkit.model import (
    CompactUNet,
    DiffusersUNet,
    LabelEmbedding,
    Upsample,
    build_model,
    count_parameters,
    flops_per_image,
    format_trace,
    shape_trace,
    timestep_embedding,
    upsample_conv,
)
from labkit.schedules import NoiseSchedule

SIZE = 16
BACKENDS = ("compact", "diffusers")
CONDITIONINGS = ("embedding", "channels")


def tiny_model_config(backend: str = "compact", conditioning: str = "embedding", **changes) -> ModelConfig:
    config = ModelConfig(
        backend=backend,
        conditioning=conditioning,
        base_channels=16,
        channel_mults=(1, 2),
        layers_per_block=1,
        attention_levels=(False, True),
        attention_head_dim=16,
        norm_groups=8,
    )
    return dataclasses.replace(config, **changes)


def tiny_model(backend="compact", conditioning="embedding", seed=0, **changes):
    torch.manual_seed(seed)
    return build_model(tiny_model_config(backend, conditioning, **changes), SIZE).eval()


def inputs(batch: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x_t = torch.randn(batch, 3, SIZE, SIZE, generator=generator)
    timesteps = torch.randint(0, 100, (batch,), generator=generator)
    labels = torch.zeros(batch, 24)
    for row in range(batch):
        labels[row, torch.randperm(24, generator=generator)[: 1 + row % 3]] = 1.0
    return x_t, timesteps, labels


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_output_shape(backend, conditioning):
    model = tiny_model(backend, conditioning)
    expected_class = CompactUNet if backend == "compact" else DiffusersUNet
    assert isinstance(model, expected_class)
    x_t, timesteps, labels = inputs()
    with torch.no_grad():
        output = model(x_t, timesteps, labels)
        same_step = model(x_t, 42, labels)  # an int timestep is broadcast to the batch
    assert output.shape == (3, 3, SIZE, SIZE) and output.dtype == torch.float32
    assert torch.isfinite(output).all() and torch.isfinite(same_step).all()


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_label_changes_the_output(backend, conditioning):
    model = tiny_model(backend, conditioning)
    x_t, timesteps, labels = inputs()
    other = labels.roll(5, dims=1)
    null = torch.zeros_like(labels)
    with torch.no_grad():
        output = model(x_t, timesteps, labels)
        changed = model(x_t, timesteps, other)
        unconditional = model(x_t, timesteps, null)
        again = model(x_t, timesteps, labels)
    assert torch.equal(output, again)  # deterministic in eval mode
    assert (output - changed).abs().amax(dim=(1, 2, 3)).min() > 1e-4  # every image changes
    assert (output - unconditional).abs().amax(dim=(1, 2, 3)).min() > 1e-4


def test_diffusers_backend_really_feeds_the_label():
    model = tiny_model("diffusers")
    assert model.unet.config.class_embed_type == "identity"
    assert model.unet.time_embedding.linear_2.out_features == model.label_embedding.objects.out_features
    assert tiny_model("diffusers", "channels").unet.config.in_channels == 3 + 24


def test_null_label_uses_the_learned_null_vector():
    embedding = LabelEmbedding(24, 8)
    labels = torch.zeros(3, 24)
    labels[1, [2, 5]] = 1.0
    out = embedding(labels)
    assert torch.equal(out[0], embedding.null) and torch.equal(out[2], embedding.null)
    expected = embedding.objects.weight[:, 2] + embedding.objects.weight[:, 5]  # sum of the objects' vectors
    assert torch.allclose(out[1], expected)
    # a null row's output does not depend on the other rows of its batch
    model = tiny_model("compact")
    x_t, timesteps, labels = inputs()
    labels[1] = 0
    with torch.no_grad():
        batched = model(x_t, timesteps, labels)
        alone = model(x_t[1:2], timesteps[1:2], labels[1:2])
    assert torch.allclose(batched[1:2], alone, atol=1e-5)


def test_timestep_embedding_layout():
    embedding = timestep_embedding(torch.tensor([0, 10]), 8)
    assert embedding.shape == (2, 8)
    assert torch.equal(embedding[0], torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]))  # [cos | sin] at t = 0
    assert embedding[1, 0].item() == pytest.approx(torch.cos(torch.tensor(10.0)).item(), abs=1e-6)


def test_clear_errors():
    model = tiny_model("compact")
    x_t, timesteps, labels = inputs()
    with pytest.raises(ValueError, match=r"labels must be multi-hot of shape \(3, 24\)"):
        model(x_t, timesteps, labels[:, :10])
    with pytest.raises(ValueError, match=r"timesteps must have shape \(3,\)"):
        model(x_t, timesteps[:2], labels)
    with pytest.raises(ValueError, match="attention_levels has 1 entries"):
        build_model(tiny_model_config(attention_levels=(True,)), SIZE)
    with pytest.raises(ValueError, match="norm_groups=8 must divide"):
        build_model(tiny_model_config(base_channels=12), SIZE)
    with pytest.raises(ValueError, match="backend must be one of"):
        build_model(tiny_model_config(backend="unet"), SIZE)
    with pytest.raises(ValueError, match="divisible by 2"):
        build_model(tiny_model_config(), 15)


def test_count_parameters():
    model = tiny_model("compact")
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    embedding = LabelEmbedding(24, 8)
    assert count_parameters(embedding) == 24 * 8 + 8
    embedding.null.requires_grad_(False)
    assert count_parameters(embedding, trainable_only=True) == 24 * 8


def test_flops_per_image_scales_and_counts_attention():
    base = flops_per_image(tiny_model("compact"))
    assert base > 0
    # convolutions grow with channels squared: 2x channels -> between 3x and 4x (embedding MLP and attention grow slower)
    wide = flops_per_image(tiny_model("compact", base_channels=32, attention_head_dim=32))
    assert 3.0 < wide / base <= 4.0
    # 2x image side -> 4x conv FLOPs, more for attention (quadratic in positions: 16x)
    larger = flops_per_image(tiny_model("compact"), image_size=2 * SIZE)
    assert 4.0 <= larger / base < 5.0
    # CPU attention is counted: three attention modules (down, mid, up) at 8x8 with 32 channels
    channels, positions = 32, (SIZE // 2) ** 2
    per_attention = 2 * channels * 3 * channels * positions + 2 * channels * channels * positions + 4 * positions**2 * channels
    no_attention = flops_per_image(tiny_model("compact", attention_levels=(False, False)))
    assert base - no_attention == 3 * per_attention
    assert flops_per_image(tiny_model("diffusers")) > 0


def test_shape_trace_reports_each_stage():
    model = tiny_model("compact")
    trace = dict(shape_trace(model))
    assert trace["x_t (input)"] == (1, 3, SIZE, SIZE) and trace["output"] == (1, 3, SIZE, SIZE)
    assert trace["time_mlp"] == (1, 64) and trace["label_embedding"] == (1, 64)
    assert trace["down[0].downsample"] == (1, 16, SIZE // 2, SIZE // 2)
    assert trace["mid.attention"] == (1, 32, SIZE // 2, SIZE // 2)
    assert trace["up[1].upsample"] == (1, 16, SIZE, SIZE)
    assert "conv_out" in format_trace(shape_trace(model))
    diffusers_trace = shape_trace(tiny_model("diffusers"))
    assert diffusers_trace[-1] == ("output", (1, 3, SIZE, SIZE)) and len(diffusers_trace) > 6


@pytest.mark.parametrize("size", [3, 8, 16])
def test_subpixel_upsample_conv_equals_upsample_then_conv(size):
    """conv3x3(nearest_x2(x)) computed at the low resolution: same output and same gradients (float64)."""
    generator = torch.Generator().manual_seed(size)
    x = torch.randn(2, 5, size, size + 2, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 5, 3, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, generator=generator, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 3, 2 * size, 2 * (size + 2), generator=generator, dtype=torch.float64)
    results = []
    for function in (upsample_conv, lambda x, w, b: F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, b, padding=1)):
        output = function(x, weight, bias)
        gradients = torch.autograd.grad(output, (x, weight, bias), upstream)
        results.append((output, *gradients))
    for fast, plain in zip(*results):
        assert torch.allclose(fast, plain, atol=1e-10), (fast - plain).abs().max()


def test_subpixel_upsample_conv_keeps_channels_last():
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    output = upsample_conv(x, torch.randn(3, 4, 3, 3), torch.randn(3))
    assert output.is_contiguous(memory_format=torch.channels_last)
    assert upsample_conv(x.contiguous(), torch.randn(3, 4, 3, 3), None).is_contiguous()


def test_upsample_module_uses_both_paths_with_the_same_weights():
    from labkit.model import plain_upsampling

    module = Upsample(4, 6).double()
    for size in (Upsample.SUBPIXEL_MIN_SIZE // 2, Upsample.SUBPIXEL_MIN_SIZE):
        x = torch.randn(1, 4, size, size, dtype=torch.float64)
        plain = module.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        assert torch.allclose(module(x), plain, atol=1e-10)
        with plain_upsampling(module):
            assert module.subpixel_min_size == float("inf") and torch.equal(module(x), plain)
    assert module.subpixel_min_size == Upsample.SUBPIXEL_MIN_SIZE


def test_channels_last_bf16_autocast_forward_backward():
    model = tiny_model("compact").train().to(memory_format=torch.channels_last)
    x_t, timesteps, labels = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(x_t.contiguous(memory_format=torch.channels_last), timesteps, labels)
    output.float().square().mean().backward()
    assert output.shape == (3, 3, SIZE, SIZE) and torch.isfinite(output.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_decreases_on_a_fixed_batch(backend, prediction_type):
    """30 Adam steps of the MSE on ε or v for one fixed (x0, noise, t, labels) batch."""
    model = tiny_model(backend).train()
    schedule = NoiseSchedule("cosine", 100, prediction_type=prediction_type)
    generator = torch.Generator().manual_seed(1)
    x0 = torch.rand(8, 3, 1, 1, generator=generator).expand(8, 3, SIZE, SIZE) * 2 - 1  # flat colours
    noise = torch.randn(8, 3, SIZE, SIZE, generator=generator)
    timesteps = torch.randint(0, 100, (8,), generator=generator)
    _, _, labels = inputs(8)
    x_t = schedule.add_noise(x0, noise, timesteps)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = F.mse_loss(model(x_t, timesteps, labels), schedule.training_target(x0, noise, timesteps))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_profile_models_build():
    for profile in ("smoke", "cpu"):
        config = get_config(profile)
        model = build_model(config.model, config.data.image_size)
        assert count_parameters(model) > 0
    gpu = get_config("gpu")
    assert gpu.model.backend == "diffusers"
    with torch.device("meta"):
        model = build_model(gpu.model, gpu.data.image_size)
    assert count_parameters(model) > 10_000_000


def test_object_attention_starts_as_the_same_function_and_then_reads_only_the_wanted_objects():
    plain = tiny_model("compact")
    objects = build_model(tiny_model_config(object_attention_levels=(True, True)), SIZE).eval()
    missing, unexpected = objects.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all("object" in key for key in missing)
    x_t, timesteps, labels = inputs()
    with torch.no_grad():
        assert torch.equal(objects(x_t, timesteps, labels), plain(x_t, timesteps, labels))  # zero output projections
        for module in objects.modules():
            if type(module).__name__ == "ObjectAttention":
                torch.nn.init.normal_(module.out.weight, std=0.1)
        before = objects(x_t, timesteps, labels)
        assert not torch.equal(before, plain(x_t, timesteps, labels))
        absent = (labels.sum(dim=0) == 0).nonzero().flatten()  # classes no image asks for: their tokens are masked out
        objects.object_tokens.table[absent] += 5.0
        assert torch.allclose(objects(x_t, timesteps, labels), before, atol=1e-6)
        wanted = labels[0].nonzero().flatten()[0]  # a wanted object's token changes that image
        objects.object_tokens.table[wanted] += 5.0
        assert not torch.allclose(objects(x_t, timesteps, labels)[0], before[0], atol=1e-4)
        null = torch.zeros_like(labels)  # the null row attends to the null token alone (no object is unmasked)
        assert torch.isfinite(objects(x_t, timesteps, null)).all()
    trace = dict(shape_trace(objects))
    assert trace["down[1].object_attention[0]"] == (1, 32, SIZE // 2, SIZE // 2) and trace["object_tokens"] == (25, 64)


def test_object_attention_settings_are_checked():
    with pytest.raises(ValueError, match="object_attention_levels has 1 entries"):
        build_model(tiny_model_config(object_attention_levels=(True,)), SIZE)
    for changes in ({"backend": "diffusers"}, {"conditioning": "channels"}, {"num_classes": 0}):
        with pytest.raises(ValueError, match="object_attention_levels needs model.backend = 'compact'"):
            build_model(tiny_model_config(object_attention_levels=(False, True), **changes), SIZE)
