"""Lightning wrappers: :class:`AudioLMModule` (loss, AdamW, warm-up + cosine) and
:class:`TokenDataModule` (manifest -> bucketed, rank-split batches).

Precision, gradient clipping, devices, strategy (DDP/FSDP) and checkpoints are Trainer flags;
``recipes/lm/train.py`` shows a complete run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lm.config import LMConfig
from lm.data import (
    IGNORE_INDEX,
    BucketBatchSampler,
    ShardWindowSampler,
    TokenSequenceDataset,
    collate,
    max_sequence_length,
    read_manifest,
)
from lm.layout import TokenLayout
from lm.model import AudioLM
from lm.text import TextTokenizer


def lm_loss(model: AudioLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-id cross-entropy (float32) over targets that are not -100; batch from :func:`lm.data.collate`."""
    return token_losses(model, batch).sum() / (batch["targets"] != IGNORE_INDEX).sum().clamp(min=1)


def token_losses(model: AudioLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-id cross-entropy in nats, float32 [B, T], 0 where the target is -100 (for sums by kind of id)."""
    logits = model(batch["inputs"])
    return F.cross_entropy(logits.float().transpose(1, 2), batch["targets"], ignore_index=IGNORE_INDEX,
                           reduction="none")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear 0 -> 1 over ``warmup_steps``, then cosine down to ``min_lr_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class AudioLMModule(L.LightningModule):
    """Trains an :class:`AudioLM` built from ``model`` (a dict of :class:`LMConfig` fields)."""

    def __init__(
        self,
        model: dict,
        lr: float = 3e-4,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        warm_lr_scale: float = 1.0,
    ) -> None:
        """``warm_lr_scale``: learning-rate multiplier for the parameters :meth:`mark_warm` names (those a
        warm start copied), so a grown model's trained layers move slowly while its added ones learn."""
        super().__init__()
        if not warm_lr_scale > 0:
            raise ValueError(f"optim.warm_lr_scale must be > 0, got {warm_lr_scale}")
        self.save_hyperparameters()
        self.config = LMConfig.from_dict(dict(model))
        self.model = AudioLM(self.config)
        self.warm_parameters: list[str] = []

    def mark_warm(self, names: list[str]) -> None:
        """Name the parameters that train at ``warm_lr_scale`` times the learning rate (kept in checkpoints,
        so a resumed run rebuilds the same optimizer groups)."""
        known = dict(self.model.named_parameters())
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ValueError(f"not parameters of this model: {unknown}")
        self.warm_parameters = sorted(names)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["warm_parameters"] = list(self.warm_parameters)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Runs before configure_optimizers on resume, so the restored optimizer state meets its groups.
        self.warm_parameters = list(checkpoint.get("warm_parameters", []))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = lm_loss(self.model, batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["inputs"].shape[0])
        group = self.optimizers().param_groups[0]  # checkpoints from before warm_lr_scale have no lr_scale
        self.log("train/lr", group["lr"] / group.get("lr_scale", 1.0), batch_size=batch["inputs"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = lm_loss(self.model, batch)
        self.log("valid/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["inputs"].shape[0])
        return loss

    def configure_optimizers(self):
        # Norm gains and other vectors are not decayed; matrices (embeddings included) are. The first
        # group holds new parameters at the full rate whenever there are any (train/lr logs it).
        warm = set(self.warm_parameters)
        named = [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]
        groups = []
        for is_warm, scale in ((False, 1.0), (True, float(self.hparams.warm_lr_scale))):
            for is_matrix, decay in ((True, self.hparams.weight_decay), (False, 0.0)):
                params = [p for name, p in named if (name in warm) == is_warm and (p.dim() >= 2) == is_matrix]
                if params:
                    groups.append({"params": params, "weight_decay": decay, "lr": self.hparams.lr * scale,
                                   "lr_scale": scale})
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, betas=tuple(self.hparams.betas))
        total = int(self.trainer.estimated_stepping_batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: warmup_cosine(step, self.hparams.warmup_steps, total, self.hparams.min_lr_ratio),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`BucketBatchSampler` whose place in the epoch goes into checkpoints.

    ``progress()`` gives the batches the trainer has finished in the current epoch; a restored
    loader skips them, so a run resumed mid-epoch sees the batches the interrupted run would have.
    """

    def __init__(self, *args, progress: Callable[[], int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict:
        return {"epoch": self.batch_sampler.sampler.epoch, "batches_done": int(self.progress())}

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.resume_at = (int(state["epoch"]), int(state["batches_done"]))


class TokenDataModule(L.LightningDataModule):
    """Train / valid loaders over a token manifest, cropped to ``max_frames``, batched by length.

    Each DDP rank reads its own batches (so run the Trainer with ``use_distributed_sampler=False``).
    """

    def __init__(
        self,
        manifest: str | Path,
        layout: TokenLayout,
        batch_size: int = 16,
        max_frames: int = 500,
        text_tokenizer: str | Path | None = None,
        text_dropout: float = 0.1,
        max_text_tokens: int = 64,
        num_workers: int = 0,
        bucket_size: int | None = None,
        shards_per_window: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.manifest = Path(manifest)
        self.layout = layout
        self.batch_size = batch_size
        self.max_frames = max_frames
        self.tokenizer = TextTokenizer(text_tokenizer) if text_tokenizer else None
        self.text_dropout = text_dropout
        self.max_text_tokens = max_text_tokens
        self.num_workers = num_workers
        self.bucket_size = bucket_size
        self.shards_per_window = shards_per_window
        self.seed = seed
        self.datasets: dict[str, TokenSequenceDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        for split, train in (("train", True), ("valid", False)):
            rows = read_manifest(self.manifest, split)
            if train and not rows:
                raise ValueError(f"{self.manifest}: no rows with split 'train'")
            if rows:
                self.datasets[split] = TokenSequenceDataset(
                    rows, self.layout, self.max_frames, self.tokenizer,
                    text_dropout=self.text_dropout if train else 0.0,
                    max_text_tokens=self.max_text_tokens,
                    random_crop=train,
                )

    def max_sequence_length(self) -> int:
        """Longest training sequence: the model's ``max_seq_len`` must be at least this."""
        return max_sequence_length(self.layout, self.max_frames, self.max_text_tokens if self.tokenizer else None)

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        rank, world = self._rank()
        order = ShardWindowSampler(self.datasets[split].rows, shuffle, self.seed, self.shards_per_window)
        sampler = BucketBatchSampler(order, self.batch_size, world, rank, self.bucket_size, drop_last=shuffle)
        options = dict(batch_sampler=sampler, collate_fn=collate, num_workers=self.num_workers,
                       persistent_workers=self.num_workers > 0)
        if not shuffle or self.trainer is None:
            return DataLoader(self.datasets[split], **options)
        return ResumableDataLoader(self.datasets[split], progress=self._batches_done, **options)

    def _batches_done(self) -> int:
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("valid", shuffle=False) if "valid" in self.datasets else []
