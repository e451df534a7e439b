"""Source decoding, loudness, cutting, archive readers, licences and caption parsers of the corpus layer."""

from __future__ import annotations

import gzip
import io
import math
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest
import soundfile

from recipes.data.audio import (
    PEAK_LIMIT,
    TARGET_LUFS,
    SourceAudioError,
    decode_audio,
    integrated_loudness,
    normalise_loudness,
    pad_to,
    plan_cuts,
)
from recipes.data.sources.archives import ArchiveError, read_opensfx_cat, read_rcc
from recipes.data.sources.asterisk import read_transcripts
from recipes.data.sources.effects import parse_opensfx_name
from recipes.data.sources.gcompris import effect_caption
from recipes.data.sources.licences import Dep5Licences

RATE = 16000


def _sine(frequency: float, seconds: float, amplitude: float, rate: int = RATE) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def _wav_bytes(wave: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.mark.parametrize("amplitude", [0.5, 0.1, 0.01])
def test_loudness_of_a_1khz_sine_follows_bs1770(amplitude: float) -> None:
    # BS.1770 is calibrated so that a 1 kHz sine at full scale reads -3.01 LUFS.
    expected = -3.01 + 20 * math.log10(amplitude)
    assert integrated_loudness(_sine(1000, 3.0, amplitude)) == pytest.approx(expected, abs=0.15)


def test_gating_ignores_silence() -> None:
    tone = _sine(1000, 2.0, 0.1)
    padded = np.concatenate([tone, np.zeros(4 * RATE, dtype=np.float32)])
    # Ungated, 4 s of silence would lower the reading by 4.8 LU; gated, only the few blocks that
    # straddle the edge of the tone count, and they cost less than half a LU.
    assert integrated_loudness(padded) == pytest.approx(integrated_loudness(tone), abs=0.5)
    assert integrated_loudness(np.zeros(RATE, dtype=np.float32)) == float("-inf")


def test_normalise_hits_target_or_peak_limit() -> None:
    quiet, gain = normalise_loudness(_sine(440, 2.0, 0.01))
    assert integrated_loudness(quiet) == pytest.approx(TARGET_LUFS, abs=0.1) and gain > 0
    clicks = np.zeros(2 * RATE, dtype=np.float32)
    clicks[::4000] = 0.05  # very peaky: the peak limit, not the loudness target, decides
    limited, _ = normalise_loudness(clicks)
    assert np.abs(limited).max() == pytest.approx(PEAK_LIMIT, rel=1e-4)
    with pytest.raises(ValueError, match="silent"):
        normalise_loudness(np.zeros(RATE, dtype=np.float32))


@pytest.mark.parametrize("num_samples", [500, 16000, 160000, 160001, 1234567])
def test_cuts_cover_the_recording_within_the_range(num_samples: int) -> None:
    cuts = plan_cuts(num_samples, 16000, 160000)
    assert cuts[0][0] == 0 and sum(length for _, length in cuts) == num_samples
    assert all(start + length == next_start for (start, length), (next_start, _) in zip(cuts, cuts[1:]))
    if num_samples > 160000:
        assert all(80000 <= length <= 160000 for _, length in cuts)
    with pytest.raises(ValueError):
        plan_cuts(num_samples, 0, 10)


def test_pad_to_appends_silence() -> None:
    padded = pad_to(np.ones(10, dtype=np.float32), 25)
    assert padded.shape == (25,) and padded[:10].sum() == 10 and not padded[10:].any()


def test_decode_resamples_and_downmixes() -> None:
    stereo = np.stack([_sine(441, 1.0, 0.5, 44100), _sine(441, 1.0, 0.5, 44100)], axis=1)
    buffer = io.BytesIO()
    soundfile.write(buffer, stereo, 44100, format="FLAC")
    wave = decode_audio(buffer.getvalue(), "in-memory.flac")
    assert wave.dtype == np.float32 and wave.ndim == 1 and abs(wave.shape[0] - RATE) <= 1
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * RATE / wave.shape[0] - 441) < 2


def test_corrupt_bytes_raise_a_named_error(tmp_path) -> None:
    garbage = tmp_path / "broken.ogg"
    garbage.write_bytes(b"OggS" + bytes(range(256)) * 20)
    with pytest.raises(SourceAudioError, match="broken.ogg"):
        decode_audio(garbage, str(garbage))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_g722_is_decoded_at_16khz(tmp_path) -> None:
    source = tmp_path / "tone.wav"
    soundfile.write(source, _sine(500, 1.0, 0.5), RATE)
    encoded = tmp_path / "tone.g722"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(source), "-ar", "16000", "-f", "g722", str(encoded)], check=True)
    wave = decode_audio(encoded, str(encoded), input_format="g722")
    assert abs(wave.shape[0] - RATE) < 400
    assert abs(np.argmax(np.abs(np.fft.rfft(wave))) * RATE / wave.shape[0] - 500) < 3


