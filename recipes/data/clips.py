"""Turn one job into finished clips: cut, pad, loudness-normalise, write flac, record the rows.

Every output name is a function of (package, job key, clip index), and a job's rows are written
to a small JSON *record* only after all of its clips exist. A build that is interrupted leaves
either a complete record or none; re-running redoes the job under the same names, so clips are
never duplicated.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codec.audio import write_audio
from codec.files import write_text_atomic
from recipes.data.audio import SAMPLE_RATE, normalise_loudness, pad_to, plan_cuts
from recipes.data.recording import Recording
from recipes.data.sources.base import Job, SourceFamily
from recipes.data.world.generator import WORLD_PACKAGE

RECORD_VERSION = 1


@dataclass(frozen=True)
class ClipSettings:
    """Clip length range in seconds and the shortest source worth padding up to ``min_seconds``."""

    min_seconds: float = 1.0
    max_seconds: float = 10.0
    shortest_source_seconds: float = 0.1

    def fingerprint(self) -> str:
        """Changes whenever a setting (or the record layout) changes, invalidating old records."""
        text = json.dumps({**asdict(self), "version": RECORD_VERSION}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass
class JobResult:
    """What one job produced: manifest rows, skipped pieces (reasons), or the error that stopped it."""

    job: Job
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None
    reused: bool = False


def job_slug(job: Job) -> str:
    """A file-system-safe, unique name for ``job``: readable stem plus 8 hex digits of its key."""
    tail = re.split(r"[#/]", job.key)[-1].rsplit(".", 1)[0]
    stem = re.sub(r"[^a-z0-9]+", "-", tail.lower()).strip("-")[:40] or "item"
    return f"{stem}-{hashlib.sha1(job.key.encode()).hexdigest()[:8]}"


def record_path(out_dir: Path, job: Job) -> Path:
    """Where ``job``'s record (its finished rows) is kept."""
    return out_dir / "records" / job.package / f"{job_slug(job)}.json"


def load_record(out_dir: Path, job: Job, settings: ClipSettings) -> list[dict[str, Any]] | None:
    """The rows of a finished, still valid record of ``job``; ``None`` when the job must run."""
    path = record_path(out_dir, job)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("fingerprint") != settings.fingerprint() or record.get("key") != job.key:
        return None
    rows = record.get("rows", [])
    if not all((out_dir / row["path"]).is_file() for row in rows):
        return None
    return rows


def run_job(family: SourceFamily, job: Job, out_dir: Path, settings: ClipSettings) -> JobResult:
    """Render ``job`` with ``family`` and write its clips and record; errors are caught and returned."""
    reused = load_record(out_dir, job, settings)
    if reused is not None:
        return JobResult(job, reused, reused=True)
    result = JobResult(job)
    try:
        recording = family.render(job)
        if recording.wave.ndim != 1 or recording.wave.size == 0:
            raise ValueError("the source produced no audio")
        if not np.all(np.isfinite(recording.wave)):
            raise ValueError("the source decoded to non-finite samples")
        result.rows, result.skipped = _write_clips(recording, job, out_dir, settings)
    except Exception as error:  # noqa: BLE001 - one bad source must never stop the build
        result.error = f"{type(error).__name__}: {error}"
        return result
    record = {"key": job.key, "package": job.package, "fingerprint": settings.fingerprint(),
              "rows": result.rows, "skipped": result.skipped}
    write_text_atomic(record_path(out_dir, job), json.dumps(record, ensure_ascii=False))
    return result


def _write_clips(
    recording: Recording, job: Job, out_dir: Path, settings: ClipSettings
) -> tuple[list[dict[str, Any]], list[str]]:
    min_samples = int(round(settings.min_seconds * SAMPLE_RATE))
    max_samples = int(round(settings.max_seconds * SAMPLE_RATE))
    source_samples = recording.wave.shape[0]
    if source_samples < settings.shortest_source_seconds * SAMPLE_RATE:
        return [], [f"{job.key}: only {source_samples / SAMPLE_RATE:.3f} s of audio"]
    cuts = plan_cuts(source_samples, min_samples, max_samples)
    whole = len(cuts) == 1
    rows, skipped = [], []
    for index, (start, length) in enumerate(cuts):
        piece = pad_to(recording.wave[start : start + length], min_samples)
        try:
            piece, gain_db = normalise_loudness(piece)
        except ValueError as error:
            skipped.append(f"{job.key} piece {index}: {error}")
            continue
        relative = Path("audio") / job.split / recording.domain / job.package / f"{job_slug(job)}-{index:02d}.flac"
        (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        write_audio(out_dir / relative, torch.from_numpy(piece), SAMPLE_RATE, subtype="PCM_16")
        params = {**recording.params, "gain_db": round(gain_db, 2),
                  "source_seconds": round(source_samples / SAMPLE_RATE, 3)}
        if piece.shape[0] > length:
            params["padded_seconds"] = round((piece.shape[0] - length) / SAMPLE_RATE, 3)
        if not whole:
            params["pieces"] = len(cuts)
            if recording.transcript:
                params["full_transcript"] = recording.transcript
        rows.append({
            "id": f"{job.package}/{job_slug(job)}-{index:02d}",
            "path": relative.as_posix(),
            "duration": piece.shape[0] / SAMPLE_RATE,
            "sample_rate": SAMPLE_RATE,
            "num_samples": int(piece.shape[0]),
            "domain": recording.domain,
            "labels": list(recording.labels),
            "caption": recording.caption if whole else (recording.piece_caption or recording.caption),
            "transcript": recording.transcript if whole else None,
            "language": recording.language,
            "speaker": recording.speaker,
            "source_package": job.package,
            "source_items": list(recording.items or job.items),
            "clip_index": index,
            "start": round(start / SAMPLE_RATE, 4),
            "licence": recording.licence,
            "split": job.split,
            "synthetic": job.package == WORLD_PACKAGE,
            "params": params,
        })
    return rows, skipped
