"""Fuzzing of the two parsers that read untrusted files: the token-file reader and the audio loader.

Valid files are mutated (bytes flipped, cut, inserted) or replaced by random bytes; each parser must
either return a valid result or raise its own one-line error (TokenFileError, AudioError), never
crash with another exception or hang. The default suite runs a short, derandomised pass; the slow
marker runs a long one (``pytest -m slow tests/codec/test_fuzz.py``).
"""

import io
from pathlib import Path

import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec.audio import AudioError, load_audio
from codec.config import get_config
from codec.tokenfile import TokenFileError, load_tokens, save_tokens

CONFIG = get_config("tiny-100")
SHORT = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])
LONG = settings(max_examples=3000, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _token_file_bytes() -> bytes:
    buffer_path = Path(__file__).parent / "__fuzz_seed.tokens.safetensors"
    tokens = torch.tensor([[[1, 2], [3, 4], [5, 6]]], dtype=torch.long)
    try:
        save_tokens(buffer_path, tokens, None, CONFIG, extra={"source": "seed.wav"})
        return buffer_path.read_bytes()
    finally:
        buffer_path.unlink(missing_ok=True)


def _audio_bytes(fmt: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * torch.sin(torch.arange(1600) / 5)).numpy(), 16000, format=fmt)
    return buffer.getvalue()


SEEDS = {"tokens": _token_file_bytes(), "WAV": _audio_bytes("WAV"), "FLAC": _audio_bytes("FLAC")}


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """The seed file with a few random edits, or random bytes of any length."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=2048))
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
    return bytes(data)


def _check_token_reader(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.tokens.safetensors"
    path.write_bytes(data)
    try:
        loaded = load_tokens(path, expect=CONFIG)
    except TokenFileError as error:
        assert str(path) in str(error)
        return
    assert loaded.tokens.dtype == torch.int64 and loaded.tokens.shape[-1] == 2


def _check_audio_loader(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        wave = load_audio(path)
    except AudioError as error:
        assert str(path) in str(error)
        return
    assert wave.dtype == torch.float32 and wave.dim() == 1 and bool(torch.isfinite(wave).all())


@SHORT
@given(data=mutated(SEEDS["tokens"]))
def test_token_reader_survives_mutated_files(tmp_path, data):
    _check_token_reader(tmp_path, data)


@SHORT
@given(data=st.one_of(mutated(SEEDS["WAV"]), mutated(SEEDS["FLAC"])), suffix=st.sampled_from([".wav", ".flac", ".ogg", ".mp3"]))
def test_audio_loader_survives_mutated_files(tmp_path, data, suffix):
    _check_audio_loader(tmp_path, data, suffix)


@pytest.mark.slow
@LONG
@given(data=mutated(SEEDS["tokens"]))
def test_token_reader_survives_a_long_fuzz_run(tmp_path, data):
    _check_token_reader(tmp_path, data)


@pytest.mark.slow
@LONG
@given(data=st.one_of(mutated(SEEDS["WAV"]), mutated(SEEDS["FLAC"])), suffix=st.sampled_from([".wav", ".flac", ".ogg", ".mp3"]))
def test_audio_loader_survives_a_long_fuzz_run(tmp_path, data, suffix):
    _check_audio_loader(tmp_path, data, suffix)
