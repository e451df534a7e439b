"""JSON Lines manifests (one JSON object per line): the one reader and the one writer behind every
manifest of the project, and the split names they share.

Each kind of manifest keeps its own row schema on top of :func:`read_rows`: audio clips for
evaluation (``codec.evaluate.read_manifest_clips``), the corpus (``semanticodec_lm.corpus.manifest``)
and token files (``lm.data.read_manifest``).

Error policy: a manifest that is missing or unreadable always raises :class:`ManifestError`. A line
that is not a JSON object raises :class:`ManifestError` naming ``file:line``, unless the caller passes
a ``problems`` list: then the line is described there and skipped (a batch job goes on without it).
Blank lines are ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codec.files import write_text_atomic

SPLITS = ("train", "valid", "test")


class ManifestError(ValueError):
    """A manifest file or one of its rows cannot be used; the message names the file (and line)."""


@dataclass(frozen=True)
class ManifestLine:
    """One row of a manifest: ``where`` is ``"<file>:<line number>"`` for messages, ``row`` the object."""

    where: str
    row: dict[str, Any]


def read_rows(path: str | os.PathLike[str], *, problems: list[str] | None = None) -> Iterator[ManifestLine]:
    """Yield the rows of the manifest at ``path`` in file order (see the module's error policy)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"cannot read manifest {path}: it does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"cannot read manifest {path}: {error}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
            problem = None if isinstance(row, dict) else "a row must be a JSON object"
        except json.JSONDecodeError as error:
            problem = f"not valid JSON ({error.msg})"
        if problem is None:
            yield ManifestLine(where, row)
        elif problems is None:
            raise ManifestError(f"{where}: {problem}")
        else:
            problems.append(f"{where}: {problem}")


def write_manifest(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Write ``rows`` as JSON Lines (keys sorted, UTF-8) atomically; returns the row count."""
    lines = [json.dumps(row, ensure_ascii=False, sort_keys=True) for row in rows]
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return len(lines)
