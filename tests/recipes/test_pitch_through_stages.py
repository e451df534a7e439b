"""recipes/codec/pitch_through_stages.py: the pitch of a tone after each codec stage, at tiny size."""

import pytest
import torch

from codec.config import get_config
from codec.model import SemantiCodec
from recipes.codec.pitch_through_stages import STAGES, cents, harmonic_tone, is_kept, pitch_through_stages


def test_each_stage_is_measured_and_a_lossless_stage_keeps_the_pitch(monkeypatch):
    torch.manual_seed(0)
    codec = SemantiCodec(get_config("tiny-100")).eval()
    # A codec that gives its input back must measure the tone itself: the chain and the Hz conversion are right.
    monkeypatch.setattr(codec, "reconstruct", lambda wave, rate, **kwargs: wave[:, None].clone())
    results = pitch_through_stages(codec, [220.0, 523.25], seconds=1.0, steps=1)
    assert list(results) == [220.0, 523.25]
    for hz, row in results.items():
        assert list(row) == list(STAGES)
        assert all(value is None or value > 0 for value in row.values())
        assert is_kept(row["codec"], hz)
    assert cents(880.0, 440.0) == pytest.approx(1200.0) and cents(None, 440.0) is None
    assert not is_kept(100.0, 110.0) and is_kept(111.0, 110.0)
    tone = harmonic_tone(220.0, 0.5)
    assert tone.shape == (8000,) and tone.abs().max() == pytest.approx(0.5)
