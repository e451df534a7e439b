"""The one JSON Lines reader and writer: file order, blank lines, and both error policies."""

from __future__ import annotations

import json

import pytest

from codec.manifest import ManifestError, read_rows, write_manifest


def test_rows_round_trip_in_order_and_blank_lines_are_ignored(tmp_path):
    path = tmp_path / "m.jsonl"
    rows = [{"id": "b", "text": "ü"}, {"id": "a", "n": 1}]
    assert write_manifest(path, rows) == 2
    path.write_text(path.read_text(encoding="utf-8") + "\n  \n", encoding="utf-8")
    lines = list(read_rows(path))
    assert [line.row for line in lines] == rows
    assert [line.where for line in lines] == [f"{path}:1", f"{path}:2"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]  # no temporary left behind


@pytest.mark.parametrize("bad, message", [("{broken", "not valid JSON"), ("[1, 2]", "a row must be a JSON object")])
def test_a_bad_line_raises_with_its_place_or_is_reported_and_skipped(tmp_path, bad, message):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": "a"}) + "\n" + bad + "\n" + json.dumps({"id": "c"}) + "\n")
    with pytest.raises(ManifestError, match=f"m.jsonl:2: {message}"):
        list(read_rows(path))
    problems: list[str] = []
    assert [line.row["id"] for line in read_rows(path, problems=problems)] == ["a", "c"]
    assert len(problems) == 1 and problems[0].startswith(f"{path}:2: {message}")


def test_a_missing_or_undecodable_manifest_always_raises(tmp_path):
    with pytest.raises(ManifestError, match="absent.jsonl: it does not exist"):
        list(read_rows(tmp_path / "absent.jsonl", problems=[]))
    (tmp_path / "latin1.jsonl").write_bytes(b'{"id": "\xe9"}\n')
    with pytest.raises(ManifestError, match="cannot read manifest .*latin1.jsonl"):
        list(read_rows(tmp_path / "latin1.jsonl", problems=[]))
