"""The shipped default codec (``codec/pretrained/default``): it loads strictly, offline, and its
reconstructions of clips of the corpus ``test`` split are far closer to the inputs than the
reconstructions of an untrained codec of the same configuration.

Skipped while ``codec/pretrained/default`` does not exist (``recipes/codec/train_all.sh`` or
``recipes/codec/export.py`` writes it). The clips are short excerpts of ``test``-split clips kept in
``tests/data/codec_acceptance`` (see its ATTRIBUTION.md), so the test does not need ``data/corpus``.
"""

from pathlib import Path

import pytest
import torch

from codec.audio import load_audio
from codec.metrics import mel_distance
from codec.model import PRETRAINED_DIR, SemantiCodec

DEFAULT = PRETRAINED_DIR / "default"
CLIPS = sorted((Path(__file__).parents[1] / "data" / "codec_acceptance").glob("*.flac"))
pytestmark = pytest.mark.skipif(not (DEFAULT / "model.safetensors").is_file(),
                                reason=f"no shipped default codec at {DEFAULT}")
DECODE = dict(steps=10, sampler="dpmpp2m", seed=0)


def reconstruction_distances(codec: SemantiCodec) -> list[float]:
    """Mel distance (nepers) of each acceptance clip to its reconstruction by ``codec``."""
    distances = []
    for path in CLIPS:
        wave = load_audio(path)
        audio = codec.reconstruct(wave[None], 16000, **DECODE)
        distances.append(mel_distance(wave, audio[0, 0, : wave.numel()]))
    return distances


def test_acceptance_clips_cover_every_domain():
    assert [path.stem for path in CLIPS] == ["music", "sfx", "speech"]


def test_shipped_default_loads_and_beats_an_untrained_codec():
    codec = SemantiCodec.from_pretrained("default")  # strict: missing or extra weights raise
    assert Path(DEFAULT / "config.json").is_file()
    assert (DEFAULT / "model.safetensors").stat().st_size <= 60e6
    trained = reconstruction_distances(codec)
    torch.manual_seed(0)
    untrained = reconstruction_distances(SemantiCodec(codec.config).eval())
    assert all(t < u for t, u in zip(trained, untrained)), (trained, untrained)
    assert sum(trained) < 0.5 * sum(untrained), (trained, untrained)
