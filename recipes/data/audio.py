"""Audio plumbing for the corpus: decoding sources to 16 kHz mono, loudness, cutting.

Loudness follows ITU-R BS.1770-4 (K-weighting, 400 ms blocks with 75 % overlap, absolute gate
at -70 LUFS, relative gate at -10 LU); clips are normalised to ``TARGET_LUFS`` and then turned
down, if needed, so that no sample exceeds ``PEAK_LIMIT``.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess

import numpy as np
import soundfile
import torch
import torchaudio.functional as audio_functional

from codec.config import SAMPLE_RATE

TARGET_LUFS = -23.0
PEAK_LIMIT = 10 ** (-1.0 / 20)  # -1 dBFS
SILENCE_LUFS = -60.0


class SourceAudioError(RuntimeError):
    """A source recording could not be decoded (corrupt, empty, or an unknown format)."""


def decode_audio(source: str | os.PathLike[str] | bytes, name: str, input_format: str | None = None) -> np.ndarray:
    """Decode ``source`` (a file path or the file's bytes) to float32 mono samples at 16 kHz.

    ``input_format`` ``"g722"`` selects ffmpeg's headerless G.722 decoder; anything else is read
    with soundfile, falling back to ffmpeg when soundfile cannot read it. ``name`` is used in
    error messages. Raises :class:`SourceAudioError` when nothing can decode it.
    """
    if input_format == "g722":
        return _decode_with_ffmpeg(source, name, ["-f", "g722"])
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
        samples, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        if shutil.which("ffmpeg") is None:
            raise SourceAudioError(f"{name}: cannot decode ({error}) and ffmpeg is not installed") from None
        return _decode_with_ffmpeg(source, name, [])
    if samples.size == 0:
        raise SourceAudioError(f"{name}: no audio samples")
    return to_mono_16k(samples, rate)


def _decode_with_ffmpeg(source: str | os.PathLike[str] | bytes, name: str, input_args: list[str]) -> np.ndarray:
    if shutil.which("ffmpeg") is None:
        raise SourceAudioError(f"{name}: ffmpeg is needed to decode it but is not installed")
    from_pipe = isinstance(source, bytes)
    command = ["ffmpeg", "-nostdin", "-v", "error", *input_args, "-i", "pipe:0" if from_pipe else str(source),
               "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "pipe:1"]
    result = subprocess.run(command, input=source if from_pipe else None, capture_output=True, check=False)
    if result.returncode != 0 or len(result.stdout) < 4:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise SourceAudioError(f"{name}: ffmpeg could not decode it ({message[-1] if message else 'no output'})")
    return np.frombuffer(result.stdout[: len(result.stdout) // 4 * 4], dtype="<f4").astype(np.float32)


def to_mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Average ``samples`` (frames, channels) or (frames,) to mono and resample to 16 kHz (float32)."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if sample_rate != SAMPLE_RATE:
        mono = audio_functional.resample(torch.from_numpy(mono), sample_rate, SAMPLE_RATE).numpy()
    return mono


def _k_weighting_filters(sample_rate: int) -> list[tuple[list[float], list[float]]]:
    # The analogue prototypes behind BS.1770's 48 kHz coefficients, re-discretised for any rate:
    # stage 1 is a +4 dB high shelf (the head), stage 2 the RLB high-pass.
    shelf_k = math.tan(math.pi * 1681.974450955533 / sample_rate)
    shelf_q, high_gain = 0.7071752369554196, 10 ** (3.999843853973347 / 20)
    band_gain = high_gain ** 0.4996667741545416
    norm = 1 + shelf_k / shelf_q + shelf_k**2
    shelf = ([(high_gain + band_gain * shelf_k / shelf_q + shelf_k**2) / norm,
              2 * (shelf_k**2 - high_gain) / norm,
              (high_gain - band_gain * shelf_k / shelf_q + shelf_k**2) / norm],
             [1.0, 2 * (shelf_k**2 - 1) / norm, (1 - shelf_k / shelf_q + shelf_k**2) / norm])
    pass_k = math.tan(math.pi * 38.13547087602444 / sample_rate)
    pass_q = 0.5003270373238773
    norm = 1 + pass_k / pass_q + pass_k**2
    high_pass = ([1.0, -2.0, 1.0], [1.0, 2 * (pass_k**2 - 1) / norm, (1 - pass_k / pass_q + pass_k**2) / norm])
    return [shelf, high_pass]


def _k_weight(wave: np.ndarray, sample_rate: int) -> torch.Tensor:
    signal = torch.from_numpy(np.asarray(wave, dtype=np.float64))
    for b, a in _k_weighting_filters(sample_rate):
        signal = audio_functional.lfilter(signal, torch.tensor(a, dtype=torch.float64),
                                          torch.tensor(b, dtype=torch.float64), clamp=False)
    return signal


def integrated_loudness(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """BS.1770 gated loudness of a mono ``wave`` in LUFS; ``-inf`` for silence.

    Clips shorter than one 400 ms block are measured over their whole length.
    """
    weighted = _k_weight(wave, sample_rate)
    block, hop = int(0.4 * sample_rate), int(0.1 * sample_rate)
    if weighted.numel() < block:
        powers = weighted.square().mean().reshape(1)
    else:
        powers = weighted.unfold(0, block, hop).square().mean(dim=1)
    loudness = -0.691 + 10 * torch.log10(powers.clamp_min(1e-20))
    gated = powers[loudness > -70.0]
    if gated.numel() == 0:
        return float("-inf")
    relative_gate = -0.691 + 10 * math.log10(float(gated.mean())) - 10.0
    gated = powers[(loudness > -70.0) & (loudness > relative_gate)]
    return float(-0.691 + 10 * torch.log10(gated.mean()))


def normalise_loudness(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, float]:
    """Scale ``wave`` to ``TARGET_LUFS`` with the peak kept at or below ``PEAK_LIMIT``.

    Returns the scaled float32 wave and the gain applied in dB. Raises ``ValueError`` for a wave
    quieter than ``SILENCE_LUFS`` (nothing to normalise).
    """
    loudness = integrated_loudness(wave, sample_rate)
    if not loudness > SILENCE_LUFS:
        raise ValueError(f"the audio is silent ({loudness:.1f} LUFS)")
    gain = 10 ** ((TARGET_LUFS - loudness) / 20)
    peak = float(np.abs(wave).max())
    gain = min(gain, PEAK_LIMIT / peak)
    return (wave * gain).astype(np.float32), 20 * math.log10(gain)


def plan_cuts(num_samples: int, min_samples: int, max_samples: int) -> list[tuple[int, int]]:
    """Split a recording of ``num_samples`` into (start, length) pieces within the length range.

    A recording no longer than ``max_samples`` stays whole (a shorter one than ``min_samples`` is
    returned whole too: the caller pads or drops it); a longer one is cut into the fewest equal
    consecutive pieces that fit, so no short remainder is left over.
    """
    if min_samples <= 0 or max_samples < min_samples:
        raise ValueError(f"bad clip length range [{min_samples}, {max_samples}] samples")
    if num_samples <= max_samples:
        return [(0, num_samples)]
    pieces = math.ceil(num_samples / max_samples)
    edges = [round(index * num_samples / pieces) for index in range(pieces + 1)]
    return [(start, stop - start) for start, stop in zip(edges[:-1], edges[1:])]


def pad_to(wave: np.ndarray, num_samples: int) -> np.ndarray:
    """Append silence to ``wave`` until it has ``num_samples`` samples."""
    if wave.shape[0] >= num_samples:
        return wave
    return np.concatenate([wave, np.zeros(num_samples - wave.shape[0], dtype=wave.dtype)])
