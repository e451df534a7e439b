"""Audio file reading, waveform preparation and writing (codec/audio.py)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from codec.audio import AudioError, audio_info, load_audio, prepare_waveform, write_audio

STEREO_CASE = "44k1_stereo_1p5s"


def _tone(seconds: float, sample_rate: int, frequency: float = 440.0, channels: int = 1) -> np.ndarray:
    """float32 [frames, channels] sine at amplitude 0.4 (channel c at frequency * (c + 1))."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return np.stack(
        [0.4 * np.sin(2 * np.pi * frequency * (c + 1) * t) for c in range(channels)], axis=1
    ).astype(np.float32)


def _dominant_frequency(wave: torch.Tensor, sample_rate: int = 16000) -> float:
    spectrum = torch.fft.rfft(wave.double()).abs()
    return float(spectrum.argmax()) * sample_rate / wave.numel()


@pytest.fixture(scope="module")
def stereo_case(parity_dir: Path) -> dict:
    path = parity_dir / "fbank_frontend.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["fixture_meta"])
        return {
            "pcm": f.get_tensor(f"input.{STEREO_CASE}.pcm_int16"),
            "resampled_ch0": f.get_tensor(f"intermediate.{STEREO_CASE}.resampled_ch0"),
            "sample_rate": meta["cases"][STEREO_CASE]["sample_rate"],
        }


def _write_pcm16(path: Path, pcm: torch.Tensor, sample_rate: int) -> Path:
    sf.write(str(path), pcm.numpy().T, sample_rate, subtype="PCM_16")
    return path


# Parity with the official front-end ----------------------------------------------------------------
def test_stereo_resampled_channel0_matches_fixture(tmp_path: Path, stereo_case: dict) -> None:
    path = _write_pcm16(tmp_path / "stereo.wav", stereo_case["pcm"], stereo_case["sample_rate"])
    wave = load_audio(path)
    expected = stereo_case["resampled_ch0"][0]
    assert wave.dtype == torch.float32 and wave.shape == expected.shape
    assert (wave - expected).abs().max().item() <= 1e-5


def test_mean_policy_averages_resampled_channels(tmp_path: Path, stereo_case: dict) -> None:
    pcm, rate = stereo_case["pcm"], stereo_case["sample_rate"]
    stereo = _write_pcm16(tmp_path / "stereo.wav", pcm, rate)
    right_only = _write_pcm16(tmp_path / "right.wav", pcm[1:], rate)
    first = load_audio(stereo, channel_policy="first")
    mean = load_audio(stereo, channel_policy="mean")
    right = load_audio(right_only)
    assert (mean - first).abs().max().item() > 1e-2
    torch.testing.assert_close(mean, (first + right) / 2, atol=1e-6, rtol=0)


# Formats --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, sample_rate, options",
    [
        ("tone.wav", 16000, {}),
        ("tone.flac", 22050, {}),
        ("tone.ogg", 16000, {"format": "OGG", "subtype": "VORBIS"}),
        ("tone_opus.ogg", 48000, {"format": "OGG", "subtype": "OPUS"}),
        ("tone.mp3", 16000, {"format": "MP3"}),
    ],
)
def test_every_format_reads_back(tmp_path: Path, name: str, sample_rate: int, options: dict) -> None:
    path = tmp_path / name
    sf.write(str(path), _tone(1.0, sample_rate, channels=2), sample_rate, **options)
    wave = load_audio(path)
    assert wave.dtype == torch.float32 and wave.dim() == 1
    # Lossy codecs may add or drop up to a frame of samples at the edges.
    assert abs(wave.numel() - 16000) <= 320
    assert abs(_dominant_frequency(wave) - 440.0) <= 2.0
    assert audio_info(path)[:2] == (sample_rate, 2)


def test_write_audio_round_trip_and_atomic(tmp_path: Path) -> None:
    wave = torch.from_numpy(_tone(0.5, 16000)[:, 0])
    path = tmp_path / "out.wav"
    path.write_bytes(b"old contents")
    write_audio(path, wave)
    assert sorted(os.listdir(tmp_path)) == ["out.wav"]
    back = load_audio(path)
    torch.testing.assert_close(back, wave, atol=1.0 / 16000, rtol=0)
    assert audio_info(path) == (16000, 1, 8000)


@pytest.mark.parametrize("name", ["out.flac", "out.ogg", "out.opus", "out.mp3"])
def test_write_audio_formats_from_extension(tmp_path: Path, name: str) -> None:
    stereo = torch.from_numpy(_tone(1.0, 16000, channels=2).T.copy())
    path = tmp_path / name
    write_audio(path, stereo)
    assert audio_info(path).channels == 2
    assert abs(_dominant_frequency(load_audio(path)) - 440.0) <= 2.0


def test_write_audio_clips_integer_formats_and_keeps_float(tmp_path: Path) -> None:
    loud = torch.tensor([0.0, 1.5, -2.0, 0.25])
    write_audio(tmp_path / "pcm.wav", loud)
    write_audio(tmp_path / "float.wav", loud, subtype="FLOAT")
    pcm, _ = sf.read(str(tmp_path / "pcm.wav"), dtype="float32")
    assert pcm[1] > 0.99 and pcm[2] == -1.0
    assert sf.read(str(tmp_path / "float.wav"), dtype="float32")[0].tolist() == loud.tolist()


