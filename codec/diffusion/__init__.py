"""Latent diffusion of the SemantiCodec decoder: the UNet, the noise schedule, the samplers and the
conditioning rows. :class:`codec.decoder.LatentDiffusionDecoder` puts them together with the VAE
and the vocoder."""

from codec.diffusion.conditioning import build_context, position_table, unconditional_context
from codec.diffusion.samplers import (
    SAMPLERS,
    GaussianNoise,
    ReplayedNoise,
    classifier_free_guidance,
    ddim_sample,
    dpmpp_2m_sample,
    sample,
)
from codec.diffusion.schedule import NoiseLevels, ddim_schedule, ddim_timesteps, schedule_buffers
from codec.diffusion.unet import EncodedContext, UNet

__all__ = [
    "SAMPLERS",
    "EncodedContext",
    "GaussianNoise",
    "NoiseLevels",
    "ReplayedNoise",
    "UNet",
    "build_context",
    "classifier_free_guidance",
    "ddim_sample",
    "ddim_schedule",
    "ddim_timesteps",
    "dpmpp_2m_sample",
    "position_table",
    "sample",
    "schedule_buffers",
    "unconditional_context",
]
