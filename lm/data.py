"""Training examples from codec token files: manifest rows -> LM sequences -> padded batches.

A token manifest (JSON Lines) has one row per clip::

    {"tokens": "shards/train-000.tokens.safetensors", "item": 3, "frames": 500,
     "caption": "a dog barks", "split": "train"}

``tokens`` is relative to the manifest's folder (or absolute). Shards load lazily and a few stay
cached; long clips are cropped to ``max_frames``; batches group clips of similar length
(:class:`BucketBatchSampler`) and each DDP rank takes its own share of them.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import Dataset, Sampler

from codec.manifest import SPLITS, ManifestError, read_rows
from codec.tokenfile import TokenFileError, load_tokens
from lm.layout import PAD, TokenLayout
from lm.text import TextTokenizer

IGNORE_INDEX = -100  # targets that carry no loss (text prefix, padding)


@dataclass(frozen=True)
class ManifestRow:
    """One clip: its shard file, index inside the shard, frame count, caption, split and all its fields."""

    tokens: Path
    item: int
    frames: int
    caption: str | None
    split: str
    where: str  # "manifest.jsonl:12", for error messages
    # The row as written (labels, audio, ...), for readers other than the LM such as semanticodec_lm/probe.py.
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def read_manifest(path: str | Path, split: str | None = None) -> list[ManifestRow]:
    """Rows of a token manifest, optionally only one split. A missing file or a bad row raises
    ``codec.manifest.ManifestError`` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such token manifest")
    rows = []
    for line in read_rows(path):
        where, record = line.where, line.row
        missing = [key for key in ("tokens", "item", "frames", "split") if key not in record]
        if missing:
            raise ManifestError(f"{where}: missing field(s) {missing}")
        if record["split"] not in SPLITS:
            raise ManifestError(f"{where}: split must be one of {SPLITS}, got {record['split']!r}")
        if int(record["frames"]) < 1 or int(record["item"]) < 0:
            raise ManifestError(f"{where}: frames must be >= 1 and item >= 0")
        caption = record.get("caption")
        if split is None or record["split"] == split:
            shard = Path(record["tokens"])
            rows.append(ManifestRow(
                tokens=shard if shard.is_absolute() else path.parent / shard,
                item=int(record["item"]),
                frames=int(record["frames"]),
                caption=caption if isinstance(caption, str) and caption.strip() else None,
                split=record["split"],
                where=where,
                record=record,
            ))
    return rows


def training_captions(path: str | Path) -> list[str]:
    """The captions of a token manifest's ``train`` rows (rows without one left out), in file order."""
    return [row.caption for row in read_manifest(path, "train") if row.caption]


