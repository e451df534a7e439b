"""The front-end: token budget, padding, Kaldi fbank parity (fixture 1) and the 64-bin log-mel."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from codec.audio import load_audio
from codec.frontend import (
    kaldi_fbank,
    kaldi_fbank_batch,
    log_mel_64,
    pad_to_segments,
    token_budget,
    waveform_to_fbank,
)

CASES = ("16k_1p0s", "16k_3p7s", "16k_10p24s", "44k1_stereo_1p5s")
CONCAT_FACTORS = (1, 2, 4)
SILENT_FRAME_VALUE = -1.2775938510894775  # (ln(float32 eps) + 4.2677393) / 9.1379948 in float32
PAD_FRAME_VALUE = 0.46703237295150757  # a log-domain zero frame after normalisation
FBANK_TOLERANCE = 3e-4
# Frames with zero std over the 128 bins (silent padding + the 2 pad frames), from the fixture README.
ZERO_STD_FRAMES = {"16k_1p0s": 924, "16k_3p7s": 654, "16k_10p24s": 1024, "44k1_stereo_1p5s": 874}


@pytest.fixture(scope="module")
def fixture_file(parity_dir: Path) -> tuple[Path, dict]:
    path = parity_dir / "fbank_frontend.safetensors"
    with safe_open(str(path), framework="pt") as f:
        return path, json.loads(f.metadata()["fixture_meta"])


def _load_case(path: Path, case: str) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {
            name: f.get_tensor(f"{prefix}.{case}.{name}")
            for prefix, name in [
                ("input", "pcm_int16"),
                ("expected", "fbank"),
                ("expected", "target_token_len"),
                ("expected", "token_count"),
            ]
        }


@pytest.mark.parametrize("case", CASES)
def test_frontend_matches_official(tmp_path: Path, fixture_file: tuple[Path, dict], case: str) -> None:
    path, meta = fixture_file
    tensors = _load_case(path, case)
    wav = tmp_path / f"{case}.wav"
    sf.write(str(wav), tensors["pcm_int16"].numpy().T, meta["cases"][case]["sample_rate"], subtype="PCM_16")
    wave = load_audio(wav)
    expected = tensors["fbank"][0]

    for index, concat_factor in enumerate(CONCAT_FACTORS):
        out = waveform_to_fbank(wave, concat_factor)
        assert out.target_token_len == tensors["target_token_len"][index].item()
        assert out.token_count == tensors["token_count"][index].item()
        assert out.num_segments == expected.shape[0] // 1024
    fbank = out.fbank
    assert fbank.dtype == torch.float32 and fbank.shape == expected.shape
    assert (fbank - expected).abs().max().item() <= FBANK_TOLERANCE

    # Frames in the padding must be exact constants: the acoustic branch detects them by std == 0.
    silent = expected.std(dim=1) == 0
    assert int(silent.sum()) == ZERO_STD_FRAMES[case]
    assert torch.equal(fbank.std(dim=1) == 0, silent)
    assert bool((fbank[silent][:-2] == torch.tensor(SILENT_FRAME_VALUE)).all())
    assert bool((fbank[-2:] == torch.tensor(PAD_FRAME_VALUE)).all())


# Token budget ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "seconds, counts",
    [
        (1.0, (57, 29, 15)),
        (10.0, (504, 252, 126)),
        (10.24, (520, 260, 130)),
        (20.48, (1032, 516, 258)),
        (30.0, (1504, 752, 376)),
    ],
)
def test_token_budget_official_examples(seconds: float, counts: tuple[int, int, int]) -> None:
    samples = round(seconds * 16000)
    for concat_factor, count in zip(CONCAT_FACTORS, counts):
        target, got = token_budget(samples, concat_factor)
        assert got == count and got == math.ceil(target)


def test_token_budget_float_artefact() -> None:
    assert token_budget(16000, 1) == (56.00000000000001, 57)
    assert token_budget(16000, 2) == (28.000000000000004, 29)


def test_fix_exact_multiple_switch() -> None:
    for concat_factor, per_segment in zip(CONCAT_FACTORS, (512, 256, 128)):
        budget = token_budget(163840, concat_factor, fix_exact_multiple=True)
        assert budget == (float(per_segment), per_segment)
        assert token_budget(327680, concat_factor, fix_exact_multiple=True)[1] == 2 * per_segment
    # Every other length keeps the official budget, float artefact included.
    for samples in (16000, 59200, 163839, 163841):
        for concat_factor in CONCAT_FACTORS:
            assert token_budget(samples, concat_factor, fix_exact_multiple=True) == token_budget(
                samples, concat_factor
            )

    wave = torch.full((163840,), 0.1)
    assert pad_to_segments(wave).shape == (327680,)
    assert pad_to_segments(wave, fix_exact_multiple=True).shape == (163840,)
    fixed = waveform_to_fbank(wave, 1, fix_exact_multiple=True)
    assert fixed.fbank.shape == (1024, 128) and fixed.num_segments == 1 and fixed.token_count == 512


def test_token_budget_never_exceeds_padded_tokens() -> None:
    # The encoder keeps the first token_count tokens of the padded segments; it must never run short.
    for samples in range(1, 3 * 163840, 13):
        segments = samples // 163840 + 1
        for concat_factor in CONCAT_FACTORS:
            assert token_budget(samples, concat_factor)[1] <= segments * 512 // concat_factor


@pytest.mark.parametrize("samples, factor", [(0, 1), (-5, 1), (100, 0), (1.5, 1), (100, True)])
def test_token_budget_rejects_bad_arguments(samples, factor) -> None:
    with pytest.raises(ValueError, match="must be a positive integer"):
        token_budget(samples, factor)


# Padding and fbank ----------------------------------------------------------------------------------
def test_pad_to_segments_lengths_and_zeros() -> None:
    wave = torch.ones(2, 1000)
    padded = pad_to_segments(wave)
    assert padded.shape == (2, 163840)
    assert torch.equal(padded[:, :1000], wave) and not padded[:, 1000:].any()
    with pytest.raises(ValueError, match="non-empty waveform"):
        pad_to_segments(torch.zeros(0))


def test_kaldi_fbank_shape_and_validation() -> None:
    padded = pad_to_segments(torch.randn(40000, generator=torch.Generator().manual_seed(1)) * 0.1)
    fbank = kaldi_fbank(padded)
    assert fbank.shape == (1024, 128) and fbank.dtype == torch.float32
    with pytest.raises(ValueError, match="positive multiple of 163840"):
        kaldi_fbank(torch.zeros(163839))
    with pytest.raises(ValueError, match="positive multiple of 163840"):
        kaldi_fbank(torch.zeros(1, 163840))


def test_kaldi_fbank_batch_matches_rows() -> None:
    generator = torch.Generator().manual_seed(2)
    batch = pad_to_segments(torch.randn(2, 30000, generator=generator) * 0.1)
    stacked = kaldi_fbank_batch(batch)
    assert stacked.shape == (2, 1024, 128)
    assert torch.equal(stacked[1], kaldi_fbank(batch[1]))
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        kaldi_fbank_batch(batch[0])


def test_waveform_to_fbank_rejects_multichannel() -> None:
    with pytest.raises(ValueError, match="mono waveform"):
        waveform_to_fbank(torch.zeros(2, 16000), 1)


# 64-bin log-mel -------------------------------------------------------------------------------------
def _slaney_hz_to_mel(hz: float) -> float:
    if hz < 1000.0:
        return hz * 3.0 / 200.0
    return 15.0 + math.log(hz / 1000.0) * 27.0 / math.log(6.4)


def _slaney_mel_to_hz(mel: float) -> float:
    if mel < 15.0:
        return mel * 200.0 / 3.0
    return 1000.0 * math.exp((mel - 15.0) * math.log(6.4) / 27.0)


def test_log_mel_64_is_float32_under_bf16_autocast() -> None:
    """It is a training target and a metric: autocast (bf16-mixed training, bf16 decoding) must not round it."""
    wave = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    exact = log_mel_64(wave)
    with torch.autocast("cpu", torch.bfloat16):
        under_autocast = log_mel_64(wave)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, exact, rtol=0, atol=0)


def test_log_mel_64_shapes() -> None:
    assert log_mel_64(torch.zeros(163840)).shape == (64, 1024)
    assert log_mel_64(torch.zeros(2, 3, 16000)).shape == (2, 3, 64, 100)
    assert log_mel_64(torch.zeros(1000)).shape == (64, 6)
    with pytest.raises(ValueError, match="more than 512 samples"):
        log_mel_64(torch.zeros(512))


def test_log_mel_64_silence_hits_floor() -> None:
    mel = log_mel_64(torch.zeros(16000))
    assert torch.equal(mel, torch.full_like(mel, math.log(1e-5)))


@pytest.mark.parametrize("band", [5, 21, 50])
def test_log_mel_64_tone_peaks_in_its_mel_band(band: int) -> None:
    # Band b is centred on point b + 1 of 66 mel points evenly spaced between 0 Hz and 8 kHz.
    frequency = _slaney_mel_to_hz(_slaney_hz_to_mel(8000.0) * (band + 1) / 65)
    t = torch.arange(32000, dtype=torch.float64) / 16000
    mel = log_mel_64((0.5 * torch.sin(2 * math.pi * frequency * t)).float())
    profile = mel[:, 10:-10].mean(dim=1)
    assert int(profile.argmax()) == band
    assert profile.max() - profile.median() > 5.0  # the tone stands far above the rest of the spectrum


def test_fbank_in_chunks_equals_the_whole_signal_computation() -> None:
    import torchaudio

    from codec.frontend import FBANK_MEAN, FBANK_STD, iter_fbank_segments, pad_to_segments, segment_count

    torch.manual_seed(0)
    padded = pad_to_segments(0.1 * torch.randn(int(16000 * 35.3)))
    assert padded.numel() == segment_count(int(16000 * 35.3)) * 163840 == 4 * 163840
    wave = padded - padded.mean()
    whole = torchaudio.compliance.kaldi.fbank(wave[None], htk_compat=True, sample_frequency=16000, use_energy=False,
                                              window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    whole = torch.nn.functional.pad(whole, (0, 0, 0, 4096 - whole.shape[0]))
    whole = (whole - FBANK_MEAN) / (FBANK_STD * 2)
    for per_chunk in (1, 3, 8):
        chunks = list(iter_fbank_segments(padded, per_chunk))
        assert all(chunk.shape[1:] == (1024, 128) for chunk in chunks)
        assert torch.equal(torch.cat(chunks).reshape(-1, 128), whole)  # bit for bit
    assert segment_count(163840) == 2 and segment_count(163840, fix_exact_multiple=True) == 1
