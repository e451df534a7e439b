"""Spectral losses for training vocoders: multi-resolution STFT and anti-wrapping phase losses.

All take waveforms float [B, 1, S] (or [B, S]) at 16 kHz and return a scalar float32 tensor.
"""

from __future__ import annotations

import math

import torch

STFT_RESOLUTIONS = ((2048, 512), (1024, 256), (512, 128), (256, 64))


def _stft(waveform: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    flat = waveform.reshape(-1, waveform.shape[-1]).float()
    window = torch.hann_window(n_fft, device=flat.device)
    return torch.stft(flat, n_fft, hop_length, window=window, center=True, return_complex=True)


def multi_resolution_stft_loss(fake: torch.Tensor, real: torch.Tensor,
                               resolutions: tuple[tuple[int, int], ...] = STFT_RESOLUTIONS) -> torch.Tensor:
    """Mean over resolutions of spectral convergence + L1 of log magnitudes (Parallel WaveGAN).

    The 2048-point resolution resolves harmonics 7.8 Hz apart, which a 64-band mel loss does not.
    """
    total = fake.new_zeros((), dtype=torch.float32)
    for n_fft, hop in resolutions:
        fake_mag = _stft(fake, n_fft, hop).abs().clamp_min(1e-5)
        real_mag = _stft(real, n_fft, hop).abs().clamp_min(1e-5)
        convergence = torch.linalg.norm(real_mag - fake_mag) / torch.linalg.norm(real_mag).clamp_min(1e-5)
        total = total + convergence + (fake_mag.log() - real_mag.log()).abs().mean()
    return total / len(resolutions)


def anti_wrap(x: torch.Tensor) -> torch.Tensor:
    """|x - 2 pi round(x / 2 pi)|: the distance between two phases, insensitive to 2-pi wraps."""
    return (x - 2 * math.pi * torch.round(x / (2 * math.pi))).abs()


def phase_loss(fake: torch.Tensor, real: torch.Tensor, n_fft: int = 640, hop_length: int = 160) -> torch.Tensor:
    """APNet's anti-wrapping phase losses: instantaneous phase, group delay (along frequency) and
    instantaneous angular frequency (along time), each weighted by the real magnitude so that silent
    bins, whose phase is noise, do not count."""
    fake_spec, real_spec = _stft(fake, n_fft, hop_length), _stft(real, n_fft, hop_length)
    fake_phase, real_phase = fake_spec.angle(), real_spec.angle()
    weight = real_spec.abs()
    weight = weight / weight.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-5)
    instantaneous = anti_wrap(fake_phase - real_phase)
    group_delay = anti_wrap(torch.diff(fake_phase, dim=-2) - torch.diff(real_phase, dim=-2))
    frequency = anti_wrap(torch.diff(fake_phase, dim=-1) - torch.diff(real_phase, dim=-1))
    return ((instantaneous * weight).sum(dim=(-2, -1)).mean()
            + (group_delay * weight[..., 1:, :]).sum(dim=(-2, -1)).mean()
            + (frequency * weight[..., :, 1:]).sum(dim=(-2, -1)).mean())
