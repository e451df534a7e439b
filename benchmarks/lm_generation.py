"""Generation speed of the audio LM: KV cache versus recomputing the whole context every step.

    python benchmarks/lm_generation.py                                   # CPU: sizes tiny, small
    python benchmarks/lm_generation.py --device cuda --sizes small medium 1b
    python benchmarks/lm_generation.py --sizes default --contexts 256 1024 --batch 2   # the shipped LM, guided

For every model size and context length (default 256, 1024 and 2048 ids) the two variants run
side by side: ``cached`` feeds one new id per step through the KV cache; ``recompute`` runs the
whole context again for each new id. Each step also samples the next id (temperature 1). Reported:
new ids per second (median of ``--repeats`` runs, after one warm-up), the speed-up, the prefill
time of the cached variant (not in its tokens/s) and peak memory above the weights. A size that is
not a preset of ``lm/config.py`` names an LM folder or shipped LM (``default``): its own weights and
vocabularies, contexts up to what it holds; ``--batch 2`` is what classifier-free guidance costs.
Every measurement runs in a fresh child process, so that peak memory is its own. Prints a Markdown
table; 100 new ids per second is real time (50 frames of two ids per second of audio).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from lm.api import load_lm_folder
from lm.config import LM_SIZES, lm_config
from lm.generate import sample_next
from lm.model import AudioLM
from semanticodec_lm.hardware import cpu_description


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakMemory:
    """Peak memory (MB) above the level at construction: CUDA allocator stats, or process RSS."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.base = torch.cuda.memory_allocated(device) / 2**20
            return
        try:  # writing 5 resets the kernel's high-water mark of this process's RSS (Linux >= 4.0)
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        self.base = _rss_mb("VmRSS")

    def peak(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20 - self.base
        return _rss_mb("VmHWM") - self.base


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_steps(model: AudioLM, context: torch.Tensor, steps: int, cached: bool, generator: torch.Generator) -> tuple[float, float]:
    """(seconds for ``steps`` new ids, prefill seconds or 0) after a context [B, L]."""
    device = context.device
    allowed = torch.ones(context.shape[0], model.config.vocab_size, dtype=torch.bool, device=device)
    _sync(device)
    start = time.perf_counter()
    if cached:
        cache = model.new_cache(context.shape[0], context.shape[1] + steps)
        logits = model(context, cache=cache, last_only=True)[:, -1]
        _sync(device)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(steps):
            next_ids = sample_next(logits, allowed, generator=generator)
            logits = model(next_ids[:, None], cache=cache, last_only=True)[:, -1]
    else:
        prefill, ids = 0.0, context
        for _ in range(steps):
            logits = model(ids, last_only=True)[:, -1]
            ids = torch.cat([ids, sample_next(logits, allowed, generator=generator)[:, None]], dim=1)
    _sync(device)
    return time.perf_counter() - start, prefill


def measure(args: argparse.Namespace) -> dict:
    """One (size, context, variant) measurement, in this (child) process."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.new_tokens if args.variant == "cached" else args.recompute_tokens
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    torch.manual_seed(0)
    if args.size in LM_SIZES:
        config = lm_config(args.size, semantic_vocab_size=args.semantic_vocab, acoustic_vocab_size=args.acoustic_vocab,
                           max_seq_len=args.context + max(args.new_tokens, args.recompute_tokens))
        model = AudioLM(config)
    else:
        model = load_lm_folder(args.size).model
        config = model.config
    model = model.to(device=device, dtype=dtype).eval()
    generator = torch.Generator(device=device).manual_seed(0)
    context = torch.randint(0, config.vocab_size, (args.batch, args.context), generator=generator, device=device)
    memory = PeakMemory(device)
    time_steps(model, context, min(steps, 2), args.variant == "cached", generator)  # warm-up
    runs = [time_steps(model, context, steps, args.variant == "cached", generator) for _ in range(args.repeats)]
    return {
        "tokens_per_s": args.batch * steps / statistics.median(seconds for seconds, _ in runs),
        "prefill_ms": 1000 * statistics.median(prefill for _, prefill in runs),
        "peak_mb": memory.peak(),
        "parameters": model.num_parameters(),
        "vocabulary": f"{config.semantic_vocab_size}+{config.acoustic_vocab_size}",
    }


def run_child(args: argparse.Namespace, size: str, context: int, variant: str) -> dict:
    command = [sys.executable, __file__, "--child", "--size", size, "--context", str(context), "--variant", variant]
    for name in ("device", "dtype", "batch", "new_tokens", "recompute_tokens", "repeats", "threads",
                 "semantic_vocab", "acoustic_vocab"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"measurement {size}/{context}/{variant} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", default=None, help="default: tiny small (CPU), small medium (CUDA)")
    parser.add_argument("--contexts", nargs="+", type=int, default=[256, 1024, 2048])
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=32, help="new ids per cached run")
    parser.add_argument("--recompute-tokens", type=int, default=8, help="new ids per recompute run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--semantic-vocab", type=int, default=16384)
    parser.add_argument("--acoustic-vocab", type=int, default=8192)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--context", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=["cached", "recompute"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    if args.child:
        print(json.dumps(measure(args)))
        return
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but CUDA is not available")
    sizes = args.sizes or (["small", "medium"] if cuda else ["tiny", "small"])
    name = torch.cuda.get_device_name(args.device) if cuda else cpu_description()
    details = [f"Device: {name}", f"torch {torch.__version__}", args.dtype, f"batch {args.batch}"]
    if not cuda:
        details.append(f"{args.threads or torch.get_num_threads()} threads")
    if any(size in LM_SIZES for size in sizes):  # a folder's LM has its own (the table's vocabulary column)
        details.append(f"presets' vocabulary {args.semantic_vocab}+{args.acoustic_vocab}")
    details += [f"median of {args.repeats} runs ({args.new_tokens} new ids cached, {args.recompute_tokens} recomputed)"]
    print("; ".join(details) + "\n")
    print("| size | parameters | vocabulary | context | cached tok/s | recompute tok/s | speed-up | prefill ms "
          "| cached peak MB | recompute peak MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        holds = None if size in LM_SIZES else load_lm_folder(size).model.config.max_seq_len
        for context in args.contexts:
            if holds is not None and context + max(args.new_tokens, args.recompute_tokens) > holds:
                print(f"| {size} | | | {context} | longer than the {holds} positions it holds | | | | | |")
                continue
            cached = run_child(args, size, context, "cached")
            recompute = run_child(args, size, context, "recompute")
            print(f"| {size} | {cached['parameters'] / 1e6:.1f} M | {cached['vocabulary']} | {context} "
                  f"| {cached['tokens_per_s']:.1f} "
                  f"| {recompute['tokens_per_s']:.2f} | {cached['tokens_per_s'] / recompute['tokens_per_s']:.1f}x "
                  f"| {cached['prefill_ms']:.0f} | {cached['peak_mb']:.0f} | {recompute['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
