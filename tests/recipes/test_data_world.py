"""The synthetic world: seeded, split by item, and its captions agree with what is measured in the audio."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from semanticodec_lm.corpus.manifest import read_manifest, validate_manifest
from recipes.data.sources.base import Problems
from recipes.data.world import family as world_family
from recipes.data.world.family import SyntheticWorld
from recipes.data.world.generator import KINDS, PURE_KINDS, clip_seed, plan_world, render_world_clip
from recipes.data.world.midi import midi_file_bytes
from recipes.data.world.synth import Note, coloured_noise
from recipes.data.world.theory import hz_to_midi, midi_to_hz, note_name

RATE = 16000
CHECKED_KINDS = ("tone", "drums", "noise", "beeps", "chord", "sweep")


@pytest.fixture(scope="module")
def world(tmp_path_factory, build_synthetic_corpus) -> Path:
    out = tmp_path_factory.mktemp("world")
    build_synthetic_corpus(out, SyntheticWorld(30, 11, 2.0, 3.0, CHECKED_KINDS))
    return out


def _rows(world: Path, kind: str) -> list[tuple[dict, np.ndarray]]:
    rows = [row for row in read_manifest(world / "manifest.jsonl") if row["params"]["kind"] == kind]
    assert rows, f"the test world has no {kind!r} clip; change its seed or size"
    return [(row, soundfile.read(world / row["path"], dtype="float32")[0]) for row in rows]


def _peak_frequency(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.shape[0])))
    peak = int(np.argmax(spectrum[1:-1])) + 1
    left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
    offset = 0.5 * (left - right) / (left - 2 * centre + right)  # parabolic interpolation
    return (peak + offset) * RATE / wave.shape[0]


def _onsets(wave: np.ndarray, threshold: float, gap_seconds: float) -> list[float]:
    hop, window = 80, 640
    padded = np.concatenate([np.zeros(window, dtype=np.float32), wave])
    frames = (padded.shape[0] - window) // hop
    level = np.array([np.sqrt(np.mean(padded[i * hop : i * hop + window] ** 2)) for i in range(frames)])
    rise = np.maximum(np.diff(level), 0)
    onsets: list[int] = []
    for i in range(1, rise.shape[0] - 1):
        is_peak = rise[i] >= threshold * rise.max() and rise[i] >= rise[i - 1] and rise[i] > rise[i + 1]
        if is_peak and (not onsets or (i - onsets[-1]) * hop / RATE >= gap_seconds):
            onsets.append(i)
    return [i * hop / RATE for i in onsets]


def test_world_manifest_validates(world: Path) -> None:
    assert validate_manifest(world / "manifest.jsonl", check_files=True, min_seconds=1.0, max_seconds=10.0) == []


def test_tone_captions_name_the_measured_note(world: Path) -> None:
    for row, wave in _rows(world, "tone"):
        measured = note_name(round(hz_to_midi(_peak_frequency(wave))))
        assert measured == row["params"]["note"]
        assert re.search(rf"\bat {re.escape(measured)} \(", row["caption"]), row["caption"]


def test_drum_captions_state_the_measured_tempo(world: Path) -> None:
    for row, wave in _rows(world, "drums"):
        stated = int(re.search(r"at (\d+) bpm", row["caption"]).group(1))
        onsets = _onsets(wave, threshold=0.2, gap_seconds=0.1)
        measured = 60.0 / float(np.median(np.diff(onsets)))
        assert measured == pytest.approx(stated, rel=0.04), row["caption"]


def test_beep_captions_count_the_beeps(world: Path) -> None:
    words = ("two", "three", "four", "five", "six", "seven", "eight")
    for row, wave in _rows(world, "beeps"):
        stated = words.index(row["caption"].split()[0]) + 2
        assert len(_onsets(wave, threshold=0.3, gap_seconds=0.05)) == stated, row["caption"]
        assert note_name(round(hz_to_midi(_peak_frequency(wave)))) in row["caption"]


def test_noise_captions_name_the_measured_colour(world: Path) -> None:
    slopes = {"white": 0.0, "pink": -1.0, "brown": -2.0, "blue": 1.0}
    for row, wave in _rows(world, "noise"):
        frames = wave[: wave.shape[0] // 1024 * 1024].reshape(-1, 1024) * np.hanning(1024)
        power = np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0)
        frequency = np.fft.rfftfreq(1024, 1 / RATE)
        band = (frequency > 100) & (frequency < 5000)
        slope = np.polyfit(np.log(frequency[band]), np.log(power[band]), 1)[0]
        nearest = min(slopes, key=lambda colour: abs(slopes[colour] - slope))
        assert row["caption"] == f"{nearest} noise"


def test_chord_captions_list_the_strongest_pitch_classes(world: Path) -> None:
    for row, wave in _rows(world, "chord"):
        spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.shape[0])))
        pitches = row["params"]["pitches"]
        bins = [round(midi_to_hz(p) * wave.shape[0] / RATE) for p in pitches]
        fundamental = [spectrum[b - 2 : b + 3].max() for b in bins]
        # every chord tone sounds: its fundamental stands far above the spectrum's median
        assert min(fundamental) > 30 * np.median(spectrum), row["caption"]
        assert " ".join(note_name(p) for p in pitches) in row["caption"]


def test_sweep_captions_give_the_direction(world: Path) -> None:
    for row, wave in _rows(world, "sweep"):
        half = wave.shape[0] // 2
        first, second = _peak_frequency(wave[:half]), _peak_frequency(wave[half:])
        assert ("rising" in row["caption"]) == (second > first), row["caption"]


def test_same_seed_same_world_and_other_seed_differs() -> None:
    first = [render_world_clip(clip, 2.0, 3.0) for clip in plan_world(8, 3, PURE_KINDS)]
    again = [render_world_clip(clip, 2.0, 3.0) for clip in plan_world(8, 3, PURE_KINDS)]
    other = [render_world_clip(clip, 2.0, 3.0) for clip in plan_world(8, 4, PURE_KINDS)]
    assert [r.caption for r in first] == [r.caption for r in again]
    assert all(np.array_equal(a.wave, b.wave) for a, b in zip(first, again))
    assert [r.caption for r in first] != [r.caption for r in other]


def test_growing_a_world_keeps_its_first_clips() -> None:
    assert plan_world(5, 9) == plan_world(40, 9)[:5]


def test_clip_seeds_are_disjoint_between_splits() -> None:
    plan = plan_world(400, 1)
    seeds = {split: {clip.seed for clip in plan if clip.split == split} for split in ("train", "valid", "test")}
    assert seeds["train"] and seeds["valid"] and seeds["test"]
    assert not (seeds["train"] & seeds["valid"] or seeds["train"] & seeds["test"] or seeds["valid"] & seeds["test"])
    assert len({clip_seed(1, index) for index in range(400)}) == 400


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown synthetic kinds"):
        plan_world(3, 0, ["tone", "kazoo"])


def test_kinds_needing_a_missing_tool_are_reported_and_skipped(monkeypatch) -> None:
    monkeypatch.setattr(world_family, "tool_available", lambda tool: tool != "festival")
    problems = Problems()
    jobs = SyntheticWorld(60, 2).jobs(set(), problems)
    assert any("festival" in message for message in problems.messages)
    assert jobs and all(KINDS[job.args["kind"]][2] != "festival" for job in jobs)
    assert len(jobs) < 60


def test_coloured_noise_is_unit_rms_and_seeded() -> None:
    first = coloured_noise("pink", 8000, np.random.default_rng(5))
    assert np.sqrt(np.mean(first**2)) == pytest.approx(1.0, rel=1e-3)
    assert np.array_equal(first, coloured_noise("pink", 8000, np.random.default_rng(5)))
    with pytest.raises(ValueError, match="colour"):
        coloured_noise("purple", 10, np.random.default_rng(0))


def test_midi_file_layout() -> None:
    data = midi_file_bytes([Note(0.0, 0.5, 60), Note(0.5, 0.5, 60)], 120, program=40)
    assert data[:4] == b"MThd" and data[14:18] == b"MTrk"
    assert int.from_bytes(data[18:22], "big") == len(data) - 22
    assert bytes([0xC0, 40]) in data and data.endswith(b"\xff\x2f\x00")
    # the repeated pitch: its note-off (0x80) comes before the next note-on at the same tick
    assert data.index(bytes([0x80, 60, 0])) < data.rindex(bytes([0x90, 60]))
