"""What every source family provides to the builder: a list of jobs, and a renderer per job.

A *job* turns one source item (or, for assembled clips, a few items of one split) into one
:class:`~recipes.data.recording.Recording`. Families are small picklable dataclasses so that jobs
can run in worker processes; their folders are fields, so tests can point them at a temporary
directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from recipes.data.recording import Recording
from semanticodec_lm.corpus.splits import split_for


@dataclass(frozen=True)
class Job:
    """One unit of work: ``key`` is unique within ``package``; ``items`` are the source items used."""

    family: str
    package: str
    key: str
    items: tuple[str, ...]
    split: str
    args: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Problems:
    """Problems met while listing jobs (missing packages, unreadable archives), as messages."""

    missing_packages: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


class SourceFamily(Protocol):
    """A family of sources: the Debian packages it reads, how it lists jobs and renders one."""

    name: str

    @property
    def packages(self) -> tuple[str, ...]:
        """Debian packages this family reads (installed by the builder when missing)."""
        ...

    def jobs(self, available: set[str], problems: Problems) -> list[Job]:
        """Jobs for the packages in ``available``; unavailable or unreadable parts go to ``problems``."""
        ...

    def render(self, job: Job) -> Recording:
        """Decode/assemble the audio of ``job``; raises a descriptive error for a bad source."""
        ...


def item_job(family: str, package: str, item: str, **args: Any) -> Job:
    """A job for a single source item, in the split the sha1 rule gives it."""
    return Job(family, package, item, (item,), split_for(package, item), dict(args))


def list_files(folder: str | os.PathLike[str], suffixes: tuple[str, ...], recursive: bool = False) -> list[str]:
    """Sorted absolute paths of regular files under ``folder`` ending in one of ``suffixes``.

    Symbolic links are skipped (``rglob`` does not descend into linked folders either), so an item
    is always named by its real installed path.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(str(path) for path in candidates
                  if path.is_file() and not path.is_symlink() and path.name.lower().endswith(suffixes))


def words_from_name(name: str) -> str:
    """A file stem as plain lower-case words: ``electric_guitar`` -> ``electric guitar``."""
    return " ".join(name.replace("_", " ").replace("-", " ").split()).lower()
