"""The machine: what benchmark tables print above themselves, and how many threads to use on it."""

from __future__ import annotations

import math
import os
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


def usable_cores() -> int:
    """Cores this process may run on that other processes do not already keep busy (at least 1).

    The 1-minute load average counts runnable processes; on two cores a decode took 40.8 s with two
    threads and 5.3 s with one while another job kept a core busy, and every core is fastest on an
    idle machine (``benchmarks/threads.py``), so the cores left idle are the threads worth using.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = os.getloadavg()[0]
    except OSError:  # no load average on this platform
        return cores
    return max(1, min(cores, math.floor(cores - busy + 0.5)))
