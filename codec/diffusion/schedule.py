"""The 1000-step linear noise schedule and the DDIM sub-schedules, in the official precision.

Training-schedule buffers are computed in float64 (numpy, as the official ``register_schedule``)
and stored float32. The DDIM quantities keep the official mixed precision: ``alphas`` are the
float32 buffer values, ``alphas_prev`` float64, and sigma is evaluated in float64 with (1 - alpha_t)
rounded in float32 first; samplers cast sigma to float32 when they use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from codec.config import DiffusionConfig

SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
)


def schedule_buffers(cfg: DiffusionConfig) -> dict[str, torch.Tensor]:
    """The 13 official schedule tensors (names in :data:`SCHEDULE_BUFFERS`), each float32 [timesteps].

    beta_t = (sqrt(linear_start) + t/(T-1) * (sqrt(linear_end) - sqrt(linear_start)))^2 in float64.
    ``logvar`` is all zeros (the official ``logvar_init``); it is unused at inference.
    """
    if cfg.timesteps < 2:
        raise ValueError(f"the diffusion schedule needs at least 2 timesteps, got {cfg.timesteps}")
    if not 0.0 < cfg.linear_start < cfg.linear_end < 1.0:
        raise ValueError(
            f"need 0 < linear_start < linear_end < 1, got {cfg.linear_start} and {cfg.linear_end}"
        )
    betas = (
        torch.linspace(cfg.linear_start**0.5, cfg.linear_end**0.5, cfg.timesteps, dtype=torch.float64, device="cpu")
        ** 2
    ).numpy()
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas, axis=0)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    # The official v_posterior is 0, so its mixing term drops out exactly.
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    values = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
        "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
        "logvar": np.zeros(cfg.timesteps),
    }
    return {name: torch.tensor(values[name], dtype=torch.float32) for name in SCHEDULE_BUFFERS}


@dataclass(frozen=True)
class NoiseLevels:
    """The schedule buffers a sampler reads, each float32 [timesteps] (as loaded from a checkpoint)."""

    alphas_cumprod: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor

    @classmethod
    def from_buffers(cls, buffers: Mapping[str, torch.Tensor]) -> "NoiseLevels":
        """Pick the three tensors out of a name -> buffer mapping (e.g. :func:`schedule_buffers`)."""
        return cls(
            alphas_cumprod=buffers["alphas_cumprod"],
            sqrt_alphas_cumprod=buffers["sqrt_alphas_cumprod"],
            sqrt_one_minus_alphas_cumprod=buffers["sqrt_one_minus_alphas_cumprod"],
        )


def ddim_timesteps(steps: int, train_timesteps: int = 1000) -> torch.Tensor:
    """The official "uniform" DDIM timesteps, ascending int64: 1, 1+c, 1+2c, ... with c = T // steps.

    When ``steps`` does not divide T there are more of them (e.g. 31 for 30 steps), as in the
    official code. Where c divides T - 1 (steps 1, 3, 9, 27, 36, 37, 101-111, 251-333, >= 501) the
    official list ends at T, past the schedule, and the official sampler fails; that entry is dropped.
    """
    if not 1 <= steps <= train_timesteps:
        raise ValueError(f"sampling steps must be between 1 and {train_timesteps}, got {steps}")
    stride = train_timesteps // steps
    timesteps = torch.arange(0, train_timesteps, stride, dtype=torch.int64) + 1
    return timesteps[timesteps < train_timesteps]


@dataclass(frozen=True)
class DDIMSchedule:
    """A DDIM sub-schedule; index i runs from ``timesteps[i]`` to the level ``alphas_prev[i]``.

    timesteps int64 [S] ascending; alphas float32 [S] (alpha-bar at each timestep); alphas_prev
    float64 [S] (alpha-bar of the previous timestep, alpha-bar_0 for the lowest); sigmas float64 [S].
    """

    timesteps: torch.Tensor
    alphas: torch.Tensor
    alphas_prev: torch.Tensor
    sigmas: torch.Tensor

    def __len__(self) -> int:
        return self.timesteps.numel()


def ddim_schedule(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, eta: float) -> DDIMSchedule:
    """DDIM parameters for ascending ``timesteps`` over the float32 ``alphas_cumprod`` [T] buffer.

    sigma_i = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) in float64, where a_t is the
    float32 buffer value and 1 / (1 - a_t) is rounded in float32, as the official sampler computes it.
    """
    if eta < 0:
        raise ValueError(f"eta must be non-negative, got {eta}")
    alphas_cumprod = alphas_cumprod.detach().cpu()
    timesteps = timesteps.detach().cpu().to(torch.int64)
    if timesteps.dim() != 1 or timesteps.numel() == 0:
        raise ValueError("timesteps must be a non-empty 1-D tensor")
    if bool((timesteps[1:] <= timesteps[:-1]).any()):
        raise ValueError("timesteps must be strictly ascending")
    if int(timesteps[0]) < 0 or int(timesteps[-1]) >= alphas_cumprod.numel():
        raise ValueError(
            f"timesteps must lie in [0, {alphas_cumprod.numel()}), got {int(timesteps[0])}..{int(timesteps[-1])}"
        )
    alphas = alphas_cumprod[timesteps].to(torch.float32)
    alphas_prev = torch.cat([alphas_cumprod[:1], alphas_cumprod[timesteps[:-1]]]).to(torch.float64).numpy()
    # The official (float64 array) / (float32 tensor) runs as float32 reciprocal times float64.
    inverse_one_minus_alphas = torch.reciprocal(1 - alphas).numpy().astype(np.float64)
    alphas64 = alphas.numpy().astype(np.float64)
    # numpy's float64 sqrt is correctly rounded; torch's CPU kernel can be 1 ulp off.
    sigmas = eta * np.sqrt((1 - alphas_prev) * inverse_one_minus_alphas * (1 - alphas64 / alphas_prev))
    return DDIMSchedule(
        timesteps=timesteps,
        alphas=alphas,
        alphas_prev=torch.from_numpy(alphas_prev),
        sigmas=torch.from_numpy(sigmas),
    )
