"""The latent-diffusion decoder: window conditioning -> latent (UNet + sampler) -> mel (VAE) -> audio.

State-dict keys equal the official decoder.ckpt keys without ``model_ema.*``:
``model.diffusion_model.*`` (UNet), ``first_stage_model.*`` (VAE incl. its unused encoder and
quant_conv, and the HiFi-GAN vocoder), the 13 schedule buffers and ``scale_factor``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from codec.config import CodecConfig
from codec.diffusion.conditioning import build_context, unconditional_context
from codec.diffusion.samplers import (
    SAMPLERS,
    GaussianNoise,
    NoiseSource,
    StepCallback,
    VelocityModel,
    classifier_free_guidance,
    sample,
)
from codec.diffusion.schedule import SCHEDULE_BUFFERS, NoiseLevels, schedule_buffers
from codec.diffusion.unet import TokenGrid, UNet
from codec.semantic import tokens_per_time_step
from codec.vae import AutoencoderKL

PRIOR_SAMPLER = "prior"
"""The sampler name that skips diffusion: the UNet's latent prior (its regression of the latent from the
tokens) goes straight to the VAE. Deterministic, and spared the diffusion samplers' UNet calls (two per
step with guidance); its latents are the mean the tokens predict, so they are smoother than sampled ones
(measured against diffusion in ``docs/codec-model-card.md``)."""
DECODE_SAMPLERS = (*SAMPLERS, PRIOR_SAMPLER)


def decode_samplers(cfg: CodecConfig) -> tuple[str, ...]:
    """The samplers a decoder of ``cfg`` runs: :data:`PRIOR_SAMPLER` only where its UNet has a latent prior."""
    return DECODE_SAMPLERS if cfg.unet.latent_prior_width else SAMPLERS


def check_sampler(cfg: CodecConfig, sampler: object) -> None:
    """Raise ValueError naming the accepted samplers when ``sampler`` is not one ``cfg``'s decoder runs."""
    if sampler in decode_samplers(cfg):
        return
    if sampler == PRIOR_SAMPLER:
        raise ValueError(f"sampler {PRIOR_SAMPLER!r} needs a UNet with a latent prior; codec {cfg.name!r} "
                         f"has none (unet.latent_prior_width is 0): use {' or '.join(map(repr, SAMPLERS))}")
    raise ValueError(f"sampler must be one of {', '.join(DECODE_SAMPLERS)}, got {sampler!r}")


