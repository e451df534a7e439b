"""Stage a: AudioMAE masked-autoencoder pre-training on the Kaldi fbank.

    python recipes/codec/train_audiomae.py --config recipes/codec/configs/audiomae_small.yaml \
        data.manifest=data/corpus/manifest.jsonl run_dir=runs/codec-small/audiomae

Inputs are 10.24-s crops of the corpus ``train`` split (shorter clips zero-padded, as the official
front-end pads), turned into the normalised 128-bin Kaldi fbank. 80 % of the 512 patches of each
segment are hidden; the loss is the patch MSE on the hidden ones (``AudioMAEViT.forward_mae``).
Writes ``<run_dir>/weights.safetensors`` (``encoder.audiomae.model.*``).
"""

from __future__ import annotations

import torch

from codec.semantic import AudioMAE
from recipes.codec.common import StageModule, model_kwargs, parse_args, prefixed, run_stage, segment_fbank


class AudioMAEModule(StageModule):
    """Trains the whole AudioMAE (encoder and MAE decoder) of ``codec`` (a config name)."""

    stage = "audiomae"

    def __init__(self, codec: str, seed: int = 0, lr: float = 1.5e-4, weight_decay: float = 0.05,
                 betas: tuple[float, float] = (0.9, 0.95), warmup_steps: int = 100, min_lr_ratio: float = 0.1,
                 mask_ratio: float = 0.8, norm_pix_loss: bool = False) -> None:
        super().__init__(codec, lr, weight_decay, betas, warmup_steps, min_lr_ratio, seed)
        self.save_hyperparameters()
        self.audiomae = AudioMAE(self.codec_config.audiomae)

    def training_loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Batch ``audio`` float [B, 163840] -> (masked-patch MSE, {})."""
        loss, _, _ = self.audiomae.model.forward_mae(
            segment_fbank(batch["audio"]), self.hparams.mask_ratio, generator, self.hparams.norm_pix_loss)
        return loss, {}

    def export_weights(self) -> dict[str, torch.Tensor]:
        return prefixed("encoder.audiomae.", self.audiomae)


def main(argv: list[str] | None = None) -> dict:
    """Run stage a; returns this rank's summary."""
    config = parse_args(__doc__.split("\n\n")[0], argv)
    return run_stage(config, lambda values, seed: AudioMAEModule(**model_kwargs(values, AudioMAEModule, seed)))


if __name__ == "__main__":
    main()
