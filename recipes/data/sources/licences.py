"""Per-file licences from a machine-readable Debian copyright file (DEP-5).

The ``Files:`` patterns of a DEP-5 file name paths in the *source* tree, which differ from the
installed paths (``etc/samples/x.flac`` is installed as ``/usr/share/sonic-pi/samples/x.flac``).
A pattern therefore matches an installed path when the path ends with the pattern, or, for a
pattern without wildcards in its last component, when the file names are equal. As in DEP-5, the
last matching paragraph wins.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LicenceRule:
    """One ``Files:`` paragraph: its patterns and the short licence name."""

    patterns: tuple[str, ...]
    licence: str


class Dep5Licences:
    """Look up the licence of an installed file in a parsed DEP-5 copyright file."""

    def __init__(self, rules: list[LicenceRule], default: str) -> None:
        self.rules = rules
        self.default = default

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], default: str) -> Dep5Licences:
        """Parse ``path``; ``default`` is returned for paths no paragraph matches (or a missing file)."""
        path = Path(path)
        if not path.is_file():
            return cls([], default)
        return cls(parse_dep5(path.read_text(encoding="utf-8", errors="replace")), default)

    def licence_for(self, installed_path: str) -> str:
        """The licence of the last paragraph whose pattern matches ``installed_path``."""
        found = self.default
        name = installed_path.rsplit("/", 1)[-1]
        for rule in self.rules:
            for pattern in rule.patterns:
                last = pattern.rsplit("/", 1)[-1]
                exact_name = not any(character in last for character in "*?[")
                if fnmatch.fnmatchcase(installed_path, "*" + pattern) or (exact_name and last == name):
                    found = rule.licence
                    break
        return found


def parse_dep5(text: str) -> list[LicenceRule]:
    """The ``Files:`` paragraphs of DEP-5 ``text`` in order, with their first licence line."""
    rules = []
    for paragraph in text.split("\n\n"):
        fields: dict[str, list[str]] = {}
        current = None
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") and current is not None:
                fields[current].append(line.strip())
            elif ":" in line:
                current, value = line.split(":", 1)
                fields[current] = [value.strip()]
            else:
                current = None
        if "Files" in fields and "License" in fields:
            patterns = tuple(word for line in fields["Files"] for word in line.split())
            licence = fields["License"][0]
            if patterns and licence:
                rules.append(LicenceRule(patterns, licence))
    return rules
