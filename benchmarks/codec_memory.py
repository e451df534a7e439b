"""Peak memory (RSS) of encoding and decoding long audio with a codec, each in a fresh process.

    .venv/bin/python benchmarks/codec_memory.py --minutes 60 --steps 10            # the shipped default
    .venv/bin/python benchmarks/codec_memory.py --minutes 5,60 --what encode --codec official-100-16384

The input is a synthetic tone-plus-noise signal written to a 16-bit wav (so the audio file, not a
tensor, is what the codec reads); ``decode`` decodes that many minutes of random valid tokens with
DPM-Solver++ (``--steps``). Prints the CPU and a Markdown table of wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from codec.config import SAMPLE_RATE
from semanticodec_lm.hardware import cpu_description


def worker(what: str, minutes: float, codec_name: str, steps: int) -> dict:
    from codec.audio import write_audio
    from codec.model import SemantiCodec

    codec = SemantiCodec.from_pretrained(codec_name).eval()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    if what == "encode":
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "long.wav"
            g = torch.Generator().manual_seed(0)
            t = torch.arange(int(minutes * 60 * SAMPLE_RATE)) / SAMPLE_RATE
            write_audio(path, 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.02 * torch.randn(t.shape, generator=g), SAMPLE_RATE)
            del t
            baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            start = time.perf_counter()
            tokens = codec.encode(path)
        frames = int(tokens.lengths[0])
    else:
        frames = int(minutes * 60 * codec.config.frames_per_second)
        g = torch.Generator().manual_seed(0)
        tokens = torch.stack([torch.randint(0, codec.config.semantic_vocab_size, (frames,), generator=g),
                              torch.randint(0, codec.config.acoustic_vocab_size, (frames,), generator=g)], -1)
        for _ in codec.iter_decode(tokens, steps=steps, sampler="dpmpp2m", seed=0):
            pass  # chunks are dropped as they come, as `semanticodec decode` writes them to disk
    return {"what": what, "minutes": minutes, "frames": frames, "seconds": time.perf_counter() - start,
            "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "before_gib": baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", default="60", help="durations, comma-separated")
    parser.add_argument("--what", default="encode,decode", help="encode, decode or both")
    parser.add_argument("--codec", default="default")
    parser.add_argument("--steps", type=int, default=10, help="DPM-Solver++ steps for decode")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        what, minutes = args.worker.split("@")
        print(json.dumps(worker(what, float(minutes), args.codec, args.steps)))
        return
    print(f"CPU: {cpu_description()}")
    rows = []
    for what in args.what.split(","):
        for minutes in args.minutes.split(","):
            command = [sys.executable, __file__, "--worker", f"{what}@{minutes}", "--codec", args.codec,
                       "--steps", str(args.steps)]
            rows.append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"\nPeak memory, codec {args.codec}\n")
    print("| job | minutes of audio | frames | wall time (s) | peak RSS (GiB) | RSS before the job (GiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['what']} | {r['minutes']:g} | {r['frames']} | {r['seconds']:.1f} | {r['peak_gib']:.2f} | {r['before_gib']:.2f} |")


if __name__ == "__main__":
    main()
