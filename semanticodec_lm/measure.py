"""Measure what a synthetic-world clip sounds like: its pitch, tempo, noise colour and kind.

The continuation recipe asks whether a continuation keeps its prompt's property; the
text-to-audio recipe asks whether a generated clip has the property its caption states. Both use
the same measurements, taken from the audio alone:

- ``pitch``: the median f0 of the voiced frames by the pretrained swift-f0 network
  (:func:`codec.metrics.pitch_hz`), as a fractional MIDI note; two pitches match when they round to
  the same note (within 0.5 semitone);
- ``tempo``: the shortest clear period of the spectral-flux onset envelope, folded by octaves into
  60-200 bpm; two tempi match within 8 %, also at double or half speed (the beat level of a pattern
  is ambiguous from onsets alone);
- ``colour``: the slope of the power spectrum (log-log, 100-5000 Hz), the nearest of white (0),
  pink (-1), brown (-2) and blue (+1);
- ``class``: the world kind (tone, drums, noise, ...) predicted by a linear probe on pooled 64-bin
  log-mels, fitted on training clips (:class:`KindProbe`).

Which property a clip has comes from its manifest row (:func:`stated_properties`): the pitch of
tones and beeps, the tempo of drum patterns and arpeggios, the colour of noise, and the kind of
every synthetic clip. All waves are float32 mono at 16 kHz.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from codec.config import SAMPLE_RATE
from codec.frontend import log_mel_64
from codec.metrics import pitch_hz
from semanticodec_lm.probe import pool, train_linear_probe

PROPERTIES = ("pitch", "tempo", "colour", "class")
NOISE_SLOPES = {"white": 0.0, "pink": -1.0, "brown": -2.0, "blue": 1.0}
PITCH_KINDS = ("tone", "beeps")
TEMPO_KINDS = ("drums", "midi_drums", "arpeggio")
COLOUR_KINDS = ("noise",)
TEMPO_TOLERANCE = 0.08
MIN_TEMPO_SECONDS = 2.0  # the slowest beat (60 bpm) must repeat at least once


def _frames(wave: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Overlapping frames [F, length] of ``wave`` (F = 0 when the wave is shorter than a frame)."""
    count = 1 + (wave.shape[0] - length) // hop if wave.shape[0] >= length else 0
    if count == 0:
        return np.zeros((0, length), dtype=np.float64)
    index = np.arange(length)[None, :] + hop * np.arange(count)[:, None]
    return wave.astype(np.float64)[index]


