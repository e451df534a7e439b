"""Noise schedule and samplers: official buffers and DDIM schedules (fixture 6), draw order,
batched guidance, and DDIM / DPM-Solver++ against an exactly solvable model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codec.config import DiffusionConfig, UNetConfig
from codec.diffusion.conditioning import build_context, unconditional_context
from codec.diffusion.samplers import (
    GaussianNoise,
    ReplayedNoise,
    classifier_free_guidance,
    ddim_sample,
    dpmpp_2m_sample,
    sample,
)
from codec.diffusion.schedule import (
    SCHEDULE_BUFFERS,
    NoiseLevels,
    ddim_schedule,
    ddim_timesteps,
    schedule_buffers,
)
from codec.diffusion.unet import UNet

LATENT = (8, 32, 16)  # fixture 6's reduced latent


@pytest.fixture(scope="module")
def fixture6(parity_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(parity_dir / "ddim_sampler.safetensors")


@pytest.fixture(scope="module")
def levels() -> NoiseLevels:
    return NoiseLevels.from_buffers(schedule_buffers(DiffusionConfig()))


def test_schedule_buffers_are_bit_exact(fixture6: dict[str, torch.Tensor]) -> None:
    ours = schedule_buffers(DiffusionConfig())
    assert set(ours) == set(SCHEDULE_BUFFERS) and len(ours) == 13
    for name, value in ours.items():
        assert value.dtype == torch.float32 and value.shape == (1000,)
        assert torch.equal(value, fixture6[name]), name


@pytest.mark.parametrize("steps", [50, 25, 10])
@pytest.mark.parametrize("eta", [0, 1])
def test_ddim_schedule_matches_official(fixture6: dict[str, torch.Tensor], steps: int, eta: int) -> None:
    expected = {k.split(".")[-1]: v for k, v in fixture6.items() if k.startswith(f"expected.S{steps}_eta{eta}.")}
    schedule = ddim_schedule(fixture6["alphas_cumprod"], ddim_timesteps(steps), float(eta))
    assert torch.equal(schedule.timesteps, expected["ddim_timesteps"])
    assert torch.equal(schedule.alphas, expected["ddim_alphas"])
    assert torch.equal(schedule.alphas_prev, expected["ddim_alphas_prev"])
    assert (schedule.sigmas - expected["ddim_sigmas_f64"]).abs().max().item() <= 1e-7
    assert torch.equal(schedule.sigmas.float(), expected["ddim_sigmas_used_f32"])


def test_ddim_timesteps_follow_the_official_rule() -> None:
    assert ddim_timesteps(50).tolist() == list(range(1, 1000, 20))
    assert len(ddim_timesteps(30)) == 31  # 1000 // 30 = 33 does not divide 1000
    # Where the official list would end at 1000 (past the schedule) that entry is dropped.
    assert ddim_timesteps(1).tolist() == [1]
    assert ddim_timesteps(1000).tolist() == list(range(1, 1000))
    for bad in (0, 1001):
        with pytest.raises(ValueError, match="sampling steps must be between 1 and 1000"):
            ddim_timesteps(bad)


def test_ddim_schedule_rejects_bad_timesteps(levels: NoiseLevels) -> None:
    with pytest.raises(ValueError, match="strictly ascending"):
        ddim_schedule(levels.alphas_cumprod, torch.tensor([5, 3]), 1.0)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1000\)"):
        ddim_schedule(levels.alphas_cumprod, torch.tensor([1, 1000]), 1.0)
    with pytest.raises(ValueError, match="eta must be non-negative"):
        ddim_schedule(levels.alphas_cumprod, torch.tensor([1, 2]), -0.5)


def test_generator_noise_reproduces_the_official_draws(fixture6: dict[str, torch.Tensor]) -> None:
    expected = [fixture6["input.x_T"], *fixture6["input.step_noise"].unbind(0)]
    seeded = GaussianNoise(1, LATENT, generators=[torch.Generator().manual_seed(1234)])
    assert all(torch.equal(seeded(), draw) for draw in expected)
    torch.manual_seed(1234)  # the official code seeds the global RNG
    global_rng = GaussianNoise(1, LATENT)
    assert all(torch.equal(global_rng(), draw) for draw in expected)


def test_per_window_generators_are_independent() -> None:
    pair = GaussianNoise(2, LATENT, generators=[torch.Generator().manual_seed(s) for s in (3, 4)])
    alone = GaussianNoise(1, LATENT, generators=[torch.Generator().manual_seed(4)])
    for _ in range(3):
        assert torch.equal(pair()[1:], alone())
    with pytest.raises(ValueError, match="got 1 generators for 2 windows"):
        GaussianNoise(2, LATENT, generators=[torch.Generator()])


class CountingNoise:
    """Records every draw so tests can check how many the sampler takes and when."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.generator = torch.Generator().manual_seed(0)
        self.shape = shape
        self.calls = 0

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        return torch.randn(self.shape, generator=self.generator)