def test_write_audio_rejects_bad_requests(tmp_path: Path) -> None:
    wave = torch.zeros(100)
    with pytest.raises(AudioError, match=r"out\.xyz: unsupported output extension '\.xyz'"):
        write_audio(tmp_path / "out.xyz", wave)
    with pytest.raises(AudioError, match="output directory .* does not exist"):
        write_audio(tmp_path / "missing" / "out.wav", wave)
    with pytest.raises(AudioError, match="NaN or infinite"):
        write_audio(tmp_path / "nan.wav", torch.tensor([0.0, float("nan")]))
    with pytest.raises(AudioError, match="non-empty waveform"):
        write_audio(tmp_path / "empty.wav", torch.zeros(0))
    assert os.listdir(tmp_path) == []


# Bad files ------------------------------------------------------------------------------------------
def _assert_audio_error(path: Path, problem: str, **kwargs) -> None:
    with pytest.raises(AudioError) as caught:
        load_audio(path, **kwargs)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert problem in message, message


def test_missing_file(tmp_path: Path) -> None:
    _assert_audio_error(tmp_path / "nope.wav", "does not exist")


def test_directory(tmp_path: Path) -> None:
    _assert_audio_error(tmp_path, "is a directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    _assert_audio_error(path, "file is empty (0 bytes)")


def test_zero_samples(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    sf.write(str(path), np.zeros((0, 1), np.float32), 16000, subtype="PCM_16")
    assert path.stat().st_size > 0
    _assert_audio_error(path, "contains no audio samples")


def test_non_audio_bytes(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_bytes(b"these are shopping notes, not audio\n" * 20)
    _assert_audio_error(path, "not a recognised audio file")


def test_truncated_wav_header_promises_more_data(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    sf.write(str(path), _tone(1.0, 16000), 16000, subtype="PCM_16")
    data = path.read_bytes()
    assert struct.unpack("<I", data[40:44])[0] == 32000  # the data chunk size in the header
    path.write_bytes(data[: len(data) // 2])
    _assert_audio_error(path, "file is truncated")


@pytest.mark.parametrize(
    "name, options, keep",
    [
        ("cut.flac", {}, 0.5),
        ("cut.ogg", {"format": "OGG", "subtype": "VORBIS"}, 0.5),
        ("cut_end.ogg", {"format": "OGG", "subtype": "VORBIS"}, 0.9),
        ("cut_opus.ogg", {"format": "OGG", "subtype": "OPUS"}, 0.9),
        ("cut.mp3", {"format": "MP3"}, 0.5),
    ],
)
def test_truncated_compressed_files(tmp_path: Path, name: str, options: dict, keep: float) -> None:
    path = tmp_path / name
    sample_rate = 48000 if options.get("subtype") == "OPUS" else 16000
    sf.write(str(path), _tone(2.0, sample_rate), sample_rate, **options)
    load_audio(path)  # the complete file is fine
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    _assert_audio_error(path, "truncated")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_samples(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "bad.wav"
    sf.write(str(path), np.array([0.0, 0.1, bad, 0.2], np.float32), 16000, subtype="FLOAT")
    _assert_audio_error(path, "NaN or infinite samples")


def test_unsupported_channel_policy(tmp_path: Path) -> None:
    path = tmp_path / "ok.wav"
    sf.write(str(path), _tone(0.1, 16000), 16000)
    _assert_audio_error(path, "unsupported channel_policy 'left'", channel_policy="left")


def test_audio_info_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="does not exist"):
        audio_info(tmp_path / "nope.flac")
    junk = tmp_path / "junk.flac"
    junk.write_bytes(b"\x00\x01junk" * 50)
    with pytest.raises(AudioError, match=r"junk\.flac: not a recognised audio file"):
        audio_info(junk)


# prepare_waveform -----------------------------------------------------------------------------------
def test_prepare_waveform_shapes_and_passthrough() -> None:
    mono = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 0.1
    assert torch.equal(prepare_waveform(mono, 16000), mono)
    assert torch.equal(prepare_waveform(mono.unsqueeze(0).double(), 16000), mono)
    stereo = torch.stack([mono, -mono])
    assert torch.equal(prepare_waveform(stereo, 16000, channel_policy="mean"), torch.zeros(1000))
    assert prepare_waveform(mono, 8000).shape == (2000,)


@pytest.mark.parametrize(
    "wave, sample_rate, problem",
    [
        (torch.zeros(2, 3, 10), 16000, "shape [channels, samples] or [samples], got shape [2, 3, 10]"),
        (torch.zeros(1, 0), 16000, "waveform is empty"),
        (torch.zeros(100, dtype=torch.int16), 16000, "expected floating-point samples"),
        (torch.tensor([0.0, float("nan")]), 16000, "NaN or infinite samples (1 of 2)"),
        (torch.zeros(100), 0, "sample_rate must be a positive integer"),
        (torch.zeros(100), 16000.0, "sample_rate must be a positive integer"),
        (np.zeros(100, np.float32), 16000, "expected a torch.Tensor waveform, got ndarray"),
    ],
)
def test_prepare_waveform_rejects_bad_input(wave, sample_rate, problem: str) -> None:
    with pytest.raises(AudioError) as caught:
        prepare_waveform(wave, sample_rate, name="<clip 3>")
    assert str(caught.value).startswith("<clip 3>: ")
    assert problem in str(caught.value)
