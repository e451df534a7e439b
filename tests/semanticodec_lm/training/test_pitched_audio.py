"""semanticodec_lm/training/pitched_audio.py: random notes for decoder training."""

import itertools
import math

import pytest
import torch

from semanticodec_lm.training.pitched_audio import (
    PITCH_RANGE_HZ,
    PitchedNote,
    draw_notes,
    draw_partials,
    random_pitched_audio,
    render_note,
)


def spectrum_peak_hz(wave: torch.Tensor, rate: int = 16000) -> float:
    magnitude = torch.fft.rfft(wave * torch.hann_window(len(wave), dtype=wave.dtype)).abs()
    return float(magnitude.argmax()) * rate / len(wave)


def test_a_rendered_note_puts_its_partials_at_multiples_of_its_fundamental():
    partials = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # only the third partial sounds
    note = PitchedNote(start=0, length=16000, fundamental_hz=220.0, partials=partials, attack=0.01, decay=None,
                       vibrato_hz=0.0, vibrato_cents=0.0, gain=0.5)
    wave = render_note(note)
    assert wave.shape == (16000,) and wave.dtype == torch.float64
    assert spectrum_peak_hz(wave) == pytest.approx(660.0, abs=1.0)
    assert float(wave.abs().max()) == pytest.approx(0.5, rel=0.02)
    assert float(wave[0]) == 0.0 and abs(float(wave[-1])) < 1e-3  # attack from silence, release to it
    decaying = render_note(PitchedNote(0, 16000, 220.0, partials, 0.01, 0.1, 0.0, 0.0, 0.5))
    assert float(decaying[-1600:].abs().max()) < 0.01 * float(decaying[:1600].abs().max())


def test_notes_cover_the_clip_at_pitches_in_range_and_partials_stay_below_nyquist():
    generator = torch.Generator().manual_seed(0)
    fundamentals = []
    for _ in range(40):
        notes = draw_notes(48000, generator)
        assert notes[0].start == 0 and sum(note.length for note in notes) == 48000
        assert all(a.start + a.length == b.start for a, b in itertools.pairwise(notes))
        for note in notes:
            assert PITCH_RANGE_HZ[0] <= note.fundamental_hz <= PITCH_RANGE_HZ[1]
            assert len(note.partials) * note.fundamental_hz * 2 ** (note.vibrato_cents / 1200) < 8000
            fundamentals.append(note.fundamental_hz)
    octaves = [math.log2(hz / PITCH_RANGE_HZ[0]) for hz in fundamentals]
    assert min(octaves) < 1 and max(octaves) > 4  # spread over the five octaves, not one register
    partials = draw_partials(110.0, torch.Generator().manual_seed(1))
    assert partials.shape == (24,) and bool((partials >= 0).all())
    with pytest.raises(ValueError, match="num_samples"):
        draw_notes(0, generator)


def test_random_clips_are_reproducible_by_seed_and_scaled():
    first = random_pitched_audio(3, 20000, torch.Generator().manual_seed(5))
    again = random_pitched_audio(3, 20000, torch.Generator().manual_seed(5))
    other = random_pitched_audio(3, 20000, torch.Generator().manual_seed(6))
    assert first.shape == (3, 20000) and first.dtype == torch.float32
    assert torch.equal(first, again) and not torch.equal(first, other)
    peaks = first.abs().amax(dim=1)
    assert bool((peaks > 0.09).all()) and bool((peaks < 0.95).all())
