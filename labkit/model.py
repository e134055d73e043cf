"""The conditional UNet: ε_θ(x_t, t, labels) with the 24-object multi-hot label as condition.

Two backends behind one interface, both built by :func:`build_model`::

    model(x_t, timesteps, labels) -> (B, 3, S, S)
    # x_t (B, 3, S, S) float, timesteps (B,) long, labels (B, 24) float multi-hot

* ``"diffusers"``: diffusers' ``UNet2DModel`` with ``class_embed_type="identity"`` and a
  :class:`LabelEmbedding` in front of it, so the label's embedding is added to the time
  embedding. (``UNet2DModel`` silently ignores ``class_labels`` unless ``class_embed_type``
  is set; ``tests/test_model.py`` checks that a changed label changes the output.)
* ``"compact"``: :class:`CompactUNet`, written out here and walked through in notebook 03.

Conditioning (``ModelConfig.conditioning``):

* ``"embedding"`` (default): the label's embedding is added to the time embedding, which
  every residual block receives. The **all-zero label row is the null condition** of
  classifier-free guidance: :class:`LabelEmbedding` maps it to a learned null vector.
* ``"channels"``: the ablation that feeds the 24-dim multi-hot as 24 extra constant input
  channels (no label embedding); the null condition is then 24 zero channels.

Object attention (``ModelConfig.object_attention_levels``, compact backend): the embedding above is
one vector for the whole image, so a model must work out from the noise which position takes
which object's colour and shape. With object attention, the blocks of the flagged levels also
attend to the image's object tokens (:class:`ObjectTokens`: one learned vector per wanted object,
or the null token), so each position can read one object. Its output projections start at zero,
so it can be added to a trained model (``train.init_from``) without changing what it draws.
"""

from __future__ import annotations

import contextlib
import math
from typing import get_args

import torch
import torch.nn.functional as F
from torch import nn

from labkit.config import Backend, Conditioning, ConfigError, model_problems

BACKENDS = get_args(Backend)
CONDITIONINGS = get_args(Conditioning)


