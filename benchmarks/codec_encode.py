"""Encoding speed: seconds of audio encoded per second, one segment at a time versus batched.

Official-size encoders with random weights (they cost what trained ones cost), on a synthetic
multi-segment signal; both variants run in the same process, and the script checks they produce
identical tokens. Prints a Markdown table (median of ``--repeats`` runs).

    .venv/bin/python benchmarks/codec_encode.py                       # 100/50/25 tokens/s, CPU
    .venv/bin/python benchmarks/codec_encode.py --rates 100 --segments 8 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from codec.config import SEGMENT_FRAMES, official_config
from codec.encoder import SemantiCodecEncoder
from codec.frontend import waveform_to_fbank


def synthetic_audio(seconds: float, seed: int = 0) -> torch.Tensor:
    """A tone-plus-noise signal with slow amplitude modulation, float32 [N] at 16 kHz."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    tone = torch.sin(2 * torch.pi * 220 * t) * (0.5 + 0.5 * torch.sin(2 * torch.pi * 0.5 * t))
    return (0.3 * tone + 0.05 * torch.randn(t.shape, generator=g)).float()


def timed(fn, repeats: int, sync) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="100,50,25", help="token rates to measure")
    parser.add_argument("--segments", type=int, default=4, help="10.24-s segments of audio per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    seconds = args.segments * 10.24 - 0.5  # the official padding rule then gives exactly `segments`
    audio = synthetic_audio(seconds)
    rows = []
    for rate in [int(r) for r in args.rates.split(",")]:
        config = official_config(rate, 16384)
        encoder = SemantiCodecEncoder(config).to(device).eval()
        fbank = waveform_to_fbank(audio, config.concat_factor).fbank.reshape(-1, SEGMENT_FRAMES, 128).to(device)
        assert fbank.shape[0] == args.segments
        with torch.inference_mode():
            encoder.encode_segments(fbank[:1])  # warm-up
            one_at_a_time, ref = timed(
                lambda: torch.cat([encoder.encode_segments(seg[None]) for seg in fbank]), args.repeats, sync
            )
            batched, out = timed(lambda: encoder.encode_segments(fbank), args.repeats, sync)
        identical = torch.equal(ref, out)
        audio_seconds = args.segments * 10.24
        rows.append((rate, one_at_a_time / args.segments, batched / args.segments,
                     audio_seconds / one_at_a_time, audio_seconds / batched, one_at_a_time / batched, identical))
        del encoder
    print(f"\nEncode speed, official sizes, random weights, {args.segments} segments of 10.24 s, "
          f"device {device}, {torch.get_num_threads()} threads, median of {args.repeats}\n")
    print("| tokens/s | s/segment, one at a time | s/segment, batched | audio s/s, one at a time "
          "| audio s/s, batched | speed-up | identical tokens |")
    print("|---|---|---|---|---|---|---|")
    for rate, a, b, ra, rb, speedup, same in rows:
        print(f"| {rate} | {a:.2f} | {b:.2f} | {ra:.2f} | {rb:.2f} | {speedup:.2f}x | {same} |")


if __name__ == "__main__":
    main()
