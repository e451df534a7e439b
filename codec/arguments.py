"""Checks of numeric and seed arguments at the edge of the public API.

Each check returns the value as a plain Python number, or raises ValueError naming the argument,
the accepted range and what was given (a NaN guidance scale would otherwise decode to full-scale
DC, a negative batch size to silence).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

MAX_SEED = 2**63 - 1


def check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]; bools and non-integral numbers are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"{name} must be >= {minimum}{upper}, got {value}")
    return value


def check_float(name: str, value: object, minimum: float, maximum: float | None = None) -> float:
    """``value`` as a finite float in [minimum, maximum]; NaN, infinities and non-numbers are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    upper = "" if maximum is None else f" and <= {maximum:g}"
    if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be a finite number >= {minimum:g}{upper}, got {value}")
    return value


def check_seeds(seed: object, count: int) -> list[int] | None:
    """``seed`` (None, one int, or one int per item) as ``count`` ints in [0, 2**63 - 1], or None."""
    if seed is None:
        return None
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return [check_int("seed", seed, 0, MAX_SEED)] * count
    if isinstance(seed, (str, bytes)) or not isinstance(seed, Sequence) and not hasattr(seed, "tolist"):
        raise ValueError(f"seed must be None, an integer or one integer per item, got {seed!r} ({type(seed).__name__})")
    seeds = [check_int("seed", s, 0, MAX_SEED) for s in (seed.tolist() if hasattr(seed, "tolist") else seed)]
    if len(seeds) != count:
        raise ValueError(f"got {len(seeds)} seeds for {count} items")
    return seeds
