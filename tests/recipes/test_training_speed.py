"""recipes/codec/training_speed.py: one training step per stage and precision, timed."""

from recipes.codec.training_speed import step_seconds


def test_a_step_runs_in_each_precision_and_layout():
    for precision, channels_last in (("32-true", False), ("bf16-mixed", False), ("bf16-mixed", True)):
        assert step_seconds("vae", "tiny-100", precision, channels_last, repeats=1) > 0
    assert step_seconds("vocoder", "tiny-100", "bf16-mixed", False, repeats=1) > 0
