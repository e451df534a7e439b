"""Semantic half of the SemantiCodec encoder: the AudioMAE ViT, patch concatenation and k-means tokens.

Module and parameter names follow the official ``encoder.ckpt`` (``audiomae.model.*``), so official
weights load with ``strict=True``. Shapes use S (segments), E (AudioMAE width), K (patches per token),
T = 512 / K (tokens per 10.24-s segment), F = E * K (feature width) and V (vocabulary size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codec.config import PATCHES_PER_SEGMENT, SEGMENT_FRAMES, AudioMAEConfig

MEL_BINS = 128
PATCH_GRID = (64, 8)  # (time, frequency) AudioMAE patches per 10.24-s segment
LAYER_NORM_EPS = 1e-6
# Keep the [rows, V] distance block of a nearest-codeword search under this many bytes.
DISTANCE_BLOCK_BYTES = 256 * 1024 * 1024


def sincos_table_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """MAE 1-D sin-cos table: [N] float64 positions -> [N, dim] float64 as [sin(p w_k) | cos(p w_k)]."""
    omega = torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def audiomae_position_table(dim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The official fixed AudioMAE positional table: [1, 1 + 512, dim] float32, CLS row all zeros.

    AudioMAE builds it with patch_hw = (8, 64), so patch i gets the coordinates (i // 64, i % 64):
    the first dim/2 channels encode i % 64 and the last dim/2 encode i // 64. That split does not
    follow the (time, frequency) = (i // 8, i % 8) patch layout; it is kept because checkpoints were
    trained with it.
    """
    if dim % 4 != 0:
        raise ValueError(f"positional table width must be a multiple of 4, got {dim}")
    index = torch.arange(PATCHES_PER_SEGMENT, dtype=torch.float64, device=device)
    columns = PATCH_GRID[0]  # the quirk: 64 "columns" per row, not the 8 frequency patches
    table = torch.cat(
        [sincos_table_1d(dim // 2, index % columns), sincos_table_1d(dim // 2, index // columns)],
        dim=1,
    )
    table = torch.cat([torch.zeros(1, dim, dtype=torch.float64, device=device), table], dim=0)
    return table.to(torch.float32).unsqueeze(0)


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: [S, 1, 1024, 128] -> [S, 512, E], token index 8 t + f."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.proj(image).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm layout): [S, N, D] -> [S, N, D]."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(query, key, value)  # scale head_dim ** -0.5
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class Mlp(nn.Module):
    """Two-layer GELU (exact erf) MLP: [..., D] -> [..., D]."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (timm ``Block`` without dropout or layer scale): [S, N, D] -> same."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AudioMAEViT(nn.Module):
    """AudioMAE masked-autoencoder ViT over one 10.24-s Kaldi fbank (official ``MaskedAutoencoderViT``).

    Only the encoder runs here. The MAE decoder modules (``decoder_*``, ``mask_token``) exist so that
    official checkpoints load strictly and so the model can later be pre-trained as an MAE.
    """

    def __init__(self, cfg: AudioMAEConfig) -> None:
        super().__init__()
        if SEGMENT_FRAMES % cfg.patch_size or MEL_BINS % cfg.patch_size:
            raise ValueError(f"patch_size {cfg.patch_size} does not tile a {SEGMENT_FRAMES}x{MEL_BINS} fbank")
        if (SEGMENT_FRAMES // cfg.patch_size, MEL_BINS // cfg.patch_size) != PATCH_GRID:
            raise ValueError(f"patch_size {cfg.patch_size} does not give the {PATCH_GRID} patch grid")
        if not cfg.averaged_blocks or not all(0 <= n < cfg.depth for n in cfg.averaged_blocks):
            raise ValueError(f"averaged_blocks {cfg.averaged_blocks} must name blocks in [0, {cfg.depth})")
        self.averaged_blocks = tuple(sorted(set(cfg.averaged_blocks)))
        num_tokens = PATCHES_PER_SEGMENT + 1

        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, cfg.embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=LAYER_NORM_EPS)

        self.decoder_embed = nn.Linear(cfg.embed_dim, cfg.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, num_tokens, cfg.decoder_embed_dim), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            Block(cfg.decoder_embed_dim, cfg.decoder_num_heads, cfg.mlp_ratio)
            for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(cfg.decoder_embed_dim, eps=LAYER_NORM_EPS)
        self.decoder_pred = nn.Linear(cfg.decoder_embed_dim, cfg.patch_size**2)

        with torch.no_grad():
            self.pos_embed.copy_(audiomae_position_table(cfg.embed_dim, self.pos_embed.device))
            self.decoder_pos_embed.copy_(
                audiomae_position_table(cfg.decoder_embed_dim, self.decoder_pos_embed.device)
            )
            nn.init.normal_(self.cls_token, std=0.02)
            nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised fbank [S, 1024, 128] float32 -> patch features [S, 512, E] (CLS dropped).

        The features are the mean of the final-LayerNorm outputs of ``averaged_blocks`` (official:
        blocks 9, 10, 11); later blocks are not run.
        """
        if fbank.dim() != 3 or tuple(fbank.shape[1:]) != (SEGMENT_FRAMES, MEL_BINS):
            raise ValueError(f"expected fbank segments [S, {SEGMENT_FRAMES}, {MEL_BINS}], got {list(fbank.shape)}")
        x = self.patch_embed(fbank.unsqueeze(1)) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        kept = []
        for index, block in enumerate(self.blocks[: self.averaged_blocks[-1] + 1]):
            x = block(x)
            if index in self.averaged_blocks:
                kept.append(self.norm(x))
        return torch.stack(kept, dim=0).mean(dim=0)[:, 1:]


class AudioMAE(nn.Module):
    """Holder that gives the ViT its official key prefix (``audiomae.model.*``)."""

    def __init__(self, cfg: AudioMAEConfig) -> None:
        super().__init__()
        self.model = AudioMAEViT(cfg)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised fbank [S, 1024, 128] -> patch features [S, 512, E]."""
        return self.model(fbank)


def tokens_per_time_step(concat_factor: int) -> int:
    """Semantic tokens per AudioMAE time step (one per frequency position): 8, 4, 4 for K = 1, 2, 4.

    Token ``n`` of a segment sits at frequency position ``n % tokens_per_time_step`` (see
    :func:`concat_patches`)."""
    if concat_factor not in (1, 2, 4):
        raise ValueError(f"concat_factor must be 1, 2 or 4, got {concat_factor}")
    return PATCH_GRID[1] // min(concat_factor, 2)


def concat_patches(features: torch.Tensor, concat_factor: int) -> torch.Tensor:
    """Join neighbouring AudioMAE patches into one token: [S, 512, E] -> [S, 512/K, E*K].

    K=1: unchanged. K=2: frequency pairs, token 4t+j = [patch(t,2j) | patch(t,2j+1)].
    K=4: 2x2 blocks, token 4i+j = [(2i,2j) | (2i,2j+1) | (2i+1,2j) | (2i+1,2j+1)].
    """
    if features.dim() != 3 or features.shape[1] != PATCHES_PER_SEGMENT:
        raise ValueError(f"expected AudioMAE features [S, {PATCHES_PER_SEGMENT}, E], got {list(features.shape)}")
    segments, _, width = features.shape
    time_patches, freq_patches = PATCH_GRID
    if concat_factor == 1:
        return features
    if concat_factor == 2:
        # Frequency pairs are adjacent in the 8t+f order, so this is a plain reshape.
        return features.reshape(segments, PATCHES_PER_SEGMENT // 2, 2 * width)
    if concat_factor == 4:
        grid = features.reshape(segments, time_patches // 2, 2, freq_patches // 2, 2, width)
        return grid.permute(0, 1, 3, 2, 4, 5).reshape(segments, PATCHES_PER_SEGMENT // 4, 4 * width)
    raise ValueError(f"concat_factor must be 1, 2 or 4, got {concat_factor}")


def nearest_codeword(
    x: torch.Tensor,
    codebook: torch.Tensor,
    euclidean: bool = False,
    block_bytes: int = DISTANCE_BLOCK_BYTES,
) -> torch.Tensor:
    """Index of the nearest codebook row for every row of x: [..., D] x [V, D] -> int64 [...].

    Distances are ||x||^2 + ||c||^2 - 2 x.c in float32 (the official formula), ties going to the
    first index. ``euclidean=True`` takes sqrt(clamp(d, 0)) first, as vector-quantize-pytorch does;
    that can merge near-ties, so it is kept for exact acoustic-token parity. Rows are processed in
    blocks so the [rows, V] distance matrix stays under ``block_bytes``.
    """
    if x.shape[-1] != codebook.shape[-1]:
        raise ValueError(f"feature width {x.shape[-1]} does not match codebook width {codebook.shape[-1]}")
    if not torch.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values; cannot assign codebook entries")
    lead_shape = x.shape[:-1]
    # Distances stay float32 under bf16 autocast: a bf16 search would flip near-tie tokens.
    with torch.autocast(x.device.type, enabled=False):
        return _nearest_rows(x.reshape(-1, x.shape[-1]).float(), codebook.float(), euclidean, block_bytes).reshape(lead_shape)


def _nearest_rows(rows: torch.Tensor, codebook: torch.Tensor, euclidean: bool, block_bytes: int) -> torch.Tensor:
    codebook_sq = codebook.pow(2).sum(dim=1)
    rows_per_block = max(1, block_bytes // (4 * codebook.shape[0]))
    ids = []
    for block in rows.split(rows_per_block):
        distance = block.pow(2).sum(dim=1, keepdim=True) + codebook_sq - 2 * torch.mm(block, codebook.t())
        if euclidean:
            distance = distance.clamp(min=0).sqrt()
        ids.append(torch.argmin(distance, dim=1))
    return torch.cat(ids)


def check_token_range(ids: torch.Tensor, vocab_size: int, what: str) -> None:
    """Raise ValueError unless every entry of the integer tensor ``ids`` lies in [0, vocab_size)."""
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"{what} token ids must be integers, got {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(
            f"{what} token ids must lie in [0, {vocab_size}), got range [{int(ids.min())}, {int(ids.max())}]"
        )


def _fill_optional_buffers(module: "SemanticCodebook", state_dict: dict, prefix: str, *args) -> None:
    # load_state_dict works on its own copy of the dict, so filling the gaps does not touch the caller's.
    centroids, position_mean = prefix + "centroids", prefix + "position_mean"
    if position_mean in state_dict:
        module.set_position_mean(state_dict[position_mean])
    elif centroids in state_dict:
        module.set_position_mean(None)  # a codebook fitted on features as they come
    elif module.position_mean is not None:  # neither (an official checkpoint): keep what was injected
        state_dict[position_mean] = module.position_mean
    state_dict.setdefault(centroids, module.centroids)


class SemanticCodebook(nn.Module):
    """k-means semantic vocabulary: ``centroids`` buffer [V, F] float32, and optionally ``position_mean``.

    The official code keeps the centroids in a separate ``.npy`` file, outside encoder.ckpt; here
    they are a persistent buffer so our own exports carry them. A state dict without them (an
    official checkpoint) still loads with strict=True and leaves the centroids unchanged: inject
    them with :meth:`load_centroids`.

    ``position_mean`` [T, F] (not in the official model, None there and in the state dict): the mean
    feature at each token position of a segment, subtracted before quantising (:meth:`center`). A small
    AudioMAE's features are mostly where a patch sits (its position embedding), little what it holds;
    a codebook fitted on centred features spends its codes on content (``recipes/codec/train_kmeans.py``
    ``model.center_positions``).
    """

    optional_state_keys = ("position_mean",)  # :func:`codec.checkpoints.load_state` lets it come or go

    def __init__(self, vocab_size: int, feature_dim: int) -> None:
        super().__init__()
        self.register_buffer("centroids", torch.randn(vocab_size, feature_dim))
        self.register_buffer("position_mean", None)
        self.register_load_state_dict_pre_hook(_fill_optional_buffers)

    def set_position_mean(self, position_mean: torch.Tensor | None) -> None:
        """Use ``position_mean`` [T, F] (None: no centring, the official behaviour)."""
        if position_mean is not None:
            width = self.centroids.shape[1]
            if position_mean.dim() != 2 or position_mean.shape[1] != width:
                raise ValueError(f"position_mean must be [positions, {width}], got {list(position_mean.shape)}")
            if not torch.isfinite(position_mean).all():
                raise ValueError("position_mean contains NaN or infinite values")
            position_mean = position_mean.detach().to(self.centroids.device, torch.float32).clone()
        self.position_mean = position_mean

    def center(self, features: torch.Tensor) -> torch.Tensor:
        """Features of whole segments [S, T, F] minus ``position_mean`` (unchanged without one)."""
        if self.position_mean is None:
            return features
        if features.dim() != 3 or tuple(features.shape[1:]) != tuple(self.position_mean.shape):
            raise ValueError(f"centring needs segment features [S, {self.position_mean.shape[0]}, "
                             f"{self.position_mean.shape[1]}], got {list(features.shape)}")
        return features - self.position_mean.to(features.dtype)

    @property
    def vocab_size(self) -> int:
        return self.centroids.shape[0]

    def load_centroids(self, centroids: torch.Tensor) -> None:
        """Replace the centroids with a [V, F] tensor (e.g. read from an official ``codebook_*.npy``)."""
        if tuple(centroids.shape) != tuple(self.centroids.shape):
            raise ValueError(
                f"semantic codebook must have shape {list(self.centroids.shape)}, got {list(centroids.shape)}"
            )
        if not torch.isfinite(centroids).all():
            raise ValueError("semantic codebook contains NaN or infinite values")
        with torch.no_grad():
            self.centroids.copy_(centroids.to(torch.float32))

    def nearest(self, features: torch.Tensor) -> torch.Tensor:
        """Semantic token ids of features [S, T, F] float32 -> int64 [S, T] (squared distance, no sqrt)."""
        return nearest_codeword(features, self.centroids)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Centroid rows of token ids [S, T] int64 -> [S, T, F] float32."""
        check_token_range(ids, self.vocab_size, "semantic")
        return F.embedding(ids, self.centroids)
