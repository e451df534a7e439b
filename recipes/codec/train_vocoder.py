"""Stage e: the HiFi-GAN vocoder (64-bin log-mel -> 16 kHz audio) with its adversarial losses.

    python recipes/codec/train_vocoder.py --config recipes/codec/configs/vocoder_small.yaml \
        data.manifest=data/corpus/manifest.jsonl run_dir=runs/codec-small/vocoder

Generator loss: ``mel_weight`` x L1 between the log-mels of real and generated audio, plus the
least-squares adversarial losses and the feature-matching losses of the multi-period and multi-scale
discriminators (``codec.vocoder``). Discriminator loss: least squares on real vs generated. The
adversarial terms start after ``adversarial_start`` batches (mel-only warm-up); gradients are
clipped to ``grad_clip`` (a model option: Lightning's own clipping flag does not apply here).
With DDP use ``trainer.strategy=ddp_find_unused_parameters_true`` (each backward reaches one side). Two optimizers step
per batch, so Lightning's global step (and ``trainer.max_steps``) advances by 2 per batch.
Writes ``<run_dir>/weights.safetensors`` (``decoder.first_stage_model.vocoder.*``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from codec.frontend import MEL_HOP, log_mel_64
from codec.vocoder import (
    HiFiGAN,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from recipes.codec.common import StageModule, model_kwargs, parse_args, prefixed, run_stage


class VocoderModule(StageModule):
    """Trains the HiFi-GAN generator of ``codec`` against the MPD and MSD discriminators."""

    stage = "vocoder"

    def __init__(self, codec: str, seed: int = 0, lr: float = 2e-4, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.8, 0.99), warmup_steps: int = 0, min_lr_ratio: float = 1.0,
                 mel_weight: float = 45.0, adversarial_start: int = 0, grad_clip: float | None = None) -> None:
        super().__init__(codec, lr, weight_decay, betas, warmup_steps, min_lr_ratio, seed)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = HiFiGAN(self.codec_config.vocoder)
        self.mpd = MultiPeriodDiscriminator()
        self.msd = MultiScaleDiscriminator()

    def configure_optimizers(self):
        discriminators = list(self.mpd.parameters()) + list(self.msd.parameters())
        return [self.make_optimizer(list(self.generator.parameters())), self.make_optimizer(discriminators)]

    def generate(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Waveforms [B, N] -> (real [B, 1, n], generated [B, 1, n], real log-mel [B, 64, n/160])."""
        mel = log_mel_64(audio)
        frames = mel.shape[-1]
        real = audio[:, None, : frames * MEL_HOP]
        fake = self.generator(mel)[..., : frames * MEL_HOP]
        return real, fake, mel

    def mel_loss(self, fake: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(log_mel_64(fake[:, 0]), mel)

    def adversarial_on(self) -> bool:
        return self.global_step // 2 >= self.hparams.adversarial_start

    def discriminate(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return sum(discriminator_loss(d(real)[0], d(fake)[0]) for d in (self.mpd, self.msd))

    def generator_loss(self, real: torch.Tensor, fake: torch.Tensor, mel: torch.Tensor) -> tuple[torch.Tensor, dict]:
        mel_l1 = self.mel_loss(fake, mel)
        loss = self.hparams.mel_weight * mel_l1
        logs = {"mel_l1": mel_l1}
        if self.adversarial_on():
            adversarial = feature_matching = 0.0
            for discriminator in (self.mpd, self.msd):
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
        self.mpd.requires_grad_(False)
        self.msd.requires_grad_(False)
        g_loss, g_logs = self.generator_loss(real, fake, mel)
        self.mpd.requires_grad_(True)
        self.msd.requires_grad_(True)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        self.clip_gradients(opt_g, gradient_clip_val=self.hparams.grad_clip)
        opt_g.step()
        self.log_all("train", g_loss, {**logs, **g_logs}, batch["audio"].shape[0])
        return g_loss.detach()

    def export_weights(self) -> dict[str, torch.Tensor]:
        return prefixed("decoder.first_stage_model.vocoder.", self.generator)


def main(argv: list[str] | None = None) -> dict:
    """Run stage e; returns this rank's summary."""
    config = parse_args(__doc__.split("\n\n")[0], argv)
    if (config.get("trainer") or {}).get("gradient_clip_val") is not None:
        raise SystemExit("the vocoder steps its optimizers itself: set model.grad_clip, not trainer.gradient_clip_val")
    return run_stage(config, lambda values, seed: VocoderModule(**model_kwargs(values, VocoderModule, seed)))


if __name__ == "__main__":
    main()
