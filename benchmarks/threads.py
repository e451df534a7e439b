"""Threads per component: encode, decode (UNet + VAE + vocoder) and LM generation with 1 and with
every core, side by side, and the machine's load when measured.

    .venv/bin/python benchmarks/threads.py                  # the shipped codec and LM, 10.24 s of audio
    .venv/bin/python benchmarks/threads.py --repeats 5

Each variant runs in a fresh process (``torch.set_num_threads`` before any work); the median of
``--repeats`` runs is shown with the 1-minute load average before and after. ``semanticodec``'s
default (:func:`semanticodec_lm.hardware.default_threads`) follows from this table: every core on an
idle machine, fewer when other processes already keep cores busy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from codec.config import SAMPLE_RATE
from semanticodec_lm.hardware import cpu_description, usable_cores


def worker(component: str, threads: int, steps: int) -> float:
    """Seconds one ``component`` run takes with ``threads`` torch threads (after one warm-up run)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    wave = 0.1 * torch.randn(163840 - 8000)
    if component in ("encode", "decode"):
        from codec.model import SemantiCodec

        codec = SemantiCodec.from_pretrained("default").eval()
        tokens = codec.encode(wave[None], SAMPLE_RATE)

        def run() -> None:
            if component == "encode":
                codec.encode(wave[None], SAMPLE_RATE)
            else:
                codec.decode(tokens.tokens, tokens.lengths, steps=steps, sampler="dpmpp2m", seed=0)
    else:
        from lm.api import AudioGenerator

        generator = AudioGenerator.from_pretrained("default")

        def run() -> None:
            generator.generate_tokens(text="a steady sine tone at A4 (440 Hz)", seconds=5.0, seed=0)
    run()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--components", default="encode,decode,lm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=25, help="DPM-Solver++ steps of the decode")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        component, threads = args.worker.split("@")
        print(json.dumps({"seconds": worker(component, int(threads), args.steps)}))
        return
    cores = len(os.sched_getaffinity(0))
    print(f"CPU: {cpu_description()}; {cores} cores usable")
    rows = []
    for component in args.components.split(","):
        for threads in sorted({1, cores}):
            load_before = os.getloadavg()[0]
            times = []
            for _ in range(args.repeats):
                command = [sys.executable, __file__, "--worker", f"{component}@{threads}", "--steps", str(args.steps)]
                out = subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
                times.append(json.loads(out)["seconds"])
            rows.append((component, threads, sorted(times)[len(times) // 2], load_before, os.getloadavg()[0]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"\nThreads per component (shipped codec and LM; encode/decode 10 s of audio, decode DPM-Solver++ "
          f"{args.steps} steps; LM 5 s of tokens). Median of {args.repeats}; default now: {usable_cores()} "
          f"thread(s)\n")
    print("| component | threads | seconds | load before | load after |\n|---|---|---|---|---|")
    for component, threads, seconds, before, after in rows:
        print(f"| {component} | {threads} | {seconds:.2f} | {before:.1f} | {after:.1f} |")


if __name__ == "__main__":
    main()
