"""Standard MIDI files written by the project, rendered to audio with fluidsynth and a GM SoundFont."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recipes.data.audio import SAMPLE_RATE, decode_audio
from recipes.data.world.synth import Note

SOUNDFONT = Path("/usr/share/sounds/sf3/FluidR3Mono_GM.sf3")
TICKS_PER_QUARTER = 480
DRUM_CHANNEL = 9  # General MIDI percussion, "channel 10" counted from one
GM_DRUMS = {"kick": 36, "snare": 38, "hat": 42}

# A General MIDI selection whose ranges suit short phrases: name -> (program, lowest, highest note).
GM_INSTRUMENTS = {
    "piano": (0, 48, 84),
    "electric piano": (4, 48, 84),
    "harpsichord": (6, 48, 84),
    "vibraphone": (11, 53, 89),
    "marimba": (12, 48, 84),
    "church organ": (19, 36, 84),
    "accordion": (21, 53, 89),
    "nylon guitar": (24, 40, 76),
    "electric guitar": (27, 40, 76),
    "bass guitar": (33, 28, 55),
    "violin": (40, 55, 91),
    "cello": (42, 36, 72),
    "harp": (46, 36, 91),
    "string ensemble": (48, 36, 84),
    "choir": (52, 48, 79),
    "trumpet": (56, 55, 82),
    "trombone": (57, 40, 72),
    "french horn": (60, 41, 77),
    "alto saxophone": (65, 49, 81),
    "oboe": (68, 58, 91),
    "clarinet": (71, 50, 89),
    "flute": (73, 60, 96),
    "pan flute": (75, 60, 96),
    "steel drums": (114, 52, 88),
}


class RenderError(RuntimeError):
    """fluidsynth or its SoundFont is missing, or rendering failed."""


def _variable_length(value: int) -> bytes:
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(groups))


def midi_file_bytes(notes: Sequence[Note], tempo_bpm: float, program: int | None, channel: int = 0) -> bytes:
    """A format-0 Standard MIDI File playing ``notes`` (onsets in seconds at ``tempo_bpm``).

    ``program`` is the General MIDI program (0-127) sent first; ``None`` sends none (drums).
    """
    seconds_per_tick = 60.0 / tempo_bpm / TICKS_PER_QUARTER
    events: list[tuple[int, int, bytes]] = []  # (tick, order, bytes): note-offs sort before note-ons
    for note in notes:
        start = round(note.onset / seconds_per_tick)
        stop = max(start + 1, round((note.onset + note.duration) / seconds_per_tick))
        velocity = max(1, min(127, round(note.velocity * 127)))
        events.append((start, 1, bytes([0x90 | channel, note.pitch, velocity])))
        events.append((stop, 0, bytes([0x80 | channel, note.pitch, 0])))
    events.sort(key=lambda event: (event[0], event[1]))
    microseconds = round(60_000_000 / tempo_bpm)
    track = bytearray(b"\x00\xff\x51\x03" + microseconds.to_bytes(3, "big"))
    if program is not None:
        track += b"\x00" + bytes([0xC0 | channel, program])
    previous = 0
    for tick, _, message in events:
        track += _variable_length(tick - previous) + message
        previous = tick
    track += b"\x00\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_QUARTER)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def fluidsynth_available() -> bool:
    """True when the fluidsynth binary and the FluidR3Mono SoundFont are both installed."""
    return shutil.which("fluidsynth") is not None and SOUNDFONT.is_file()


def render_midi(midi: bytes, seconds: float) -> np.ndarray:
    """Render ``midi`` with fluidsynth (reverb and chorus off) to float32 mono 16 kHz, cut/padded to ``seconds``."""
    if not fluidsynth_available():
        raise RenderError(f"fluidsynth or the SoundFont {SOUNDFONT} is not installed")
    with tempfile.TemporaryDirectory(prefix="corpus-midi-") as folder:
        midi_path, wave_path = os.path.join(folder, "in.mid"), os.path.join(folder, "out.wav")
        Path(midi_path).write_bytes(midi)
        # Dynamic sample loading decodes only the presets used: 0.5 s instead of 5 s per call.
        command = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-o", "synth.dynamic-sample-loading=1",
                   "-g", "0.8", "-r", str(SAMPLE_RATE),
                   "-F", wave_path, str(SOUNDFONT), midi_path]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not os.path.isfile(wave_path):
            raise RenderError(f"fluidsynth failed: {result.stderr.strip()[-300:]}")
        wave = decode_audio(wave_path, "fluidsynth output")
    total = int(round(seconds * SAMPLE_RATE))
    return np.pad(wave[:total], (0, max(0, total - wave.shape[0])))