def estimate_pitch(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float | None:
    """The dominant f0 of ``wave`` (float [N]) as a fractional MIDI note, or None (noise, silence, too
    short): :func:`codec.metrics.pitch_hz`, the pretrained swift-f0 estimator."""
    hz = pitch_hz(wave, sample_rate)
    return None if hz is None else 69.0 + 12.0 * math.log2(hz / 440.0)


def onset_envelope(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, float]:
    """Spectral-flux onset strength [F] at 100 frames/s (log-compressed magnitudes), and its frame rate."""
    hop = sample_rate // 100
    frames = _frames(np.asarray(wave, dtype=np.float64).reshape(-1), 1024, hop)
    if frames.shape[0] < 2:
        return np.zeros(0), sample_rate / hop
    magnitude = np.log1p(1000.0 * np.abs(np.fft.rfft(frames * np.hanning(1024), axis=1)))
    flux = np.maximum(np.diff(magnitude, axis=0), 0.0).sum(1)
    # Widen each onset to a few frames, so that a period between two whole lags is not split
    # into two weak autocorrelation peaks.
    kernel = np.hanning(7)[1:-1]
    return np.convolve(flux, kernel / kernel.sum(), mode="same"), sample_rate / hop


def estimate_tempo(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, bpm_range: tuple[float, float] = (60.0, 200.0),
                   min_strength: float = 0.1) -> float | None:
    """Tempo in bpm, folded by octaves into ``bpm_range``; None for clips under 2 s or without a pulse.

    The pulse is the shortest onset-envelope period (between 700 and 60 bpm) whose autocorrelation
    peak reaches 70 % of the highest peak: hi-hats or eighth notes make many multiples of the beat
    periodic, and the shortest of them is a power-of-two subdivision of the beat, never 1.5 beats.
    """
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    if wave.shape[0] < MIN_TEMPO_SECONDS * sample_rate:
        return None
    envelope, rate = onset_envelope(wave, sample_rate)
    envelope = envelope - envelope.mean()
    if envelope.shape[0] < 4 or float(np.dot(envelope, envelope)) <= 1e-12:
        return None
    size = 1 << int(math.ceil(math.log2(2 * envelope.shape[0])))
    spectrum = np.fft.rfft(envelope, size)
    autocorrelation = np.fft.irfft(spectrum * np.conj(spectrum), size)[: envelope.shape[0]]
    # Unbiased: each lag is averaged over the pairs it has, so long lags are not penalised.
    count = envelope.shape[0]
    autocorrelation = autocorrelation / (count - np.arange(count)) / (autocorrelation[0] / count)
    low_lag = max(2, int(math.floor(60.0 * rate / 700.0)))
    high_lag = min(int(math.ceil(60.0 * rate / 60.0)), count // 2)
    peaks = [lag for lag in range(low_lag, high_lag)
             if autocorrelation[lag] >= autocorrelation[lag - 1] and autocorrelation[lag] > autocorrelation[lag + 1]]
    if not peaks or max(autocorrelation[peaks]) < min_strength:
        return None
    best = max(autocorrelation[peaks])
    lag = float(next(lag for lag in peaks if autocorrelation[lag] >= 0.7 * best))
    left, centre, right = autocorrelation[int(lag) - 1 : int(lag) + 2]
    bend = left - 2 * centre + right
    lag += 0.5 * (left - right) / bend if bend < 0 else 0.0
    bpm = 60.0 * rate / lag
    while bpm > bpm_range[1]:
        bpm /= 2
    while bpm < bpm_range[0]:
        bpm *= 2
    return bpm


def spectral_slope(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float | None:
    """Slope of log power against log frequency between 100 and 5000 Hz; None for silence or < 1024 samples."""
    frames = _frames(np.asarray(wave, dtype=np.float64).reshape(-1), 1024, 1024)
    if frames.shape[0] == 0:
        return None
    power = np.mean(np.abs(np.fft.rfft(frames * np.hanning(1024), axis=1)) ** 2, axis=0)
    frequency = np.fft.rfftfreq(1024, 1.0 / sample_rate)
    band = (frequency > 100) & (frequency < 5000)
    if float(power[band].max()) <= 1e-12:
        return None
    return float(np.polyfit(np.log(frequency[band]), np.log(power[band] + 1e-20), 1)[0])


def estimate_noise_colour(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str | None:
    """The noise colour whose spectral slope is nearest the measured one (None for silence)."""
    slope = spectral_slope(wave, sample_rate)
    if slope is None:
        return None
    return min(NOISE_SLOPES, key=lambda colour: abs(NOISE_SLOPES[colour] - slope))


def mel_features(wave: np.ndarray) -> torch.Tensor:
    """Pooled 64-bin log-mel of a 16-kHz wave float [N] (N > 512): float32 [128] (mean, std over time)."""
    return pool(log_mel_64(torch.as_tensor(np.asarray(wave, dtype=np.float32)).reshape(-1)).T)


class KindProbe:
    """Which world kind a clip is: a linear probe on :func:`mel_features`, fitted on labelled clips."""

    def __init__(self, classes: list[str], probe: torch.nn.Module) -> None:
        self.classes = classes
        self.probe = probe

    @classmethod
    def fit(cls, waves: Sequence[np.ndarray], kinds: Sequence[str], seed: int = 0) -> "KindProbe":
        """Fit on waves (float [N_i], 16 kHz) labelled with their kinds; needs two kinds or more."""
        classes = sorted(set(kinds))
        if len(classes) < 2:
            raise ValueError(f"the kind probe needs clips of at least two kinds, got {classes}")
        x = torch.stack([mel_features(wave) for wave in waves])
        y = torch.tensor([classes.index(kind) for kind in kinds])
        return cls(classes, train_linear_probe(x, y, len(classes), seed=seed))

    def predict(self, waves: Sequence[np.ndarray]) -> list[str | None]:
        """The predicted kind of each wave (None for a wave too short to measure)."""
        usable = [i for i, wave in enumerate(waves) if np.asarray(wave).size > 1024]
        out: list[str | None] = [None] * len(waves)
        if usable:
            scores = self.probe(torch.stack([mel_features(waves[i]) for i in usable]))
            for i, index in zip(usable, scores.argmax(1).tolist()):
                out[i] = self.classes[index]
        return out


def stated_properties(row: dict[str, Any]) -> dict[str, Any]:
    """The properties a synthetic-world manifest row states (its caption's facts), by name.

    ``class`` for every synthetic clip; ``pitch`` (MIDI note) for tones and beeps; ``tempo``
    (bpm) for drum patterns and arpeggios; ``colour`` for noise. Empty for real recordings.
    """
    params = row.get("params") if isinstance(row.get("params"), dict) else {}
    kind = params.get("kind")
    if not row.get("synthetic") or not isinstance(kind, str):
        return {}
    stated: dict[str, Any] = {"class": kind}
    if kind in PITCH_KINDS and "pitch" in params:
        stated["pitch"] = float(params["pitch"])
    if kind in TEMPO_KINDS and "bpm" in params:
        stated["tempo"] = float(params["bpm"])
    if kind in COLOUR_KINDS and "colour" in params:
        stated["colour"] = str(params["colour"])
    return stated


def measure(wave: np.ndarray, names: Sequence[str], probe: KindProbe | None = None,
            sample_rate: int = SAMPLE_RATE) -> dict[str, Any]:
    """Measure the properties ``names`` of one wave; a property that cannot be measured is None."""
    unknown = sorted(set(names) - set(PROPERTIES))
    if unknown:
        raise ValueError(f"unknown properties {unknown}; known: {PROPERTIES}")
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    measured: dict[str, Any] = {}
    for name in names:
        if name == "pitch":
            measured[name] = estimate_pitch(wave, sample_rate)
        elif name == "tempo":
            measured[name] = estimate_tempo(wave, sample_rate)
        elif name == "colour":
            measured[name] = estimate_noise_colour(wave, sample_rate)
        else:
            measured[name] = probe.predict([wave])[0] if probe is not None else None
    return measured


def matches(name: str, expected: Any, measured: Any) -> bool:
    """Whether a measured property agrees with the expected one (False when either is None)."""
    if expected is None or measured is None:
        return False
    if name == "pitch":
        return abs(float(measured) - float(expected)) <= 0.5
    if name == "tempo":
        ratio = float(measured) / float(expected)
        return any(abs(ratio * factor - 1.0) <= TEMPO_TOLERANCE for factor in (1.0, 2.0, 0.5))
    return measured == expected


def fraction_table(title: str, columns: Sequence[str], rows: dict[str, dict[str, tuple[int, int]]]) -> str:
    """A Markdown table: one row per property, one ``hits/total (pct)`` cell per column."""
    lines = [f"| {title} | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, cells in rows.items():
        rendered = []
        for column in columns:
            hits, total = cells.get(column, (0, 0))
            rendered.append(f"{hits}/{total} ({100.0 * hits / total:.0f} %)" if total else "–")
        lines.append(f"| {name} | " + " | ".join(rendered) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["KindProbe", "PROPERTIES", "estimate_noise_colour", "estimate_pitch", "estimate_tempo", "fraction_table",
           "matches", "measure", "mel_features", "onset_envelope", "spectral_slope", "stated_properties"]
