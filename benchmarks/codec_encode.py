"""Encoding speed: seconds of audio encoded per second, one segment at a time (the official
procedure) versus batched, in float32 and in bf16.

Official-size encoders with random weights (they cost what trained ones cost), on a synthetic
multi-segment signal; all variants run in the same process. The script checks that batching gives
identical tokens and reports how many bf16 tokens (batched, ``precision="bf16"`` autocast) agree
with float32. Prints the CPU and a Markdown table (median of ``--repeats`` runs).

    .venv/bin/python benchmarks/codec_encode.py                       # 100/50/25 tokens/s, CPU
    .venv/bin/python benchmarks/codec_encode.py --rates 100 --segments 8 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from codec.config import SAMPLE_RATE, SEGMENT_FRAMES, official_config
from codec.encoder import SemantiCodecEncoder
from codec.frontend import waveform_to_fbank
from codec.model import precision_context
from semanticodec_lm.hardware import cpu_description


def synthetic_audio(seconds: float, seed: int = 0) -> torch.Tensor:
    """A tone-plus-noise signal with slow amplitude modulation, float32 [N] at 16 kHz."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
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
            one_by_one = lambda encoder=encoder, fbank=fbank: torch.cat(
                [encoder.encode_segments(segment[None]) for segment in fbank])
            whole = lambda encoder=encoder, fbank=fbank: encoder.encode_segments(fbank)
            one_at_a_time, ref = timed(one_by_one, args.repeats, sync)
            batched, out = timed(whole, args.repeats, sync)
            with precision_context("bf16", device):
                encoder.encode_segments(fbank[:1])  # warm-up of the bf16 kernels
                fast, fast_out = timed(whole, args.repeats, sync)
        identical = torch.equal(ref, out)
        agreement = (fast_out == out).float().mean(dim=(0, 1)).tolist()
        rows.append((rate, one_at_a_time / args.segments, batched / args.segments, fast / args.segments,
                     one_at_a_time / batched, one_at_a_time / fast, identical, agreement))
        del encoder
    print(f"\nCPU: {cpu_description()}")
    print(f"Encode speed, official sizes, random weights, {args.segments} segments of 10.24 s, "
          f"device {device}, {torch.get_num_threads()} threads, median of {args.repeats}\n")
    print("| tokens/s | s/segment, official (one at a time, fp32) | batched fp32 | batched bf16 "
          "| speed-up fp32 | speed-up bf16 | batched tokens identical | bf16 tokens agreeing (semantic, acoustic) |")
    print("|---|---|---|---|---|---|---|---|")
    for rate, a, b, c, speedup, fast_speedup, same, (sem, aco) in rows:
        print(f"| {rate} | {a:.2f} | {b:.2f} | {c:.2f} | {speedup:.2f}x | {fast_speedup:.2f}x | {same} "
              f"| {sem:.1%}, {aco:.1%} |")


if __name__ == "__main__":
    main()
