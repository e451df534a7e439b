"""YAML recipe configurations with ``key.sub=value`` command-line overrides, shared by every recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


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
        node[leaf] = yaml.safe_load(value)
    return config


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in the file at ``path``; a one-line error when it is missing, invalid or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{path}: no such config file (it does not exist)")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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
