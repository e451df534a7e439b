"""recipes/codec/pitch_through_stages.py: the pitch of a tone after each codec stage, at tiny size."""

import pytest
import torch

from codec.config import get_config
from codec.model import SemantiCodec
from recipes.codec.pitch_through_stages import STAGES, midi_to_hz, pitch_through_stages


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
        assert row["codec"] == pytest.approx(hz, rel=0.01)
    assert midi_to_hz(69.0) == 440.0 and midi_to_hz(None) is None
