"""AudioLDM AutoencoderKL over 64-bin log-mels, with its vocoder attached (HiFi-GAN or iSTFT).

Submodule names follow the official ``first_stage_model.*`` keys (prefix removed): ``encoder``,
``decoder``, ``quant_conv``, ``post_quant_conv`` and ``vocoder``. The latent is 4x smaller than the
mel in time and frequency for the official three-level ``ch_mult`` (one halving per level but the
first). At inference only ``decode`` and ``mel_to_waveform`` run; ``encode`` is for training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codec.config import ISTFTVocoderConfig, VAEConfig, VocoderConfig
from codec.norm import GroupNorm32
from codec.vocoder import build_vocoder

NORM_GROUPS = 32
NORM_EPS = 1e-6
LOGVAR_RANGE = (-30.0, 20.0)


def _group_norm(channels: int) -> GroupNorm32:
    if channels % NORM_GROUPS:
        raise ValueError(f"VAE widths must be multiples of {NORM_GROUPS} (GroupNorm groups), got {channels}")
    return GroupNorm32(NORM_GROUPS, channels, eps=NORM_EPS, affine=True)


def _swish(x: torch.Tensor) -> torch.Tensor:
    # The official x * sigmoid(x), as one fused op (it agrees to float32 rounding). Its inputs are
    # fresh norm outputs, so inference overwrites them: a full-resolution activation of the official
    # VAE is 33-67 MB, and a fresh one costs page faults as well as memory traffic.
    return F.silu(x, inplace=not torch.is_grad_enabled())


class ResnetBlock(nn.Module):
    """GN-swish-conv3x3, GN-swish-dropout-conv3x3, plus a 1x1 ``nin_shortcut`` when widths differ.

    [B, in_channels, H, W] -> [B, out_channels, H, W].
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(self.dropout(_swish(self.norm2(h))))
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return h.add_(shortcut)  # h is the conv's fresh output; the sum equals shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions, scale channels**-0.5, residual.

    [B, C, H, W] -> [B, C, H, W].
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x)

        def positions(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, 1, channels, height * width).transpose(2, 3)

        # The default SDPA scale 1/sqrt(last dim) is the official channels**-0.5.
        attended = F.scaled_dot_product_attention(positions(self.q(h)), positions(self.k(h)), positions(self.v(h)))
        attended = attended.transpose(2, 3).reshape(batch, channels, height, width)
        return x + self.proj_out(attended)


