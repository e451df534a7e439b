"""Long audio: splitting a token sequence into decoder windows and stitching their waveforms.

Reproduces the official decode outer loop bit-exactly:

- windows of W = 512/K tokens advance by W - int(W * 0.0625) tokens; the remainder becomes a
  last, shorter window (:func:`split_windows`);
- each decoded window is a 10.24-s waveform plus the vocoder's 32 surplus samples, and windows
  are crossfaded over 10240 samples with float64 numpy ``linspace`` fades, each product rounded to
  the waveform dtype before the two halves are added; the surplus is kept, so window k starts
  at k * (window length - 10240) samples (:func:`overlap_add`, :class:`OverlapAddStream`);
- the result is trimmed to ``int((T/8) * 16 * 0.01 * K * 16000)`` samples (:func:`output_samples`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from codec.config import SAMPLE_RATE, SEGMENT_SAMPLES

WINDOW_OVERLAP = 0.0625
OVERLAP_SAMPLES = int(SEGMENT_SAMPLES * WINDOW_OVERLAP)  # 10240 = 0.64 s

Waveform = torch.Tensor | np.ndarray


def split_windows(num_tokens: int, window: int, overlap: float = WINDOW_OVERLAP) -> list[tuple[int, int]]:
    """Token ranges [start, end) of the decoder windows for a sequence of ``num_tokens`` tokens.

    Full windows of ``window`` tokens are taken while start + window < num_tokens, advancing by
    window - int(window * overlap); the non-empty remainder is the last window. So
    num_tokens <= window gives one window and window + 1 gives two. 0 tokens give no window.
    """
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    if window < 1:
        raise ValueError(f"window must be >= 1 token, got {window}")
    hop = window - int(window * overlap)
    if hop < 1 or overlap < 0:
        raise ValueError(f"overlap {overlap} must be in [0, 1) for a window of {window} tokens")
    bounds = []
    start = 0
    while start + window < num_tokens:
        bounds.append((start, start + window))
        start += hop
    if start < num_tokens:
        bounds.append((start, num_tokens))
    return bounds


def output_samples(num_tokens: int, concat_factor: int) -> int:
    """Samples kept after stitching ``num_tokens`` tokens at concatenation factor K (0.02*K s per token).

    Computed in Python floats exactly as the official trim: K=1, T=1001 gives 320320.
    """
    if num_tokens < 0 or concat_factor < 1:
        raise ValueError(f"need num_tokens >= 0 and concat_factor >= 1, got {num_tokens}, {concat_factor}")
    seconds = (num_tokens / 8) * 16 * 0.01 * float(concat_factor)
    return int(seconds * SAMPLE_RATE)


@lru_cache(maxsize=4)
def _fades(overlap_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    # numpy's linspace, not torch's: the official fades are numpy float64 values, and the two
    # libraries' linspace can differ in the last bit.
    fade_in = torch.from_numpy(np.linspace(0.0, 1.0, overlap_samples))
    fade_out = torch.from_numpy(np.linspace(1.0, 0.0, overlap_samples))
    return fade_in, fade_out


def _as_waveform(window: Waveform, index: int) -> torch.Tensor:
    tensor = torch.as_tensor(window)
    if tensor.dim() == 0 or not tensor.is_floating_point():
        raise ValueError(
            f"window {index}: expected a floating-point waveform [..., samples], "
            f"got dtype {tensor.dtype} and shape {tuple(tensor.shape)}"
        )
    return tensor


class OverlapAddStream:
    """Incremental :func:`overlap_add`: push decoded windows in order, get back final samples.

    ``push(window)`` returns every sample that no later window can change (all but the trailing
    ``overlap_samples``); ``finish()`` returns the rest. The chunks concatenated along the last
    axis equal ``overlap_add(windows)[..., :total_samples]``, where ``total_samples`` is given to
    the constructor (trims while streaming) or to ``finish``. Memory stays bounded by one window.
    """

    def __init__(self, overlap_samples: int = OVERLAP_SAMPLES, total_samples: int | None = None) -> None:
        if overlap_samples < 0:
            raise ValueError(f"overlap_samples must be >= 0, got {overlap_samples}")
        if total_samples is not None and total_samples < 0:
            raise ValueError(f"total_samples must be >= 0, got {total_samples}")
        self.overlap_samples = overlap_samples
        self.total_samples = total_samples
        self.emitted = 0
        self.windows_pushed = 0
        self._pending: torch.Tensor | None = None
        self._finished = False

    def push(self, window: Waveform) -> torch.Tensor:
        """Add the next window [..., samples]; returns the newly final samples [..., n] (n may be 0)."""
        if self._finished:
            raise RuntimeError("OverlapAddStream.push called after finish()")
        index = self.windows_pushed
        window = _as_waveform(window, index)
        n = self.overlap_samples
        if self._pending is None:
            running = window
        else:
            pending = self._pending
            if window.shape[:-1] != pending.shape[:-1] or window.dtype != pending.dtype:
                raise ValueError(
                    f"window {index} has shape {tuple(window.shape)} and dtype {window.dtype}; earlier "
                    f"windows have leading shape {tuple(pending.shape[:-1])} and dtype {pending.dtype}"
                )
            if n == 0:
                running = torch.cat([pending, window], dim=-1)
            else:
                if window.shape[-1] < n or pending.shape[-1] < n:
                    raise ValueError(
                        f"window {index}: crossfading needs at least {n} samples on both sides, got "
                        f"{window.shape[-1]} in this window and {pending.shape[-1]} before it"
                    )
                fade_in, fade_out = (fade.to(window.device) for fade in _fades(n))
                # Each product is rounded to the waveform dtype before the sum, as numpy's in-place
                # multiply of a float32 array by a float64 fade does.
                tail = (pending[..., -n:].double() * fade_out).to(window.dtype)
                head = (window[..., :n].double() * fade_in).to(window.dtype)
                running = torch.cat([pending[..., :-n], tail + head, window[..., n:]], dim=-1)
        keep = min(n, running.shape[-1])
        ready = running[..., : running.shape[-1] - keep]
        self._pending = running[..., running.shape[-1] - keep :].clone()
        self.windows_pushed += 1
        return self._emit(ready)

    def finish(self, total_samples: int | None = None) -> torch.Tensor:
        """The remaining samples [..., n], trimmed to ``total_samples`` in all (None: keep everything)."""
        if self._pending is None:
            raise RuntimeError("OverlapAddStream.finish called before any window was pushed")
        if self._finished:
            raise RuntimeError("OverlapAddStream.finish called twice")
        if total_samples is not None:
            if self.total_samples is not None and total_samples != self.total_samples:
                raise ValueError(
                    f"finish(total_samples={total_samples}) contradicts the constructor's {self.total_samples}"
                )
            if total_samples < self.emitted:
                raise ValueError(
                    f"cannot trim to {total_samples} samples: {self.emitted} were already returned; "
                    "pass total_samples to the constructor to trim while streaming"
                )
            self.total_samples = total_samples
        self._finished = True
        rest, self._pending = self._pending, self._pending[..., :0]
        return self._emit(rest)

    def _emit(self, ready: torch.Tensor) -> torch.Tensor:
        if self.total_samples is not None:
            ready = ready[..., : max(0, self.total_samples - self.emitted)]
        self.emitted += ready.shape[-1]
        return ready.clone()


def overlap_add(windows: Sequence[Waveform], overlap_samples: int = OVERLAP_SAMPLES) -> torch.Tensor:
    """Crossfade decoded windows [..., samples] (same leading shape and dtype) into one waveform.

    Returns [..., sum(lengths) - (len(windows) - 1) * overlap_samples] untrimmed; slice with
    :func:`output_samples` for the official output. The inputs are not modified (the official
    numpy function fades its input arrays in place).
    """
    if len(windows) == 0:
        raise ValueError("overlap_add needs at least one window")
    stream = OverlapAddStream(overlap_samples)
    chunks = [stream.push(window) for window in windows]
    chunks.append(stream.finish())
    return torch.cat(chunks, dim=-1)
