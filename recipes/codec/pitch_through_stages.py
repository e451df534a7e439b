"""Which stage of a codec loses a pure tone's pitch: the vocoder alone, the VAE + vocoder, or the whole codec.

    python -m recipes.codec.pitch_through_stages --codec default
    python -m recipes.codec.pitch_through_stages --codec runs/my-codec --tones 110,440 --seconds 3

Each tone (a sine at 0.3 amplitude) goes (1) to its 64-bin log-mel and back through the vocoder,
(2) through the VAE (posterior mode) and the vocoder, (3) through the whole codec (encode, then
decode with ``--steps`` DPM-Solver++ steps). The pitch of each output is measured as the recipes
measure it (``recipes/continuation/measure.py``) and printed as a Markdown table in Hz.
"""

from __future__ import annotations

import argparse

import torch

from codec.frontend import log_mel_64
from codec.model import SemantiCodec
from recipes.continuation.measure import SAMPLE_RATE, estimate_pitch

STAGES = ("vocoder", "VAE + vocoder", "codec")


def midi_to_hz(midi: float | None) -> float | None:
    """MIDI note number (as estimate_pitch returns it) to Hz; None stays None."""
    return None if midi is None else 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


@torch.inference_mode()
def pitch_through_stages(codec: SemantiCodec, tones_hz: list[float], seconds: float = 5.0,
                         steps: int = 10, seed: int = 0) -> dict[float, dict[str, float | None]]:
    """For each tone frequency (Hz): the measured pitch (Hz, None when none is found) after each of STAGES."""
    stage = codec.decoder.first_stage_model
    factor = stage.downsampling
    results = {}
    for hz in tones_hz:
        t = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        wave = (0.3 * torch.sin(2 * torch.pi * hz * t)).float()
        mel = log_mel_64(wave[None]).transpose(1, 2)[:, None]  # [1, 1, frames, 64]
        mel = mel[:, :, : mel.shape[2] // factor * factor]
        outputs = {
            "vocoder": stage.mel_to_waveform(mel),
            "VAE + vocoder": stage.mel_to_waveform(stage.decode(stage.encode(mel).mode())),
            "codec": codec.reconstruct(wave[None], SAMPLE_RATE, steps=steps, sampler="dpmpp2m", seed=seed),
        }
        results[hz] = {name: midi_to_hz(estimate_pitch(out[0, 0].numpy())) for name, out in outputs.items()}
    return results


def main(argv: list[str] | None = None) -> dict[float, dict[str, float | None]]:
    """Print the table; returns {tone Hz: {stage: measured Hz or None}}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codec", default="default", help="shipped name, save_pretrained folder or official-<rate>-<vocab>")
    parser.add_argument("--tones", default="110,261.63,440,880", help="tone frequencies in Hz")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=10, help="DPM-Solver++ decoder steps for the whole codec")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    codec = SemantiCodec.from_pretrained(args.codec).eval()
    results = pitch_through_stages(codec, [float(f) for f in args.tones.split(",")], args.seconds, args.steps, args.seed)

    def cell(value: float | None) -> str:
        return "none" if value is None else f"{value:.1f}"

    print(f"Measured pitch (Hz) of pure tones through codec `{args.codec}`\n")
    print("| tone (Hz) | " + " | ".join(STAGES) + " |")
    print("|---|" + "---|" * len(STAGES))
    for hz, row in results.items():
        print(f"| {hz:g} | " + " | ".join(cell(row[name]) for name in STAGES) + " |")
    return results


if __name__ == "__main__":
    main()
