"""Stage a: AudioMAE masked-autoencoder pre-training on the Kaldi fbank.

    python recipes/codec/train_audiomae.py --config recipes/codec/configs/audiomae_small.yaml \
        data.manifest=data/corpus/manifest.jsonl run_dir=runs/codec-small/audiomae

Inputs are 10.24-s crops of the corpus ``train`` split (shorter clips zero-padded, as the official
front-end pads), turned into the normalised 128-bin Kaldi fbank. 80 % of the 512 patches of each
segment are hidden; the loss is the patch MSE on the hidden ones (``codec.training.mae.mae_loss``).
Every validation also fits a linear probe on pooled AudioMAE features (``probe`` section:
``clips`` seeded ``train`` clips to fit, as many ``valid`` clips to score, first 10.24 s of each)
and logs ``valid/probe_<task>`` accuracy for every corpus task (domain, class, instrument,
language): whether the features get more useful, not only whether the MAE loss falls.
``init_from`` (a codec folder or shipped name, e.g. ``default``) starts from that codec's AudioMAE
(encoder and MAE decoder). Writes ``<run_dir>/weights.safetensors`` (``encoder.audiomae.model.*``).
"""

from __future__ import annotations

import os

import lightning as L
import torch

from codec.config import SAMPLE_RATE
from codec.semantic import AudioMAE, tokens_per_time_step
from codec.training.mae import mae_loss
from semanticodec_lm.corpus.datasets import ManifestDataset
from semanticodec_lm.probe import TASKS, pool_by_position, task_label, train_linear_probe
from semanticodec_lm.training.codec_stages import StageModule, codec_part_state, load_into, model_kwargs, parse_args, prefixed, run_stage, segment_fbank


