"""The latent-diffusion UNet (openaimodel layout) with checkpoint-compatible module names.

Module paths reproduce the official ``model.diffusion_model.*`` keys (without that prefix) for any
:class:`~codec.config.UNetConfig`. Every attention level holds a ResBlock, a self-attention
SpatialTransformer and a cross-attention SpatialTransformer. The cross-attention keys and values
depend only on the conditioning, so :meth:`UNet.encode_context` projects them once and a sampler
reuses them for every step (identical numbers: the same projections, computed once).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codec.config import POSITION_DIM, UNetConfig
from codec.norm import GroupNorm32

NORM_GROUPS = 32


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """x [B, C, H, W] in channels-last memory order; the UNet's activations then stay in it.

    The transformers' [B, H*W, C] token views then need no copies, and oneDNN's convs run faster:
    a guided step of the official UNet takes about 6 % less time on CPU; results agree to float32 rounding.
    """
    return x.contiguous(memory_format=torch.channels_last)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Integer timesteps [B] -> float32 [B, dim] = [cos(t * f_k) || sin(t * f_k)], f_k = e^(-ln(P) k / (dim/2))."""
    half = dim // 2
    arange = torch.arange(half, dtype=torch.float32, device=timesteps.device)
    frequencies = torch.exp(-math.log(max_period) * arange / half)
    angles = timesteps[:, None].float() * frequencies[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class ResBlock(nn.Module):
    """GN-SiLU-conv, + Linear(SiLU(emb)), GN-SiLU-conv, plus a 1x1-conv or identity skip.

    x [B, channels, H, W], emb [B, emb_channels] -> [B, out_channels, H, W].
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            GroupNorm32(NORM_GROUPS, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        # Index 2 is the official Dropout(p=0); kept as a placeholder so the conv stays at index 3.
        self.out_layers = nn.Sequential(
            GroupNorm32(NORM_GROUPS, out_channels),
            nn.SiLU(),
            nn.Identity(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    """3x3 stride-2 conv, padding 1: [B, C, H, W] -> [B, C, ceil(H/2), ceil(W/2)]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2, then a 3x3 conv: [B, C, H, W] -> [B, C, 2H, 2W]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    # "(h d)" with the head index outer, as the official rearrange.
    batch, length, width = x.shape
    return x.view(batch, length, heads, width // heads).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head attention with bias-free q/k/v, biased output, scale d_head^-0.5.

    Self-attention when ``context_dim`` is None (keys/values from the query input), else
    cross-attention over precomputed keys/values (see :meth:`project_context`).
    """

    def __init__(self, query_dim: int, heads: int, dim_head: int, context_dim: int | None = None) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim))

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context [B, L, context_dim] -> (keys, values), each [B, heads, L, d_head]."""
        return _split_heads(self.to_k(context), self.heads), _split_heads(self.to_v(context), self.heads)

    def forward(self, x: torch.Tensor, keys_values: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x [B, N, query_dim] (+ projected context, or None for self-attention) -> [B, N, query_dim]."""
        keys, values = keys_values if keys_values is not None else self.project_context(x)
        out = F.scaled_dot_product_attention(_split_heads(self.to_q(x), self.heads), keys, values)
        batch, _, length, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(batch, length, -1))


class GEGLU(nn.Module):
    """Linear dim -> 2*inner, then value * GELU(gate) with exact erf GELU: [.., dim] -> [.., inner]."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        gated = F.gelu(gate)
        if torch.is_grad_enabled():
            return value * gated
        # The same products, written into the fresh GELU output: out of place, a bf16 product with the
        # strided value chunk takes a slow CPU path (6.1 against 1.9 ms per [4, 1024, 128] call, 2 threads).
        return gated.mul_(value)


class FeedForward(nn.Module):
    """GEGLU(dim -> 4 dim) then Linear(4 dim -> dim); index 1 is the official Dropout(p=0)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-LN: x += attn1(LN x); x += attn2(LN x, context); x += FF(LN x). [B, N, dim] -> [B, N, dim].

    Without a context dimension attn2 is a second self-attention (the official extra_sa_layer).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None) -> None:
        super().__init__()
        self.attn1 = Attention(dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, heads, dim_head, context_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, keys_values: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), keys_values)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """GroupNorm(eps 1e-6), 1x1 proj_in, one TransformerBlock over H*W positions, 1x1 proj_out, residual.

    x [B, C, H, W] -> [B, C, H, W]. ``context_dim`` None: self-attention only.
    """

    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int | None) -> None:
        super().__init__()
        inner = heads * dim_head
        self.context_dim = context_dim
        self.norm = GroupNorm32(NORM_GROUPS, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(inner, heads, dim_head, context_dim)])
        self.proj_out = nn.Conv2d(inner, channels, 1)

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys/values of ``context`` [B, L, context_dim] for this transformer."""
        return self.transformer_blocks[0].attn2.project_context(context)

    def forward(self, x: torch.Tensor, keys_values: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x)
        # The 1x1 convs run as matmuls on the [B, H*W, C] token layout (no separate transposes).
        h = F.linear(h.flatten(2).transpose(1, 2), self.proj_in.weight.flatten(1), self.proj_in.bias)
        h = self.transformer_blocks[0](h, keys_values)
        h = F.linear(h, self.proj_out.weight.flatten(1), self.proj_out.bias)
        return x + h.transpose(1, 2).reshape(batch, channels, height, width)


@dataclass(frozen=True)
class EncodedContext:
    """Cross-attention keys/values for every cross-attention transformer, in forward order.

    Built by :meth:`UNet.encode_context`; ``batch`` is the number of conditioning rows. ``aligned``
    is the projected conditioning [B, aligned_context_channels, L] when the UNet concatenates it to
    its input (``UNetConfig.aligned_context_channels`` > 0), else None; ``prior`` the latent prior's
    estimate of the latent [B, in_channels, T, F] (``UNetConfig.latent_prior_width`` > 0), else None.
    """

    keys_values: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    batch: int
    aligned: torch.Tensor | None = None
    prior: torch.Tensor | None = None


@dataclass(frozen=True)
class TokenGrid:
    """How a decoder window's conditioning rows tile its latent.

    Rows come ``positions`` to a time step (one per frequency position, time-major: row n is step
    n // positions, position n % positions), ``steps`` time steps per window; a row covers
    latent_time / steps latent frames and latent_freq / positions latent frequency rows.
    """

    positions: int
    steps: int
    latent_time: int
    latent_freq: int

    def __post_init__(self) -> None:
        if min(self.positions, self.steps) < 1 or self.latent_time % self.steps or self.latent_freq % self.positions:
            raise ValueError(f"{self.steps} steps x {self.positions} positions do not tile a "
                             f"{self.latent_time} x {self.latent_freq} latent")

    @property
    def frames_per_step(self) -> int:
        return self.latent_time // self.steps

    @property
    def rows_per_position(self) -> int:
        return self.latent_freq // self.positions


class PriorBlock(nn.Module):
    """A residual bottleneck over the latent prior's (time step, frequency position) grid [B, W, S, P]:
    1x1 down to W/2, a 3x3 convolution dilated ``dilation`` times along time, 1x1 back up. The last
    convolution starts at zero, so a prior that gains blocks computes what it did until trained."""

    def __init__(self, width: int, dilation: int) -> None:
        super().__init__()
        inner = width // 2
        self.net = nn.Sequential(nn.GELU(), nn.Conv2d(width, inner, 1), nn.GELU(),
                                 nn.Conv2d(inner, inner, 3, padding=(dilation, 1), dilation=(dilation, 1)),
                                 nn.GELU(), nn.Conv2d(inner, width, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.net(hidden)


class LatentPrior(nn.Module):
    """Conditioning features [B, steps x positions, D] -> an estimate of the latent [B, C, T, F].

    The rows are laid on their (time step, frequency position) grid, mixed by a 3x3 convolution
    with their neighbours, and each row then predicts the latent block it covers, so a token's
    frequency position lands on latent frequency rows, not on latent frames.
    """

    def __init__(self, feature_dim: int, width: int, channels: int, grid: TokenGrid, residual_blocks: int = 0) -> None:
        super().__init__()
        self.grid, self.channels = grid, channels
        block = channels * grid.frames_per_step * grid.rows_per_position
        self.net = nn.Sequential(nn.Conv2d(feature_dim, width, 1), nn.GELU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, block, 1))
        # Dilations double along time (1, 2, 4, 8, 1, ...): with six blocks a cell sees +-19 time steps, not +-1
        # (about +-3 s in the small configs' 160-ms steps), since one syllable or note says little alone.
        self.blocks = nn.ModuleList(PriorBlock(width, 2 ** (k % 4)) for k in range(residual_blocks))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        grid, (batch, rows, width) = self.grid, features.shape
        if rows != grid.steps * grid.positions:
            raise ValueError(f"the latent prior reads {grid.steps * grid.positions} conditioning rows, got {rows}")
        cells = features.reshape(batch, grid.steps, grid.positions, width).permute(0, 3, 1, 2)
        hidden = self.net[:3](cells)
        for residual in self.blocks:
            hidden = residual(hidden)
        blocks = self.net[3:](hidden).reshape(batch, self.channels, grid.frames_per_step, grid.rows_per_position,
                                              grid.steps, grid.positions)
        return blocks.permute(0, 1, 4, 2, 5, 3).reshape(batch, self.channels, grid.latent_time, grid.latent_freq)


class UNetLevel(nn.Sequential):
    """One input/middle/output block: ResBlocks, SpatialTransformers and resamplers in order."""

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        emb: torch.Tensor,
        context: Iterator[tuple[torch.Tensor, torch.Tensor]],
        layers: slice = slice(None),
    ) -> torch.Tensor:
        """x [B, C, H, W], emb [B, E]; cross-attention transformers take the next keys/values of ``context``.

        ``layers`` runs only part of the block (the guidance pair splits one block in two).
        """
        for layer in self if layers == slice(None) else list(self)[layers]:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, next(context) if layer.context_dim is not None else None)
            else:
                x = layer(x)
        return x


class UNet(nn.Module):
    """The official UNetModel (v-prediction), for any :class:`UNetConfig` and conditioning width.

    forward(x [B, in_channels, T, F], timesteps int64 [B], context [B, L, context_dim] or an
    :class:`EncodedContext`) -> [B, out_channels, T, F]. T and F must be divisible by
    2^(len(channel_mult) - 1); with a latent prior, (T, F) must be the ``token_grid``'s latent size.
    """

    def __init__(self, cfg: UNetConfig, context_dim: int, token_grid: TokenGrid | None = None) -> None:
        super().__init__()
        if cfg.latent_prior_blocks and not cfg.latent_prior_width:
            raise ValueError("latent_prior_blocks > 0 needs a latent prior (latent_prior_width > 0)")
        if cfg.latent_prior_width and token_grid is None:
            raise ValueError("a UNet with a latent prior (latent_prior_width > 0) needs the token_grid")
        widths = [cfg.model_channels * mult for mult in cfg.channel_mult]
        if not cfg.channel_mult or cfg.num_res_blocks < 1:
            raise ValueError("the UNet needs at least one level and one ResBlock per level")
        bad = [w for w in widths if w % NORM_GROUPS or w % cfg.num_head_channels]
        if bad:
            raise ValueError(
                f"every UNet level width (model_channels * channel_mult = {widths}) must be a multiple of "
                f"{NORM_GROUPS} (GroupNorm groups) and of num_head_channels={cfg.num_head_channels}"
            )
        self.cfg = cfg
        self.context_dim = context_dim
        emb_channels = cfg.model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(cfg.model_channels, emb_channels), nn.SiLU(), nn.Linear(emb_channels, emb_channels)
        )

        def attention_pair(channels: int) -> list[nn.Module]:
            heads = channels // cfg.num_head_channels
            dim_head = channels // heads
            return [
                SpatialTransformer(channels, heads, dim_head, None),
                SpatialTransformer(channels, heads, dim_head, context_dim),
            ]

        prior_channels = cfg.in_channels if cfg.latent_prior_width else 0
        input_width = cfg.in_channels + cfg.aligned_context_channels + prior_channels
        self.input_blocks = nn.ModuleList([UNetLevel(nn.Conv2d(input_width, cfg.model_channels, 3, padding=1))])
        skip_widths = [cfg.model_channels]
        channels, factor = cfg.model_channels, 1
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers = [ResBlock(channels, emb_channels, width)]
                channels = width
                if factor in cfg.attention_resolutions:
                    layers += attention_pair(channels)
                self.input_blocks.append(UNetLevel(*layers))
                skip_widths.append(channels)
            if level != len(widths) - 1:
                self.input_blocks.append(UNetLevel(Downsample(channels)))
                skip_widths.append(channels)
                factor *= 2
        self.middle_block = UNetLevel(
            ResBlock(channels, emb_channels, channels),
            *attention_pair(channels),
            ResBlock(channels, emb_channels, channels),
        )
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(widths))):
            for index in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(channels + skip_widths.pop(), emb_channels, widths[level])]
                channels = widths[level]
                if factor in cfg.attention_resolutions:
                    layers += attention_pair(channels)
                if level and index == cfg.num_res_blocks:
                    layers.append(Upsample(channels))
                    factor //= 2
                self.output_blocks.append(UNetLevel(*layers))
        self.out = nn.Sequential(
            GroupNorm32(NORM_GROUPS, channels), nn.SiLU(), nn.Conv2d(channels, cfg.out_channels, 3, padding=1)
        )
        if cfg.aligned_context_channels:
            self.aligned_context = nn.Linear(context_dim, cfg.aligned_context_channels)
        self.token_grid = token_grid
        if cfg.latent_prior_width:  # positions are the grid itself: the prior reads the features only
            self.latent_prior = LatentPrior(context_dim - POSITION_DIM, cfg.latent_prior_width, cfg.in_channels,
                                            token_grid, cfg.latent_prior_blocks)
        self._cross_transformers = [
            m for m in self.modules() if isinstance(m, SpatialTransformer) and m.context_dim is not None
        ]
        # (input block, layer) of the first cross-attention: everything before it ignores the context.
        self._first_cross = next(
            ((b, i) for b, block in enumerate(self.input_blocks) for i, layer in enumerate(block)
             if isinstance(layer, SpatialTransformer) and layer.context_dim is not None),
            None,
        )

    @property
    def downsampling(self) -> int:
        """Total downsampling factor: latent T and F must be multiples of it."""
        return 2 ** (len(self.cfg.channel_mult) - 1)

    def encode_context(self, context: torch.Tensor) -> EncodedContext:
        """Project conditioning [B, L, context_dim] into every cross-attention layer's keys/values."""
        if context.dim() != 3 or context.shape[-1] != self.context_dim:
            raise ValueError(
                f"UNet context must be [batch, length, {self.context_dim}], got shape {tuple(context.shape)}"
            )
        keys_source = context
        if torch.is_autocast_enabled(context.device.type):
            # Cast once here, not in every layer's key and value projection (32 casts per decode officially).
            keys_source = context.to(torch.get_autocast_dtype(context.device.type))
        pairs = tuple(block.project_context(keys_source) for block in self._cross_transformers)
        aligned = self.aligned_context(context).transpose(1, 2) if self.cfg.aligned_context_channels else None
        prior = self.estimate_latents(context) if self.cfg.latent_prior_width else None
        return EncodedContext(keys_values=pairs, batch=context.shape[0], aligned=aligned, prior=prior)

    def estimate_latents(self, context: torch.Tensor) -> torch.Tensor:
        """The latent prior's estimate of the (scaled) latent [B, in_channels, T, F] from conditioning
        [B, L, context_dim]."""
        if not self.cfg.latent_prior_width:
            raise ValueError("this UNet has no latent prior (latent_prior_width is 0)")
        return self.latent_prior(context[..., : self.context_dim - POSITION_DIM])

    def _with_aligned_context(self, x: torch.Tensor, context: EncodedContext) -> torch.Tensor:
        """x [B, C, T, F] -> [B, C + A (+ C), T, F]: the aligned rows [B, A, L] averaged (or repeated)
        to T frames and broadcast over F, then the latent prior's estimate."""
        parts = [x]
        if context.aligned is not None:
            frames = F.adaptive_avg_pool1d(context.aligned.to(x.dtype), x.shape[2])
            parts.append(frames[..., None].expand(-1, -1, -1, x.shape[3]))
        if context.prior is not None:
            parts.append(context.prior.to(x.dtype))
        return torch.cat(parts, dim=1) if len(parts) > 1 else x

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | EncodedContext
    ) -> torch.Tensor:
        """Predict v for noisy latents x [B, C, T, F] at integer timesteps [B] -> [B, C, T, F]."""
        if not isinstance(context, EncodedContext):
            context = self.encode_context(context)
        self._check_inputs(x, timesteps, context)
        x = _channels_last(x)
        emb = self.time_embed(timestep_embedding(timesteps, self.cfg.model_channels).to(x.dtype))
        h = self._with_aligned_context(x, context)
        return self._from_input_block(0, h, emb, [], iter(context.keys_values))

    def forward_guidance_pair(self, x: torch.Tensor, timesteps: torch.Tensor, context: EncodedContext) -> torch.Tensor:
        """v for the batch [x; x] at [t; t] under a 2B-row context [uncond; cond] -> [2B, C, T, F].

        Equals ``forward(cat([x, x]), cat([t, t]), context)``, but the layers before the first
        cross-attention (they never see the context) run once on the B rows: the full-resolution
        ResBlocks and the first self-attention pair, about a tenth of the official UNet's work.
        """
        if context.aligned is not None or context.prior is not None or self._first_cross is None:
            # the input itself depends on the context
            return self(torch.cat([x, x]), torch.cat([timesteps, timesteps]), context)
        if context.batch != 2 * x.shape[0]:
            raise ValueError(f"guidance context batch {context.batch} must be twice the latent batch {x.shape[0]}")
        self._check_inputs(x, timesteps, EncodedContext(context.keys_values, x.shape[0]))
        emb = self.time_embed(timestep_embedding(timesteps, self.cfg.model_channels).to(x.dtype))
        block, layer = self._first_cross
        h, skips, nothing = _channels_last(x), [], iter(())
        for shared in self.input_blocks[:block]:
            h = shared(h, emb, nothing)
            skips.append(h)
        h = self.input_blocks[block](h, emb, nothing, slice(None, layer))

        def pair(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t, t])

        pending = iter(context.keys_values)
        h = self.input_blocks[block](pair(h), pair(emb), pending, slice(layer, None))
        return self._from_input_block(block + 1, h, pair(emb), [pair(s) for s in skips] + [h], pending)

    def _from_input_block(
        self,
        first: int,
        h: torch.Tensor,
        emb: torch.Tensor,
        skips: list[torch.Tensor],
        pending: Iterator[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """Run input blocks ``first``.. (``skips`` holds the earlier blocks' outputs), middle and output."""
        for block in self.input_blocks[first:]:
            h = block(h, emb, pending)
            skips.append(h)
        h = self.middle_block(h, emb, pending)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, pending)
        return self.out(h)

    def _check_inputs(self, x: torch.Tensor, timesteps: torch.Tensor, context: EncodedContext) -> None:
        if x.dim() != 4 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(
                f"UNet input must be [batch, {self.cfg.in_channels}, time, freq], got shape {tuple(x.shape)}"
            )
        step = self.downsampling
        if x.shape[2] % step or x.shape[3] % step:
            raise ValueError(f"latent time and freq sizes {tuple(x.shape[2:])} must be multiples of {step}")
        grid = self.token_grid
        if self.cfg.latent_prior_width and x.shape[2:] != (grid.latent_time, grid.latent_freq):
            raise ValueError(f"this UNet's latent prior makes {grid.latent_time} x {grid.latent_freq} latents, "
                             f"got {tuple(x.shape[2:])}")
        if timesteps.shape != (x.shape[0],) or timesteps.is_floating_point():
            raise ValueError(
                f"timesteps must be an integer tensor of shape [{x.shape[0]}], got "
                f"{timesteps.dtype} {tuple(timesteps.shape)}"
            )
        if context.batch != x.shape[0]:
            raise ValueError(f"context batch {context.batch} does not match latent batch {x.shape[0]}")
