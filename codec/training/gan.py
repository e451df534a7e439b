"""Adversaries and losses for training the vocoders (training only; inference never imports this).

HiFi-GAN's multi-period (MPD) and multi-scale (MSD) discriminators, a light multi-resolution
spectrogram discriminator (MRD, UnivNet / Vocos style) for the frame-rate iSTFT vocoder, and the
least-squares GAN and feature-matching losses. Each discriminator returns, per sub-discriminator, its
flattened logits [B, n] and the list of intermediate feature maps used by the feature-matching loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.1


def _same_padding(kernel_size: int, dilation: int) -> int:
    return (kernel_size * dilation - dilation) // 2


DiscriminatorOutput = tuple[list[torch.Tensor], list[list[torch.Tensor]]]


def run_stack(convs: nn.ModuleList, conv_post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One sub-discriminator's conv stack: (flattened logits [B, n], every feature map after an activation
    and the final conv's output) for the feature-matching loss."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LEAKY_SLOPE)
        features.append(x)
    x = conv_post(x)
    features.append(x)
    return x.flatten(1), features


class PeriodDiscriminator(nn.Module):
    """Folds the waveform [B, 1, S] into [B, 1, S/p, p] (reflect-padded) and runs 2-D convs over it."""

    def __init__(self, period: int, kernel_size: int = 5, stride: int = 3) -> None:
        super().__init__()
        self.period = period
        norm = nn.utils.parametrizations.weight_norm
        widths = [1, 32, 128, 512, 1024]
        padding = (_same_padding(kernel_size, 1), 0)
        self.convs = nn.ModuleList(
            norm(nn.Conv2d(c_in, c_out, (kernel_size, 1), (stride, 1), padding=padding))
            for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.convs.append(norm(nn.Conv2d(1024, 1024, (kernel_size, 1), 1, padding=padding)))
        self.conv_post = norm(nn.Conv2d(1024, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        batch, channels, length = waveform.shape
        remainder = length % self.period
        if remainder:
            waveform = F.pad(waveform, (0, self.period - remainder), mode="reflect")
        x = waveform.reshape(batch, channels, -1, self.period)
        return run_stack(self.convs, self.conv_post, x)


class ScaleDiscriminator(nn.Module):
    """Strided grouped 1-D convs over a waveform [B, 1, S] at one time resolution."""

    def __init__(self, spectral: bool = False) -> None:
        super().__init__()
        norm = nn.utils.parametrizations.spectral_norm if spectral else nn.utils.parametrizations.weight_norm
        # (in, out, kernel, stride, groups); padding keeps "same" alignment for odd kernels.
        layers = [
            (1, 128, 15, 1, 1), (128, 128, 41, 2, 4), (128, 256, 41, 2, 16), (256, 512, 41, 4, 16),
            (512, 1024, 41, 4, 16), (1024, 1024, 41, 1, 16), (1024, 1024, 5, 1, 1),
        ]
        self.convs = nn.ModuleList(
            norm(nn.Conv1d(c_in, c_out, k, s, groups=g, padding=k // 2)) for c_in, c_out, k, s, g in layers
        )
        self.conv_post = norm(nn.Conv1d(1024, 1, 3, 1, padding=1))

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = waveform
        return run_stack(self.convs, self.conv_post, x)


class MultiPeriodDiscriminator(nn.Module):
    """One PeriodDiscriminator per period (HiFi-GAN: 2, 3, 5, 7, 11). waveform [B, 1, S]."""

    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11)) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p) for p in periods)

    def forward(self, waveform: torch.Tensor) -> DiscriminatorOutput:
        outputs = [d(waveform) for d in self.discriminators]
        return [logits for logits, _ in outputs], [features for _, features in outputs]


class MultiScaleDiscriminator(nn.Module):
    """Three ScaleDiscriminators on the raw, 2x- and 4x-average-pooled waveform [B, 1, S].

    The first (raw-resolution) one uses spectral norm, the others weight norm.
    """

    def __init__(self) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(ScaleDiscriminator(spectral=i == 0) for i in range(3))
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, waveform: torch.Tensor) -> DiscriminatorOutput:
        all_logits, all_features = [], []
        for index, discriminator in enumerate(self.discriminators):
            if index > 0:
                waveform = self.pool(waveform)
            logits, features = discriminator(waveform)
            all_logits.append(logits)
            all_features.append(features)
        return all_logits, all_features


class ResolutionDiscriminator(nn.Module):
    """2-D convs over one STFT log-magnitude [B, 1, frames, bins] of a waveform [B, 1, S]."""

    def __init__(self, n_fft: int, hop_length: int, channels: int = 32) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        norm = nn.utils.parametrizations.weight_norm
        self.convs = nn.ModuleList([
            norm(nn.Conv2d(1, channels, (7, 5), stride=(2, 1), padding=(3, 2))),
            norm(nn.Conv2d(channels, channels, (5, 3), stride=(2, 1), padding=(2, 1))),
            norm(nn.Conv2d(channels, channels, (5, 3), stride=(2, 1), padding=(2, 1))),
            norm(nn.Conv2d(channels, channels, (5, 3), stride=(2, 1), padding=(2, 1))),
            norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))),
        ])
        self.conv_post = norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        window = torch.hann_window(self.n_fft, device=waveform.device)
        spectrum = torch.stft(waveform[:, 0].float(), self.n_fft, self.hop_length, window=window,
                              center=True, return_complex=True)
        # [B, bins, frames] -> [B, 1, bins, frames]: convs stride over frequency, keep time resolution.
        # Channels-last lets oneDNN run the convs on AMX under bf16 autocast (several times faster).
        x = torch.log(spectrum.abs().clamp_min(1e-5))[:, None].contiguous(memory_format=torch.channels_last)
        return run_stack(self.convs, self.conv_post, x)


class MultiResolutionDiscriminator(nn.Module):
    """One ResolutionDiscriminator per (n_fft, hop) pair; about 0.1 M parameters at 32 channels.

    The 2048-point resolution (7.8-Hz bins at 16 kHz) resolves a note's harmonics, so a frame-rate
    comb cannot pass for them.
    """

    def __init__(self, resolutions: tuple[tuple[int, int], ...] = ((2048, 512), (1024, 256), (512, 128)),
                 channels: int = 32) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(ResolutionDiscriminator(n, h, channels) for n, h in resolutions)

    def forward(self, waveform: torch.Tensor) -> DiscriminatorOutput:
        outputs = [d(waveform) for d in self.discriminators]
        return [logits for logits, _ in outputs], [features for _, features in outputs]


def discriminator_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Least-squares GAN loss for the discriminator: sum of mean((1 - D(real))^2) + mean(D(fake)^2)."""
    return sum(((1 - real) ** 2).mean() + (fake**2).mean() for real, fake in zip(real_logits, fake_logits))


def generator_adversarial_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Least-squares GAN loss for the generator: sum of mean((1 - D(fake))^2)."""
    return sum(((1 - fake) ** 2).mean() for fake in fake_logits)


def feature_matching_loss(
    real_features: list[list[torch.Tensor]], fake_features: list[list[torch.Tensor]]
) -> torch.Tensor:
    """L1 distance between the discriminator feature maps of real and generated audio, times 2."""
    total = sum(
        (real.detach() - fake).abs().mean()
        for real_maps, fake_maps in zip(real_features, fake_features)
        for real, fake in zip(real_maps, fake_maps)
    )
    return 2 * total
