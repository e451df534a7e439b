"""Pure numpy sound synthesis for the synthetic world: band-limited oscillators, notes, drums, noise.

Every function returns float32 mono samples at ``sample_rate``; randomness (noise, drum grain)
comes only from the ``numpy.random.Generator`` passed in. Oscillators are additive (harmonics
stop below Nyquist), so a square or sawtooth has no aliased partials that could confuse a pitch
measurement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recipes.data.world.theory import midi_to_hz

WAVEFORMS = ("sine", "square", "sawtooth", "triangle")
NOISE_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0, "blue": -1.0}
DRUM_VOICES = ("kick", "snare", "hat")


def _harmonic_weights(waveform: str, count: int) -> np.ndarray:
    k = np.arange(1, count + 1, dtype=np.float64)
    if waveform == "sine":
        return (k == 1).astype(np.float64)
    if waveform == "square":
        return np.where(k % 2 == 1, 4 / (math.pi * k), 0.0)
    if waveform == "sawtooth":
        return 2 / math.pi * (-1.0) ** (k + 1) / k
    if waveform == "triangle":
        sign = np.where(((k - 1) // 2) % 2 == 0, 1.0, -1.0)
        return np.where(k % 2 == 1, 8 / math.pi**2 * sign / k**2, 0.0)
    raise ValueError(f"unknown waveform {waveform!r}; expected one of {WAVEFORMS}")


def oscillator(waveform: str, frequency: float | np.ndarray, num_samples: int, sample_rate: int) -> np.ndarray:
    """A ``waveform`` at ``frequency`` Hz (a constant, or one value per sample for glides)."""
    frequency = np.broadcast_to(np.asarray(frequency, dtype=np.float64), (num_samples,))
    phase = 2 * math.pi * np.cumsum(frequency) / sample_rate
    highest = int(sample_rate / 2 / max(float(frequency.min()), 1.0))
    weights = _harmonic_weights(waveform, max(1, highest))
    wave = np.zeros(num_samples, dtype=np.float64)
    for harmonic, weight in enumerate(weights, start=1):
        if weight == 0.0:
            continue
        audible = harmonic * frequency < sample_rate / 2
        wave += np.where(audible, weight * np.sin(harmonic * phase), 0.0)
    return wave.astype(np.float32)


def envelope(num_samples: int, sample_rate: int, shape: str, attack: float = 0.01, release: float = 0.05) -> np.ndarray:
    """Amplitude envelope: ``sustained`` (flat between short ramps) or ``plucked`` (decaying)."""
    time = np.arange(num_samples) / sample_rate
    duration = num_samples / sample_rate
    ramp_up = np.clip(time / attack, 0, 1)
    ramp_down = np.clip((duration - time) / release, 0, 1)
    if shape == "sustained":
        body = np.ones(num_samples)
    elif shape == "plucked":
        body = np.exp(-time / max(0.25 * duration, 0.08))
    else:
        raise ValueError(f"unknown envelope shape {shape!r}; expected 'sustained' or 'plucked'")
    return (ramp_up * ramp_down * body).astype(np.float32)


@dataclass(frozen=True)
class Note:
    """One note: onset and length in seconds, MIDI pitch, velocity 0..1."""

    onset: float
    duration: float
    pitch: int
    velocity: float = 0.8


def render_notes(
    notes: Sequence[Note], waveform: str, shape: str, total_seconds: float, sample_rate: int
) -> np.ndarray:
    """Mix ``notes`` played with one ``waveform`` and envelope ``shape`` into a clip of ``total_seconds``."""
    total = int(round(total_seconds * sample_rate))
    wave = np.zeros(total, dtype=np.float32)
    for note in notes:
        start = int(round(note.onset * sample_rate))
        length = min(int(round(note.duration * sample_rate)), total - start)
        if length <= 0:
            continue
        tone = oscillator(waveform, midi_to_hz(note.pitch), length, sample_rate)
        wave[start : start + length] += note.velocity * tone * envelope(length, sample_rate, shape)
    return wave


def drum_hit(voice: str, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic ``kick`` (pitch-dropping sine), ``snare`` (noise + body) or ``hat`` (bright noise)."""
    if voice == "kick":
        length = int(0.35 * sample_rate)
        time = np.arange(length) / sample_rate
        frequency = 50 + 100 * np.exp(-time / 0.04)
        return (oscillator("sine", frequency, length, sample_rate) * np.exp(-time / 0.12)).astype(np.float32)
    if voice == "snare":
        length = int(0.2 * sample_rate)
        time = np.arange(length) / sample_rate
        body = oscillator("sine", 190.0, length, sample_rate) * np.exp(-time / 0.05)
        rattle = rng.standard_normal(length) * np.exp(-time / 0.06)
        return (0.5 * body + 0.5 * rattle / 3).astype(np.float32)
    if voice == "hat":
        length = int(0.06 * sample_rate)
        time = np.arange(length) / sample_rate
        bright = np.diff(rng.standard_normal(length + 1))  # first difference tilts white noise upwards
        return (bright / 4 * np.exp(-time / 0.015)).astype(np.float32)
    raise ValueError(f"unknown drum voice {voice!r}; expected one of {DRUM_VOICES}")


