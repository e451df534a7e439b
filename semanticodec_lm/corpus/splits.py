"""The fixed train/valid/test rule: a split is a function of (source package, source item) only.

Because the split never depends on a clip, every clip cut from one recording lands in the same
split. Results are compared on ``test``; this rule must never change.
"""

from __future__ import annotations

import hashlib



def split_hash(package: str, item: str) -> int:
    """The first 32 bits of ``sha1(f"{package}:{item}")`` as an integer."""
    return int(hashlib.sha1(f"{package}:{item}".encode()).hexdigest()[:8], 16)


def split_for(package: str, item: str) -> str:
    """``test`` when the hash is 0 mod 10, ``valid`` when 1 mod 10, ``train`` otherwise.

    ``item`` is the file path as ``dpkg -L`` lists it, followed for archive members by ``#`` and
    the member name (see :func:`archive_item`).
    """
    remainder = split_hash(package, item) % 10
    if remainder == 0:
        return "test"
    if remainder == 1:
        return "valid"
    return "train"


def archive_item(archive_path: str, member: str) -> str:
    """Item name of ``member`` inside ``archive_path``: the path, ``#``, the member name.

    A leading ``:/`` or ``/`` on the member (Qt resource paths) is removed.
    """
    if member.startswith(":/"):
        member = member[2:]
    return f"{archive_path}#{member.lstrip('/')}"
