"""PyTorch / Lightning datasets over a corpus manifest: filtering, seeded random crops, fixed-length batches.

An example is a dict::

    {"audio": float32 [segment_samples] (or [num_samples] without a segment length),
     "length": int64 scalar (valid samples before zero padding), "index": int,
     "id", "caption", "transcript" ("" when none), "domain", "split", "language": str,
     "labels": list[str]}

Crops are drawn from a generator seeded with (seed, epoch, index), so a run is reproducible. The
epoch comes with the key: :class:`EpochSampler` yields ``(index, epoch)`` and Lightning calls its
``set_epoch`` at every epoch, so each epoch sees new crops even in worker processes; a plain integer
key uses the dataset's own epoch (:meth:`ManifestDataset.set_epoch`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import soundfile
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from codec.config import SAMPLE_RATE
from codec.manifest import ManifestError
from semanticodec_lm.corpus.manifest import DOMAINS, read_manifest, validate_row
from codec.manifest import SPLITS


class ManifestDataset(Dataset):
    """Clips of one manifest, optionally filtered by split and domain and cropped to a fixed length."""

    def __init__(
        self,
        manifest: str | os.PathLike[str],
        splits: Sequence[str] | None = None,
        domains: Sequence[str] | None = None,
        segment_seconds: float | None = None,
        random_crop: bool = True,
        seed: int = 0,
        min_seconds: float = 0.0,
    ) -> None:
        """``segment_seconds=None`` returns whole clips; otherwise crops (random or from the start),
        zero-padding shorter clips. Raises :class:`ManifestError` for a bad manifest or filter."""
        self.manifest = Path(manifest)
        self.root = self.manifest.parent
        for name, values, allowed in (("split", splits, SPLITS), ("domain", domains, DOMAINS)):
            bad = sorted(set(values or ()) - set(allowed))
            if bad:
                raise ManifestError(f"unknown {name} {bad}; expected some of {allowed}")
        if segment_seconds is not None and segment_seconds <= 0:
            raise ManifestError(f"segment_seconds must be positive, got {segment_seconds}")
        self.rows: list[dict[str, Any]] = []
        for number, row in enumerate(read_manifest(self.manifest), start=1):
            problems = validate_row(row)
            if problems:
                raise ManifestError(f"{self.manifest}:{number}: {problems[0]}")
            if (splits is None or row["split"] in splits) and (domains is None or row["domain"] in domains) \
                    and row["duration"] >= min_seconds:
                self.rows.append(row)
        self.segment_samples = None if segment_seconds is None else int(round(segment_seconds * SAMPLE_RATE))
        self.random_crop = random_crop
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw different (but reproducible) crops in epoch ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def crop_start(self, index: int, epoch: int | None = None) -> int:
        """First sample of the crop of clip ``index`` in ``epoch`` (default: the dataset's epoch);
        0 without random crops or for clips no longer than the segment."""
        row = self.rows[index]
        if self.segment_samples is None or not self.random_crop or row["num_samples"] <= self.segment_samples:
            return 0
        epoch = self.epoch if epoch is None else epoch
        generator = torch.Generator().manual_seed(_mix_seed(self.seed, epoch, index))
        return int(torch.randint(row["num_samples"] - self.segment_samples + 1, (1,), generator=generator))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        row = self.rows[index]
        path = self.root / row["path"]
        start = self.crop_start(index, epoch)
        frames = -1 if self.segment_samples is None else self.segment_samples
        try:
            samples, rate = soundfile.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
            raise ManifestError(f"{path}: cannot read clip {row['id']!r} ({error})") from None
        if rate != SAMPLE_RATE:
            raise ManifestError(f"{path}: sample rate {rate} Hz, expected {SAMPLE_RATE}")
        audio = torch.from_numpy(samples.mean(axis=1))
        length = audio.shape[0]
        if self.segment_samples is not None and length < self.segment_samples:
            audio = torch.nn.functional.pad(audio, (0, self.segment_samples - length))
        return {"audio": audio, "length": torch.tensor(length), "index": index, "id": row["id"],
                "caption": row["caption"], "transcript": row["transcript"] or "", "domain": row["domain"],
                "split": row["split"], "language": row["language"] or "", "labels": list(row["labels"])}


def _mix_seed(*values: int) -> int:
    mixed = 0
    for value in values:
        mixed = (mixed * 1_000_003 + value) % (2**63 - 1)
    return mixed


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)`` over ``length`` clips, shuffled per epoch from ``seed`` when asked."""

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True) -> None:
        self.length, self.seed, self.shuffle, self.epoch = length, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning (or the training loop) at the start of every epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.length, generator=generator)
        else:
            order = torch.arange(self.length)
        return iter([(int(index), self.epoch) for index in order])

    def __len__(self) -> int:
        return self.length


def collate_clips(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch examples: ``audio`` float32 [B, T] zero-padded to the longest, ``length`` int64 [B];
    the other fields become lists."""
    longest = max(example["audio"].shape[0] for example in examples)
    audio = torch.stack([torch.nn.functional.pad(example["audio"], (0, longest - example["audio"].shape[0]))
                         for example in examples])
    batch: dict[str, Any] = {"audio": audio, "length": torch.stack([example["length"] for example in examples])}
    for key in examples[0]:
        if key not in batch:
            batch[key] = [example[key] for example in examples]
    return batch


class CorpusDataModule(pl.LightningDataModule):
    """Train on ``train`` (random crops, shuffled), validate on ``valid`` and test on ``test`` (crops from
    the start, fixed order). The test split is only ever read by :meth:`test_dataloader`."""

    def __init__(
        self,
        manifest: str | os.PathLike[str],
        segment_seconds: float,
        batch_size: int = 8,
        domains: Sequence[str] | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.manifest, self.segment_seconds, self.batch_size = manifest, segment_seconds, batch_size
        self.domains, self.num_workers, self.seed = domains, num_workers, seed

    def _dataset(self, split: str, random_crop: bool) -> ManifestDataset:
        return ManifestDataset(self.manifest, splits=[split], domains=self.domains,
                               segment_seconds=self.segment_seconds, random_crop=random_crop, seed=self.seed)

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self._dataset(split, random_crop=train)
        if len(dataset) == 0:
            raise ManifestError(f"{self.manifest}: no {split!r} clips for domains {self.domains}")
        sampler = EpochSampler(len(dataset), self.seed, shuffle=train)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=collate_clips, drop_last=train and len(dataset) >= self.batch_size)

    def train_dataloader(self) -> DataLoader:
        """Shuffled random crops of ``train``, new ones every epoch."""
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        """``valid`` clips, cropped from their start, in manifest order."""
        return self._loader("valid", train=False)

    def test_dataloader(self) -> DataLoader:
        """``test`` clips, cropped from their start, in manifest order."""
        return self._loader("test", train=False)
