"""Vocoders: 64-bin log-mel frames (hop 160 at 16 kHz) to waveform.

:class:`HiFiGAN` is the official "Generator_old" with weight norm already folded into plain
``weight``/``bias`` tensors, so its state dict loads the ``first_stage_model.vocoder.*`` keys of the
official decoder checkpoint unchanged (prefix removed). :class:`ISTFTVocoder` is our frame-rate
vocoder for the small configurations. :func:`build_vocoder` picks one from the codec config.
Their adversaries and losses (training only) live in :mod:`codec.training`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from codec.config import ISTFTVocoderConfig, VocoderConfig

LEAKY_SLOPE = 0.1
# The activation before conv_post uses PyTorch's default slope in the official generator.
FINAL_LEAKY_SLOPE = 0.01
# The dither pattern is drawn in blocks of this many frames, each from its own seed, so that a
# shorter input gets a prefix of a longer one's pattern (a truncated last window vocodes as the full one).
DITHER_BLOCK_FRAMES = 256


def _same_padding(kernel_size: int, dilation: int) -> int:
    return (kernel_size * dilation - dilation) // 2


def _conv(conv: nn.Conv1d | nn.ConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    """Run a 1-D (transposed) conv on x [B, C_in, 1, L] (channels-last) as a 2-D conv of height 1 -> [B, C_out, 1, L'].

    On CPU, oneDNN runs these convs 1.2x (1024 channels) to 3.7x (32 channels) faster in this layout
    than as 1-D convs; the results agree to float32 rounding.
    """
    weight = conv.weight.unsqueeze(2)
    if isinstance(conv, nn.ConvTranspose1d):
        return F.conv_transpose2d(x, weight, conv.bias, (1, conv.stride[0]), (0, conv.padding[0]),
                                  (0, conv.output_padding[0]), conv.groups, (1, conv.dilation[0]))
    return F.conv2d(x, weight, conv.bias, (1, conv.stride[0]), (0, conv.padding[0]), (1, conv.dilation[0]), conv.groups)


def _check_log_mel(log_mel: torch.Tensor, num_mels: int) -> None:
    if log_mel.dim() != 3 or log_mel.shape[1] != num_mels:
        raise ValueError(f"vocoder input must be [batch, {num_mels} mel bins, frames], got shape {tuple(log_mel.shape)}")
    if not log_mel.is_floating_point():
        raise ValueError(f"vocoder input must be a floating-point tensor, got {log_mel.dtype}")


class ResBlock1(nn.Module):
    """HiFi-GAN residual block type 1: for each dilation d, x += conv_1(lrelu(conv_d(lrelu(x)))).

    [B, channels, 1, L] (channels-last, see :func:`_conv`) -> [B, channels, 1, L].
    """

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_same_padding(kernel_size, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=_same_padding(kernel_size, 1))
            for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for dilated, plain in zip(self.convs1, self.convs2):
            residual = _conv(dilated, F.leaky_relu(x, LEAKY_SLOPE))
            x = x + _conv(plain, F.leaky_relu(residual, LEAKY_SLOPE))
        return x


class HiFiGAN(nn.Module):
    """HiFi-GAN generator: log-mel float [B, num_mels, frames] -> waveform in [-1, 1], [B, 1, S].

    S = hop * frames + surplus, where hop is the product of ``upsample_rates`` (160) and the
    surplus comes from the transposed-conv padding (k - u) // 2 (32 samples for the official
    rates and kernels).
    """

    def __init__(self, cfg: VocoderConfig) -> None:
        super().__init__()
        if len(cfg.upsample_rates) != len(cfg.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes must have the same length")
        if len(cfg.resblock_kernel_sizes) != len(cfg.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes must have the same length")
        if cfg.upsample_initial_channel % 2 ** len(cfg.upsample_rates):
            raise ValueError(
                f"upsample_initial_channel {cfg.upsample_initial_channel} must be divisible by "
                f"2**{len(cfg.upsample_rates)} (one halving per upsampling stage)"
            )
        self.cfg = cfg
        channels = cfg.upsample_initial_channel
        self.conv_pre = nn.Conv1d(cfg.num_mels, channels, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for rate, kernel in zip(cfg.upsample_rates, cfg.upsample_kernel_sizes):
            self.ups.append(nn.ConvTranspose1d(channels, channels // 2, kernel, rate, padding=(kernel - rate) // 2))
            channels //= 2
            for res_kernel, dilations in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(ResBlock1(channels, res_kernel, tuple(dilations)))
        self.conv_post = nn.Conv1d(channels, 1, 7, padding=3)

    @property
    def hop_length(self) -> int:
        """Output samples per input frame (the product of the upsampling rates)."""
        hop = 1
        for rate in self.cfg.upsample_rates:
            hop *= rate
        return hop

    @property
    def context_frames(self) -> int:
        """Input frames past the last one an output sample comes from that can still change it (an
        upper bound on the generator's one-sided receptive field, in frames)."""
        cfg = self.cfg
        reach, rate = 3.0, 1  # conv_pre: kernel 7
        for up_rate, kernel in zip(cfg.upsample_rates, cfg.upsample_kernel_sizes):
            reach += kernel / up_rate / rate + 1 / rate  # a transposed conv output sees ceil(k / u) inputs
            rate *= up_rate
            widest = max(sum((k - 1) // 2 * (d + 1) for d in dilations)
                         for k, dilations in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes))
            reach += widest / rate
        return math.ceil(reach + 3 / rate) + 1  # conv_post: kernel 7

    def output_length(self, frames: int) -> int:
        """Number of samples produced for ``frames`` input frames (160 * frames + 32 officially)."""
        length = frames
        for rate, kernel in zip(self.cfg.upsample_rates, self.cfg.upsample_kernel_sizes):
            length = (length - 1) * rate - 2 * ((kernel - rate) // 2) + kernel
        return length

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """log_mel float [B, num_mels, frames] (natural-log magnitude mel) -> waveform [B, 1, S]."""
        _check_log_mel(log_mel, self.cfg.num_mels)
        num_kernels = len(self.cfg.resblock_kernel_sizes)
        x = _conv(self.conv_pre, log_mel.unsqueeze(2).contiguous(memory_format=torch.channels_last))
        for stage, upsample in enumerate(self.ups):
            x = _conv(upsample, F.leaky_relu(x, LEAKY_SLOPE))
            # Multi-receptive-field fusion: sum the stage's resblocks in order, then average.
            blocks = self.resblocks[stage * num_kernels : (stage + 1) * num_kernels]
            fused = blocks[0](x)
            for block in blocks[1:]:
                fused = fused + block(x)
            x = fused / num_kernels
        x = _conv(self.conv_post, F.leaky_relu(x, FINAL_LEAKY_SLOPE))
        return torch.tanh(x).squeeze(2).contiguous()


class ConvNeXtBlock(nn.Module):
    """Depthwise conv over time, LayerNorm, pointwise MLP (GELU), layer scale, residual: [B, C, T] -> [B, C, T]."""

    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).transpose(1, 2))
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.transpose(1, 2)


