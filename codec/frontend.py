"""The SemantiCodec front-end: token budget, segment padding, the 128-bin Kaldi fbank of AudioMAE,
and the 64-bin log-mel of the VAE/vocoder domain.

Everything reproduces the official inference code (spec sections 1.1-1.3), including two quirks:

- the token budget is computed in Python floats, so 1.0 s gives 56.00000000000001 -> 57 tokens;
- padding always adds ``163840 - N % 163840`` zeros, so an input of exactly 10.24 s (or any
  multiple) gains a whole silent segment.

``fix_exact_multiple=True`` switches the second quirk off: an exact multiple of 10.24 s is not
padded, and its token budget is exactly the tokens of its segments (10.24 s -> 512/256/128 tokens
at K = 1/2/4). Every other length behaves as the official code, float arithmetic included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio

from codec.config import SAMPLE_RATE, SEGMENT_FRAMES, SEGMENT_SAMPLES

# Official Kaldi-fbank settings and AudioSet normalisation statistics of AudioMAE.
FBANK_MEL_BINS = 128
FBANK_FRAME_SHIFT_MS = 10
FBANK_MEAN = -4.2677393
FBANK_STD = 4.5689974

# Official duration bookkeeping: durations are rounded up to blocks of 0.16 s, 8 tokens each at K=1.
BUDGET_BLOCK_SECONDS = 0.16
TOKENS_PER_BLOCK = 8
SAMPLES_PER_TOKEN = 320  # 16000 * 0.16 / 8: one K=1 token covers 20 ms

# The VAE/vocoder log-mel (AudioLDM / HiFi-GAN convention).
MEL_BINS = 64
MEL_N_FFT = 1024
MEL_HOP = 160
MEL_FMIN = 0.0
MEL_FMAX = 8000.0
MEL_LOG_FLOOR = 1e-5


@dataclass(frozen=True)
class FrontendOutput:
    """Front-end result for one waveform.

    fbank: float32 [1024 * num_segments, 128], normalised Kaldi fbank.
    target_token_len: the official float token budget (e.g. 56.00000000000001).
    token_count: ceil(target_token_len), the number of tokens ``encode`` keeps.
    num_segments: 10.24-s segments after padding.
    """

    fbank: torch.Tensor
    target_token_len: float
    token_count: int
    num_segments: int


def _check_positive_int(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")


def token_budget(
    num_samples: int, concat_factor: int, *, fix_exact_multiple: bool = False
) -> tuple[float, int]:
    """Token budget of a 16-kHz waveform of ``num_samples`` samples at concatenation factor K.

    Returns (target, count): target = 8 * d' / 0.16 / K with d = N / 16000 and
    d' = d + (0.16 - d % 0.16), in Python floats in the official order; count = ceil(target).
    With ``fix_exact_multiple`` an exact multiple of 163840 samples gets N / (320 K) tokens.
    """
    _check_positive_int(num_samples, "num_samples")
    _check_positive_int(concat_factor, "concat_factor")
    if fix_exact_multiple and num_samples % SEGMENT_SAMPLES == 0:
        target = num_samples / (SAMPLES_PER_TOKEN * concat_factor)
        return target, math.ceil(target)
    duration = num_samples / SAMPLE_RATE
    duration = duration + (BUDGET_BLOCK_SECONDS - duration % BUDGET_BLOCK_SECONDS)
    target = TOKENS_PER_BLOCK * duration / BUDGET_BLOCK_SECONDS / concat_factor
    return target, math.ceil(target)


def segment_count(num_samples: int, *, fix_exact_multiple: bool = False) -> int:
    """10.24-s segments after :func:`pad_to_segments` of ``num_samples`` samples (official: an exact
    multiple gains a silent segment; with ``fix_exact_multiple`` it does not)."""
    _check_positive_int(num_samples, "num_samples")
    whole, remainder = divmod(num_samples, SEGMENT_SAMPLES)
    return whole if fix_exact_multiple and remainder == 0 else whole + 1


def pad_to_segments(wave: torch.Tensor, *, fix_exact_multiple: bool = False) -> torch.Tensor:
    """Zero-pad the last axis of ``wave`` [..., N] to a multiple of 163840 samples.

    Official: always adds 163840 - N % 163840 zeros (an exact multiple gains a silent segment).
    With ``fix_exact_multiple`` an exact multiple is returned unchanged.
    """
    if wave.dim() == 0 or wave.shape[-1] == 0:
        raise ValueError(f"expected a non-empty waveform [..., samples], got shape {list(wave.shape)}")
    target = segment_count(wave.shape[-1], fix_exact_multiple=fix_exact_multiple) * SEGMENT_SAMPLES
    return F.pad(wave, (0, target - wave.shape[-1])) if target > wave.shape[-1] else wave


FBANK_WINDOW_SAMPLES = 400  # one 25-ms Kaldi frame
SEGMENTS_PER_FBANK_CHUNK = 8  # bounds the front-end's memory for long inputs (about 40 MB per chunk)


def iter_fbank_segments(padded: torch.Tensor, segments_per_chunk: int = SEGMENTS_PER_FBANK_CHUNK):
    """The normalised fbank of :func:`kaldi_fbank`, a few 10.24-s segments at a time.

    Yields float32 [k, 1024, 128] for consecutive segments (k <= ``segments_per_chunk``); memory is
    bounded by the chunk, not the input. Kaldi frames are local (each sees 400 samples; the global
    mean is taken first), so every chunk's frames are exactly those of the whole-signal computation.
    """
    if padded.dim() != 1 or padded.numel() == 0 or padded.numel() % SEGMENT_SAMPLES:
        raise ValueError(
            f"expected a 1-D waveform whose length is a positive multiple of {SEGMENT_SAMPLES}, "
            f"got shape {list(padded.shape)} (use pad_to_segments first)"
        )
    _check_positive_int(segments_per_chunk, "segments_per_chunk")
    wave = padded.to(torch.float32)
    mean = wave.mean()
    segments = wave.numel() // SEGMENT_SAMPLES
    for first in range(0, segments, segments_per_chunk):
        count = min(segments_per_chunk, segments - first)
        start = first * SEGMENT_SAMPLES
        # The chunk's last frame starts 160 samples before its end and reaches 240 samples past it.
        stop = min(wave.numel(), start + count * SEGMENT_SAMPLES + FBANK_WINDOW_SAMPLES - 160)
        with torch.autocast(wave.device.type, enabled=False):  # the front-end is float32 under any precision
            fbank = torchaudio.compliance.kaldi.fbank(
                (wave[start:stop] - mean).unsqueeze(0),
                htk_compat=True,
                sample_frequency=SAMPLE_RATE,
                use_energy=False,
                window_type="hanning",
                num_mel_bins=FBANK_MEL_BINS,
                dither=0.0,
                frame_shift=FBANK_FRAME_SHIFT_MS,
            )[: count * SEGMENT_FRAMES]
        # The whole signal has 1024 n - 2 frames: the official code appends log-domain zero frames.
        fbank = F.pad(fbank, (0, 0, 0, count * SEGMENT_FRAMES - fbank.shape[0]))
        yield ((fbank - FBANK_MEAN) / (FBANK_STD * 2)).reshape(count, SEGMENT_FRAMES, FBANK_MEL_BINS)


def kaldi_fbank(padded: torch.Tensor) -> torch.Tensor:
    """Normalised 128-bin Kaldi fbank of a padded 16-kHz waveform, as the official front-end.

    padded: float [Npad], Npad a positive multiple of 163840. Returns float32 [1024 n, 128]
    with n = Npad / 163840: global mean removed, fbank over the whole signal (1024 n - 2 frames),
    log-domain zero frames appended, then (x - mean) / (2 std) with the AudioSet statistics.
    Computed in chunks of segments (:func:`iter_fbank_segments`), with the same result.
    """
    return torch.cat(list(iter_fbank_segments(padded))).reshape(-1, FBANK_MEL_BINS)


def kaldi_fbank_batch(padded: torch.Tensor) -> torch.Tensor:
    """:func:`kaldi_fbank` over a batch: float [B, Npad] -> float32 [B, 1024 n, 128]."""
    if padded.dim() != 2 or padded.shape[0] == 0:
        raise ValueError(f"expected a batch of waveforms [batch, samples], got shape {list(padded.shape)}")
    return torch.stack([kaldi_fbank(row) for row in padded])


def waveform_to_fbank(
    wave: torch.Tensor, concat_factor: int, *, fix_exact_multiple: bool = False
) -> FrontendOutput:
    """Full front-end for one 16-kHz mono waveform [N]: token budget, padding and fbank."""
    if wave.dim() != 1 or wave.numel() == 0:
        raise ValueError(f"expected a non-empty mono waveform [samples], got shape {list(wave.shape)}")
    target, count = token_budget(wave.numel(), concat_factor, fix_exact_multiple=fix_exact_multiple)
    padded = pad_to_segments(wave, fix_exact_multiple=fix_exact_multiple)
    return FrontendOutput(
        fbank=kaldi_fbank(padded),
        target_token_len=target,
        token_count=count,
        num_segments=padded.numel() // SEGMENT_SAMPLES,
    )


def _mel_filterbank(device: torch.device) -> torch.Tensor:
    return torchaudio.functional.melscale_fbanks(
        n_freqs=MEL_N_FFT // 2 + 1,
        f_min=MEL_FMIN,
        f_max=MEL_FMAX,
        n_mels=MEL_BINS,
        sample_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    ).to(device)


def log_mel_64(wave: torch.Tensor) -> torch.Tensor:
    """64-bin log-mel of the VAE/vocoder domain: float [..., N] at 16 kHz -> float32 [..., 64, N // 160].

    Magnitude STFT (periodic Hann 1024, hop 160, reflect padding of 512 on both sides), Slaney mel
    filters 0-8000 Hz, natural log of max(x, 1e-5). Centred framing yields N // 160 + 1 frames;
    the last one is dropped so that 10.24 s (163840 samples) gives the decoder's 1024 frames.
    """
    if wave.dim() == 0 or wave.shape[-1] <= MEL_N_FFT // 2:
        raise ValueError(
            f"expected a waveform [..., samples] with more than {MEL_N_FFT // 2} samples, "
            f"got shape {list(wave.shape)}"
        )
    leading = wave.shape[:-1]
    flat = wave.reshape(-1, wave.shape[-1]).to(torch.float32)
    spectrum = torch.stft(
        flat,
        n_fft=MEL_N_FFT,
        hop_length=MEL_HOP,
        win_length=MEL_N_FFT,
        window=torch.hann_window(MEL_N_FFT, periodic=True, device=flat.device),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    ).abs()
    # float32 under autocast too: this mel is a training target and a metric, never a bf16 approximation
    with torch.autocast(device_type=flat.device.type, enabled=False):
        mel = torch.matmul(_mel_filterbank(flat.device).T, spectrum)
    frames = wave.shape[-1] // MEL_HOP
    log_mel = torch.log(torch.clamp(mel[..., :frames], min=MEL_LOG_FLOOR))
    return log_mel.reshape(*leading, MEL_BINS, frames)
