"""Fixtures for the LM tests: random codec token shards with a manifest, tiny model configs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from codec.config import get_config
from codec.tokenfile import save_tokens
from lm.config import LMConfig, lm_config

CODEC = get_config("tiny-100")  # semantic vocabulary 64, acoustic 32
WORDS = "a dog cat bird barks meows sings loudly softly piano guitar rain wind door slams".split()


def make_token_corpus(
    folder: Path,
    shards: int = 2,
    items_per_shard: int = 8,
    frames: tuple[int, int] = (4, 30),
    seed: int = 0,
) -> Path:
    """Write random token shards and ``manifest.jsonl`` under ``folder``; returns the manifest.

    The last item of every shard is ``valid``, the rest ``train``; every clip has a caption.
    """
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for shard in range(shards):
        lengths = torch.tensor([rng.randint(*frames) for _ in range(items_per_shard)])
        tokens = torch.stack([
            torch.randint(0, CODEC.semantic_vocab_size, (items_per_shard, int(lengths.max())), generator=generator),
            torch.randint(0, CODEC.acoustic_vocab_size, (items_per_shard, int(lengths.max())), generator=generator),
        ], dim=-1)
        name = f"shards/part-{shard:03d}.tokens.safetensors"
        save_tokens(folder / name, tokens, lengths, CODEC)
        for item, n in enumerate(lengths.tolist()):
            rows.append({
                "tokens": name, "item": item, "frames": n,
                "caption": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))),
                "split": "valid" if item == items_per_shard - 1 else "train",
            })
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def tiny_config(**fields) -> LMConfig:
    """The tiny model over the tiny codec's vocabularies."""
    fields.setdefault("semantic_vocab_size", CODEC.semantic_vocab_size)
    fields.setdefault("acoustic_vocab_size", CODEC.acoustic_vocab_size)
    return lm_config("tiny", **fields)


def random_frames(frames: int, seed: int = 0, batch: int | None = None) -> torch.Tensor:
    """Random codec tokens [frames, 2] (or [batch, frames, 2]) in the tiny codec's ranges."""
    generator = torch.Generator().manual_seed(seed)
    shape = (frames,) if batch is None else (batch, frames)
    return torch.stack([
        torch.randint(0, CODEC.semantic_vocab_size, shape, generator=generator),
        torch.randint(0, CODEC.acoustic_vocab_size, shape, generator=generator),
    ], dim=-1)


@pytest.fixture
def token_corpus(tmp_path: Path) -> Path:
    """A manifest over two random shards (14 train clips, 2 valid)."""
    return make_token_corpus(tmp_path / "corpus")


@pytest.fixture(name="make_token_corpus")
def make_token_corpus_fixture():
    """:func:`make_token_corpus`, for tests that need other corpus sizes."""
    return make_token_corpus


@pytest.fixture(name="tiny_config")
def tiny_config_fixture():
    """:func:`tiny_config`: ``tiny_config(pattern="delay", ...)`` -> LMConfig."""
    return tiny_config


@pytest.fixture(name="random_frames")
def random_frames_fixture():
    """:func:`random_frames`: ``random_frames(frames, seed, batch=None)`` -> codec tokens."""
    return random_frames


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models run several times faster on one thread than on two busy, shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
