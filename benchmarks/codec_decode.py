"""Decoding speed: the official procedure versus ours, per 10.24-s window, with peak memory.

Official-size decoder (100 tokens/s) with random weights, token sequences of 10.24 s and 60 s.
Variants, each in a fresh subprocess so its peak RSS is its own:

- ``official``: what the official code computes: two batch-1 UNet calls per step (uncond, then
  cond), context re-projected every call, attention as its CrossAttention does it (einsum, softmax,
  einsum over a materialised [heads, N, L] matrix), contiguous (channels-first) UNet activations,
  the VAE's swish as x * sigmoid(x), the vocoder's convs as 1-D convs, one window at a time
  (generate_sample), DDIM 50 steps, eta 1, CFG 2;
- ``official-procedure``: the same procedure on our kernels (fused attention, channels-last UNet
  and vocoder, fused swish): what the procedure alone costs;
- ``ours``: ``SemantiCodec.decode`` (what users run): the same DDIM with the same per-window noise;
  guidance pairs and windows batched, the context-free first UNet layers run once per pair,
  cross-attention keys/values computed once per window, a last window cut short by the trim
  vocoded only as far as the kept samples reach; stitched output compared with ``official``;
- ``dpmpp-10`` / ``dpmpp-25``: DPM-Solver++(2M) at 10 and 25 steps (batched as ``ours``);
- ``ours-bf16``, ``dpmpp-10-bf16``: the same with ``precision="bf16"`` (bfloat16 autocast);
- ``ours-bf16-compiled``: ``ours-bf16`` with the UNet's guided step under ``torch.compile``;
  ``dpmpp-10-bf16-compiled-vocoder``: ``dpmpp-10-bf16`` with the vocoder compiled by Inductor with
  weight freezing (oneDNN fuses its activations and residual sums into the convs). Compilation runs
  on a 2-step warm-up decode of the same tokens (every shape the timed decode meets) and is reported
  apart, not in s/window;
- ``prior``: no diffusion, the UNet's latent prior straight to the VAE (``sampler="prior"``; small
  configurations only, so not among the defaults).

The CPU's model and its bf16 flags are printed above the table. ``--quality CODEC`` instead
measures what bf16 costs on real audio: the repository's acceptance clips reconstructed by that codec
in bf16 and in float32, the log-mel distance between the two as a fraction of the float32
reconstruction's own distance to the input.

    .venv/bin/python benchmarks/codec_decode.py                      # CPU, about 45 min
    .venv/bin/python benchmarks/codec_decode.py --seconds 10.24 --variants official,ours,ours-bf16
    .venv/bin/python benchmarks/codec_decode.py --seconds 10.24 --warm   # steady state, first call apart
    .venv/bin/python benchmarks/codec_decode.py --quality default
    .venv/bin/python benchmarks/codec_decode.py --config small-fbank-100 --seconds 10.24 --variants dpmpp-25,prior --repeats 3
    .venv/bin/python benchmarks/codec_decode.py --device cuda --batch-size 16 --variants ours,ours-bf16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from codec import vae as vae_module
from codec import vocoder as vocoder_module
from codec.config import SAMPLE_RATE, get_config
from codec.diffusion import unet as unet_module
from codec.diffusion.conditioning import build_context, unconditional_context
from codec.diffusion.samplers import GaussianNoise, sample
from codec.model import SemantiCodec, window_generator
from codec.windows import overlap_add, split_windows
from semanticodec_lm.hardware import cpu_description

# variant: (sampler, steps, precision, what is compiled: "" | "unet" | "vocoder")
VARIANTS = {"official": ("ddim", 50, "fp32", ""), "official-procedure": ("ddim", 50, "fp32", ""),
            "ours": ("ddim", 50, "fp32", ""), "ours-bf16": ("ddim", 50, "bf16", ""),
            "ours-bf16-compiled": ("ddim", 50, "bf16", "unet"), "dpmpp-10": ("dpmpp2m", 10, "fp32", ""),
            "dpmpp-25": ("dpmpp2m", 25, "fp32", ""), "dpmpp-10-bf16": ("dpmpp2m", 10, "bf16", ""),
            "dpmpp-10-bf16-compiled-vocoder": ("dpmpp2m", 10, "bf16", "vocoder"), "prior": ("prior", 1, "fp32", "")}
# The latent-prior decoder exists in the small configurations only (--config small-fbank-100).
DEFAULT_VARIANTS = [name for name in VARIANTS if name != "prior"]
ACCEPTANCE_CLIPS = Path(__file__).resolve().parents[1] / "tests" / "data" / "codec_acceptance"


def bf16_quality(source: str, steps: int = 25) -> list[dict]:
    """Per acceptance clip: mel distance of the bf16 reconstruction to the float32 one, and of the
    float32 one to the input (DPM-Solver++ ``steps`` steps, seed 0, the same noise for both)."""
    from codec.audio import load_audio
    from codec.metrics import mel_distance

    codec = SemantiCodec.from_pretrained(source).eval()
    rows = []
    for path in sorted(ACCEPTANCE_CLIPS.glob("*.flac")):
        wave = load_audio(path)
        exact, fast = (codec.reconstruct(wave[None], SAMPLE_RATE, steps=steps, sampler="dpmpp2m", seed=0,
                                         precision=precision)[0, 0] for precision in ("fp32", "bf16"))
        n = min(wave.numel(), exact.numel())
        rows.append({"clip": path.stem, "bf16_vs_fp32": mel_distance(exact[:n], fast[:n]),
                     "fp32_vs_input": mel_distance(wave[:n], exact[:n])})
    return rows


def official_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The official CrossAttention arithmetic on [B, heads, N|L, d] tensors: heads folded into the batch,
    einsum scores times d^-0.5, softmax, einsum with the values (the [B*heads, N, L] matrix is materialised)."""
    batch, heads, length, dim = query.shape
    q, k, v = (t.reshape(batch * heads, t.shape[2], dim) for t in (query, key, value))
    scores = torch.einsum("b i d, b j d -> b i j", q, k) * dim**-0.5
    out = torch.einsum("b i j, b j d -> b i d", scores.softmax(dim=-1), v)
    return out.view(batch, heads, length, dim)