class AudioMAEModule(StageModule):
    """Trains the whole AudioMAE (encoder and MAE decoder) of ``codec`` (a config name)."""

    stage = "audiomae"

    def __init__(self, codec: str, seed: int = 0, lr: float = 1.5e-4, weight_decay: float = 0.05,
                 betas: tuple[float, float] = (0.9, 0.95), warmup_steps: int = 100, min_lr_ratio: float = 0.1,
                 mask_ratio: float = 0.8, norm_pix_loss: bool = False, init_from: str | None = None) -> None:
        super().__init__(codec, lr, weight_decay, betas, warmup_steps, min_lr_ratio, seed)
        self.save_hyperparameters()
        self.audiomae = AudioMAE(self.codec_config.audiomae)
        if init_from:
            self.load_audiomae_from(init_from)

    def load_audiomae_from(self, codec_source: str) -> None:
        """Copy the AudioMAE of a codec (shipped name or folder); its AudioMAE config must match."""
        state = codec_part_state(codec_source, self.codec_config, "audiomae")
        load_into(self.audiomae, "encoder.audiomae.", state, codec_source)

    def training_loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Batch ``audio`` float [B, 163840] -> (masked-patch MSE, {})."""
        loss, _, _ = mae_loss(
            self.audiomae.model,
            segment_fbank(batch["audio"]), self.hparams.mask_ratio, generator, self.hparams.norm_pix_loss)
        return loss, {}

    def export_weights(self) -> dict[str, torch.Tensor]:
        return prefixed("encoder.audiomae.", self.audiomae)


PATCHES_PER_SECOND = 50  # 512 patches per 10.24-s segment


class FeatureProbe(L.Callback):
    """After every validation (rank 0), a linear probe of pooled AudioMAE patch features.

    ``clips`` seeded clips of ``train`` fit the probe and ``clips`` of ``valid`` score it, for every
    task with two or more classes among them; logs ``valid/probe_<task>`` (accuracy). The clips'
    fbanks are computed once and kept (about 0.5 MB per clip).
    """

    def __init__(self, manifest: str | os.PathLike, clips: int = 200, seed: int = 0) -> None:
        self.manifest, self.clips, self.seed = manifest, clips, seed
        self.cache: dict[str, tuple[torch.Tensor, list[int], list[dict]]] | None = None

    def _load(self, split: str) -> tuple[torch.Tensor, list[int], list[dict]]:
        dataset = ManifestDataset(self.manifest, splits=[split], segment_seconds=10.24, random_crop=False)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed))[: self.clips]
        items = [dataset[int(index)] for index in order]
        fbank = segment_fbank(torch.stack([item["audio"] for item in items]))
        patches = [max(1, min(512, round(int(item["length"]) / SAMPLE_RATE * PATCHES_PER_SECOND))) for item in items]
        return fbank, patches, [dataset.rows[int(index)] for index in order]

    @torch.no_grad()
    def features(self, module: "AudioMAEModule", fbank: torch.Tensor, patches: list[int]) -> torch.Tensor:
        """Pooled features [clips, 16E]: mean and std over the clip's own patches (padding left out) at
        each of the 8 frequency positions, as ``semanticodec probe`` pools the continuous features."""
        was_training = module.audiomae.training
        module.audiomae.eval()
        parts = [module.audiomae(chunk.to(module.device)).float().cpu() for chunk in fbank.split(16)]
        module.audiomae.train(was_training)
        positions = tokens_per_time_step(1)
        return torch.stack([pool_by_position(rows[:count], positions) for rows, count in zip(torch.cat(parts), patches)])

    def on_validation_epoch_end(self, trainer: L.Trainer, module: "AudioMAEModule") -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if self.cache is None:
            self.cache = {split: self._load(split) for split in ("train", "valid")}
        (train_fbank, train_patches, train_rows), (valid_fbank, valid_patches, valid_rows) = \
            self.cache["train"], self.cache["valid"]
        x_train, x_valid = self.features(module, train_fbank, train_patches), self.features(module, valid_fbank, valid_patches)
        for task in TASKS:
            scores = probe_accuracy(x_train, [task_label(row, task) for row in train_rows],
                                    x_valid, [task_label(row, task) for row in valid_rows], seed=self.seed)
            if scores is not None:
                module.log(f"valid/probe_{task}", scores, rank_zero_only=True)


def probe_accuracy(x_train: torch.Tensor, train_labels: list[str | None], x_eval: torch.Tensor,
                   eval_labels: list[str | None], *, seed: int = 0) -> float | None:
    """Accuracy of a linear probe fitted on the labelled rows of x_train [N, D] and scored on the rows
    of x_eval [M, D] whose label was seen in training; None with fewer than two classes or nothing to score."""
    classes = sorted({label for label in train_labels if label})
    index = {label: i for i, label in enumerate(classes)}
    fit = [i for i, label in enumerate(train_labels) if label]
    score = [i for i, label in enumerate(eval_labels) if label in index]
    if len(classes) < 2 or not score:
        return None
    probe = train_linear_probe(x_train[fit], torch.tensor([index[train_labels[i]] for i in fit]), len(classes), seed=seed)
    predicted = probe(x_eval[score]).argmax(1)
    return float((predicted == torch.tensor([index[eval_labels[i]] for i in score])).float().mean())


def main(argv: list[str] | None = None) -> dict:
    """Run stage a; returns this rank's summary."""
    config = parse_args(__doc__.split("\n\n")[0], argv, extra_sections=("probe",))
    probe = dict(config.pop("probe", None) or {})
    unknown = sorted(set(probe) - {"clips"})
    if unknown:
        raise SystemExit(f"probe: unknown key(s) {unknown}; known: clips")
    clips = int(probe.get("clips", 200))
    callbacks = [FeatureProbe(config["data"]["manifest"], clips, int(config.get("seed", 0)))] if clips > 0 else []
    return run_stage(config, lambda values, seed: AudioMAEModule(**model_kwargs(values, AudioMAEModule, seed)),
                     callbacks)


if __name__ == "__main__":
    main()