def render_drums(
    hits: Sequence[tuple[float, str, float]], total_seconds: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """Mix drum ``hits`` given as (onset seconds, voice, velocity) into a clip of ``total_seconds``."""
    total = int(round(total_seconds * sample_rate))
    wave = np.zeros(total, dtype=np.float32)
    for onset, voice, velocity in hits:
        start = int(round(onset * sample_rate))
        hit = drum_hit(voice, sample_rate, rng)[: max(0, total - start)]
        wave[start : start + hit.shape[0]] += velocity * hit
    return wave


def coloured_noise(colour: str, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power falls as 1/f^a: white a=0, pink 1, brown 2, blue -1; unit RMS."""
    if colour not in NOISE_EXPONENTS:
        raise ValueError(f"unknown noise colour {colour!r}; expected one of {tuple(NOISE_EXPONENTS)}")
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    bins = np.arange(spectrum.shape[0], dtype=np.float64)
    bins[0] = 1.0
    spectrum *= bins ** (-NOISE_EXPONENTS[colour] / 2)
    spectrum[0] = 0.0
    wave = np.fft.irfft(spectrum, n=num_samples)
    return (wave / (np.sqrt(np.mean(wave**2)) + 1e-12)).astype(np.float32)


def sweep(waveform: str, start_hz: float, end_hz: float, seconds: float, sample_rate: int, curve: str) -> np.ndarray:
    """A ``waveform`` gliding from ``start_hz`` to ``end_hz``, ``linear`` or ``exponential`` in frequency."""
    num_samples = int(round(seconds * sample_rate))
    position = np.linspace(0.0, 1.0, num_samples)
    if curve == "linear":
        frequency = start_hz + (end_hz - start_hz) * position
    elif curve == "exponential":
        frequency = start_hz * (end_hz / start_hz) ** position
    else:
        raise ValueError(f"unknown sweep curve {curve!r}; expected 'linear' or 'exponential'")
    return oscillator(waveform, frequency, num_samples, sample_rate) * envelope(num_samples, sample_rate, "sustained")


def fade(wave: np.ndarray, sample_rate: int, seconds: float = 0.02) -> np.ndarray:
    """Short linear fade-in and fade-out so that cut or mixed clips do not click."""
    length = min(int(seconds * sample_rate), wave.shape[0] // 2)
    if length == 0:
        return wave
    ramp = np.linspace(0.0, 1.0, length, dtype=np.float32)
    wave = wave.copy()
    wave[:length] *= ramp
    wave[-length:] *= ramp[::-1]
    return wave
