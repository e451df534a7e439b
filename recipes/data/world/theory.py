"""Pitch names, keys, scales and chords for the synthetic world (equal temperament, A4 = 440 Hz)."""

from __future__ import annotations

import math

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
CHORDS = {
    "major": (0, 4, 7),
    "minor": (0, 3, 7),
    "diminished": (0, 3, 6),
    "augmented": (0, 4, 8),
    "suspended fourth": (0, 5, 7),
    "dominant seventh": (0, 4, 7, 10),
    "major seventh": (0, 4, 7, 11),
    "minor seventh": (0, 3, 7, 10),
}


def midi_to_hz(note: float) -> float:
    """Frequency in Hz of MIDI note number ``note`` (69 = A4 = 440 Hz)."""
    return 440.0 * 2 ** ((note - 69) / 12)


def hz_to_midi(frequency: float) -> float:
    """Fractional MIDI note number of ``frequency`` (Hz, > 0)."""
    if frequency <= 0:
        raise ValueError(f"frequency must be positive, got {frequency}")
    return 69 + 12 * math.log2(frequency / 440.0)


def note_name(note: int) -> str:
    """Scientific pitch name of MIDI note ``note``: 60 -> ``C4``, 69 -> ``A4``."""
    return f"{NOTE_NAMES[note % 12]}{note // 12 - 1}"


def pitch_class_name(note: int) -> str:
    """Name of the pitch class of ``note`` without octave: 61 -> ``C#``."""
    return NOTE_NAMES[note % 12]


def scale_notes(tonic: int, mode: str, low: int, high: int) -> list[int]:
    """MIDI notes of the ``mode`` scale on ``tonic``'s pitch class within [low, high]."""
    steps = SCALES[mode]
    return [note for note in range(low, high + 1) if (note - tonic) % 12 in steps]


def chord_notes(root: int, quality: str) -> list[int]:
    """MIDI notes of a ``quality`` chord in root position on ``root``."""
    return [root + interval for interval in CHORDS[quality]]
