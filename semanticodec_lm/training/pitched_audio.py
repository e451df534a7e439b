"""Synthetic pitched sounds mixed into a decoder's training batches: notes at any pitch, varied spectra.

The corpus holds few held notes (about 130 of its 1 397 synthetic music clips, one to eight per
semitone), and a decoder trained on it renders many notes at a neighbouring pitch. These clips show
it every pitch from 55 to 1 760 Hz, on no fixed scale, with harmonic spectra, envelopes and vibrato
drawn at random. (On their own they did not move the shipped codec's notes: its acoustic codes
follow the token's place in the window, ``recipes.codec.pitch_through_stages --identify``.) Randomness comes only from the ``torch.Generator`` passed in (a CPU one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from codec.config import SAMPLE_RATE

PITCH_RANGE_HZ = (55.0, 1760.0)
HIGHEST_PARTIAL_HZ = 7600.0  # below Nyquist with room for vibrato
MAX_PARTIALS = 24
NOTE_SECONDS = (0.15, 2.0)  # notes of a melody; otherwise one note is held for the whole clip


@dataclass(frozen=True)
class PitchedNote:
    """One note: where it sits (samples), its fundamental (Hz), partial amplitudes [K] (partial k+1 at
    (k+1) x fundamental), attack and decay time constant (s; ``decay`` None: held), vibrato rate (Hz) and
    depth (cents), and its gain."""

    start: int
    length: int
    fundamental_hz: float
    partials: torch.Tensor
    attack: float
    decay: float | None
    vibrato_hz: float
    vibrato_cents: float
    gain: float


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def draw_partials(fundamental_hz: float, generator: torch.Generator) -> torch.Tensor:
    """Partial amplitudes float64 [K]: k^-p (p in 0.5-2.5), odd partials only a third of the time, each
    moved by a random +-3 dB (normal), up to ``HIGHEST_PARTIAL_HZ``."""
    count = max(1, min(MAX_PARTIALS, int(HIGHEST_PARTIAL_HZ // fundamental_hz)))
    k = torch.arange(1, count + 1, dtype=torch.float64)
    amplitudes = k.pow(-_uniform(generator, 0.5, 2.5))
    if float(torch.rand((), generator=generator)) < 1 / 3:
        amplitudes = torch.where(k % 2 == 1, amplitudes, torch.zeros_like(amplitudes))
    jitter_db = 3.0 * torch.randn(count, generator=generator, dtype=torch.float64)
    return amplitudes * 10 ** (jitter_db / 20)


def draw_notes(num_samples: int, generator: torch.Generator, sample_rate: int = SAMPLE_RATE) -> list[PitchedNote]:
    """The notes of one clip of ``num_samples``: one note for the whole clip half of the time, else a
    melody of notes of 0.15-2 s back to back; fundamentals log-uniform in ``PITCH_RANGE_HZ``; half of the
    notes held, half decaying with a time constant of 0.2-1 times their length."""
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    held = float(torch.rand((), generator=generator)) < 0.5
    notes, start = [], 0
    while start < num_samples:
        length = num_samples if held else round(_uniform(generator, *NOTE_SECONDS) * sample_rate)
        length = min(length, num_samples - start)
        fundamental = math.exp(_uniform(generator, *(math.log(hz) for hz in PITCH_RANGE_HZ)))
        vibrato = float(torch.rand((), generator=generator)) < 0.3
        notes.append(PitchedNote(
            start=start, length=length, fundamental_hz=fundamental,
            partials=draw_partials(fundamental, generator),
            attack=_uniform(generator, 0.005, 0.08),
            decay=(None if float(torch.rand((), generator=generator)) < 0.5
                   else _uniform(generator, 0.2, 1.0) * length / sample_rate),
            vibrato_hz=_uniform(generator, 4.0, 7.0) if vibrato else 0.0,
            vibrato_cents=_uniform(generator, 0.0, 30.0) if vibrato else 0.0,
            gain=_uniform(generator, 0.5, 1.0),
        ))
        start += length
    return notes


def render_note(note: PitchedNote, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """One note's samples: float64 [note.length], the partials summed with zero phase at its start,
    shaped by a linear attack, a held or exponentially decaying body and a 10-ms release."""
    t = torch.arange(note.length, dtype=torch.float64) / sample_rate
    frequency = note.fundamental_hz * 2 ** (note.vibrato_cents / 1200 * torch.sin(2 * math.pi * note.vibrato_hz * t))
    phase = 2 * math.pi * torch.cumsum(frequency, 0) / sample_rate
    k = torch.arange(1, len(note.partials) + 1, dtype=torch.float64)
    wave = (note.partials[:, None] * torch.sin(k[:, None] * phase[None])).sum(0)
    duration = note.length / sample_rate
    shape = (t / note.attack).clamp(max=1) * ((duration - t) / 0.01).clamp(0, 1)
    if note.decay is not None:
        shape = shape * torch.exp(-t / note.decay)
    return note.gain * shape * wave


def random_pitched_audio(count: int, num_samples: int, generator: torch.Generator,
                         sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """``count`` clips of random notes (:func:`draw_notes`): float32 [count, num_samples], each scaled to
    a peak of 0.1-0.9, half of them over white noise 30-60 dB below their RMS."""
    clips = torch.zeros(count, num_samples, dtype=torch.float64)
    for clip in clips:
        for note in draw_notes(num_samples, generator, sample_rate):
            clip[note.start: note.start + note.length] = render_note(note, sample_rate)
        clip.mul_(_uniform(generator, 0.1, 0.9) / clip.abs().max().clamp(min=1e-9))
        if float(torch.rand((), generator=generator)) < 0.5:
            rms = clip.pow(2).mean().sqrt()
            noise = torch.randn(num_samples, generator=generator, dtype=torch.float64)
            clip.add_(noise * rms * 10 ** (-_uniform(generator, 30.0, 60.0) / 20))
    return clips.float()
