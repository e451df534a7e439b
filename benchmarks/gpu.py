"""Everything that needs a GPU, in one run: the decoder's float32 parity with the official procedure
on CUDA, bf16, compilation, 1 and 16 windows per batch, peak GPU memory; encode and LM generation.

    .venv/bin/python benchmarks/gpu.py                # one CUDA device; about 20 min on one H100
    .venv/bin/python benchmarks/gpu.py --quick        # 10.24 s of tokens only, fewer variants

Runs the CPU benchmarks' CUDA paths, each printing its table (``codec_decode.py``: s/window, peak
GiB of GPU memory, and each variant's relative difference from ``official``;
``codec_encode.py``; ``lm_generation.py``), after the GPU's name and the torch and CUDA versions.
Without a CUDA device it says so and exits with status 2; nothing else in the project needs a GPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def steps(quick: bool) -> list[tuple[str, list[str]]]:
    """(title, benchmark argv) of every measurement, in order."""
    seconds = "10.24" if quick else "10.24,163.84"  # 163.84 s: 16 decoder windows
    one = "official,ours,ours-bf16" if quick else "official,ours,ours-bf16,ours-bf16-compiled,dpmpp-10-bf16"
    many = "ours,ours-bf16" if quick else "ours,ours-bf16,ours-bf16-compiled,dpmpp-10-bf16"
    return [
        ("decode, one window per batch (parity with the official procedure, bf16, compile)",
         ["codec_decode.py", "--device", "cuda", "--seconds", seconds, "--batch-size", "1", "--variants", one]),
        ("decode, 16 windows per batch",
         ["codec_decode.py", "--device", "cuda", "--seconds", "163.84", "--batch-size", "16", "--variants", many]),
        ("encode", ["codec_encode.py", "--device", "cuda"] + (["--rates", "100"] if quick else [])),
        ("LM generation", ["lm_generation.py", "--device", "cuda"]),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10.24 s of tokens and fewer variants")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA device here; benchmarks/gpu.py measures the GPU path (the CPU tables come from "
              "benchmarks/codec_decode.py and codec_encode.py)", file=sys.stderr)
        return 2
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    failed = []
    for title, command in steps(args.quick):
        print(f"\n## {title}\n", flush=True)
        if subprocess.run([sys.executable, str(HERE / command[0]), *command[1:]], check=False, cwd=HERE.parent).returncode:
            failed.append(title)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
