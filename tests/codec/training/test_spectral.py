"""Spectral and phase losses of the vocoder training."""

import math

import torch

from codec.training.spectral import anti_wrap, multi_resolution_stft_loss, phase_loss


def _tone(hz: float, seconds: float = 0.5, phase: float = 0.0) -> torch.Tensor:
    t = torch.arange(int(16000 * seconds)) / 16000
    return (0.3 * torch.sin(2 * math.pi * hz * t + phase))[None, None]


def test_stft_loss_is_zero_for_equal_audio_and_sees_a_pitch_shift_of_a_few_hertz() -> None:
    real = _tone(440.0)
    assert multi_resolution_stft_loss(real, real).item() < 1e-6
    near = multi_resolution_stft_loss(_tone(446.0), real).item()
    far = multi_resolution_stft_loss(_tone(520.0), real).item()
    assert 0.05 < near < far


def test_phase_loss_sees_a_phase_shift_that_magnitudes_miss() -> None:
    real = _tone(440.0)
    shifted = _tone(440.0, phase=math.pi / 2)
    assert phase_loss(real, real).item() < 1e-5
    assert phase_loss(shifted, real).item() > 0.5
    assert anti_wrap(torch.tensor([2 * math.pi + 0.1, -0.1])).allclose(torch.tensor([0.1, 0.1]), atol=1e-6)


def test_losses_have_gradients() -> None:
    fake = (0.1 * torch.randn(2, 1, 4000)).requires_grad_()
    real = 0.1 * torch.randn(2, 1, 4000)
    (multi_resolution_stft_loss(fake, real) + phase_loss(fake, real)).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
