"""What the benchmark and speed tables print above themselves: the machine they were measured on."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def cpu_description() -> str:
    """The CPU model and which bf16 instruction sets it has (from /proc/cpuinfo on Linux)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first processor's entry
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or "unknown CPU"
    flags = set(fields.get("flags", "").split())
    bf16 = [flag for flag in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f") if flag in flags]
    return f"{model}; bf16-relevant flags: {', '.join(bf16) or 'none'}; {torch.get_num_threads()} threads"