@pytest.mark.parametrize(("sampler", "eta", "draws"), [("ddim", 1.0, 11), ("ddim", 0.0, 11), ("dpmpp2m", 1.0, 1)])
def test_number_of_random_draws(levels: NoiseLevels, sampler: str, eta: float, draws: int) -> None:
    noise = CountingNoise((1, 2, 4, 4))
    calls = []

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append((int(t[0]), noise.calls))
        return torch.zeros_like(x)

    sample(model, levels, noise, steps=10, sampler=sampler, eta=eta)
    assert noise.calls == draws
    # The model sees the real timesteps, highest first, after x_T (and the previous step's draw).
    assert [t for t, _ in calls] == list(range(901, 0, -100))
    expected_draws = list(range(1, 11)) if sampler == "ddim" else [1] * 10
    assert [n for _, n in calls] == expected_draws


def test_replayed_noise_checks_counts_and_shapes(levels: NoiseLevels) -> None:
    x_T = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="needs more noise than given"):
        sample(lambda x, t: x, levels, ReplayedNoise(x_T, torch.zeros(3, 1, 2, 4, 4)), steps=10)
    with pytest.raises(ValueError, match="step_noise must be"):
        ReplayedNoise(x_T, torch.zeros(3, 2, 2, 4, 4))
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        sample(lambda x, t: x, levels, ReplayedNoise(x_T), sampler="euler")


def test_eta_zero_ignores_the_step_noise(levels: NoiseLevels) -> None:
    x_T = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    schedule = ddim_schedule(levels.alphas_cumprod, ddim_timesteps(10), 0.0)
    model = GaussianDataModel(levels, torch.ones(1, 2, 4, 4), spread=0.5)
    first = ddim_sample(model, levels, schedule, ReplayedNoise(x_T, torch.randn(10, 1, 2, 4, 4)))
    second = ddim_sample(model, levels, schedule, ReplayedNoise(x_T, torch.randn(10, 1, 2, 4, 4)))
    assert torch.equal(first, second)
    noisy = ddim_schedule(levels.alphas_cumprod, ddim_timesteps(10), 1.0)
    third = ddim_sample(model, levels, noisy, ReplayedNoise(x_T, torch.randn(10, 1, 2, 4, 4)))
    assert not torch.allclose(first, third)


class GaussianDataModel:
    """The exact v-predictor for data ~ N(mean, spread^2 I): its probability-flow ODE has a closed form.

    x0_hat(x_t) = mean + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha mean), v = (alpha x_t - x0_hat) / sigma.
    """

    def __init__(self, levels: NoiseLevels, mean: torch.Tensor, spread: float) -> None:
        self.alpha_bar = levels.alphas_cumprod.double()
        self.mean = mean.double()
        self.spread = spread

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.alpha_bar[t[0]]
        alpha, sigma, s2 = a.sqrt(), (1 - a).sqrt(), self.spread**2
        x0 = self.mean + alpha * s2 / (a * s2 + 1 - a) * (x.double() - alpha * self.mean)
        return ((alpha * x.double() - x0) / sigma).float()

    def solution(self, x_T: torch.Tensor, start: int) -> torch.Tensor:
        """The ODE solution from level ``start`` to the alpha-bar_0 level (where the samplers stop)."""
        a_start, a_end = self.alpha_bar[start], self.alpha_bar[0]
        s2 = self.spread**2
        standardised = (x_T.double() - a_start.sqrt() * self.mean) / (a_start * s2 + 1 - a_start).sqrt()
        return (a_end.sqrt() * self.mean + (a_end * s2 + 1 - a_end).sqrt() * standardised).float()


