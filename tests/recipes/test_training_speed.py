"""recipes/codec/training_speed.py: one training step per stage and precision, timed."""

from recipes.codec.training_speed import step_seconds


def test_a_step_runs_in_each_precision_and_layout():
    for precision, channels_last in (("32-true", False), ("bf16-mixed", False), ("bf16-mixed", True)):
        assert step_seconds("vae", "tiny-100", precision, channels_last, repeats=1) > 0
    assert step_seconds("vocoder", "tiny-100", "bf16-mixed", False, repeats=1) > 0


def test_the_cached_prior_step_never_runs_the_frozen_encoders(tiny_with_prior, monkeypatch):
    import pytest

    from codec.semantic import AudioMAE
    from codec.vae import AutoencoderKL

    assert step_seconds("prior", "tiny-prior-100", "bf16-mixed", False, repeats=1) > 0

    def frozen_encoder_ran(*args, **kwargs):
        raise AssertionError("a frozen encoder ran")

    monkeypatch.setattr(AudioMAE, "forward", frozen_encoder_ran)
    monkeypatch.setattr(AutoencoderKL, "encode", frozen_encoder_ran)
    assert step_seconds("prior-cached", "tiny-prior-100", "bf16-mixed", False, repeats=1) > 0
    with pytest.raises(AssertionError, match="frozen encoder"):
        step_seconds("prior", "tiny-prior-100", "bf16-mixed", False, repeats=1)
