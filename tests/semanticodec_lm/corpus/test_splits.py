"""The fixed split rule and the manifest schema checker."""

from __future__ import annotations

import hashlib
import json

import pytest

from codec.manifest import ManifestError, write_manifest
from semanticodec_lm.corpus.manifest import read_manifest, validate_manifest, validate_row
from semanticodec_lm.corpus.splits import archive_item, split_for, split_hash

# Worked out with `printf '%s' "$package:$item" | sha1sum` (first 8 hex digits, mod 10).
KNOWN_SPLITS = [
    ("asterisk-core-sounds-en-g722", "/usr/share/asterisk/sounds/en_US_f_Allison/activated.g722", "test"),
    ("gcompris-qt-data",
     "/usr/share/gcompris-qt/rcc/instruments.rcc#gcompris/src/activities/instruments/resource/harp.ogg", "test"),
    ("wesnoth-1.16-music", "/usr/share/games/wesnoth/1.16/data/core/music/battle.ogg", "train"),
    ("synthetic-world", "world-0/clip-000000", "train"),
    ("pkg", "a", "valid"),
    ("pkg", "c", "valid"),
    ("pkg", "b", "train"),
    ("pkg", "i", "test"),
]


@pytest.mark.parametrize(("package", "item", "expected"), KNOWN_SPLITS)
def test_split_matches_the_sha1_rule_on_known_strings(package: str, item: str, expected: str) -> None:
    assert split_for(package, item) == expected


def test_split_hash_is_the_first_32_bits_of_sha1() -> None:
    for index in range(200):
        item = f"/usr/share/x/{index}.ogg"
        digest = hashlib.sha1(f"p:{item}".encode()).digest()
        assert split_hash("p", item) == int.from_bytes(digest[:4], "big")


def test_split_proportions_are_about_80_10_10() -> None:
    splits = [split_for("package", f"item-{index}") for index in range(5000)]
    assert 0.07 < splits.count("test") / 5000 < 0.13
    assert 0.07 < splits.count("valid") / 5000 < 0.13


def test_archive_item_strips_qt_prefixes() -> None:
    assert archive_item("/a/b.rcc", ":/gcompris/x.ogg") == "/a/b.rcc#gcompris/x.ogg"
    assert archive_item("/a/b.rcc", "/gcompris/x.ogg") == "/a/b.rcc#gcompris/x.ogg"
    assert archive_item("/a/o.cat", '"Cow". License: CC0') == '/a/o.cat#"Cow". License: CC0'


def _row(**changes: object) -> dict:
    row = {"id": "p/x-00", "path": "audio/train/sfx/p/x-00.flac", "duration": 1.5, "sample_rate": 16000,
           "num_samples": 24000, "domain": "sfx", "labels": ["cow"], "caption": "a cow mooing", "transcript": None,
           "language": None, "speaker": None, "source_package": "p", "source_items": ["/usr/share/p/cow.ogg"],
           "clip_index": 0, "start": 0.0, "licence": "CC0-1.0", "split": "train", "synthetic": False, "params": {}}
    row.update(changes)
    return row


def test_a_good_row_validates() -> None:
    assert validate_row(_row()) == []


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"domain": "noise"}, "domain"),
    ({"split": "dev"}, "split"),
    ({"sample_rate": 44100}, "sample_rate"),
    ({"labels": []}, "labels"),
    ({"caption": "  "}, "caption"),
    ({"duration": 2.0}, "num_samples"),
    ({"path": "x.wav"}, ".flac"),
    ({"domain": "speech"}, "language"),
    ({"num_samples": 24000.0}, "type"),
    ({"source_items": []}, "source_items"),
])
def test_bad_rows_are_named(changes: dict, fragment: str) -> None:
    problems = validate_row(_row(**changes))
    assert problems and any(fragment in problem for problem in problems)


def test_missing_key_is_reported() -> None:
    row = _row()
    del row["licence"]
    assert validate_row(row) == ["missing key 'licence'"]


def test_duration_range_is_checked() -> None:
    assert validate_row(_row(), min_seconds=2.0, max_seconds=10.0)


def test_manifest_round_trip_and_duplicates(tmp_path) -> None:
    path = tmp_path / "manifest.jsonl"
    assert write_manifest(path, [_row(), _row()]) == 2
    assert list(read_manifest(path)) == [_row(), _row()]
    problems = validate_manifest(path, check_files=False)
    assert any("duplicate id" in problem for problem in problems)
    assert any("missing" in problem for problem in validate_manifest(path, check_files=True))


def test_malformed_manifest_names_file_and_line(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_row()) + "\n{not json\n")
    with pytest.raises(ManifestError, match=r"bad.jsonl:2"):
        list(read_manifest(path))
    with pytest.raises(ManifestError, match="does not exist"):
        list(read_manifest(tmp_path / "absent.jsonl"))
