"""Writing files so that readers (and re-runs) see either the old file or the whole new one.

Every output of the toolkit goes through :func:`atomic_path`: the content is written to a hidden
temporary file beside the target and renamed onto it only when complete; on any error (Ctrl-C
included) the temporary file is removed. A run killed outright (SIGKILL) can leave a hidden
``.<name>.<pid>-<hex>.tmp`` file, never a truncated ``<name>``; the next write of ``<name>`` removes
the temporaries of writers whose process has gone.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder (created if needed); rename it onto ``path`` when the
    block ends without an error, delete it otherwise. ``suffix`` keeps writers that infer the format
    from the name (soundfile) working."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path, suffix)
    # A fresh name the writer creates itself, so the file gets the usual permissions (umask), which
    # tempfile.mkstemp's private 0600 file would not. The pid tells later writers whether it is stale.
    temporary = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}"
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def remove_stale_temporaries(path: str | os.PathLike, suffix: str = ".tmp") -> list[Path]:
    """Delete the temporaries :func:`atomic_path` left beside ``path`` in processes that no longer run
    (killed outright); those of live writers stay. Returns the removed paths."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)-[0-9a-f]{{12}}{re.escape(suffix)}")
    removed = []
    try:
        candidates = list(path.parent.iterdir())
    except OSError:
        return removed
    for candidate in candidates:
        match = pattern.fullmatch(candidate.name)
        if match and not _process_alive(int(match[1])):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
