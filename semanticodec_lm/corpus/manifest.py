"""Manifest rows (one JSON object per clip, JSON Lines on disk): schema, validation, reading, writing.

A row has these keys (types checked by :func:`validate_row`):

- ``id`` (str, unique), ``path`` (str, relative to the manifest's folder, a ``.flac`` file)
- ``duration`` (float, seconds), ``sample_rate`` (int, 16000), ``num_samples`` (int)
- ``domain`` (``speech`` | ``music`` | ``sfx``), ``labels`` (non-empty list of str)
- ``caption`` (non-empty str), ``transcript`` (str or None), ``language`` (str or None,
  ISO 639-1), ``speaker`` (str or None)
- ``source_package`` (str), ``source_items`` (non-empty list of str: the recordings the clip is
  made from; one for a cut, several for an assembled clip), ``clip_index`` (int), ``start``
  (float, seconds into the source, 0 for assembled clips)
- ``licence`` (str), ``split`` (``train`` | ``valid`` | ``test``), ``synthetic`` (bool),
  ``params`` (dict: everything known about how the clip was made)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from codec.config import SAMPLE_RATE
from codec.manifest import SPLITS, read_rows

DOMAINS = ("speech", "music", "sfx")

_REQUIRED_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "path": (str,),
    "duration": (float, int),
    "sample_rate": (int,),
    "num_samples": (int,),
    "domain": (str,),
    "labels": (list,),
    "caption": (str,),
    "transcript": (str, type(None)),
    "language": (str, type(None)),
    "speaker": (str, type(None)),
    "source_package": (str,),
    "source_items": (list,),
    "clip_index": (int,),
    "start": (float, int),
    "licence": (str,),
    "split": (str,),
    "synthetic": (bool,),
    "params": (dict,),
}


def validate_row(row: dict[str, Any], min_seconds: float = 0.0, max_seconds: float = float("inf")) -> list[str]:
    """Return the problems found in one manifest row (an empty list when it is valid)."""
    problems = []
    for key, types in _REQUIRED_TYPES.items():
        if key not in row:
            problems.append(f"missing key {key!r}")
        elif not isinstance(row[key], types) or (types == (int,) and isinstance(row[key], bool)):
            problems.append(f"{key!r} has type {type(row[key]).__name__}")
    if problems:
        return problems
    if row["domain"] not in DOMAINS:
        problems.append(f"domain {row['domain']!r} is not one of {DOMAINS}")
    if row["split"] not in SPLITS:
        problems.append(f"split {row['split']!r} is not one of {SPLITS}")
    if row["sample_rate"] != SAMPLE_RATE:
        problems.append(f"sample_rate {row['sample_rate']} is not {SAMPLE_RATE}")
    if not row["path"].endswith(".flac"):
        problems.append(f"path {row['path']!r} is not a .flac file")
    if not row["labels"] or not all(isinstance(label, str) and label for label in row["labels"]):
        problems.append("labels must be a non-empty list of non-empty strings")
    if not row["source_items"] or not all(isinstance(item, str) and item for item in row["source_items"]):
        problems.append("source_items must be a non-empty list of non-empty strings")
    if not row["caption"].strip():
        problems.append("caption is empty")
    if abs(row["duration"] - row["num_samples"] / SAMPLE_RATE) > 1e-3:
        problems.append("duration does not equal num_samples / sample_rate")
    if not min_seconds - 1e-6 <= row["duration"] <= max_seconds + 1e-6:
        problems.append(f"duration {row['duration']:.3f} s is outside [{min_seconds}, {max_seconds}] s")
    if row["domain"] == "speech" and row["language"] is None:
        problems.append("a speech clip needs a language")
    return problems


def validate_manifest(
    path: str | os.PathLike[str], check_files: bool = True, min_seconds: float = 0.0, max_seconds: float = float("inf")
) -> list[str]:
    """Return every problem in the manifest at ``path``: bad rows, duplicate ids/paths, missing files.

    With ``check_files`` each clip's flac file is opened and its length and rate compared with
    the row.
    """
    import soundfile

    path = Path(path)
    problems = []
    seen_ids: set[str] = set()
    seen_paths: set[str] = set()
    for line in read_rows(path):
        where, row = line.where, line.row
        problems.extend(f"{where}: {problem}" for problem in validate_row(row, min_seconds, max_seconds))
        if row.get("id") in seen_ids:
            problems.append(f"{where}: duplicate id {row.get('id')!r}")
        if row.get("path") in seen_paths:
            problems.append(f"{where}: duplicate path {row.get('path')!r}")
        seen_ids.add(row.get("id"))
        seen_paths.add(row.get("path"))
        if check_files and isinstance(row.get("path"), str):
            audio_path = path.parent / row["path"]
            if not audio_path.is_file():
                problems.append(f"{where}: audio file {audio_path} is missing")
                continue
            info = soundfile.info(str(audio_path))
            if info.samplerate != row.get("sample_rate") or info.frames != row.get("num_samples") or info.channels != 1:
                problems.append(f"{where}: {audio_path} has {info.frames} frames at {info.samplerate} Hz, "
                                f"{info.channels} channels; the row says otherwise")
    return problems


def read_manifest(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the rows of a corpus manifest, unvalidated (:func:`validate_row` checks one); a missing file or a
    malformed line raises ``codec.manifest.ManifestError``."""
    return (line.row for line in read_rows(path))


def evenly_spaced(items: list, count: int) -> list:
    """At most ``count`` items spread evenly over ``items`` (all of them when there are fewer), in order."""
    if len(items) <= count:
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def evaluation_subset(
    rows: Iterable[dict[str, Any]],
    split: str,
    per_domain: int,
    *,
    min_seconds: float = 2.0,
    transcribed_english: int = 0,
) -> list[dict[str, Any]]:
    """The fixed evaluation clips of one split: ``per_domain`` clips of each domain of at least ``min_seconds``,
    evenly spaced in manifest order (domains in :data:`DOMAINS` order).

    ``transcribed_english`` of the speech clips are taken from the English clips with a transcript (so WER
    has something to score) and the rest from the other speech clips, each group evenly spaced. The same
    corpus build gives the same clips, so tables made on different machines compare.
    """
    if per_domain < 1:
        raise ValueError(f"per_domain must be at least 1, got {per_domain}")
    if not 0 <= transcribed_english <= per_domain:
        raise ValueError(f"transcribed_english must be between 0 and per_domain ({per_domain}), got {transcribed_english}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    long_enough = [row for row in rows if row["split"] == split and row["duration"] >= min_seconds]
    chosen: list[dict[str, Any]] = []
    for domain in DOMAINS:
        clips = [row for row in long_enough if row["domain"] == domain]
        if domain == "speech" and transcribed_english:
            scored = [row for row in clips if row["language"] == "en" and row["transcript"]]
            others = [row for row in clips if not (row["language"] == "en" and row["transcript"])]
            chosen += evenly_spaced(scored, transcribed_english) + evenly_spaced(others, per_domain - transcribed_english)
        else:
            chosen += evenly_spaced(clips, per_domain)
    return chosen


def rebase_paths(rows: Iterable[dict[str, Any]], source_dir: str | os.PathLike[str],
                 target_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Copies of ``rows`` whose ``path`` (relative to ``source_dir``) is made relative to ``target_dir``, so a
    manifest written elsewhere still finds its audio."""
    source, target = Path(source_dir).resolve(), Path(target_dir).resolve()
    return [{**row, "path": os.path.relpath(source / row["path"], target)} for row in rows]