# ---- conditioning ------------------------------------------------------------------------------
def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps: (B,) -> (B, dim) float32, [cos | sin] halves
    (diffusers' ``Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)``)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    angles = timesteps.float()[:, None] * exponent.exp()[None, :]  # (B, dim/2)
    embedding = torch.cat([angles.cos(), angles.sin()], dim=-1)  # (B, dim)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class LabelEmbedding(nn.Module):
    """Multi-hot labels (B, num_classes) -> (B, dim).

    A row's embedding is the sum of its objects' learned vectors (a bias-free Linear on the
    multi-hot). An all-zero row, the null condition of classifier-free guidance, gets its own
    learned vector ``null`` instead (a zero vector would tie "no condition" to "no objects").
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.objects = nn.Linear(num_classes, dim, bias=False)
        self.null = nn.Parameter(torch.randn(dim) * 0.1)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        embedding = self.objects(labels)  # (B, dim)
        is_null = (labels == 0).all(dim=1, keepdim=True)  # (B, 1)
        return torch.where(is_null, self.null.to(embedding.dtype), embedding)


# ---- the common interface ------------------------------------------------------------------------
class ConditionalUNet(nn.Module):
    """Base of every backend: ``forward(x_t (B,3,S,S), timesteps (B,) long, labels (B,24)) -> (B,3,S,S)``.

    ``timesteps`` may also be an int or a 0-d tensor (one timestep for the whole batch).
    An all-zero label row is the null (unconditional) condition.
    """

    def __init__(self, model_config, image_size: int):
        super().__init__()
        self.model_config = model_config
        self.image_size = image_size
        self.num_classes = model_config.num_classes
        self.conditioning = model_config.conditioning

    def _check_inputs(self, x_t: torch.Tensor, timesteps, labels: torch.Tensor) -> torch.Tensor:
        """Validate shapes; returns timesteps as a (B,) long tensor."""
        if x_t.dim() != 4 or x_t.shape[1] != 3:
            raise ValueError(f"x_t must have shape (B, 3, H, W), got {tuple(x_t.shape)}")
        batch = x_t.shape[0]
        if self.num_classes == 0 or labels is None:  # unconditional model: no label input at all
            if self.num_classes or labels is not None:
                raise ValueError(
                    f"this model has num_classes={self.num_classes}: pass labels=None exactly when "
                    "model.num_classes = 0 (unconditional), else (B, num_classes) labels"
                )
        elif labels.shape != (batch, self.num_classes):
            raise ValueError(
                f"labels must be multi-hot of shape ({batch}, {self.num_classes}) for a batch of {batch}, "
                f"got {tuple(labels.shape)}; encode label lists with LabelSpace.encode"
            )
        if not torch.is_tensor(timesteps) or timesteps.dim() == 0:
            return torch.full((batch,), int(timesteps), dtype=torch.long, device=x_t.device)
        if timesteps.shape != (batch,):
            raise ValueError(f"timesteps must have shape ({batch},), got {tuple(timesteps.shape)}")
        return timesteps

    def stages(self) -> list[tuple[str, nn.Module]]:
        """The named modules whose outputs :func:`shape_trace` reports, in forward order."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"backend={self.model_config.backend!r}, conditioning={self.conditioning!r}, image_size={self.image_size}"


def label_channels(labels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 24) multi-hot -> (B, 24, H, W) constant planes (the ``"channels"`` conditioning)."""
    return labels[:, :, None, None].expand(-1, -1, height, width)


# ---- the compact UNet ------------------------------------------------------------------------------
class ResBlock(nn.Module):
    """GroupNorm → SiLU → 3x3 conv → GroupNorm, scale-shift by the embedding → SiLU → dropout
    → 3x3 conv, plus a (1x1 conv) skip. (B, C_in, H, W), (B, E) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embedding_proj = nn.Linear(embedding_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        scale, shift = self.embedding_proj(F.silu(embedding))[:, :, None, None].chunk(2, dim=1)  # (B, C_out, 1, 1) x2
        h = self.norm2(h) * (1 + scale) + shift  # where time and label enter
        h = self.conv2(self.dropout(F.silu(h)))  # (B, C_out, H, W)
        return h + self.skip(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions (F.scaled_dot_product_attention),
    with GroupNorm before and a residual connection. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, head_dim: int, groups: int):
        super().__init__()
        if channels % head_dim:
            raise ValueError(
                f"attention_head_dim={head_dim} must divide the {channels} channels of an attention level; "
                f"change model.attention_head_dim or model.base_channels"
            )
        self.heads = channels // head_dim
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        qkv = self.qkv(self.norm(x)).reshape(batch, 3, self.heads, channels // self.heads, height * width)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # (B, heads, H·W, head_dim) each
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, H·W, head_dim)
        h = h.transpose(-1, -2).reshape(batch, channels, height, width)  # (B, C, H, W)
        return x + self.out(h)


class ObjectTokens(nn.Module):
    """The image's objects as attention tokens: one learned vector per class plus one for the null condition.

    Every image shares the (num_classes + 1, dim) table; its (B, num_classes + 1) bool mask keeps the
    tokens of the objects it asks for (the null token alone for the all-zero null row).
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.table = nn.Parameter(torch.randn(num_classes + 1, dim) * 0.02)

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        present = labels > 0  # (B, num_classes)
        is_null = ~present.any(dim=1, keepdim=True)  # (B, 1)
        return self.table, torch.cat([present, is_null], dim=1)  # (T, dim), (B, T)


class ObjectAttention(nn.Module):
    """Cross-attention from every position to the image's object tokens, with GroupNorm before and a
    residual connection; the output projection starts at zero, so adding it to a trained model
    changes nothing until it is trained. (B, C, H, W), tokens (T, D), mask (B, T) -> (B, C, H, W)."""

    def __init__(self, channels: int, token_dim: int, head_dim: int, groups: int):
        super().__init__()
        self.heads = channels // head_dim
        self.norm = nn.GroupNorm(groups, channels)
        self.query = nn.Conv2d(channels, channels, 1)
        self.key_value = nn.Linear(token_dim, 2 * channels)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        head_dim = channels // self.heads
        q = self.query(self.norm(x)).reshape(batch, self.heads, head_dim, height * width).transpose(-1, -2)
        k, v = self.key_value(tokens).reshape(len(tokens), 2, self.heads, head_dim).permute(1, 2, 0, 3)  # (heads, T, d)
        k, v = k.to(q.dtype).expand(batch, -1, -1, -1), v.to(q.dtype).expand(batch, -1, -1, -1)  # (B, heads, T, d)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # (B, heads, H·W, head_dim)
        return x + self.out(h.transpose(-1, -2).reshape(batch, channels, height, width))


class Downsample(nn.Module):
    """3x3 conv with stride 2: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


# Which rows (or columns) of a 3x3 kernel fall on each low-resolution offset after a nearest x2
# upsampling: output row 2i + phase reads the upsampled rows 2i + phase - 1, 2i + phase, 2i + phase + 1,
# i.e. the low-resolution rows (i - 1, i, i) for phase 0 and (i, i, i + 1) for phase 1.
_PHASE_TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],  # phase 0: offsets -1, 0
                            [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # phase 1: offsets 0, +1   (phase, 2 taps, 3 rows)


def upsample_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv3x3(nearest_upsample_x2(x))`` computed at the low resolution ("sub-pixel" form).

    Each of the four output phases (row parity, column parity) of a 3x3 conv over a nearest-x2
    upsampled image is a 2x2 conv of the original image whose taps are sums of the 3x3 taps.
    Same result (up to float rounding), 4/9 of the multiply-adds, no 4x larger intermediate.
    x: (B, C_in, H, W); weight: (C_out, C_in, 3, 3) -> (B, C_out, 2H, 2W).
    """
    batch, _, height, width = x.shape
    out_channels, in_channels = weight.shape[:2]
    with torch.autocast(x.device.type, enabled=False):  # fold the taps in full precision
        taps = _PHASE_TAPS.to(device=weight.device, dtype=weight.dtype)
        kernels = torch.einsum("apr,oirs,bqs->aboipq", taps, weight, taps)  # (2, 2, C_out, C_in, 2, 2)
    kernels = kernels.reshape(4 * out_channels, in_channels, 2, 2)
    bias = bias.repeat(4) if bias is not None else None
    out = F.conv2d(F.pad(x, (1, 1, 1, 1)), kernels, bias)  # (B, 4 C_out, H + 1, W + 1)
    out = out.view(batch, 2, 2, out_channels, height + 1, width + 1)
    # phase (a, b) starts a rows and b columns into the padded grid; interleave into (2H, 2W)
    rows = [torch.stack([out[:, a, b, :, a : a + height, b : b + width] for b in (0, 1)], dim=-1) for a in (0, 1)]
    result = torch.stack(rows, dim=-3).reshape(batch, out_channels, 2 * height, 2 * width)
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        result = result.contiguous(memory_format=torch.channels_last)  # keep a channels_last model in its layout
    return result


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv: (B, C_in, H, W) -> (B, C_out, 2H, 2W).

    From ``subpixel_min_size`` (8x8) inputs up it runs as :func:`upsample_conv` (the same maths at
    the low resolution: measured 2.6x faster for forward + backward at 16x16 -> 32x32 under bf16
    on a CPU); below that the plain form is faster. See :func:`plain_upsampling`.
    """

    SUBPIXEL_MIN_SIZE = 8

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.subpixel_min_size = self.SUBPIXEL_MIN_SIZE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) >= self.subpixel_min_size:
            return upsample_conv(x, self.conv.weight, self.conv.bias)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def use_subpixel_upsampling(model: nn.Module, enabled: bool = True) -> None:
    """Switch every :class:`Upsample` of ``model`` to the sub-pixel form (the default, from 8x8
    inputs up) or to the plain upsample-then-conv form (``enabled=False``). Same maths either way."""
    for module in model.modules():
        if isinstance(module, Upsample):
            module.subpixel_min_size = Upsample.SUBPIXEL_MIN_SIZE if enabled else math.inf


@contextlib.contextmanager
def plain_upsampling(model: nn.Module):
    """Within the block, every :class:`Upsample` of ``model`` runs as upsample-then-conv (for FLOP
    counts in the model's plain form, and for benchmarks of the unoptimised model)."""
    modules = [module for module in model.modules() if isinstance(module, Upsample)]
    saved = [module.subpixel_min_size for module in modules]
    use_subpixel_upsampling(model, enabled=False)
    try:
        yield model
    finally:
        for module, size in zip(modules, saved):
            module.subpixel_min_size = size


class Level(nn.Module):
    """One resolution level of the UNet: ResBlocks, each followed by attention when flagged,
    then an optional resampler (Downsample on the way down, Upsample on the way up)."""

    def __init__(self, blocks: list[ResBlock], attention: list[nn.Module], resample: nn.Module | None,
                 object_attention: list[nn.Module] | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attention = nn.ModuleList(attention)
        self.resample = resample if resample is not None else nn.Identity()
        self.object_attention = nn.ModuleList(object_attention or [nn.Identity() for _ in blocks])


def object_attention_weights(model: nn.Module) -> set[str]:
    """The state-dict keys of ``model``'s object tokens and object attention (what ``train.init_from`` may add)."""
    return {
        f"{name}.{key}" for name, module in model.named_modules() if isinstance(module, (ObjectTokens, ObjectAttention))
        for key in module.state_dict()
    }


def attend_to_objects(module: nn.Module, h: torch.Tensor, objects) -> torch.Tensor:
    """``module(h, *objects)`` where ``module`` is an :class:`ObjectAttention`; ``h`` unchanged otherwise."""
    return module(h, *objects) if isinstance(module, ObjectAttention) else h


class CompactUNet(ConditionalUNet):
    """A from-scratch conditional UNet (the lab's ``"compact"`` backend).

    With channels c_i = base_channels · channel_mults[i] and L = layers_per_block:

    * embedding: sinusoidal(t) (c_0) → Linear → SiLU → Linear (E = 4 c_0), plus the label
      embedding (``conditioning="embedding"``); every ResBlock gets it as scale and shift;
    * ``conv_in``: 3 (+24 label channels) → c_0, 3x3;
    * down level i: L ResBlocks (+ attention where ``attention_levels[i]``), each output kept
      as a skip; a stride-2 conv after every level but the last;
    * middle: ResBlock, attention (when the last level has attention), ResBlock;
    * up level i (deepest first): L ResBlocks on [h, skip] concatenated (+ attention), then
      nearest x2 + conv to c_{i-1} for every level but the first;
    * ``conv_out``: GroupNorm → SiLU → 3x3 conv → 3 channels.
    """

    def __init__(self, model_config, image_size: int):
        super().__init__(model_config, image_size)
        cfg = model_config
        channels = [cfg.base_channels * mult for mult in cfg.channel_mults]
        embedding_dim = 4 * channels[0]
        groups, dropout = cfg.norm_groups, cfg.dropout

        # conditioning: time embedding MLP, plus the label embedding
        self.time_dim = channels[0]
        self.time_mlp = nn.Sequential(
            nn.Linear(channels[0], embedding_dim), nn.SiLU(), nn.Linear(embedding_dim, embedding_dim)
        )
        self.label_embedding = (
            LabelEmbedding(cfg.num_classes, embedding_dim) if self.conditioning == "embedding" and cfg.num_classes else None
        )
        in_channels = 3 + (cfg.num_classes if self.conditioning == "channels" else 0)  # num_classes = 0: no label input
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)

        def attention(level: int, width: int) -> nn.Module:
            return SelfAttention(width, cfg.attention_head_dim, groups) if cfg.attention_levels[level] else nn.Identity()

        object_levels = cfg.object_levels()
        self.object_tokens = ObjectTokens(cfg.num_classes, embedding_dim) if any(object_levels) else None

        def object_attention(level: int, width: int) -> nn.Module:
            if not object_levels[level]:
                return nn.Identity()
            return ObjectAttention(width, embedding_dim, cfg.attention_head_dim, groups)

        # down path
        self.down = nn.ModuleList()
        skip_channels, width = [], channels[0]
        for i, out in enumerate(channels):
            blocks, attentions, objects = [], [], []
            for _ in range(cfg.layers_per_block):
                blocks.append(ResBlock(width, out, embedding_dim, groups, dropout))
                attentions.append(attention(i, out))
                objects.append(object_attention(i, out))
                width = out
                skip_channels.append(width)
            last = i == len(channels) - 1
            self.down.append(Level(blocks, attentions, None if last else Downsample(width), objects))

        # middle
        self.mid_block1 = ResBlock(width, width, embedding_dim, groups, dropout)
        self.mid_attention = attention(len(channels) - 1, width)
        self.mid_object_attention = object_attention(len(channels) - 1, width)
        self.mid_block2 = ResBlock(width, width, embedding_dim, groups, dropout)

        # up path (deepest level first)
        self.up = nn.ModuleList()
        for i in reversed(range(len(channels))):
            out = channels[i]
            blocks, attentions, objects = [], [], []
            for _ in range(cfg.layers_per_block):
                blocks.append(ResBlock(width + skip_channels.pop(), out, embedding_dim, groups, dropout))
                attentions.append(attention(i, out))
                objects.append(object_attention(i, out))
                width = out
            resample = Upsample(width, channels[i - 1]) if i > 0 else None
            if i > 0:
                width = channels[i - 1]
            self.up.append(Level(blocks, attentions, resample, objects))

        self.norm_out = nn.GroupNorm(groups, width)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def embed(self, timesteps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B,) timesteps and (B, 24) labels -> the conditioning embedding (B, E)."""
        embedding = self.time_mlp(timestep_embedding(timesteps, self.time_dim))  # (B, E)
        if self.label_embedding is not None:
            embedding = embedding + self.label_embedding(labels)  # (B, E)
        return embedding

    def forward(self, x_t: torch.Tensor, timesteps, labels: torch.Tensor) -> torch.Tensor:
        timesteps = self._check_inputs(x_t, timesteps, labels)
        embedding = self.embed(timesteps, labels)  # (B, E)
        if self.conditioning == "channels" and labels is not None:
            x_t = torch.cat([x_t, label_channels(labels.to(x_t.dtype), *x_t.shape[-2:])], dim=1)  # (B, 27, S, S)
        objects = self.object_tokens(labels) if self.object_tokens is not None else None  # (T, E), (B, T)
        h = self.conv_in(x_t)  # (B, c_0, S, S)
        skips = []
        for level in self.down:
            for block, attention, object_attention in zip(level.blocks, level.attention, level.object_attention):
                h = attend_to_objects(object_attention, attention(block(h, embedding)), objects)  # (B, c_i, S_i, S_i)
                skips.append(h)
            h = level.resample(h)  # (B, c_i, S_i / 2, S_i / 2) except at the last level
        h = attend_to_objects(self.mid_object_attention, self.mid_attention(self.mid_block1(h, embedding)), objects)
        h = self.mid_block2(h, embedding)
        for level in self.up:
            for block, attention, object_attention in zip(level.blocks, level.attention, level.object_attention):
                h = attention(block(torch.cat([h, skips.pop()], dim=1), embedding))  # (B, c_i, S_i, S_i)
                h = attend_to_objects(object_attention, h, objects)
            h = level.resample(h)  # (B, c_{i-1}, 2 S_i, 2 S_i) except at the first level
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 3, S, S)

    def stages(self) -> list[tuple[str, nn.Module]]:
        def level_stages(side: str, index: int, level: Level) -> list[tuple[str, nn.Module]]:
            named = []
            for j, (block, attention, objects) in enumerate(zip(level.blocks, level.attention, level.object_attention)):
                named.append((f"{side}[{index}].block[{j}]", block))
                named.append((f"{side}[{index}].attention[{j}]", attention))
                named.append((f"{side}[{index}].object_attention[{j}]", objects))
            named.append((f"{side}[{index}].{type(level.resample).__name__.lower()}", level.resample))
            return named

        named = [("time_mlp", self.time_mlp), ("label_embedding", self.label_embedding), ("object_tokens", self.object_tokens),
                 ("conv_in", self.conv_in)]
        for i, level in enumerate(self.down):
            named += level_stages("down", i, level)
        named += [("mid.block1", self.mid_block1), ("mid.attention", self.mid_attention),
                  ("mid.object_attention", self.mid_object_attention), ("mid.block2", self.mid_block2)]
        for k, level in enumerate(self.up):  # deepest first; named by resolution level
            named += level_stages("up", len(self.up) - 1 - k, level)
        named.append(("conv_out", self.conv_out))
        return [(name, module) for name, module in named if module is not None and not isinstance(module, nn.Identity)]


# ---- the diffusers backend ---------------------------------------------------------------------------
class DiffusersUNet(ConditionalUNet):
    """diffusers ``UNet2DModel`` conditioned on the multi-hot label.

    block_out_channels = base_channels · channel_mults; ``AttnDownBlock2D`` / ``AttnUpBlock2D``
    where ``attention_levels`` is set, else ``DownBlock2D`` / ``UpBlock2D``; mid-block attention
    when the last level has attention. With ``conditioning="embedding"`` the label goes
    through :class:`LabelEmbedding` (to the time-embedding width 4 · c_0) and enters
    ``UNet2DModel`` as ``class_labels`` with ``class_embed_type="identity"``, i.e. it is added
    to the time embedding. With ``"channels"`` the UNet takes 3 + 24 input channels.
    """

    def __init__(self, model_config, image_size: int):
        super().__init__(model_config, image_size)
        from diffusers import UNet2DModel

        cfg = model_config
        channels = tuple(cfg.base_channels * mult for mult in cfg.channel_mults)
        embedding_dim = 4 * channels[0]
        down_types = tuple("AttnDownBlock2D" if attn else "DownBlock2D" for attn in cfg.attention_levels)
        up_types = tuple("AttnUpBlock2D" if attn else "UpBlock2D" for attn in reversed(cfg.attention_levels))
        embedding = self.conditioning == "embedding" and cfg.num_classes > 0  # num_classes = 0: unconditional
        self.unet = UNet2DModel(
            sample_size=image_size,
            in_channels=3 if embedding else 3 + cfg.num_classes,
            out_channels=3,
            block_out_channels=channels,
            down_block_types=down_types,
            up_block_types=up_types,
            layers_per_block=cfg.layers_per_block,
            attention_head_dim=cfg.attention_head_dim,
            norm_num_groups=cfg.norm_groups,
            dropout=cfg.dropout,
            add_attention=bool(cfg.attention_levels[-1]),
            class_embed_type="identity" if embedding else None,
        )
        self.label_embedding = LabelEmbedding(cfg.num_classes, embedding_dim) if embedding else None

    def forward(self, x_t: torch.Tensor, timesteps, labels: torch.Tensor) -> torch.Tensor:
        timesteps = self._check_inputs(x_t, timesteps, labels)
        if self.label_embedding is not None:
            return self.unet(x_t, timesteps, class_labels=self.label_embedding(labels)).sample
        if labels is None:  # unconditional
            return self.unet(x_t, timesteps).sample
        x_t = torch.cat([x_t, label_channels(labels.to(x_t.dtype), *x_t.shape[-2:])], dim=1)  # (B, 27, S, S)
        return self.unet(x_t, timesteps).sample

    def stages(self) -> list[tuple[str, nn.Module]]:
        unet = self.unet
        named = [("time_embedding", unet.time_embedding)]
        if self.label_embedding is not None:
            named.append(("label_embedding", self.label_embedding))
        named.append(("conv_in", unet.conv_in))
        named += [(f"down_blocks[{i}] {type(b).__name__}", b) for i, b in enumerate(unet.down_blocks)]
        named.append(("mid_block", unet.mid_block))
        named += [(f"up_blocks[{i}] {type(b).__name__}", b) for i, b in enumerate(unet.up_blocks)]
        named.append(("conv_out", unet.conv_out))
        return named


# ---- building and inspecting -------------------------------------------------------------------------
def check_model_config(model_config, image_size: int) -> None:
    """Raise a ValueError naming the setting to change when ``model_config`` cannot be built."""
    problems = model_problems(model_config, image_size)
    if problems:
        raise ConfigError("; ".join(problems))


def build_model(model_config, image_size: int) -> ConditionalUNet:
    """The conditional UNet for ``model_config`` (a :class:`labkit.config.ModelConfig`) at
    ``image_size`` x ``image_size``.

    Returns a :class:`ConditionalUNet` whose ``forward(x_t (B,3,S,S), timesteps (B,) long,
    labels (B,24) multi-hot) -> (B,3,S,S)``. The all-zero label row is the null condition
    for classifier-free guidance (a learned null embedding with ``conditioning="embedding"``).
    """
    check_model_config(model_config, image_size)
    if model_config.backend == "diffusers":
        return DiffusersUNet(model_config, image_size)
    return CompactUNet(model_config, image_size)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flops_per_image(model: ConditionalUNet, image_size: int | None = None, num_classes: int = 24) -> int:
    """Forward FLOPs for one image (multiply-adds count 2), by ``torch.utils.flop_counter``.

    Counts convolutions, matrix products and attention (norms and activations are not
    counted; they are memory-bound and small in FLOPs), of the model in its plain form
    (:func:`plain_upsampling`: the sub-pixel upsampling does fewer). A training step costs
    about 3x this per image (forward + backward); classifier-free guidance doubles a sampling step.
    """
    from torch.utils.flop_counter import FlopCounterMode

    image_size = image_size or model.image_size
    parameter = next(model.parameters())
    x_t = torch.zeros(1, 3, image_size, image_size, device=parameter.device)
    labels = None
    if getattr(model, "num_classes", num_classes):
        labels = torch.zeros(1, model.num_classes, device=parameter.device)
        labels[0, 0] = 1.0
    timesteps = torch.zeros(1, dtype=torch.long, device=parameter.device)
    # CPU attention (``_scaled_dot_product_flash_attention_for_cpu``) has no formula in torch
    custom = {}
    cpu_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_attention is not None:
        custom[cpu_attention] = _cpu_attention_flops
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), plain_upsampling(model), FlopCounterMode(display=False, custom_mapping=custom) as counter:
            model(x_t, timesteps, labels)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def shape_trace(
    model: ConditionalUNet, image_size: int | None = None, batch: int = 1, timestep: int = 0
) -> list[tuple[str, tuple[int, ...]]]:
    """Run one forward pass and return ``(stage name, output shape)`` in the order the stages
    ran (forward hooks on :meth:`ConditionalUNet.stages`); input and output included."""
    image_size = image_size or model.image_size
    parameter = next(model.parameters())
    x_t = torch.zeros(batch, 3, image_size, image_size, device=parameter.device)
    labels = torch.zeros(batch, model.num_classes, device=parameter.device)
    labels[:, 0] = 1.0
    trace: list[tuple[str, tuple[int, ...]]] = [("x_t (input)", tuple(x_t.shape)), ("labels (input)", tuple(labels.shape))]

    def hook(name):
        def record(module, inputs, output):
            output = output[0] if isinstance(output, tuple) else output
            trace.append((name, tuple(output.shape)))

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.stages()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(x_t, torch.full((batch,), timestep, device=parameter.device), labels)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    trace.append(("output", tuple(output.shape)))
    return trace


def format_trace(trace: list[tuple[str, tuple[int, ...]]]) -> str:
    """A two-column text table of a :func:`shape_trace`."""
    width = max(len(name) for name, _ in trace)
    return "\n".join(f"{name:<{width}}  {tuple(shape)}" for name, shape in trace)


def describe(model: ConditionalUNet) -> str:
    """One line: backend, conditioning, image size, level widths and parameter count."""
    cfg = model.model_config
    widths = [cfg.base_channels * mult for mult in cfg.channel_mults]
    attention = [size for size, flag in zip(_level_sizes(model.image_size, len(widths)), cfg.attention_levels) if flag]
    return (
        f"{cfg.backend} UNet, {cfg.conditioning} conditioning, {model.image_size}x{model.image_size}, "
        f"channels {widths}, {cfg.layers_per_block} ResBlock(s) per level, attention at "
        f"{', '.join(f'{s}x{s}' for s in attention) or 'no level'}, {count_parameters(model):,} parameters"
    )


def _level_sizes(image_size: int, levels: int) -> list[int]:
    return [image_size // 2**i for i in range(levels)]
