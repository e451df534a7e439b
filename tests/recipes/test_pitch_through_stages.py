"""recipes/codec/pitch_through_stages.py: the pitch of a tone after each codec stage, at tiny size."""

import pytest
import torch

from codec.config import get_config
from codec.model import SemantiCodec
from recipes.codec.pitch_through_stages import (
    STAGES,
    available_stages,
    cents,
    harmonic_tone,
    held_note_code_changes,
    is_kept,
    main,
    measure_through_stages,
    note_identification,
    pitch_through_stages,
    stage_waveforms,
)


def test_each_stage_is_measured_and_a_lossless_stage_keeps_the_pitch(monkeypatch):
    torch.manual_seed(0)
    codec = SemantiCodec(get_config("tiny-100")).eval()
    # A codec that gives its input back must measure the tone itself: the chain and the Hz conversion are right.
    monkeypatch.setattr(codec, "reconstruct", lambda wave, rate, **kwargs: wave[:, None].clone())
    results = pitch_through_stages(codec, [220.0, 523.25], seconds=1.0, steps=1)
    assert list(results) == [220.0, 523.25]
    for hz, row in results.items():
        assert list(row) == [name for name in STAGES if name != "latent prior"]  # tiny UNets have no prior
        assert all(value is None or value > 0 for value in row.values())
        assert is_kept(row["codec"], hz)
    assert cents(880.0, 440.0) == pytest.approx(1200.0) and cents(None, 440.0) is None
    assert not is_kept(100.0, 110.0) and is_kept(111.0, 110.0)
    tone = harmonic_tone(220.0, 0.5)
    assert tone.shape == (8000,) and tone.abs().max() == pytest.approx(0.5)


def test_buzz_is_measured_for_the_input_and_every_stage(monkeypatch):
    torch.manual_seed(0)
    codec = SemantiCodec(get_config("tiny-100")).eval()
    monkeypatch.setattr(codec, "reconstruct", lambda wave, rate, **kwargs: wave[:, None].clone())
    measured = measure_through_stages(codec, [130.81], seconds=1.0, steps=1, stages=("vocoder", "codec"))
    row = measured[130.81]
    assert list(row) == ["input", "vocoder", "codec"]
    assert row["codec"] == row["input"]  # a lossless stage measures as the tone itself
    assert row["input"]["buzz"] < 1e-3 and 0.0 <= row["vocoder"]["buzz"] <= 1.0
    with pytest.raises(SystemExit):
        main(["--seconds", "0.5"])


def test_the_latent_prior_stage_is_the_codec_decoding_with_the_prior_sampler(monkeypatch):
    import dataclasses

    tiny = get_config("tiny-100")
    codec = SemantiCodec(dataclasses.replace(tiny, unet=dataclasses.replace(tiny.unet, latent_prior_width=8))).eval()
    assert available_stages(codec) == STAGES
    calls = []
    monkeypatch.setattr(codec, "reconstruct", lambda wave, rate, **kwargs: calls.append(kwargs) or wave[:, None])
    stage_waveforms(codec, harmonic_tone(220.0, 0.5), ("latent prior",))
    assert calls == [{"sampler": "prior"}]
    with pytest.raises(ValueError, match="unknown stages"):
        pitch_through_stages(SemantiCodec(tiny).eval(), [220.0], stages=("latent prior",))


def test_note_identification_tells_notes_apart_from_the_fbank_and_not_from_identical_codes(monkeypatch):
    codec = SemantiCodec(get_config("tiny-100")).eval()
    tones = [220.0, 247.0, 277.0, 311.0]
    # Every note gets the same acoustic code: its rows cannot tell the notes apart (ties go to the first).
    monkeypatch.setattr(codec.encoder.quantizer, "nearest", lambda x: torch.zeros(x.shape[:-1], dtype=torch.long))
    shares = note_identification(codec, tones, seconds=3.0)
    assert set(shares) == {"fbank", "AudioMAE feature", "semantic centroid", "acoustic code", "both tokens"}
    assert shares["fbank"] == 1.0  # a whole tone apart, the fbank frames separate every note
    assert shares["acoustic code"] == pytest.approx(1 / len(tones))
    assert all(0.0 <= share <= 1.0 for share in shares.values())
    with pytest.raises(ValueError, match="two tones"):
        note_identification(codec, [220.0])
    with pytest.raises(ValueError, match="one encoder window"):
        note_identification(codec, tones, seconds=11.0)


def test_held_note_code_changes_counts_codes_that_move_on_an_unchanging_sound(monkeypatch):
    codec = SemantiCodec(get_config("tiny-50")).eval()  # 4 tokens per time step
    quantizer = codec.encoder.quantizer
    monkeypatch.setattr(quantizer, "nearest", lambda x: torch.zeros(x.shape[:-1], dtype=torch.long))
    assert held_note_code_changes(codec, [220.0, 330.0], seconds=3.0) == [0.0] * 4
    # A code that counts the tokens changes at every step, whatever the sound.
    monkeypatch.setattr(quantizer, "nearest", lambda x: torch.arange(x.shape[1]).expand(x.shape[:-1]) % 32)
    assert held_note_code_changes(codec, [220.0], seconds=3.0) == [1.0] * 4
    with pytest.raises(ValueError, match="one encoder window"):
        held_note_code_changes(codec, [220.0], seconds=0.5)