def random_tokens(codec: SemantiCodec, seconds: float, seed: int = 0) -> torch.Tensor:
    """Random valid tokens int64 [T, 2] for ``seconds`` of audio (plus the 8 the official padding adds)."""
    g = torch.Generator().manual_seed(seed)
    frames = int(seconds * codec.config.frames_per_second) + 8
    return torch.stack([torch.randint(0, codec.config.semantic_vocab_size, (frames,), generator=g),
                        torch.randint(0, codec.config.acoustic_vocab_size, (frames,), generator=g)], dim=-1)


def official_window(decoder, features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One window the official way: batch-1 UNet calls, uncond then cond, raw context each call."""
    unet = decoder.unet
    cond = build_context(features)
    uncond = unconditional_context(1, features.shape[1], features.shape[2], device=features.device)

    def guided(x, t):
        v_uncond = unet(x, t, uncond)
        v_cond = unet(x, t, cond)
        return v_uncond + 2.0 * (v_cond - v_uncond)

    noise = GaussianNoise(1, decoder.latent_shape, generators=[generator], device=features.device)
    latents = sample(guided, decoder.noise_levels, noise, steps=50, sampler="ddim", eta=1.0, device=features.device)
    return decoder.first_stage_model.mel_to_waveform(decoder.latents_to_mel(latents))


def run_variant(variant: str, seconds: float, batch_size: int, device: str, bf16: bool, config: str,
                warm: bool = False) -> dict:
    """Decode ``seconds`` of random tokens the ``variant`` way in this process. ``warm``: decode them
    once untimed first (its time is reported as ``first_s``), then time a second decode: the steady
    state of a long-running process, without the first call's one-off kernel set-up."""
    torch.manual_seed(0)
    codec = SemantiCodec(get_config(config)).to(device).eval()
    tokens = random_tokens(codec, seconds).to(device)
    bounds = split_windows(len(tokens), codec.config.window_tokens)
    sampler, steps, precision, compiled = VARIANTS[variant]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.startswith("cuda"))
    compile_s = 0.0
    if compiled == "unet":
        # Guided decoding calls forward_guidance_pair, not forward: compiling the module would leave it eager.
        unet = codec.decoder.unet
        unet.forward_guidance_pair = torch.compile(unet.forward_guidance_pair)
    elif compiled == "vocoder":
        codec.decoder.first_stage_model.vocoder.compile(options={"freezing": True})
    if compiled:
        start = time.perf_counter()
        with torch.no_grad():  # compiles for every shape the timed decode uses (batches, a last window's cut)
            codec.decode(tokens, steps=2, sampler=sampler, seed=0, batch_size=batch_size, precision=precision)
        compile_s = time.perf_counter() - start
    if variant == "official":  # this worker process only: attention, layouts and swish computed the official way
        unet_module.F.scaled_dot_product_attention = official_attention
        unet_module._channels_last = lambda x: x
        vae_module._swish = lambda x: x * torch.sigmoid(x)
        vocoder_module._conv = lambda conv, x: conv(x.squeeze(2)).unsqueeze(2)  # nn.Conv1d on [B, C, L]

    def decode() -> tuple[torch.Tensor, float]:
        # Window j draws its noise as SemantiCodec.decode(seed=0) seeds it, so every variant sees the same noise.
        generators = [window_generator(0, j, device) for j in range(len(bounds))]
        sync()
        start = time.perf_counter()
        with torch.no_grad(), autocast:  # not inference_mode, which defeats autocast's weight-cast cache
            if variant.startswith("official"):  # every window in full, one at a time, then stitched and trimmed
                windows = [official_window(codec.decoder, codec._window_features(tokens, *b)[None], g)
                           for b, g in zip(bounds, generators)]
                audio = overlap_add([w[0] for w in windows])[..., : codec.num_samples([len(tokens)])[0]]
            else:  # what users run: SemantiCodec.decode
                audio = codec.decode(tokens, steps=steps, sampler=sampler, eta=1.0, seed=0, batch_size=batch_size,
                                     precision=precision)[0]
        sync()
        return audio, time.perf_counter() - start

    first_s = decode()[1] if warm else 0.0
    audio, elapsed = decode()
    audio = audio.float().cpu()
    torch.save(audio, f"/tmp/codec_decode_{variant}_{seconds}.pt")
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"variant": variant, "seconds": seconds, "windows": len(bounds), "total_s": elapsed,
            "per_window_s": elapsed / len(bounds), "first_per_window_s": first_s / len(bounds),
            "peak_gib": peak, "compile_s": compile_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", default="10.24,60", help="token-sequence durations")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per decoder batch (ours, dpmpp)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--config", default="official-100-16384", help="codec size (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all variants; medians are shown")
    parser.add_argument("--warm", action="store_true",
                        help="time a second decode in each worker (steady state); the first is shown apart")
    parser.add_argument("--quality", default=None, metavar="CODEC",
                        help="measure bf16's quality cost on the acceptance clips with this codec instead")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    if args.quality:
        rows = bf16_quality(args.quality)
        print(f"\nbf16 quality cost, codec {args.quality}, DPM-Solver++ 25 steps, seed 0\n")
        print("| clip | mel distance bf16 vs fp32 | fp32 vs input | cost (ratio) |\n|---|---|---|---|")
        for row in rows:
            print(f"| {row['clip']} | {row['bf16_vs_fp32']:.3f} | {row['fp32_vs_input']:.3f} "
                  f"| {row['bf16_vs_fp32'] / row['fp32_vs_input']:.3f} |")
        return
    if args.worker:
        variant, seconds = args.worker.split("@")
        print(json.dumps(run_variant(variant, float(seconds), args.batch_size, args.device, args.bf16, args.config,
                                     args.warm)))
        return
    rows = []
    variants = args.variants.split(",")
    for seconds in args.seconds.split(","):
        # Rounds of every variant in turn, not all repeats of one variant, so that a slow spell of a
        # shared machine lands on all of them; speed-ups are medians of the rounds' paired ratios.
        runs: dict[str, list[dict]] = {variant: [] for variant in variants}
        for _ in range(args.repeats):
            for variant in variants:
                cmd = [sys.executable, __file__, "--worker", f"{variant}@{seconds}", "--batch-size",
                       str(args.batch_size), "--device", args.device, "--config", args.config] \
                    + (["--bf16"] if args.bf16 else []) + (["--warm"] if args.warm else [])
                result = subprocess.run(cmd, check=True, capture_output=True, text=True)
                runs[variant].append(json.loads(result.stdout.splitlines()[-1]))
                print(json.dumps(runs[variant][-1]), file=sys.stderr, flush=True)
        for variant in variants:
            row = dict(sorted(runs[variant], key=lambda run: run["per_window_s"])[args.repeats // 2])
            row["rounds"] = [run["per_window_s"] for run in runs[variant]]
            rows.append(row)
    base = {r["seconds"]: r for r in rows if r["variant"] == "official"}
    procedure = {r["seconds"]: r for r in rows if r["variant"] == "official-procedure"}
    print(f"\nDecode, {args.config} with random weights, device {args.device}, "
          f"{torch.get_num_threads()} threads, batch {args.batch_size}\n")
    print(f"Median of {args.repeats} round(s), each running every variant once (s/window: the median run, "
          "range in brackets; speed-ups: the median of the rounds' ratios); "
          + ("each timed decode is a worker's second (first call: its first, with the one-off kernel set-up).\n"
             if args.warm else "each timed decode is a fresh worker's first.\n"))
    print("| audio | variant | windows | s/window | speed-up vs official | vs official-procedure | peak memory (GiB) "
          "| rel. diff vs official | compile (s) | first call (s/window) |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def speedup(reference: dict | None, row: dict) -> str:
        if not reference:
            return "-"
        ratios = sorted(a / b for a, b in zip(reference["rounds"], row["rounds"]))
        return f"{ratios[len(ratios) // 2]:.2f}x"

    for r in rows:
        ref = base.get(r["seconds"])
        diff = "-"
        if ref and VARIANTS[r["variant"]][:2] == VARIANTS["official"][:2]:
            a = torch.load(f"/tmp/codec_decode_official_{r['seconds']}.pt")
            b = torch.load(f"/tmp/codec_decode_{r['variant']}_{r['seconds']}.pt")
            diff = f"{((b - a).norm() / a.norm()).item():.1e}"
        compile_s = f"{r['compile_s']:.1f}" if r["compile_s"] else "-"
        first = f"{r['first_per_window_s']:.1f}" if r["first_per_window_s"] else "-"
        spread = f" ({min(r['rounds']):.1f}-{max(r['rounds']):.1f})" if len(r["rounds"]) > 1 else ""
        print(f"| {r['seconds']:g} s | {r['variant']} | {r['windows']} | {r['per_window_s']:.1f}{spread} | {speedup(ref, r)} "
              f"| {speedup(procedure.get(r['seconds']), r)} | {r['peak_gib']:.2f} | {diff} | {compile_s} | {first} |")


if __name__ == "__main__":
    main()
