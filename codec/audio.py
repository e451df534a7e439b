"""Audio file input/output and waveform preparation for the codec (16 kHz mono float32).

All file I/O goes through soundfile (libsndfile): wav, flac, ogg/vorbis, ogg/opus and mp3.
``torchaudio.load``/``save`` are not used because torchaudio >= 2.9 needs torchcodec for them.
Every problem with an input is reported as :class:`AudioError`, whose message starts with the file
path (or ``<tensor>``) so batch jobs can say which input was bad.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

import numpy as np
import soundfile as sf
import torch
import torchaudio

from codec.config import SAMPLE_RATE
from codec.files import atomic_path

CHANNEL_POLICIES = ("first", "mean")

# Output container and default subtype per file extension (None: soundfile's default subtype).
WRITE_FORMATS: dict[str, tuple[str, str | None]] = {
    ".wav": ("WAV", None),
    ".flac": ("FLAC", None),
    ".ogg": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", None),
}

# libsndfile estimates the length of an mp3 without a Xing/LAME header from its size and bitrate,
# so a complete file may decode slightly short of the announced frame count.
_MP3_FRAME = 1152


class AudioError(ValueError):
    """Bad audio input. The message is ``"<path or <tensor>>: <problem in plain words>"``."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


class AudioInfo(NamedTuple):
    """Header facts of an audio file: sample rate in Hz, channel count, frames per channel."""

    sample_rate: int
    channels: int
    frames: int


def _check_readable_file(path: str) -> None:
    if not os.path.exists(path):
        raise AudioError(path, "file does not exist")
    if os.path.isdir(path):
        raise AudioError(path, "is a directory, not an audio file")
    if not os.access(path, os.R_OK):
        raise AudioError(path, "file cannot be read (permission denied)")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "file is empty (0 bytes)")


def _decode_error(path: str, err: Exception) -> AudioError:
    detail = err.error_string if isinstance(err, sf.LibsndfileError) else str(err)
    if "not recognised" in detail.lower() or "unknown format" in detail.lower():
        return AudioError(
            path, "not a recognised audio file (expected wav, flac, ogg/vorbis, ogg/opus or mp3)"
        )
    return AudioError(path, f"audio could not be decoded; the file is corrupt or truncated ({detail})")


def _riff_data_truncated(path: str) -> bool:
    """True if a RIFF/WAVE file's ``data`` chunk announces more bytes than the file holds."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if f.read(12)[8:12] != b"WAVE":
            return False
        position = 12
        while position + 8 <= size:
            f.seek(position)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                # 0 and 0xFFFFFFFF are what streaming writers leave when they never patch the size.
                if chunk_size in (0, 0xFFFFFFFF):
                    return False
                return chunk_size > size - position - 8
            position += 8 + chunk_size + (chunk_size & 1)
    return True  # no data chunk before the end of the file


def _ogg_truncated(path: str) -> bool:
    """True if an Ogg file ends before a complete page carrying the end-of-stream flag."""
    size = os.path.getsize(path)
    last_flags = 0
    position = 0
    with open(path, "rb") as f:
        while position + 27 <= size:
            f.seek(position)
            header = f.read(27)
            if header[:4] != b"OggS":
                break  # bytes after the last page: harmless if that page ended the stream
            lacing = f.read(header[26])
            page_end = position + 27 + header[26] + sum(lacing)
            if len(lacing) < header[26] or page_end > size:
                break
            last_flags = header[5]
            position = page_end
    return not last_flags & 0x04


def _container_truncated(path: str) -> bool:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"RIFF":
        return _riff_data_truncated(path)
    if magic == b"OggS":
        return _ogg_truncated(path)
    return False


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read an audio file's header: (sample_rate, channels, frames). Raises AudioError if unreadable."""
    path = os.fspath(path)
    _check_readable_file(path)
    try:
        info = sf.info(path)
    except RuntimeError as err:  # LibsndfileError is a RuntimeError
        raise _decode_error(path, err) from None
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))


def load_audio(path: str | os.PathLike, *, channel_policy: str = "first") -> torch.Tensor:
    """Read an audio file and return it as float32 [N] mono at 16 kHz.

    Decoding gives float32 samples in [-1, 1] ([C, N]; PCM16 decodes to int16/32768). The result
    then goes through :func:`prepare_waveform` (resample all channels, then apply
    ``channel_policy``: "first" keeps channel 0 as the official code does, "mean" averages).
    Raises AudioError for a missing, empty, unreadable, truncated or non-finite file.
    """
    path = os.fspath(path)
    _check_channel_policy(channel_policy, path)
    _check_readable_file(path)
    try:
        with sf.SoundFile(path) as sound:
            announced, subtype, sample_rate = sound.frames, sound.subtype, sound.samplerate
            data = sound.read(dtype="float32", always_2d=True)
    except RuntimeError as err:  # LibsndfileError is a RuntimeError
        raise _decode_error(path, err) from None
    slack = _MP3_FRAME + announced // 100 if subtype.startswith("MPEG") else 0
    if _container_truncated(path) or len(data) + slack < announced:
        decoded = f" ({len(data)} of {announced} frames decoded)" if len(data) < announced else ""
        raise AudioError(
            path, "file is truncated: its header announces more audio than the file holds" + decoded
        )
    if len(data) == 0:
        raise AudioError(path, "file contains no audio samples")
    wave = torch.from_numpy(np.ascontiguousarray(data.T))
    return prepare_waveform(wave, sample_rate, channel_policy=channel_policy, name=path)


