"""Training speed of the audio LM by size and precision: float32 against bf16 autocast, side by side.

    python benchmarks/lm_training.py                      # CPU, one thread, the four default sizes
    python benchmarks/lm_training.py --threads 2 --sizes 128x4 512x8 --batch 8 --frames 500

Each size is ``<width>x<layers>`` (heads: width / 64, at least 2; the shipped LM is 128x4). One
training step is what ``recipes/lm/train.py`` does per batch: forward, the next-id cross-entropy,
backward and an AdamW update, on random ids laid out like a captioned crop (``--frames`` codec frames,
2 ids each, plus a 16-id caption). Reported per size and precision: the median seconds per step over
``--repeats`` steps after one warm-up step, training ids per second, and the speed-up of bf16. The
CPU's model and flags are printed above the table. Choose the LM's size and precision from this table
and from what each size reaches on ``valid`` in the time you have.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from lm.config import lm_config
from lm.model import AudioLM
from lm.module import lm_loss
from semanticodec_lm.hardware import cpu_description

CAPTION_IDS = 16
TEXT_VOCAB = 512


def parse_size(text: str) -> tuple[int, int]:
    """``"<width>x<layers>"`` -> (width, layers); ValueError naming the argument otherwise."""
    try:
        width, layers = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--sizes: {text!r} is not <width>x<layers>, e.g. 256x6") from None
    if width < 64 or width % 64 or layers < 1:
        raise ValueError(f"--sizes: {text!r} needs a width that is a multiple of 64 and at least one layer")
    return width, layers


def step_seconds(model: AudioLM, batch: dict[str, torch.Tensor], precision: str, repeats: int) -> float:
    """Median seconds of one training step (forward, loss, backward, AdamW) over ``repeats`` steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    times = []
    for attempt in range(repeats + 1):  # the first step warms up kernels and allocates optimizer state
        start = time.perf_counter()
        with autocast:
            loss = lm_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if attempt:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["128x4", "256x6", "384x6", "512x8"])
    parser.add_argument("--batch", type=int, default=8, help="crops per step (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=500, help="codec frames per crop (default: %(default)s, 5 s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    args = parser.parse_args()
    try:
        sizes = [parse_size(size) for size in args.sizes]
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(args.threads)
    rows = []
    for width, layers in sizes:
        config = lm_config("small", dim=width, n_layers=layers, n_heads=max(2, width // 64),
                           text_vocab_size=TEXT_VOCAB, max_seq_len=2 * args.frames + CAPTION_IDS + 8)
        torch.manual_seed(0)
        model = AudioLM(config).train()
        ids = torch.randint(0, config.vocab_size, (args.batch, 2 * args.frames + CAPTION_IDS + 3))
        batch = {"inputs": ids[:, :-1], "targets": ids[:, 1:]}
        parameters = sum(p.numel() for p in model.parameters())
        seconds = {precision: step_seconds(model, batch, precision, args.repeats) for precision in ("fp32", "bf16")}
        tokens = batch["targets"].numel()
        rows.append((f"{width}x{layers}", parameters, seconds["fp32"], seconds["bf16"], tokens))
        print(f"{width}x{layers}: fp32 {seconds['fp32']:.2f} s, bf16 {seconds['bf16']:.2f} s per step", flush=True)
    print(f"\nCPU: {cpu_description()}; batch {args.batch} x {args.frames} frames "
          f"({rows[0][4]} training ids per step); median of {args.repeats} steps after a warm-up\n")
    print("| size | parameters | fp32 s/step | bf16 s/step | fp32 ids/s | bf16 ids/s | bf16 speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name, parameters, fp32, bf16, tokens in rows:
        print(f"| {name} | {parameters / 1e6:.1f} M | {fp32:.2f} | {bf16:.2f} | {tokens / fp32:,.0f} | "
              f"{tokens / bf16:,.0f} | {fp32 / bf16:.2f}x |")


if __name__ == "__main__":
    main()
