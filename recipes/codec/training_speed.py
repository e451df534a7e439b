"""Training speed of each codec stage of a configuration: float32 against bf16-mixed (and
channels-last where convolutions dominate), side by side in one run.

    python -m recipes.codec.training_speed                          # small-100, every stage
    python -m recipes.codec.training_speed --stages vocoder,vae --repeats 5
    python -m recipes.codec.training_speed --codec small-fbank-100 --stages prior,prior-cached

Each variant runs the stage module's own training loss on a batch of the stage config's shape
(random audio; ``prior-cached``: random tokens and latents, as ``recipes/codec/cache_latents.py`` stores
them), backward and an AdamW step, exactly what one training step costs; the median of
``--repeats`` steps after one warm-up step. Prints the CPU and a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from codec.config import SAMPLE_RATE, get_config
from codec.model import SemantiCodec
from recipes.codec.train_audiomae import AudioMAEModule
from recipes.codec.train_ldm import LDMModule
from recipes.codec.train_vae import VAEModule
from recipes.codec.train_vocoder import VocoderModule
from semanticodec_lm.hardware import cpu_description

def prior_alone(codec: str) -> LDMModule:
    """The LDM stage training its latent prior alone (``train_unet=false``), from a codec of random weights."""
    with tempfile.TemporaryDirectory() as folder:
        start = SemantiCodec(get_config(codec)).save_pretrained(Path(folder) / "codec")
        return LDMModule(codec, init_from=str(start), train_encoder=False, train_unet=False, latent_head_weight=1.0,
                         cfg_dropout=0.0, latent_precision="bf16")


# stage: (module factory, batch size, crop seconds, convolutional, batch kind: corpus audio or a latent cache's)
STAGES = {
    "audiomae": (lambda codec: AudioMAEModule(codec), 8, 10.24, False, "audio"),
    "vae": (lambda codec: VAEModule(codec), 8, 1.28, True, "audio"),
    "ldm": (lambda codec: LDMModule(codec, cfg_dropout=0.0), 4, 10.24, True, "audio"),
    "prior": (prior_alone, 8, 10.24, False, "audio"),
    "prior-cached": (prior_alone, 8, 10.24, False, "cache"),
    "vocoder": (lambda codec: VocoderModule(codec, stft_weight=15.0, phase_weight=10.0, adversarial_start=10**9),
                16, 1.0, False, "audio"),
}
DEFAULT_STAGES = ("audiomae", "vae", "ldm", "vocoder")  # the prior rows need a config with a latent prior


def make_batch(module, batch_size: int, seconds: float, kind: str) -> dict:
    """Random audio crops, or a latent cache's batch (random tokens and latents) of the same shape."""
    samples = int(seconds * SAMPLE_RATE)
    length = torch.full((batch_size,), samples)
    if kind == "audio":
        return {"audio": 0.1 * torch.randn(batch_size, samples), "length": length}
    config = module.codec_config
    tokens = torch.randint(min(config.semantic_vocab_size, config.acoustic_vocab_size),
                           (batch_size, config.tokens_per_segment, 2))
    return {"tokens": tokens, "length": length, "latents": torch.randn(batch_size, *module.codec.decoder.latent_shape)}


def step_seconds(stage: str, codec: str, precision: str, channels_last: bool, repeats: int) -> float:
    """Median seconds of one training step (loss, backward, AdamW) of ``stage``."""
    factory, batch_size, seconds, _, kind = STAGES[stage]
    torch.manual_seed(0)
    module = factory(codec)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    parameters = [p for p in module.parameters() if p.requires_grad]
    if stage == "vocoder":
        parameters = list(module.generator.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=1e-5)
    batch = make_batch(module, batch_size, seconds, kind)
    generator = torch.Generator().manual_seed(0)
    times = []
    for index in range(repeats + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss, _ = module.training_loss(batch, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if index:  # the first step warms the kernels up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codec", default="small-100", help="codec config (default: %(default)s)")
    parser.add_argument("--stages", default=",".join(DEFAULT_STAGES),
                        help=f"stages to measure, of {', '.join(STAGES)} (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    rows = []
    for stage in args.stages.split(","):
        variants = [("32-true", False), ("bf16-mixed", False)]
        if STAGES[stage][3]:
            variants += [("32-true", True), ("bf16-mixed", True)]
        times = {(p, cl): step_seconds(stage, args.codec, p, cl, args.repeats) for p, cl in variants}
        rows.append((stage, times))
        print(f"{stage}: " + ", ".join(f"{p}{' cl' if cl else ''} {t:.2f} s" for (p, cl), t in times.items()),
              file=sys.stderr, flush=True)
    print(f"\nTraining step time, {args.codec}, median of {args.repeats} after a warm-up step\n")
    print("| stage | batch x crop | float32 (s/step) | bf16-mixed | float32 channels-last | bf16-mixed channels-last "
          "| best vs float32 |")
    print("|---|---|---|---|---|---|---|")
    for stage, times in rows:
        _, batch_size, seconds, _, _ = STAGES[stage]
        cells = [times.get(key) for key in (("32-true", False), ("bf16-mixed", False), ("32-true", True),
                                            ("bf16-mixed", True))]
        best = min(t for t in cells if t is not None)
        print(f"| {stage} | {batch_size} x {seconds:g} s | "
              + " | ".join("-" if t is None else f"{t:.2f}" for t in cells)
              + f" | {cells[0] / best:.2f}x |")


if __name__ == "__main__":
    main()
