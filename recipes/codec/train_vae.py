"""Stage d: the AudioLDM-style VAE (AutoencoderKL) on 64-bin log-mels.

    python recipes/codec/train_vae.py --config recipes/codec/configs/vae_small.yaml \
        data.manifest=data/corpus/manifest.jsonl run_dir=runs/codec-small/vae

Random crops of the ``train`` split become log-mels [B, 1, frames, 64] (``codec.frontend.log_mel_64``,
100 frames/s); the loss is the mean L1 reconstruction error of a posterior sample plus
``kl_weight`` times the KL divergence per mel value (``output_bias_init`` starts the decoder's
output at a typical log-mel level instead of 0). No adversarial term (the official VAE adds
one after 50k steps; it is left out here). ``init_from`` (a codec folder or shipped name, e.g.
``default``) starts from that codec's VAE; ``train_encoder: false`` then freezes its encoder, so the
latent space a trained LDM reads stays exactly the same while the decoder improves. Writes
``<run_dir>/weights.safetensors`` (``decoder.first_stage_model.{encoder,decoder,quant_conv,post_quant_conv}.*``).
"""

from __future__ import annotations

import torch

from codec.config import SAMPLE_RATE
from codec.frontend import MEL_HOP, log_mel_64
from codec.vae import AutoencoderKL
from semanticodec_lm.training.codec_stages import (
    StageModule,
    codec_part_state,
    load_into,
    model_kwargs,
    parse_args,
    prefixed,
    run_stage,
)

VAE_PARTS = ("encoder", "decoder", "quant_conv", "post_quant_conv")


def crop_mel(audio: torch.Tensor, multiple: int) -> torch.Tensor:
    """Log-mel of waveforms float [B, N] -> [B, 1, frames, 64], frames cut to a multiple of ``multiple``."""
    mel = log_mel_64(audio).transpose(1, 2)
    frames = mel.shape[1] // multiple * multiple
    if frames == 0:
        raise ValueError(f"crops of {audio.shape[-1]} samples give fewer than {multiple} mel frames; "
                         f"use data.segment_seconds >= {multiple * MEL_HOP / SAMPLE_RATE}")
    return mel[:, None, :frames]


class VAEModule(StageModule):
    """Trains the VAE of ``codec`` (the vocoder inside ``AutoencoderKL`` is not touched)."""

    stage = "vae"

    def __init__(self, codec: str, seed: int = 0, lr: float = 1e-4, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.5, 0.9), warmup_steps: int = 100, min_lr_ratio: float = 0.1,
                 kl_weight: float = 1e-2, output_bias_init: float | None = None, init_from: str | None = None,
                 train_encoder: bool = True) -> None:
        super().__init__(codec, lr, weight_decay, betas, warmup_steps, min_lr_ratio, seed)
        self.save_hyperparameters()
        config = self.codec_config
        self.vae = AutoencoderKL(config.vae, config.vocoder)
        self.vae.vocoder.requires_grad_(False)
        if not train_encoder:
            if not init_from:
                raise SystemExit("model.train_encoder=false needs model.init_from (a trained encoder to keep)")
            self.vae.encoder.requires_grad_(False)
            self.vae.quant_conv.requires_grad_(False)
        if init_from:
            self.load_vae_from(init_from)
        elif output_bias_init is not None:
            # Log-mels sit around -5 nepers; an output that starts there spares thousands of early
            # steps in which Adam would only be shifting the output level.
            torch.nn.init.constant_(self.vae.decoder.conv_out.bias, output_bias_init)

    def load_vae_from(self, codec_source: str) -> None:
        """Copy the VAE of a codec (shipped name or folder) into this module; its VAE config must match."""
        state = codec_part_state(codec_source, self.codec_config, "vae")
        for part in VAE_PARTS:
            load_into(getattr(self.vae, part), f"decoder.first_stage_model.{part}.", state, codec_source)

    def training_loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Batch ``audio`` float [B, N] -> (L1 + kl_weight * KL per mel value, {l1, kl})."""
        mel = crop_mel(batch["audio"], self.vae.downsampling)
        posterior = self.vae.encode(mel)
        reconstruction = self.vae.decode(posterior.sample(generator))
        l1 = (reconstruction - mel).abs().mean()
        kl = posterior.kl().mean() / mel[0].numel()
        return l1 + self.hparams.kl_weight * kl, {"l1": l1, "kl": kl}

    def export_weights(self) -> dict[str, torch.Tensor]:
        weights = {}
        for part in VAE_PARTS:
            weights.update(prefixed(f"decoder.first_stage_model.{part}.", getattr(self.vae, part)))
        return weights


def main(argv: list[str] | None = None) -> dict:
    """Run stage d; returns this rank's summary."""
    config = parse_args(__doc__.split("\n\n")[0], argv)
    return run_stage(config, lambda values, seed: VAEModule(**model_kwargs(values, VAEModule, seed)))


if __name__ == "__main__":
    main()
