"""Stage e: the vocoder (64-bin log-mel -> 16 kHz audio) with its adversarial and spectral losses.

    python recipes/codec/train_vocoder.py --config recipes/codec/configs/vocoder_small.yaml \
        data.manifest=data/corpus/manifest.jsonl run_dir=runs/codec-small/vocoder

The codec config picks the vocoder (HiFi-GAN for the official configurations, the frame-rate iSTFT
vocoder for ``small-*``) and, unless ``discriminators`` is given, its adversaries: HiFi-GAN's
multi-period and multi-scale discriminators (``mpd``, ``msd``) or the light multi-resolution
spectrogram discriminator (``mrd``) for the iSTFT vocoder (``codec.training.gan``).
Generator loss: ``mel_weight`` x L1 between the log-mels of real and generated audio, plus
``stft_weight`` x the multi-resolution STFT loss and ``phase_weight`` x the anti-wrapping phase
losses (``codec.training.spectral``), plus the least-squares adversarial and feature-matching losses.
Discriminator loss: least squares on real vs generated. The adversarial terms start after
``adversarial_start`` batches (spectral-only warm-up); gradients are clipped to ``grad_clip`` (a
model option: Lightning's own clipping flag does not apply here). ``init_from`` (a codec folder or
shipped name, e.g. ``default``) starts a new run from that codec's vocoder weights.
``input_vae`` (a codec folder or shipped name) feeds the vocoder, for the first ``input_vae_share`` of
each batch, the mel after that codec's frozen VAE (encode, posterior mode, decode) instead of the
real one, while the targets stay the real audio and mel: the vocoder then learns to render the
smoothed mels the decoder gives it, rather than snapping their partials to multiples of its
100-Hz frame rate (`python -m recipes.codec.pitch_through_stages` measures that buzz).
With DDP use ``trainer.strategy=ddp_find_unused_parameters_true`` (each backward reaches one side). Two optimizers step
per batch, so Lightning's global step (and ``trainer.max_steps``) advances by 2 per batch.
Writes ``<run_dir>/weights.safetensors`` (``decoder.first_stage_model.vocoder.*``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from codec.config import ISTFTVocoderConfig
from codec.frontend import MEL_HOP, log_mel_64
from codec.training.gan import (
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
    MultiScaleDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from codec.training.spectral import multi_resolution_stft_loss, phase_loss
from codec.vae import AutoencoderKL
from codec.vocoder import build_vocoder
from semanticodec_lm.training.codec_stages import (
    StageModule,
    codec_part_state,
    load_into,
    model_kwargs,
    parse_args,
    prefixed,
    run_stage,
)

DISCRIMINATORS = {"mpd": MultiPeriodDiscriminator, "msd": MultiScaleDiscriminator, "mrd": MultiResolutionDiscriminator}
VOCODER_PREFIX = "decoder.first_stage_model.vocoder."


class VocoderModule(StageModule):
    """Trains the vocoder of ``codec`` against its discriminators (see the module docstring)."""

    stage = "vocoder"

    def __init__(self, codec: str, seed: int = 0, lr: float = 2e-4, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.8, 0.99), warmup_steps: int = 0, min_lr_ratio: float = 1.0,
                 mel_weight: float = 45.0, stft_weight: float = 0.0, phase_weight: float = 0.0,
                 adversarial_start: int = 0, grad_clip: float | None = None,
                 discriminators: list[str] | None = None, init_from: str | None = None,
                 input_vae: str | None = None, input_vae_share: float = 1.0) -> None:
        super().__init__(codec, lr, weight_decay, betas, warmup_steps, min_lr_ratio, seed)
        self.save_hyperparameters()
        self.automatic_optimization = False
        vocoder_config = self.codec_config.vocoder
        self.generator = build_vocoder(vocoder_config)
        if discriminators is None:
            discriminators = ["mrd"] if isinstance(vocoder_config, ISTFTVocoderConfig) else ["mpd", "msd"]
        unknown = sorted(set(discriminators) - set(DISCRIMINATORS))
        if unknown or not discriminators:
            raise SystemExit(f"model.discriminators: {unknown or 'empty'}; choose from {sorted(DISCRIMINATORS)}")
        self.discriminators = torch.nn.ModuleDict({name: DISCRIMINATORS[name]() for name in discriminators})
        if init_from:
            self.load_vocoder_from(init_from)
        if not 0.0 <= input_vae_share <= 1.0:
            raise SystemExit(f"model.input_vae_share must be in [0, 1], got {input_vae_share}")
        self.input_vae = frozen_vae(input_vae) if input_vae else None

    def load_vocoder_from(self, codec_source: str) -> None:
        """Copy the vocoder of a codec (shipped name or folder) into the generator; its vocoder config must match."""
        state = codec_part_state(codec_source, self.codec_config, "vocoder")
        load_into(self.generator, VOCODER_PREFIX, state, codec_source)

    def configure_optimizers(self):
        return [self.make_optimizer(list(self.generator.parameters())),
                self.make_optimizer(list(self.discriminators.parameters()))]

    def generate(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Waveforms [B, N] -> (real [B, 1, n], generated [B, 1, n], real log-mel [B, 64, n/160])."""
        mel = log_mel_64(audio)
        vocoder_input = mel
        if self.input_vae is not None:
            mel = mel[..., : mel.shape[-1] // self.input_vae.downsampling * self.input_vae.downsampling]
            through_vae = round(self.hparams.input_vae_share * mel.shape[0])
            vocoder_input = torch.cat([vae_round_trip(self.input_vae, mel[:through_vae]), mel[through_vae:]])
        frames = mel.shape[-1]
        real = audio[:, None, : frames * MEL_HOP]
        fake = self.generator(vocoder_input)[..., : frames * MEL_HOP]
        return real, fake, mel

    def mel_loss(self, fake: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(log_mel_64(fake[:, 0].float()), mel)

    def adversarial_on(self) -> bool:
        return self.global_step // 2 >= self.hparams.adversarial_start

    def discriminate(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return sum(discriminator_loss(d(real)[0], d(fake)[0]) for d in self.discriminators.values())

    def generator_loss(self, real: torch.Tensor, fake: torch.Tensor, mel: torch.Tensor) -> tuple[torch.Tensor, dict]:
        hp = self.hparams
        mel_l1 = self.mel_loss(fake, mel)
        loss = hp.mel_weight * mel_l1
        logs = {"mel_l1": mel_l1}
        if hp.stft_weight:
            logs["stft"] = multi_resolution_stft_loss(fake, real)
            loss = loss + hp.stft_weight * logs["stft"]
        if hp.phase_weight:
            logs["phase"] = phase_loss(fake, real)
            loss = loss + hp.phase_weight * logs["phase"]
        if self.adversarial_on():
            adversarial = feature_matching = 0.0
            for discriminator in self.discriminators.values():
                fake_logits, fake_features = discriminator(fake)
                _, real_features = discriminator(real)
                adversarial = adversarial + generator_adversarial_loss(fake_logits)
                feature_matching = feature_matching + feature_matching_loss(real_features, fake_features)
            loss = loss + adversarial + feature_matching
            logs.update(adversarial=adversarial, feature_matching=feature_matching)
        return loss, logs

    def training_loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Batch ``audio`` [B, N] -> (generator loss, logs), without stepping (validation, tests)."""
        real, fake, mel = self.generate(batch["audio"])
        return self.generator_loss(real, fake, mel)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        opt_g, opt_d = self.optimizers()
        real, fake, mel = self.generate(batch["audio"])
        logs = {}
        if self.adversarial_on():
            d_loss = self.discriminate(real, fake.detach())
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            self.clip_gradients(opt_d, gradient_clip_val=self.hparams.grad_clip)
            opt_d.step()
            logs["discriminator"] = d_loss
        else:
            opt_d.step()  # keeps two optimizer steps per batch, so global_step counts alike in every phase
        self.discriminators.requires_grad_(False)
        g_loss, g_logs = self.generator_loss(real, fake, mel)
        self.discriminators.requires_grad_(True)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        self.clip_gradients(opt_g, gradient_clip_val=self.hparams.grad_clip)
        opt_g.step()
        self.log_all("train", g_loss, {**logs, **g_logs}, batch["audio"].shape[0])
        return g_loss.detach()

    def export_weights(self) -> dict[str, torch.Tensor]:
        return prefixed(VOCODER_PREFIX, self.generator)


def frozen_vae(codec_source: str) -> AutoencoderKL:
    """The VAE (with its vocoder, unused) of a codec (shipped name or folder), frozen in eval mode."""
    from codec.model import SemantiCodec

    vae = SemantiCodec.from_pretrained(codec_source).decoder.first_stage_model
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def vae_round_trip(vae: AutoencoderKL, mel: torch.Tensor) -> torch.Tensor:
    """Log-mel [B, 64, T] (T a multiple of the VAE's downsampling) -> the VAE's reconstruction, same shape."""
    if not mel.shape[0]:
        return mel
    image = mel.transpose(1, 2)[:, None]  # [B, 1, T, 64], the VAE's layout
    return vae.decode(vae.encode(image).mode())[:, 0].transpose(1, 2).to(mel.dtype)


def main(argv: list[str] | None = None) -> dict:
    """Run stage e; returns this rank's summary."""
    config = parse_args(__doc__.split("\n\n")[0], argv)
    if (config.get("trainer") or {}).get("gradient_clip_val") is not None:
        raise SystemExit("the vocoder steps its optimizers itself: set model.grad_clip, not trainer.gradient_clip_val")
    return run_stage(config, lambda values, seed: VocoderModule(**model_kwargs(values, VocoderModule, seed)))


if __name__ == "__main__":
    main()
