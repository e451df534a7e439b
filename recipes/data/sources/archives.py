"""Readers for the two archive formats some sources come in: Qt ``.rcc`` bundles and OpenTTD ``.cat``.

Both readers return plain bytes per member and raise :class:`ArchiveError` naming the file when
the layout does not add up, instead of an ``IndexError`` or ``struct.error`` from deep inside.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path


class ArchiveError(ValueError):
    """An archive file is truncated, has a bad magic number, or uses an unsupported feature."""


_RCC_DIRECTORY = 0x2
_RCC_COMPRESSED = 0x1
_RCC_ZSTD = 0x4


def read_rcc(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """Return {member path without leading ``/``: file bytes} of a Qt binary resource bundle."""
    data = Path(path).read_bytes()
    try:
        return _parse_rcc(data)
    except (struct.error, IndexError, zlib.error, UnicodeDecodeError, RecursionError) as error:
        raise ArchiveError(f"{path}: not a readable Qt resource bundle ({error})") from None
    except ArchiveError as error:
        raise ArchiveError(f"{path}: {error}") from None


def _parse_rcc(data: bytes) -> dict[str, bytes]:
    if data[:4] != b"qres":
        raise ArchiveError("missing the 'qres' magic")
    version, tree_offset, data_offset, names_offset = struct.unpack_from(">4I", data, 4)
    node_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack_from(">H", data, names_offset + offset)
        start = names_offset + offset + 6  # skip the length and the 32-bit hash
        if start + 2 * length > len(data):
            raise ArchiveError("a name runs past the end of the file")
        return data[start : start + 2 * length].decode("utf-16-be")

    def payload(flags: int, offset: int) -> bytes:
        (length,) = struct.unpack_from(">I", data, data_offset + offset)
        start = data_offset + offset + 4
        if start + length > len(data):
            raise ArchiveError("a member's data runs past the end of the file")
        raw = data[start : start + length]
        if flags & _RCC_ZSTD:
            raise ArchiveError("zstd-compressed members are not supported")
        if flags & _RCC_COMPRESSED:
            return zlib.decompress(raw[4:])  # the first 4 bytes repeat the uncompressed size
        return raw

    members: dict[str, bytes] = {}
    pending = [(0, "")]
    visited = set()
    while pending:
        index, prefix = pending.pop()
        if index in visited:
            raise ArchiveError("the directory tree has a cycle")
        visited.add(index)
        node = tree_offset + index * node_size
        name_offset, flags = struct.unpack_from(">IH", data, node)
        name = "" if index == 0 else name_at(name_offset)
        path = f"{prefix}/{name}" if prefix else name
        if flags & _RCC_DIRECTORY:
            count, first_child = struct.unpack_from(">II", data, node + 6)
            pending.extend((first_child + child, path) for child in range(count))
        else:
            (offset,) = struct.unpack_from(">I", data, node + 10)
            members[path.lstrip("/")] = payload(flags, offset)
    return members


@dataclass(frozen=True)
class CatEntry:
    """One OpenTTD sound: ``name`` is the stored text field (Latin-1, trailing NULs removed)."""

    index: int
    name: str
    audio: bytes


def read_opensfx_cat(path: str | os.PathLike[str]) -> list[CatEntry]:
    """Return every entry of an OpenTTD ``.cat`` sound archive, in stored order.

    Entries whose audio is not RIFF WAV data are included as they are; callers skip them.
    """
    data = Path(path).read_bytes()
    try:
        (first_offset,) = struct.unpack_from("<I", data, 0)
        count = (first_offset & 0x7FFFFFFF) // 8
        if count == 0 or count * 8 > len(data):
            raise ArchiveError("the entry table does not fit in the file")
        entries = []
        for index in range(count):
            offset, size = struct.unpack_from("<II", data, 8 * index)
            offset &= 0x7FFFFFFF
            if offset + size > len(data):
                raise ArchiveError(f"entry {index} runs past the end of the file")
            if size == 0:
                entries.append(CatEntry(index, "", b""))
                continue
            name_length = data[offset]
            name = data[offset + 1 : offset + 1 + name_length].decode("latin-1").rstrip("\x00")
            audio = data[offset + 1 + name_length : offset + size]
            entries.append(CatEntry(index, name, audio))
        return entries
    except struct.error as error:
        raise ArchiveError(f"{path}: not a readable .cat archive ({error})") from None
    except ArchiveError as error:
        raise ArchiveError(f"{path}: {error}") from None