class ISTFTVocoder(nn.Module):
    """Frame-rate vocoder (Vocos-style): log-mel float [B, num_mels, frames] -> waveform [B, 1, S].

    ConvNeXt blocks run at the mel frame rate (100/s); a linear head predicts, per frame, the STFT
    log-magnitude and phase of ``n_fft // 2 + 1`` bins, and ``torch.istft`` (Hann, hop 160, centred)
    makes the waveform. S = hop * frames + surplus_samples (160 * frames + 32 by default: the lengths
    HiFi-GAN gives, so window stitching is unchanged). The inverse STFT always runs in float32.
    """

    def __init__(self, cfg: ISTFTVocoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Conv1d(cfg.num_mels, cfg.dim, 7, padding=3)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(cfg.dim, cfg.intermediate_dim, cfg.kernel_size, 1.0 / cfg.num_blocks)
            for _ in range(cfg.num_blocks)
        )
        self.final_norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, cfg.n_fft + 2)

    @property
    def hop_length(self) -> int:
        """Output samples per input frame."""
        return self.cfg.hop_length

    @property
    def context_frames(self) -> int:
        """Frames past the last one an output sample comes from that can still change it: the embedding
        conv, each block's depthwise conv, and the frames the inverse STFT overlaps."""
        cfg = self.cfg
        return 3 + cfg.num_blocks * (cfg.kernel_size // 2) + math.ceil(cfg.n_fft / 2 / cfg.hop_length) + 1

    def output_length(self, frames: int) -> int:
        """Number of samples produced for ``frames`` input frames."""
        return self.cfg.hop_length * frames + self.cfg.surplus_samples

    def spectrum(self, log_mel: torch.Tensor) -> torch.Tensor:
        """log_mel float [B, num_mels, frames] -> complex64 STFT [B, n_fft // 2 + 1, frames]."""
        x = self.norm(self.embed(log_mel).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        out = self.head(self.final_norm(x.transpose(1, 2))).float().transpose(1, 2)
        log_magnitude, phase = out.chunk(2, dim=1)
        # The clamp keeps an untrained head from overflowing exp (magnitude at most e^7, about 1100).
        magnitude = torch.exp(log_magnitude.clamp(max=7.0))
        return torch.polar(magnitude, phase)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """log_mel float [B, num_mels, frames] (natural-log magnitude mel) -> waveform float32 [B, 1, S].

        With ``cfg.dither`` > 0 the network reads ``log_mel + dither * dither_pattern(...)``: the same
        pattern for every item of a batch and every call, so the output stays a function of the input.
        """
        _check_log_mel(log_mel, self.cfg.num_mels)
        frames = log_mel.shape[-1]
        if self.cfg.dither > 0:
            pattern = dither_pattern(self.cfg.num_mels, frames, log_mel.device)
            log_mel = log_mel + self.cfg.dither * pattern.to(log_mel.dtype)
        spectrum = self.spectrum(log_mel)
        with torch.autocast(log_mel.device.type, enabled=False):
            # Made per call, not a buffer: codecs are built on the meta device and loaded from state dicts.
            window = torch.hann_window(self.cfg.n_fft, device=log_mel.device)
            audio = torch.istft(spectrum, self.cfg.n_fft, self.cfg.hop_length, window=window,
                                center=True, length=self.output_length(frames))
        return audio.clamp(-1.0, 1.0).unsqueeze(1)


def dither_pattern(num_mels: int, frames: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Unit-variance Gaussian float32 [num_mels, frames], the same on every call; frame t's values
    depend only on t (block t // DITHER_BLOCK_FRAMES is drawn from seed t // DITHER_BLOCK_FRAMES)."""
    blocks = [
        torch.randn(num_mels, DITHER_BLOCK_FRAMES, generator=torch.Generator().manual_seed(block))
        for block in range(-(-frames // DITHER_BLOCK_FRAMES))
    ]
    return torch.cat(blocks, dim=1)[:, :frames].to(device)


def build_vocoder(cfg: VocoderConfig | ISTFTVocoderConfig) -> HiFiGAN | ISTFTVocoder:
    """The vocoder a codec config names: HiFi-GAN (official) or the frame-rate iSTFT vocoder."""
    return ISTFTVocoder(cfg) if isinstance(cfg, ISTFTVocoderConfig) else HiFiGAN(cfg)