class ShardCache:
    """Token shards loaded on first use; the ``capacity`` most recently used stay in memory."""

    def __init__(self, layout: TokenLayout, capacity: int = 8) -> None:
        self.layout = layout
        self.capacity = capacity
        self._shards: OrderedDict[Path, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def item(self, row: ManifestRow) -> torch.Tensor:
        """The clip's codec tokens [T, 2] int64, checked against the manifest and the layout."""
        if row.tokens not in self._shards:
            self._shards[row.tokens] = self._load(row)
            if len(self._shards) > self.capacity:
                self._shards.popitem(last=False)
        self._shards.move_to_end(row.tokens)
        tokens, lengths = self._shards[row.tokens]
        if row.item >= len(lengths):
            raise ValueError(f"{row.where}: item {row.item} but {row.tokens} holds {len(lengths)} items")
        if int(lengths[row.item]) != row.frames:
            raise ValueError(
                f"{row.where}: manifest says {row.frames} frames, {row.tokens} item {row.item} has {int(lengths[row.item])}"
            )
        return tokens[row.item, : row.frames]

    def _load(self, row: ManifestRow) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            shard = load_tokens(row.tokens)
        except TokenFileError as error:
            raise ValueError(f"{row.where}: {error}") from None
        for stream in ("semantic_vocab_size", "acoustic_vocab_size"):
            if int(shard.codec[stream]) != getattr(self.layout, stream):
                raise ValueError(
                    f"{row.tokens}: made by a codec with {stream}={shard.codec[stream]}, "
                    f"but the language model expects {getattr(self.layout, stream)}"
                )
        return shard.tokens, shard.lengths


def max_sequence_length(layout: TokenLayout, max_frames: int, max_text_tokens: int | None) -> int:
    """Ids in the longest example: ``<bos>``, text segment (None: no text), ``<audio>``, audio."""
    text = 0 if max_text_tokens is None else max_text_tokens + 1
    return 2 + text + layout.audio_length(max_frames, ended=True)


class TokenSequenceDataset(Dataset):
    """Manifest rows -> {"ids": [L] int64, "loss_mask": [L] bool} training sequences.

    Index with ``(row, sample_seed)`` (what :class:`BucketBatchSampler` yields) or a plain row
    index (seed 0). The seed decides the random crop and whether the caption is dropped, so a
    given (row, seed) always gives the same example, in any worker.
    """

    def __init__(
        self,
        rows: list[ManifestRow],
        layout: TokenLayout,
        max_frames: int,
        tokenizer: TextTokenizer | None = None,
        text_dropout: float = 0.0,
        max_text_tokens: int = 64,
        random_crop: bool = True,
        cache_capacity: int = 8,
    ) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        if not 0.0 <= text_dropout <= 1.0:
            raise ValueError(f"text_dropout must lie in [0, 1], got {text_dropout}")
        if tokenizer is not None and tokenizer.vocab_size > layout.text_vocab_size:
            raise ValueError(
                f"the text tokenizer has {tokenizer.vocab_size} ids but the model's text_vocab_size is "
                f"{layout.text_vocab_size}"
            )
        self.rows = rows
        self.layout = layout
        self.max_frames = max_frames
        self.tokenizer = tokenizer
        self.text_dropout = text_dropout
        self.max_text_tokens = max_text_tokens
        self.random_crop = random_crop
        self.shards = ShardCache(layout, cache_capacity)

    def __len__(self) -> int:
        return len(self.rows)

    def max_sequence_length(self) -> int:
        """The longest sequence this dataset can produce (prefix, text and audio)."""
        return max_sequence_length(self.layout, self.max_frames, self.max_text_tokens if self.tokenizer else None)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, sample_seed = key if isinstance(key, tuple) else (key, 0)
        row = self.rows[index]
        rng = random.Random(sample_seed)
        frames = self.shards.item(row)
        start = 0
        if len(frames) > self.max_frames and self.random_crop:
            start = rng.randrange(len(frames) - self.max_frames + 1)
        crop = frames[start : start + self.max_frames]
        text_ids = None
        if self.tokenizer is not None and row.caption is not None and rng.random() >= self.text_dropout:
            text_ids = self.tokenizer.encode(row.caption, self.max_text_tokens)
        ids, loss_mask = self.layout.build_sequence(crop, text_ids, ended=start + len(crop) == len(frames))
        return {"ids": ids, "loss_mask": loss_mask}


def collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right-pad sequences into {"inputs": [B, L-1] int64, "targets": [B, L-1] int64}.

    ``targets`` is the next id, or -100 (ignored by the loss) on text, prefix and padding.
    """
    width = max(len(e["ids"]) for e in examples)
    inputs = torch.full((len(examples), width - 1), PAD, dtype=torch.long)
    targets = torch.full((len(examples), width - 1), IGNORE_INDEX, dtype=torch.long)
    for b, example in enumerate(examples):
        ids, mask = example["ids"], example["loss_mask"]
        inputs[b, : len(ids) - 1] = ids[:-1]
        targets[b, : len(ids) - 1] = torch.where(mask[1:], ids[1:], IGNORE_INDEX)
    return {"inputs": inputs, "targets": targets}


class ShardWindowSampler(Sampler[int]):
    """Row order of one epoch, grouped into windows that each touch only a few shards.

    Shuffled: shards in random order, ``shards_per_window`` consecutive shards per window, rows
    shuffled inside each window (so a small shard cache serves a whole window). Unshuffled: one
    window in manifest order. :meth:`set_epoch` (Lightning calls it) gives a new order.
    """

    def __init__(self, rows: list[ManifestRow], shuffle: bool = True, seed: int = 0, shards_per_window: int = 4) -> None:
        if shards_per_window < 1:
            raise ValueError(f"shards_per_window must be at least 1, got {shards_per_window}")
        self.rows = rows
        self.shuffle = shuffle
        self.seed = seed
        self.shards_per_window = shards_per_window
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self) -> random.Random:
        """The epoch's random stream (fixed when unshuffled)."""
        return random.Random(self.seed * 1_000_003 + (self.epoch if self.shuffle else 0))

    def windows(self, rng: random.Random) -> list[list[int]]:
        by_shard: dict[Path, list[int]] = {}
        for index, row in enumerate(self.rows):
            by_shard.setdefault(row.tokens, []).append(index)
        shards = list(by_shard.values())
        if not self.shuffle:
            return [sum(shards, [])]
        rng.shuffle(shards)
        windows = []
        for first in range(0, len(shards), self.shards_per_window):
            window = sum(shards[first : first + self.shards_per_window], [])
            rng.shuffle(window)
            windows.append(window)
        return windows

    def __iter__(self) -> Iterator[int]:
        for window in self.windows(self.rng()):
            yield from window

    def __len__(self) -> int:
        return len(self.rows)


class BucketBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(row, sample_seed)`` pairs of similar length, each rank taking its share.

    Within each window of ``sampler``, rows are sorted by length in buckets of ``bucket_size``
    rows, cut into batches, and the window's batches shuffled. Every rank gets as many batches as
    the others: with ``drop_last`` incomplete and surplus batches are dropped, without it the
    first batches repeat. ``sample_seed`` changes with the epoch (new random crops). Setting
    ``resume_at = (epoch, n)`` makes the next pass over that epoch skip its first n batches.
    """

    def __init__(
        self,
        sampler: ShardWindowSampler,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        bucket_size: int | None = None,
        drop_last: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.sampler = sampler  # Lightning finds it here and calls its set_epoch
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.bucket_size = bucket_size or 32 * batch_size
        self.drop_last = drop_last
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches already done in it)
        if drop_last and len(self._all_batches()) < num_replicas:
            raise ValueError(
                f"{len(sampler.rows)} rows make fewer batches of {batch_size} than there are ranks ({num_replicas})"
            )

    def _all_batches(self) -> list[list[int]]:
        rows = self.sampler.rows
        rng = self.sampler.rng()
        batches = []
        for window in self.sampler.windows(rng):
            window_batches = []
            for first in range(0, len(window), self.bucket_size):
                bucket = sorted(window[first : first + self.bucket_size], key=lambda i: rows[i].frames)
                window_batches += [bucket[i : i + self.batch_size] for i in range(0, len(bucket), self.batch_size)]
            if self.sampler.shuffle:
                rng.shuffle(window_batches)
            batches += window_batches
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        return batches

    def _rank_batches(self) -> list[list[int]]:
        batches = self._all_batches()
        if self.drop_last:
            batches = batches[: len(batches) - len(batches) % self.num_replicas]
        else:
            # Repeating batches (as DistributedSampler does) keeps every rank running as many
            # steps as the others, so no collective waits on a rank that ran out.
            short = -len(batches) % self.num_replicas
            batches = batches + (batches * self.num_replicas)[:short]
        return batches[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        sampler = self.sampler
        epoch_seed = (sampler.seed * 1_000_003 + (sampler.epoch if sampler.shuffle else 0)) * 10_000_019
        batches = self._rank_batches()
        if self.resume_at is not None:
            epoch, done = self.resume_at
            self.resume_at = None
            if epoch == sampler.epoch and done < len(batches):
                batches = batches[done:]
        for batch in batches:
            yield [(index, (epoch_seed + index) % 2**62) for index in batch]

    def __len__(self) -> int:
        return len(self._rank_batches())