def _rcc_bundle(files: dict[str, tuple[bytes, bool]]) -> bytes:
    """A version-2 Qt resource bundle: root -> "gcompris" -> files (name: (bytes, compressed))."""
    names, name_offsets = bytearray(), {}
    for name in ["gcompris", *files]:
        name_offsets[name] = len(names)
        encoded = name.encode("utf-16-be")
        names += struct.pack(">HI", len(encoded) // 2, 0) + encoded
    data, data_offsets = bytearray(), {}
    for name, (payload, compressed) in files.items():
        data_offsets[name] = len(data)
        stored = struct.pack(">I", len(payload)) + zlib.compress(payload) if compressed else payload
        data += struct.pack(">I", len(stored)) + stored
    tree = struct.pack(">IHII", 0, 2, 1, 1) + bytes(8)
    tree += struct.pack(">IHII", name_offsets["gcompris"], 2, len(files), 2) + bytes(8)
    for name, (_, compressed) in files.items():
        tree += struct.pack(">IHHHI", name_offsets[name], 1 if compressed else 0, 0, 0, data_offsets[name]) + bytes(8)
    tree_offset = 20
    data_offset = tree_offset + len(tree)
    names_offset = data_offset + len(data)
    return b"qres" + struct.pack(">4I", 2, tree_offset, data_offset, names_offset) + tree + data + names


def test_rcc_reader_walks_the_tree_and_inflates(tmp_path) -> None:
    path = tmp_path / "bundle.rcc"
    path.write_bytes(_rcc_bundle({"plain.ogg": (b"plain bytes", False), "packed.wav": (b"x" * 1000, True)}))
    assert read_rcc(path) == {"gcompris/plain.ogg": b"plain bytes", "gcompris/packed.wav": b"x" * 1000}


def test_rcc_reader_rejects_bad_files(tmp_path) -> None:
    path = tmp_path / "bad.rcc"
    path.write_bytes(b"not a bundle at all")
    with pytest.raises(ArchiveError, match="bad.rcc"):
        read_rcc(path)
    path.write_bytes(_rcc_bundle({"a.ogg": (b"abc", False)})[:40])
    with pytest.raises(ArchiveError, match="bad.rcc"):
        read_rcc(path)


def test_opensfx_cat_reader(tmp_path) -> None:
    names = [b'"Cow". License: Creative Commons Zero 1.0.\x00', b'"Nothing".\x00\x00']
    audio = [_wav_bytes(_sine(300, 0.2, 0.5, 44100), 44100), b"not riff"]
    table_size = 8 * len(names)
    entries, offset, table = bytearray(), table_size, bytearray()
    for name, payload in zip(names, audio):
        blob = bytes([len(name)]) + name + payload
        table += struct.pack("<II", offset | 0x80000000, len(blob))
        entries += blob
        offset += len(blob)
    path = tmp_path / "sounds.cat"
    path.write_bytes(bytes(table) + bytes(entries))
    read = read_opensfx_cat(path)
    assert [entry.name for entry in read] == ['"Cow". License: Creative Commons Zero 1.0.', '"Nothing".']
    assert read[0].audio.startswith(b"RIFF") and decode_audio(read[0].audio, "cow").shape[0] > 3000
    path.write_bytes(bytes(table))  # entries cut off
    with pytest.raises(ArchiveError, match="sounds.cat"):
        read_opensfx_cat(path)


@pytest.mark.parametrize(("name", "caption", "licence"), [
    ('"Toyland: Sugar mine (1)". Original "shaker2.wav". License: Creative Commons Zero 1.0.', "sugar mine", "CC0-1.0"),
    ('"Steam (of steam engine)". By J. License: Creative Commons Attribution 3.0 Unported.',
     "steam (of steam engine)", "CC-BY-3.0"),
    ('"Helicopter". License: Creative Commons Attribution-ShareAlike 3.0 Unported.', "helicopter", "CC-BY-SA-3.0"),
    ('"Mystery".', "mystery", "unknown"),
])
def test_opensfx_names_give_captions_and_licences(name: str, caption: str, licence: str) -> None:
    assert parse_opensfx_name(name) == (caption, licence)


def test_memory_sound_captions() -> None:
    assert effect_caption("LRRain_in_garden_01_LA_cut") == "rain in garden"
    assert effect_caption("LRFrogsInPondDuringStormLACut") == "frogs in pond during storm"
    assert effect_caption("LRStartAndStopCarEngine1LACut") == "start and stop car engine"


def test_dep5_last_matching_paragraph_wins(tmp_path) -> None:
    copyright_file = tmp_path / "copyright"
    copyright_file.write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: someone\nLicense: GPL-3+\n\n"
        "Files: src/activities/instruments/resource/drum_kit.ogg\n       src/other/*.wav\n"
        "Copyright: ocea\nLicense: CC-sampling-plus-1.0\n\n"
        "Files: etc/samples/bd_808.flac\nLicense: CC0\n")
    licences = Dep5Licences.from_file(copyright_file, default="MIT")
    bundle = "/usr/share/gcompris-qt/rcc/instruments.rcc#gcompris/src/activities/instruments/resource/"
    assert licences.licence_for(bundle + "drum_kit.ogg") == "CC-sampling-plus-1.0"
    assert licences.licence_for(bundle + "harp.ogg") == "GPL-3+"
    assert licences.licence_for("/x.rcc#gcompris/src/other/bell.wav") == "CC-sampling-plus-1.0"
    assert licences.licence_for("/usr/share/sonic-pi/samples/bd_808.flac") == "CC0"
    assert Dep5Licences.from_file(tmp_path / "absent", default="MIT").licence_for("/a/b") == "MIT"


def test_asterisk_transcripts_parse(tmp_path) -> None:
    path = tmp_path / "core-sounds-en.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\ufeff; Core sounds\n\nactivated: Activated.\nbeep: [beep tone]\nno colon here\n"
                     "digits/1: one\nspaces:   Please   hold.  \n")
    assert read_transcripts(path) == {"activated": "Activated.", "beep": "[beep tone]", "digits/1": "one",
                                      "spaces": "Please hold."}
