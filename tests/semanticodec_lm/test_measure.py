"""Property measurements (pitch, tempo, noise colour, kind) recover what the synthetic world states."""

from __future__ import annotations

import numpy as np
import pytest

from recipes.data.world.generator import plan_world, render_world_clip
from semanticodec_lm.measure import (
    KindProbe,
    estimate_noise_colour,
    estimate_pitch,
    estimate_tempo,
    matches,
    measure,
    stated_properties,
)


def _world_clips(kind: str, count: int, seconds: float = 3.0, seed: int = 5) -> list[tuple[dict, np.ndarray]]:
    """``count`` rendered clips of one kind as (manifest-like row, wave)."""
    plan = [clip for clip in plan_world(400, seed, [kind])][:count]
    clips = []
    for clip in plan:
        recording = render_world_clip(clip, seconds, seconds)
        clips.append(({"synthetic": True, "params": recording.params}, recording.wave))
    return clips


@pytest.mark.parametrize("kind, name", [("tone", "pitch"), ("beeps", "pitch"), ("drums", "tempo"),
                                        ("arpeggio", "tempo"), ("noise", "colour")])
def test_measurements_recover_what_the_world_states(kind, name):
    # swift-f0 reads a band-limited square wave (odd harmonics only) at a harmonic: pitch_hz's docstring.
    clips = [(row, wave) for row, wave in _world_clips(kind, 6) if row["params"].get("waveform") != "square"]
    assert len(clips) >= 4
    for row, wave in clips:
        stated = stated_properties(row)
        assert stated["class"] == kind
        measured = measure(wave, [name])[name]
        assert matches(name, stated[name], measured), (row["params"], measured)


def test_measurements_refuse_what_is_not_there():
    silence, rng = np.zeros(48000, dtype=np.float32), np.random.default_rng(0)
    noise = rng.standard_normal(48000).astype(np.float32)
    assert estimate_pitch(silence) is None and estimate_pitch(noise) is None
    assert estimate_tempo(silence) is None and estimate_tempo(noise[:16000]) is None  # under 2 s
    assert estimate_noise_colour(silence) is None and estimate_noise_colour(noise) == "white"
    assert stated_properties({"synthetic": False, "params": {"kind": "tone"}}) == {}
    with pytest.raises(ValueError, match="unknown properties"):
        measure(noise, ["loudness"])


def test_matching_rules():
    assert matches("pitch", 69, 69.4) and not matches("pitch", 69, 69.6)
    assert matches("tempo", 120, 125) and matches("tempo", 120, 61) and not matches("tempo", 120, 90)
    assert matches("colour", "pink", "pink") and not matches("class", "tone", None)


def test_kind_probe_tells_kinds_apart():
    train = {kind: _world_clips(kind, 5, seconds=1.5) for kind in ("tone", "noise", "drums")}
    probe = KindProbe.fit([wave for clips in train.values() for _, wave in clips[:4]],
                          [kind for kind, clips in train.items() for _ in clips[:4]])
    held_out = [clips[4][1] for clips in train.values()]
    assert probe.predict(held_out) == ["tone", "noise", "drums"]
    assert probe.predict([np.zeros(100, dtype=np.float32)]) == [None]
    with pytest.raises(ValueError, match="at least two kinds"):
        KindProbe.fit([held_out[0]], ["tone"])