def _relative_error(levels: NoiseLevels, sampler: str, steps: int, spread: float) -> float:
    generator = torch.Generator().manual_seed(7)
    mean = torch.randn(1, *LATENT, generator=generator)
    x_T = torch.randn(1, *LATENT, generator=generator)
    model = GaussianDataModel(levels, mean, spread)
    timesteps = ddim_timesteps(steps)
    if sampler == "dpmpp2m":
        result = dpmpp_2m_sample(model, levels, timesteps, x_T)
    else:
        schedule = ddim_schedule(levels.alphas_cumprod, timesteps, 0.0)
        result = ddim_sample(model, levels, schedule, ReplayedNoise(x_T, torch.zeros(len(timesteps), 1, *LATENT)))
    exact = model.solution(x_T, int(timesteps[-1]))
    return ((result - exact).norm() / exact.norm()).item()


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp2m"])
def test_point_mass_data_is_solved_exactly(levels: NoiseLevels, sampler: str) -> None:
    # With a constant x0 prediction both first- and second-order updates are exact.
    assert _relative_error(levels, sampler, steps=10, spread=0.0) <= 1e-5


def test_dpmpp_converges_faster_than_ddim(levels: NoiseLevels) -> None:
    errors = {(s, n): _relative_error(levels, s, n, spread=0.5) for s in ("ddim", "dpmpp2m") for n in (25, 50, 200)}
    for steps in (25, 50, 200):
        assert errors[("dpmpp2m", steps)] < errors[("ddim", steps)]
    for sampler in ("ddim", "dpmpp2m"):
        assert errors[(sampler, 25)] > errors[(sampler, 50)] > errors[(sampler, 200)]
    # Measured: DDIM 200 steps 7.9e-3, DPM-Solver++ 200 steps 2.8e-3.
    assert errors[("dpmpp2m", 200)] < 0.5 * errors[("ddim", 200)]
    assert errors[("dpmpp2m", 200)] < 5e-3


@pytest.fixture(scope="module")
def fixture_unet(parity_dir: Path) -> UNet:
    cfg = UNetConfig(model_channels=32, channel_mult=(1, 1), attention_resolutions=(2,), num_head_channels=16)
    unet = UNet(cfg, context_dim=256).eval()
    weights = load_file(parity_dir / "unet.safetensors")
    prefix = "model.diffusion_model."
    unet.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)})
    return unet


def test_batched_guidance_equals_two_separate_passes(fixture_unet: UNet) -> None:
    generator = torch.Generator().manual_seed(11)
    windows = 2  # several windows share one forward over [uncond; cond]
    features = torch.randn(windows, 16, 64, generator=generator)
    x = torch.randn(windows, 8, 16, 8, generator=generator)
    t = torch.tensor([801, 801])
    cond = build_context(features)
    uncond = unconditional_context(windows, 16, 64)
    encoded = fixture_unet.encode_context(torch.cat([uncond, cond]))
    guided = classifier_free_guidance(lambda x_in, t_in: fixture_unet.forward_guidance_pair(x_in, t_in, encoded), 2.0)
    with torch.no_grad():
        batched = guided(x, t)
        separate = []
        for i in range(windows):
            v_uncond = fixture_unet(x[i : i + 1], t[i : i + 1], uncond[i : i + 1])
            v_cond = fixture_unet(x[i : i + 1], t[i : i + 1], cond[i : i + 1])
            separate.append(v_uncond + 2.0 * (v_cond - v_uncond))
    assert (batched - torch.cat(separate)).abs().max().item() <= 5e-5