def _check_channel_policy(channel_policy: str, name: str) -> None:
    if channel_policy not in CHANNEL_POLICIES:
        raise AudioError(
            name, f"unsupported channel_policy {channel_policy!r} (expected one of {CHANNEL_POLICIES})"
        )


MAX_CHANNELS = 8  # more "channels" than this, with fewer samples than channels, is a transposed waveform


def prepare_waveform(
    wave: torch.Tensor, sample_rate: int, *, channel_policy: str = "first", name: str = "<tensor>"
) -> torch.Tensor:
    """Turn a waveform [C, N] or [N] at ``sample_rate`` Hz into float32 [N] mono at 16 kHz.

    Official order: resample every channel with ``torchaudio.functional.resample`` (default
    arguments), then pick channel 0 ("first") or average the channels ("mean"). ``name`` labels
    error messages. Raises AudioError for a non-tensor, wrong shape, empty, non-finite or
    non-float waveform, a bad sample rate or an unknown channel policy.
    """
    _check_channel_policy(channel_policy, name)
    if not isinstance(wave, torch.Tensor):
        raise AudioError(name, f"expected a torch.Tensor waveform, got {type(wave).__name__}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(name, f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    if wave.dim() == 1:
        wave = wave.unsqueeze(0)
    if wave.dim() != 2:
        raise AudioError(name, f"expected a waveform of shape [channels, samples] or [samples], "
                               f"got shape {list(wave.shape)}")
    if not wave.is_floating_point():
        raise AudioError(name, f"expected floating-point samples in [-1, 1], got dtype {wave.dtype}")
    if wave.shape[0] == 0 or wave.shape[1] == 0:
        raise AudioError(name, f"waveform is empty (shape {list(wave.shape)})")
    if wave.shape[1] <= MAX_CHANNELS < wave.shape[0]:
        # soundfile and numpy give [N, C]; read as [C, N] it would be C tiny "recordings" of N samples.
        raise AudioError(name, f"shape {list(wave.shape)} looks like [samples, channels] (channels last); "
                               f"pass [channels, samples], e.g. wave.T")
    finite = torch.isfinite(wave)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise AudioError(name, f"waveform contains NaN or infinite samples ({bad} of {wave.numel()})")
    wave = wave.to(torch.float32)
    if sample_rate != SAMPLE_RATE:
        wave = torchaudio.functional.resample(wave, int(sample_rate), SAMPLE_RATE)
    mono = wave[0] if channel_policy == "first" else wave.mean(dim=0)
    return mono.contiguous()


def write_audio(
    path: str | os.PathLike, wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, *, subtype: str | None = None
) -> None:
    """Write a waveform [N] or [C, N] (float, nominally in [-1, 1]) to an audio file, atomically.

    The container comes from the extension (.wav, .flac, .ogg = vorbis, .opus = ogg/opus, .mp3);
    ``subtype`` overrides soundfile's default encoding (e.g. "PCM_24", "FLOAT"). Samples are
    clipped to [-1, 1] unless the subtype stores floats. The file is written under a temporary
    name in the same directory and then renamed, so readers never see a half-written file.
    """
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lower()
    if extension not in WRITE_FORMATS:
        raise AudioError(path, f"unsupported output extension {extension!r} "
                               f"(expected one of {sorted(WRITE_FORMATS)})")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise AudioError(path, f"output directory {directory} does not exist")
    if not isinstance(wave, torch.Tensor) or wave.dim() not in (1, 2) or wave.numel() == 0:
        shape = list(wave.shape) if isinstance(wave, torch.Tensor) else type(wave).__name__
        raise AudioError(path, f"expected a non-empty waveform [samples] or [channels, samples], got {shape}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(path, f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    data = wave.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(data).all()):
        raise AudioError(path, "refusing to write a waveform with NaN or infinite samples")
    container, default_subtype = WRITE_FORMATS[extension]
    subtype = subtype or default_subtype
    if subtype not in ("FLOAT", "DOUBLE"):
        data = data.clamp(-1.0, 1.0)
    frames = data.numpy() if data.dim() == 1 else data.T.numpy()
    try:
        with atomic_path(path) as temporary:
            sf.write(temporary, frames, int(sample_rate), format=container, subtype=subtype)
    except (RuntimeError, ValueError, OSError) as err:  # LibsndfileError is a RuntimeError
        raise AudioError(path, f"could not write audio ({err})") from None
