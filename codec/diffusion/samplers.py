"""Samplers over the discrete v-prediction schedule: official DDIM (any eta) and DPM-Solver++(2M).

Samplers see the network only as a :data:`VelocityModel` ``(x, t) -> v``; classifier-free guidance
is a wrapper that evaluates [unconditional; conditional] as one doubled batch. Noise comes from a
:data:`NoiseSource` called once for x_T and, in DDIM, once per step after the model call (even
when sigma is 0), which is the official order of random draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from codec.diffusion.schedule import DDIMSchedule, NoiseLevels, ddim_schedule, ddim_timesteps

VelocityModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(x float [B, C, T, F], timesteps int64 [B]) -> predicted v [B, C, T, F]."""

NoiseSource = Callable[[], torch.Tensor]
"""Returns the next standard-normal draw, float32 [B, C, T, F]."""

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]
"""Called after step i (0 = the noisiest) with (i, x after the step, predicted x0 of the step)."""

SAMPLERS = ("ddim", "dpmpp2m")


def classifier_free_guidance(paired: VelocityModel, scale: float) -> VelocityModel:
    """Guided v = v_u + scale * (v_c - v_u) from ``paired``: (x [B], t [B]) -> [v_u; v_c] [2B].

    One batched forward (e.g. :meth:`~codec.diffusion.unet.UNet.forward_guidance_pair`) replaces
    the official two batch-B calls (same values up to float32 noise).
    """

    def guided(x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        v_uncond, v_cond = paired(x, timesteps).chunk(2)
        return v_uncond + scale * (v_cond - v_uncond)

    return guided


class GaussianNoise:
    """Standard-normal draws [batch, *shape], one ``randn(shape)`` per window per call.

    With ``generators`` (one per window) window b draws only from generator b, so a batch of
    windows equals each window sampled alone with the same seed. Without, draws come from the
    global torch RNG as one [batch, *shape] tensor (for batch 1: the official behaviour).
    """

    def __init__(
        self,
        batch: int,
        shape: Sequence[int],
        *,
        generators: Sequence[torch.Generator] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if generators is not None and len(generators) != batch:
            raise ValueError(f"got {len(generators)} generators for {batch} windows; pass one per window")
        self.batch = batch
        self.shape = tuple(shape)
        self.generators = list(generators) if generators is not None else None
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    def __call__(self) -> torch.Tensor:
        if self.generators is None:
            return torch.randn((self.batch, *self.shape), device=self.device)
        draws = [torch.randn(self.shape, generator=g, device=g.device) for g in self.generators]
        return torch.stack(draws).to(self.device)


class ReplayedNoise:
    """Replays explicit noise: ``x_T`` [B, C, T, F] first, then ``step_noise[i]`` ([S, B, C, T, F])."""

    def __init__(self, x_T: torch.Tensor, step_noise: torch.Tensor | None = None) -> None:
        if step_noise is not None and (step_noise.dim() != x_T.dim() + 1 or step_noise.shape[1:] != x_T.shape):
            raise ValueError(
                f"step_noise must be [steps, {', '.join(map(str, x_T.shape))}], got {tuple(step_noise.shape)}"
            )
        self._draws = [x_T, *(step_noise.unbind(0) if step_noise is not None else ())]
        self._used = 0

    def __call__(self) -> torch.Tensor:
        if self._used == len(self._draws):
            raise ValueError(
                f"the sampler needs more noise than given (x_T + {len(self._draws) - 1} step draws)"
            )
        self._used += 1
        return self._draws[self._used - 1]


def _draw(noise: NoiseSource, like: torch.Tensor | None = None) -> torch.Tensor:
    sample = noise()
    if like is not None and sample.shape != like.shape:
        raise ValueError(f"noise has shape {tuple(sample.shape)}, the latents have {tuple(like.shape)}")
    return sample.float()


def ddim_sample(
    model: VelocityModel,
    levels: NoiseLevels,
    schedule: DDIMSchedule,
    noise: NoiseSource,
    *,
    device: torch.device | str | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """The official DDIM loop with v-prediction -> final latents float32 [B, C, T, F].

    Per step (t descending): eps = sqrt(a_t) v + sqrt(1-a_t) x, x0 = sqrt(a_t) x - sqrt(1-a_t) v
    with the stored float32 buffers at t, then x = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps
    + sigma z, all in float32.
    """
    x = _draw(noise).to(device)
    timesteps = schedule.timesteps.to(x.device)
    sqrt_alpha = levels.sqrt_alphas_cumprod.to(x.device)[timesteps]
    sqrt_one_minus_alpha = levels.sqrt_one_minus_alphas_cumprod.to(x.device)[timesteps]
    alpha_prev = schedule.alphas_prev.to(torch.float32).to(x.device)
    sigma = schedule.sigmas.to(torch.float32).to(x.device)
    direction = (1.0 - alpha_prev - sigma**2).sqrt()
    sqrt_alpha_prev = alpha_prev.sqrt()
    batch = x.shape[0]
    for step, index in enumerate(reversed(range(len(schedule)))):
        v = model(x, timesteps[index].expand(batch))
        eps = sqrt_alpha[index] * v + sqrt_one_minus_alpha[index] * x
        pred_x0 = sqrt_alpha[index] * x - sqrt_one_minus_alpha[index] * v
        z = _draw(noise, x).to(x.device)
        x = sqrt_alpha_prev[index] * pred_x0 + direction[index] * eps + sigma[index] * z
        if on_step is not None:
            on_step(step, x, pred_x0)
    return x


def dpmpp_2m_sample(
    model: VelocityModel,
    levels: NoiseLevels,
    timesteps: torch.Tensor,
    x_T: torch.Tensor,
    *,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (multistep, data prediction) on the discrete schedule -> latents [B, C, T, F].

    Integrates the probability-flow ODE from the largest of the ascending ``timesteps`` down to the
    alpha-bar_0 level, the same end point as DDIM (the model is evaluated at each timestep; x0 from
    v as sqrt(a_t) x - sqrt(1-a_t) v). First order on the first step, second order after it.
    Deterministic given x_T.
    """
    grid = ddim_schedule(levels.alphas_cumprod, timesteps, eta=0.0)
    alpha_bar = [float(a) for a in grid.alphas.double()]
    alpha_bar_next = [float(a) for a in grid.alphas_prev]
    x = x_T.float()
    device_timesteps = grid.timesteps.to(x.device)
    sqrt_alpha = levels.sqrt_alphas_cumprod.to(x.device)[device_timesteps]
    sqrt_one_minus_alpha = levels.sqrt_one_minus_alphas_cumprod.to(x.device)[device_timesteps]
    previous_x0, previous_h = None, None
    for step, index in enumerate(reversed(range(len(grid)))):
        v = model(x, device_timesteps[index].expand(x.shape[0]))
        pred_x0 = sqrt_alpha[index] * x - sqrt_one_minus_alpha[index] * v
        lambda_s = _half_log_snr(alpha_bar[index])
        lambda_t = _half_log_snr(alpha_bar_next[index])
        h = lambda_t - lambda_s
        sigma_ratio = ((1.0 - alpha_bar_next[index]) / (1.0 - alpha_bar[index])) ** 0.5
        data_coefficient = -(alpha_bar_next[index] ** 0.5) * math.expm1(-h)
        if previous_x0 is None:
            denoised = pred_x0
        else:
            half_inverse_ratio = h / (2.0 * previous_h)
            denoised = (1.0 + half_inverse_ratio) * pred_x0 - half_inverse_ratio * previous_x0
        x = sigma_ratio * x + data_coefficient * denoised
        previous_x0, previous_h = pred_x0, h
        if on_step is not None:
            on_step(step, x, pred_x0)
    return x


def _half_log_snr(alpha_bar: float) -> float:
    """lambda = log(alpha / sigma) = 0.5 * log(alpha_bar / (1 - alpha_bar))."""
    return 0.5 * math.log(alpha_bar / (1.0 - alpha_bar))


def sample(
    model: VelocityModel,
    levels: NoiseLevels,
    noise: NoiseSource,
    *,
    steps: int = 50,
    sampler: str = "ddim",
    eta: float = 1.0,
    device: torch.device | str | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Run ``sampler`` ("ddim" or "dpmpp2m") over the official uniform timesteps for ``steps``.

    ``eta`` applies to DDIM only (1.0: the official stochastic sampler, 0.0: deterministic DDIM);
    DPM-Solver++ draws only x_T. Returns latents float32 [B, C, T, F].
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    timesteps = ddim_timesteps(steps, levels.alphas_cumprod.numel())
    if sampler == "ddim":
        schedule = ddim_schedule(levels.alphas_cumprod, timesteps, eta)
        return ddim_sample(model, levels, schedule, noise, device=device, on_step=on_step)
    x_T = _draw(noise).to(device)
    return dpmpp_2m_sample(model, levels, timesteps, x_T, on_step=on_step)
