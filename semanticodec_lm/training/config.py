"""YAML recipe configurations with ``key.sub=value`` command-line overrides, shared by every recipe."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` and ``6e-05`` as floats: YAML 1.1 (PyYAML) wants a dot and a
    signed exponent, so ``optim.lr=1e-4`` and Python's own float reprs came through as strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.VERBOSE),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """``text`` parsed as YAML by :class:`_Loader` (safe: no Python objects)."""
    return yaml.load(text, Loader=_Loader)


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``a.b.c=value`` entries (values parsed as YAML) in ``config``, creating sections; returns it."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"override {item!r} is not of the form key=value or section.key=value")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SystemExit(f"override {item!r}: {part!r} is not a section")
        node[leaf] = load_yaml(value)
    return config


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in the file at ``path``; a one-line error when it is missing, invalid or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{path}: no such config file (it does not exist)")
    try:
        config = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise SystemExit(f"{path}: not valid YAML ({error})") from None
    if not isinstance(config, dict):
        raise SystemExit(f"{path}: the config must be a mapping")
    return config


def load_recipe_config(path: str | Path, overrides: list[str], known: set[str]) -> dict[str, Any]:
    """The YAML mapping at ``path`` with overrides applied; top-level keys must lie in ``known``."""
    config = apply_overrides(read_config_file(path), overrides)
    unknown = sorted(set(config) - known)
    if unknown:
        raise SystemExit(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
    return config


def flatten_overrides(values: dict[str, Any] | None, prefix: str = "") -> list[str]:
    """A nested mapping as ``a.b=value`` strings (values written as JSON, which YAML reads back)."""
    out = []
    for key, value in (values or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += flatten_overrides(value, name + ".")
        else:
            out.append(f"{name}={json.dumps(value)}")
    return out
