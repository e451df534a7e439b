"""The decoder's last stages side by side on corpus clips: how much each loses before the diffusion model.

    python -m recipes.codec.stage_table --manifest data/corpus/manifest.jsonl --split valid \\
        --codec old=default --codec new=runs/new-default --per-domain 8

For each codec (``LABEL=SOURCE``: a shipped name or a save_pretrained folder) it resynthesises clips
of one split from their true 64-bin log-mel (a) with the vocoder alone and (b) through the VAE
(posterior mode) and the vocoder; Griffin-Lim from the same mel (torchaudio, no training) is a
reference row. Columns: the mean log-mel distance and multi-resolution STFT distance to the input
per domain (``--per-domain`` clips each, evenly spaced over the split), and how many of six harmonic
tones (110-880 Hz) come back within 50 cents (swift-f0). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
import torchaudio

from codec.audio import load_audio
from codec.config import SAMPLE_RATE
from codec.evaluate import read_manifest_clips
from codec.frontend import MEL_BINS, MEL_FMAX, MEL_FMIN, MEL_HOP, MEL_N_FFT, log_mel_64
from codec.metrics import mel_distance, multi_resolution_stft_distance, pitch_hz
from codec.model import SemantiCodec
from recipes.codec.pitch_through_stages import DEFAULT_TONES, harmonic_tone, is_kept


def evenly_spaced_per_domain(clips: list, per_domain: int) -> list:
    """At most ``per_domain`` clips of each domain, evenly spaced over the split, in domain order."""
    by_domain = defaultdict(list)
    for clip in clips:
        by_domain[clip.domain].append(clip)
    chosen = []
    for domain in sorted(by_domain):
        items = by_domain[domain]
        step = max(1, len(items) // per_domain)
        chosen.extend(items[::step][:per_domain])
    return chosen


def griffin_lim(log_mel: torch.Tensor, iterations: int = 64) -> torch.Tensor:
    """Training-free reference: log-mel [64, frames] -> waveform [frames * 160] (least-squares inverse
    mel filterbank, then Griffin-Lim with the vocoder domain's STFT)."""
    inverse = torchaudio.transforms.InverseMelScale(n_stft=MEL_N_FFT // 2 + 1, n_mels=MEL_BINS, sample_rate=SAMPLE_RATE,
                                                    f_min=MEL_FMIN, f_max=MEL_FMAX, norm="slaney", mel_scale="slaney")
    magnitude = inverse(log_mel.exp()).clamp_min(0)
    invert = torchaudio.transforms.GriffinLim(n_fft=MEL_N_FFT, n_iter=iterations, win_length=MEL_N_FFT,
                                              hop_length=MEL_HOP, power=1.0, rand_init=False)
    return invert(magnitude)[: log_mel.shape[-1] * MEL_HOP]


def stage_outputs(codec: SemantiCodec, wave: torch.Tensor) -> dict[str, torch.Tensor]:
    """wave float32 [N] -> {"vocoder": [n], "VAE + vocoder": [n]}, n = 160 * frames (frames a multiple of 4)."""
    stage = codec.decoder.first_stage_model
    mel = log_mel_64(wave[None]).transpose(1, 2)[:, None]
    mel = mel[:, :, : mel.shape[2] // stage.downsampling * stage.downsampling]
    keep = mel.shape[2] * MEL_HOP
    return {"vocoder": stage.mel_to_waveform(mel)[0, 0, :keep],
            "VAE + vocoder": stage.mel_to_waveform(stage.decode(stage.encode(mel).mode()))[0, 0, :keep]}


@torch.inference_mode()
def stage_table(codecs: dict[str, SemantiCodec], clips: list, griffin_lim_row: bool = True) -> dict[str, dict]:
    """{row label: {"mel/<domain>": mean, "stft/<domain>": mean, "tones": kept count}} for every stage."""
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for clip in clips:
        wave = load_audio(clip.path)
        outputs = {}
        for label, codec in codecs.items():
            outputs.update({f"{label}: {name}": out for name, out in stage_outputs(codec, wave).items()})
        if griffin_lim_row:
            outputs["Griffin-Lim"] = griffin_lim(log_mel_64(wave))
        for row, out in outputs.items():
            reference = wave[: out.shape[-1]]
            sums[row][f"mel/{clip.domain}"].append(mel_distance(reference, out))
            sums[row][f"stft/{clip.domain}"].append(multi_resolution_stft_distance(reference, out))
    table = {row: {key: sum(values) / len(values) for key, values in columns.items()} for row, columns in sums.items()}
    for hz in DEFAULT_TONES:
        tone = harmonic_tone(hz, 2.0)
        outputs = {f"{label}: {name}": out for label, codec in codecs.items()
                   for name, out in stage_outputs(codec, tone).items()}
        if griffin_lim_row:
            outputs["Griffin-Lim"] = griffin_lim(log_mel_64(tone))
        for row, out in outputs.items():
            table.setdefault(row, {})
            table[row]["tones"] = table[row].get("tones", 0) + int(is_kept(pitch_hz(out), hz))
    return table


def markdown(table: dict[str, dict], domains: list[str]) -> str:
    """The table as Markdown: one row per stage, mel and STFT distance per domain, tones kept of six."""
    header = ["stage"] + [f"mel {d}" for d in domains] + [f"STFT {d}" for d in domains] + ["tones kept"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row, values in table.items():
        cells = [f"{values.get(f'mel/{d}', float('nan')):.3f}" for d in domains]
        cells += [f"{values.get(f'stft/{d}', float('nan')):.3f}" for d in domains]
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {values.get('tones', 0)}/{len(DEFAULT_TONES)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True, help="corpus manifest.jsonl")
    parser.add_argument("--split", default="valid", help="manifest split (default: %(default)s)")
    parser.add_argument("--codec", action="append", required=True, help="LABEL=SOURCE (repeatable)")
    parser.add_argument("--per-domain", type=int, default=8, help="clips per domain (default: %(default)s)")
    parser.add_argument("--no-griffin-lim", action="store_true", help="leave out the Griffin-Lim reference row")
    args = parser.parse_args(argv)
    codecs = {}
    for spec in args.codec:
        label, _, source = spec.rpartition("=")
        codecs[label or source] = SemantiCodec.from_pretrained(source).eval()
    clips, problems = read_manifest_clips(args.manifest, args.split)
    for problem in problems:
        print(f"skipped: {problem}")
    clips = evenly_spaced_per_domain(clips, args.per_domain)
    if not clips:
        raise SystemExit(f"{args.manifest}: no clips in split {args.split!r}")
    table = stage_table(codecs, clips, not args.no_griffin_lim)
    domains = sorted({clip.domain for clip in clips})
    print(f"Stages on {len(clips)} {args.split!r} clips ({', '.join(domains)}); lower distances are better\n")
    print(markdown(table, domains))
    return table


if __name__ == "__main__":
    main()
