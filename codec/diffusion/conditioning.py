"""Decoder conditioning rows: [acoustic F | semantic F | sinusoidal position 192].

The windowed token features arrive already padded with -1 rows to the window length W; the
position table is appended after padding, so rows 0..W-1 of the table are always used.
"""

from __future__ import annotations

import math

import torch

from codec.config import POSITION_DIM


def position_table(length: int, dim: int = POSITION_DIM) -> torch.Tensor:
    """Sinusoidal positions 0..length-1 -> float32 [length, dim] (even dims sin, odd dims cos).

    Computed in float32 in the official order (position * exp(arange(0, dim, 2) * -ln(10000)/dim))
    on the CPU: a float64 table rounded to float32 differs from the official one by up to 2.4e-5.
    """
    if length < 1:
        raise ValueError(f"position table length must be positive, got {length}")
    if dim < 2 or dim % 2:
        raise ValueError(f"position table width must be a positive even number, got {dim}")
    position = torch.arange(length, dtype=torch.float32, device="cpu").unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") * (-math.log(10000.0) / dim))
    angle = position * frequency
    table = torch.empty(length, dim, dtype=torch.float32, device="cpu")
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table


def build_context(features: torch.Tensor) -> torch.Tensor:
    """Window features float [B, W, 2F] (already -1 padded) -> cross-attention context [B, W, 2F+192]."""
    if features.dim() != 3:
        raise ValueError(f"window features must be [batch, window, 2F], got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"window features must be floating point, got {features.dtype}")
    batch, window, _ = features.shape
    positions = position_table(window).to(device=features.device, dtype=features.dtype)
    return torch.cat([features, positions.expand(batch, window, -1)], dim=-1)


def unconditional_context(
    batch: int,
    window: int,
    feature_width: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Classifier-free-guidance context: zeros for the 2F feature dims, then the positions.

    Returns [batch, window, feature_width + 192] with ``feature_width`` = 2F.
    """
    if batch < 1 or feature_width < 0:
        raise ValueError(f"need batch >= 1 and feature_width >= 0, got {batch} and {feature_width}")
    zeros = torch.zeros(batch, window, feature_width, device=device, dtype=dtype)
    return build_context(zeros)
