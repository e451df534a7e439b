"""The shipped default codec (``codec/pretrained/default``): it loads strictly, offline, and its
reconstruction of a clip of the corpus ``test`` split is far closer to the input than the
reconstruction of an untrained codec of the same configuration.

Skipped while ``codec/pretrained/default`` does not exist (``recipes/codec/train_all.sh`` or
``recipes/codec/export.py`` writes it). The clip comes from the synthetic-world generator (a world
seed whose clip falls in the ``test`` split), so the test does not need ``data/corpus``.
"""

from pathlib import Path

import pytest
import torch

from codec.metrics import mel_distance
from codec.model import PRETRAINED_DIR, SemantiCodec
from recipes.data.audio import normalise_loudness
from recipes.data.world.generator import plan_world, render_world_clip

DEFAULT = PRETRAINED_DIR / "default"
pytestmark = pytest.mark.skipif(not (DEFAULT / "model.safetensors").is_file(),
                                reason=f"no shipped default codec at {DEFAULT}")
DECODE = dict(steps=10, sampler="dpmpp2m", seed=0)


def synthetic_test_clip() -> torch.Tensor:
    """A 3-4-s tonal clip of the ``test`` split of synthetic world 1234, loudness-normalised as the
    corpus builder does (float32 [N])."""
    clip = next(c for c in plan_world(200, 1234, ("tone", "chord", "melody")) if c.split == "test")
    wave, _ = normalise_loudness(render_world_clip(clip, 3.0, 4.0).wave)
    return torch.from_numpy(wave).float()


def reconstruction_distance(codec: SemantiCodec, wave: torch.Tensor) -> float:
    audio = codec.reconstruct(wave[None], 16000, **DECODE)
    return mel_distance(wave, audio[0, 0, : wave.numel()])


def test_shipped_default_loads_and_beats_an_untrained_codec():
    codec = SemantiCodec.from_pretrained("default")  # strict: missing or extra weights raise
    assert Path(DEFAULT / "config.json").is_file()
    assert (DEFAULT / "model.safetensors").stat().st_size <= 60e6
    wave = synthetic_test_clip()
    trained = reconstruction_distance(codec, wave)
    torch.manual_seed(0)
    untrained = reconstruction_distance(SemantiCodec(codec.config).eval(), wave)
    assert trained < 0.5 * untrained, (trained, untrained)