def token_grid(cfg: CodecConfig) -> TokenGrid:
    """How a decoder window's conditioning rows tile its latent: the tokens' time-step x
    frequency-position order (:func:`codec.semantic.concat_patches`)."""
    positions = tokens_per_time_step(cfg.concat_factor)
    return TokenGrid(positions, cfg.window_tokens // positions, cfg.diffusion.latent_time, cfg.diffusion.latent_freq)


class DiffusionWrapper(nn.Module):
    """Holds the UNet under the official attribute name, so its keys read ``model.diffusion_model.*``."""

    def __init__(self, unet: UNet) -> None:
        super().__init__()
        self.diffusion_model = unet


class LatentDiffusionDecoder(nn.Module):
    """Decode -1-padded window features [B, W, 2F] into 16-kHz waveforms [B, 1, 640*latent_time + 32].

    ``scale_factor`` starts at 1.0 and is loaded from the checkpoint, as in the official model.
    """

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = DiffusionWrapper(UNet(cfg.unet, cfg.context_dim, token_grid(cfg)))
        self.first_stage_model = AutoencoderKL(cfg.vae, cfg.vocoder)
        for name, value in schedule_buffers(cfg.diffusion).items():
            self.register_buffer(name, value)
        self.register_buffer("scale_factor", torch.tensor(1.0))
        self._channels_last_weights = False

    def use_channels_last_weights(self, enabled: bool) -> None:
        """Store the 4-D conv weights channels-last (``True``) or contiguous (``False``, as loaded).

        Channels-last suits bf16 inference: the activations are channels-last, and oneDNN would
        otherwise reorder every conv weight on every call (about a tenth of a bf16 decode on CPU).
        Float32 decoding keeps the contiguous weights, whose results are the official ones bit for bit.
        """
        if enabled != self._channels_last_weights:
            self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
            self._channels_last_weights = enabled

    @property
    def unet(self) -> UNet:
        return self.model.diffusion_model

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(channels, time, freq) of one window's latent, e.g. (8, 256, 16)."""
        diffusion = self.config.diffusion
        return (diffusion.latent_channels, diffusion.latent_time, diffusion.latent_freq)

    @property
    def window_samples(self) -> int:
        """Waveform samples decoded per window (163 872 officially)."""
        stage = self.first_stage_model
        return stage.vocoder.output_length(stage.downsampling * self.config.diffusion.latent_time)

    @property
    def noise_levels(self) -> NoiseLevels:
        """The loaded schedule buffers the samplers read."""
        return NoiseLevels.from_buffers({name: getattr(self, name) for name in SCHEDULE_BUFFERS})

    def velocity_model(self, features: torch.Tensor, cfg_scale: float) -> VelocityModel:
        """The guided v-predictor for window features [B, W, 2F]: (x [B, C, T, F], t [B]) -> v.

        Conditioning keys/values are projected once here; guidance runs [uncond; cond] as one
        batched UNet call that shares its context-free first layers, and is skipped entirely when
        ``cfg_scale`` is 1.
        """
        unet = self.unet
        context = build_context(features)
        if cfg_scale == 1.0:
            encoded = unet.encode_context(context)
            return lambda x, t: unet(x, t, encoded)
        batch, window, width = features.shape
        uncond = unconditional_context(batch, window, width, device=features.device, dtype=features.dtype)
        encoded = unet.encode_context(torch.cat([uncond, context]))
        return classifier_free_guidance(lambda x, t: unet.forward_guidance_pair(x, t, encoded), cfg_scale)

    @torch.no_grad()
    def sample_latents(
        self,
        features: torch.Tensor,
        *,
        steps: int = 50,
        cfg_scale: float = 2.0,
        sampler: str = "ddim",
        eta: float = 1.0,
        generators: Sequence[torch.Generator] | None = None,
        noise: NoiseSource | None = None,
        on_step: StepCallback | None = None,
    ) -> torch.Tensor:
        """Window features [B, W, 2F] -> latents float32 [B, *latent_shape] (still scaled).

        Noise: ``noise`` (e.g. :class:`~codec.diffusion.samplers.ReplayedNoise`) if given, else one
        generator per window, else the global torch RNG. ``sampler`` :data:`PRIOR_SAMPLER` returns
        the latent prior's estimate and ignores the other settings (a UNet with a latent prior only).
        """
        features = self._check_features(features)
        check_sampler(self.config, sampler)
        if sampler == PRIOR_SAMPLER:
            return self.unet.estimate_latents(build_context(features)).float()
        if noise is None:
            noise = GaussianNoise(features.shape[0], self.latent_shape, generators=generators, device=features.device)
        return sample(
            self.velocity_model(features, cfg_scale),
            self.noise_levels,
            noise,
            steps=steps,
            sampler=sampler,
            eta=eta,
            device=features.device,
            on_step=on_step,
        )

    @torch.no_grad()
    def latents_to_mel(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [B, C, T, F] -> mel [B, 1, 4T, 4F]: times 1/scale_factor, then the VAE decoder."""
        # Official order: the float32 reciprocal first, then the product (a division can differ by 1 ulp).
        return self.first_stage_model.decode((1.0 / self.scale_factor) * latents)

    @torch.no_grad()
    def decode_windows(
        self,
        features: torch.Tensor,
        *,
        steps: int = 50,
        cfg_scale: float = 2.0,
        sampler: str = "ddim",
        eta: float = 1.0,
        generators: Sequence[torch.Generator] | None = None,
        noise: NoiseSource | None = None,
        keep_samples: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Window features float [B, W, 2F] (-1 padded) -> waveforms float32 [B, 1, 160*frames + 32].

        frames = 4 * latent_time (1024 officially: 163 872 samples). Defaults are the official
        decoder settings: DDIM, 50 steps, eta 1, guidance 2. ``sampler`` "dpmpp2m" ignores eta.
        ``keep_samples`` (one per window): only that many leading samples will be used (the last
        window of an input); they are exact, the rest are zeros, and the vocoder skips the frames
        that cannot reach them.
        """
        latents = self.sample_latents(
            features,
            steps=steps,
            cfg_scale=cfg_scale,
            sampler=sampler,
            eta=eta,
            generators=generators,
            noise=noise,
        )
        mel = self.latents_to_mel(latents)
        if keep_samples is None:
            return self.first_stage_model.mel_to_waveform(mel)
        if len(keep_samples) != mel.shape[0]:
            raise ValueError(f"keep_samples has {len(keep_samples)} entries for {mel.shape[0]} windows")
        return self._vocode_kept(mel, [int(n) for n in keep_samples])

    def _vocode_kept(self, mel: torch.Tensor, keep_samples: list[int]) -> torch.Tensor:
        """Vocode mel [B, 1, frames, bins]; window b only up to the frames its first keep_samples[b]
        samples depend on (alone), the full windows together; zeros after each window's kept samples."""
        vocoder = self.first_stage_model.vocoder
        frames = mel.shape[2]
        needed = [min(frames, math.ceil(n / vocoder.hop_length) + vocoder.context_frames) for n in keep_samples]
        full = [b for b, n in enumerate(needed) if n == frames]
        out = mel.new_zeros(mel.shape[0], 1, vocoder.output_length(frames))
        if full:
            out[full] = self.first_stage_model.mel_to_waveform(mel[full])
        for b, n in enumerate(needed):
            if n < frames:
                keep = min(keep_samples[b], out.shape[-1])
                out[b, :, :keep] = self.first_stage_model.mel_to_waveform(mel[b : b + 1, :, :n])[0, :, :keep]
        return out

    def _check_features(self, features: torch.Tensor) -> torch.Tensor:
        width = 2 * self.config.feature_dim
        window = self.config.window_tokens
        if features.dim() != 3 or features.shape[1:] != (window, width):
            raise ValueError(
                f"decoder windows must be [batch, {window} tokens, {width}] (-1 padded), "
                f"got shape {tuple(features.shape)}"
            )
        if not features.is_floating_point():
            raise ValueError(f"decoder windows must be floating point, got {features.dtype}")
        return features.to(self.scale_factor.device, torch.float32)