class Upsample(nn.Module):
    """Nearest-neighbour x2 on both axes, then conv3x3. [B, C, H, W] -> [B, C, 2H, 2W]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then conv3x3 stride 2. [B, C, H, W] -> [B, C, H//2, W//2]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


def _mid_block(channels: int, dropout: float) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, dropout)
    mid.attn_1 = AttnBlock(channels)
    mid.block_2 = ResnetBlock(channels, channels, dropout)
    return mid


def _run_mid(mid: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(x)))


class Encoder(nn.Module):
    """Mel [B, in_channels, T, F] -> moments [B, 2*z_channels, T/2**(L-1), F/2**(L-1)], L = len(ch_mult)."""

    def __init__(self, cfg: VAEConfig, dropout: float = 0.0) -> None:
        super().__init__()
        widths = [cfg.ch * mult for mult in cfg.ch_mult]
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = cfg.ch
        for level, width in enumerate(widths):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                stage.block.append(ResnetBlock(block_in, width, dropout))
                block_in = width
            if level != len(widths) - 1:
                stage.downsample = Downsample(block_in)
            self.down.append(stage)
        self.mid = _mid_block(block_in, dropout)
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * cfg.z_channels, 3, padding=1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(mel)
        for stage in self.down:
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = _run_mid(self.mid, h)
        return self.conv_out(_swish(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent [B, z_channels, t, f] -> mel [B, out_ch, t*2**(L-1), f*2**(L-1)], L = len(ch_mult).

    ``up[0]`` is the highest-resolution level; levels run from ``up[L-1]`` down to ``up[0]``, each
    with num_res_blocks + 1 ResnetBlocks, and every level but ``up[0]`` ends with an Upsample.
    """

    def __init__(self, cfg: VAEConfig, dropout: float = 0.0) -> None:
        super().__init__()
        widths = [cfg.ch * mult for mult in cfg.ch_mult]
        block_in = widths[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = _mid_block(block_in, dropout)
        levels: list[nn.Module] = []
        for level in reversed(range(len(widths))):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                stage.block.append(ResnetBlock(block_in, widths[level], dropout))
                block_in = widths[level]
            if level != 0:
                stage.upsample = Upsample(block_in)
            levels.insert(0, stage)
        self.up = nn.ModuleList(levels)
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _run_mid(self.mid, self.conv_in(z))
        for stage in reversed(self.up):
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(_swish(self.norm_out(h)))


class DiagonalGaussian:
    """Posterior N(mean, exp(logvar)) from encoder moments [B, 2*C, ...] split along dim 1.

    ``logvar`` is clamped to [-30, 20] as in the official distribution. The posterior is float32
    whatever precision the encoder ran in (a bf16 encoder's moments are widened first).
    """

    def __init__(self, moments: torch.Tensor) -> None:
        mean, logvar = torch.chunk(moments.float(), 2, dim=1)
        self.mean = mean
        self.logvar = logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + std * noise, with the noise drawn from ``generator`` (same generator state, same sample)."""
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        """The posterior mean [B, C, ...]."""
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL divergence to N(0, I), summed over all but the batch axis: float [B]."""
        terms = self.mean.pow(2) + self.var - 1.0 - self.logvar
        return 0.5 * terms.flatten(1).sum(dim=1)


class AutoencoderKL(nn.Module):
    """The first-stage model of the latent-diffusion decoder: VAE (mel <-> latent) plus vocoder.

    Mel tensors are [B, 1, frames, mel_bins] (natural-log magnitude mel, 100 frames/s); latents
    are [B, embed_dim, frames/4, mel_bins/4] for the official ``ch_mult``. No latent
    ``scale_factor`` is applied here: the diffusion wrapper divides by it before ``decode``.
    """

    def __init__(self, cfg: VAEConfig, vocoder_cfg: VocoderConfig | ISTFTVocoderConfig) -> None:
        super().__init__()
        if cfg.mel_bins != vocoder_cfg.num_mels:
            raise ValueError(f"VAE mel_bins ({cfg.mel_bins}) and vocoder num_mels ({vocoder_cfg.num_mels}) differ")
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        self.vocoder = build_vocoder(vocoder_cfg)

    @property
    def downsampling(self) -> int:
        """Mel frames (and mel bins) per latent step: 2**(len(ch_mult) - 1)."""
        return 2 ** (len(self.cfg.ch_mult) - 1)

    def encode(self, mel: torch.Tensor) -> DiagonalGaussian:
        """mel float [B, in_channels, frames, mel_bins] -> posterior over [B, embed_dim, frames/4, mel_bins/4]."""
        factor = self.downsampling
        if mel.dim() != 4 or mel.shape[1] != self.cfg.in_channels or mel.shape[3] != self.cfg.mel_bins:
            raise ValueError(
                f"VAE encoder input must be [batch, {self.cfg.in_channels}, frames, {self.cfg.mel_bins}], "
                f"got shape {tuple(mel.shape)}"
            )
        if mel.shape[2] == 0 or mel.shape[2] % factor or mel.shape[3] % factor:
            raise ValueError(
                f"VAE encoder needs frames and mel bins divisible by {factor}, got shape {tuple(mel.shape)}"
            )
        return DiagonalGaussian(self.quant_conv(self.encoder(mel)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latent float [B, embed_dim, t, f] -> mel [B, out_ch, t*4, f*4] (post_quant_conv, Decoder)."""
        if z.dim() != 4 or z.shape[1] != self.cfg.embed_dim:
            raise ValueError(
                f"VAE latent must be [batch, {self.cfg.embed_dim}, time, freq], got shape {tuple(z.shape)}"
            )
        if torch.is_autocast_enabled(z.device.type):
            # bf16 convolutions run about 2.5x faster channels-last (oneDNN/AMX, cuDNN); float32 keeps
            # the official layout, whose numbers parity checks.
            z = z.contiguous(memory_format=torch.channels_last)
        return self.decoder(self.post_quant_conv(z))

    def mel_to_waveform(self, mel: torch.Tensor) -> torch.Tensor:
        """mel float [B, 1, frames, num_mels] -> waveform [B, 1, 160*frames + 32] at 16 kHz."""
        if mel.dim() != 4 or mel.shape[1] != 1:
            raise ValueError(f"mel must be [batch, 1, frames, mel_bins], got shape {tuple(mel.shape)}")
        return self.vocoder(mel.squeeze(1).transpose(1, 2))

    def forward(
        self, mel: torch.Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Reconstruct mel [B, 1, frames, mel_bins]; returns (reconstruction, posterior) for training."""
        posterior = self.encode(mel)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior
