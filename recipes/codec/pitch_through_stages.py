"""Which stage of a codec loses a note's pitch: the vocoder alone, the VAE + vocoder, or the whole codec.

    python -m recipes.codec.pitch_through_stages --codec default
    python -m recipes.codec.pitch_through_stages --codec runs/my-codec --tones 110,440 --seconds 3

Each note is a harmonic tone (fundamental plus four harmonics, amplitudes 1/k, peak 0.5) that goes
(a) to its 64-bin log-mel and back through the vocoder, (b) through the VAE (posterior mode) and the
vocoder, (c) through the whole codec (encode, then decode with ``--steps`` DPM-Solver++ steps, seed
``--seed``), and, for a codec whose UNet has a latent prior (the small configs), (d) through the
encoder and that prior's estimate of the latent, decoded by the VAE and vocoder without diffusion:
what the tokens carry before the UNet reads them. Each output's pitch is measured by the pretrained swift-f0 estimator
(:func:`codec.metrics.pitch_hz`); a note is kept when it comes back within 50 cents. Prints a
Markdown table of the measured Hz per stage and the notes kept, a table of each output's buzz (its
share of power on the comb of the decoder's 100-Hz frame rate, :func:`codec.metrics.comb_share`),
then (``--identify``) how well the encoder's representations tell 37 semitones apart
(:func:`note_identification`): when the tokens already confuse two notes, no decoder can separate
them and the codec column's loss lies in the encoder; when they do not, it lies in the decoder.
"""

from __future__ import annotations

import argparse
import math

import torch

from codec.config import SAMPLE_RATE, SEGMENT_FRAMES, SEGMENT_SAMPLES
from codec.frontend import log_mel_64, waveform_to_fbank
from codec.metrics import comb_share, pitch_hz
from codec.model import SemantiCodec
from codec.semantic import tokens_per_time_step

STAGES = ("vocoder", "VAE + vocoder", "latent prior", "codec")
DEFAULT_TONES = (110.0, 164.81, 261.63, 440.0, 659.25, 880.0)  # A2, E3, C4, A4, E5, A5
KEPT_CENTS = 50.0
SEGMENT_SECONDS = SEGMENT_SAMPLES / SAMPLE_RATE


def harmonic_tone(hz: float, seconds: float, harmonics: int = 5) -> torch.Tensor:
    """A steady tone: float32 [N] at 16 kHz, harmonics 1..``harmonics`` at amplitudes 1/k, peak 0.5."""
    t = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    wave = sum(torch.sin(2 * math.pi * hz * k * t) / k for k in range(1, harmonics + 1) if hz * k < SAMPLE_RATE / 2)
    return (0.5 * wave / wave.abs().max()).float()


def cents(measured: float | None, target: float) -> float | None:
    """Distance of a measured pitch from the target in cents (None when nothing was measured)."""
    return None if measured is None else 1200.0 * math.log2(measured / target)


def is_kept(measured: float | None, target: float) -> bool:
    """Whether a measured pitch lies within 50 cents of the target."""
    distance = cents(measured, target)
    return distance is not None and abs(distance) <= KEPT_CENTS


def available_stages(codec: SemantiCodec) -> tuple[str, ...]:
    """The stages this codec has: all but ``latent prior`` when its UNet has none."""
    return tuple(name for name in STAGES if name != "latent prior" or codec.config.unet.latent_prior_width)


@torch.inference_mode()
def decoder_frame_rate(codec: SemantiCodec) -> float:
    """Frames per second the decoder's vocoder runs at (100 for a hop of 160 at 16 kHz): where its buzz sits."""
    return SAMPLE_RATE / codec.decoder.first_stage_model.vocoder.hop_length


def stage_waveforms(codec: SemantiCodec, wave: torch.Tensor, stages: tuple[str, ...], steps: int = 25,
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """``wave`` float32 [N] at 16 kHz through each of ``stages``: {stage: waveform float32 [N']}."""
    unknown = sorted(set(stages) - set(available_stages(codec)))
    if unknown:
        raise ValueError(f"unknown stages {unknown} for this codec; choose from {list(available_stages(codec))}")
    stage = codec.decoder.first_stage_model
    factor = stage.downsampling
    mel = log_mel_64(wave[None]).transpose(1, 2)[:, None]  # [1, 1, frames, 64]
    mel = mel[:, :, : mel.shape[2] // factor * factor]
    run = {
        "vocoder": lambda: stage.mel_to_waveform(mel),
        "VAE + vocoder": lambda: stage.mel_to_waveform(stage.decode(stage.encode(mel).mode())),
        "latent prior": lambda: codec.reconstruct(wave[None], SAMPLE_RATE, sampler="prior"),
        "codec": lambda: codec.reconstruct(wave[None], SAMPLE_RATE, steps=steps, sampler="dpmpp2m", seed=seed),
    }
    return {name: run[name]()[0, 0] for name in stages}


def pitch_through_stages(codec: SemantiCodec, tones_hz: list[float], seconds: float = 3.0, steps: int = 25,
                         seed: int = 0, stages: tuple[str, ...] | None = None) -> dict[float, dict[str, float | None]]:
    """For each tone frequency (Hz): the measured pitch (Hz, None when none is found) after each of ``stages``
    (default: every stage the codec has)."""
    measured = measure_through_stages(codec, tones_hz, seconds, steps, seed, stages, buzz=False)
    return {hz: {name: cells["pitch"] for name, cells in row.items()} for hz, row in measured.items()}


def measure_through_stages(codec: SemantiCodec, tones_hz: list[float], seconds: float = 3.0, steps: int = 25,
                           seed: int = 0, stages: tuple[str, ...] | None = None,
                           buzz: bool = True) -> dict[float, dict[str, dict[str, float | None]]]:
    """For each tone frequency (Hz) and each stage (plus ``"input"``, the tone itself): ``pitch`` (Hz or
    None) and, with ``buzz``, ``buzz``: the share of power on the comb of the vocoder's frame rate
    (:func:`codec.metrics.comb_share`, 100 Hz for a hop of 160)."""
    stages = available_stages(codec) if stages is None else stages
    frame_rate = decoder_frame_rate(codec)
    results = {}
    for hz in tones_hz:
        wave = harmonic_tone(hz, seconds)
        outputs = {"input": wave, **stage_waveforms(codec, wave, stages, steps, seed)}
        results[hz] = {name: {"pitch": pitch_hz(out), **({"buzz": comb_share(out, frame_rate)} if buzz else {})}
                       for name, out in outputs.items() if buzz or name != "input"}
    return results


IDENTIFIED_REPRESENTATIONS = ("fbank", "AudioMAE feature", "semantic centroid", "acoustic code", "both tokens")
SEMITONES_110_TO_880 = tuple(110.0 * 2 ** (step / 12) for step in range(37))


def _encode_held_note(codec: SemantiCodec, hz: float, seconds: float):
    """A held tone's fbank segment [1, 1024, 128], its EncoderOutputs, and its whole AudioMAE time steps
    (the last, cut by the clip's end, left out)."""
    if not 1.0 <= seconds <= SEGMENT_SECONDS:
        raise ValueError(f"seconds must be in [1, {SEGMENT_SECONDS:g}] (one encoder window), got {seconds:g}")
    front = waveform_to_fbank(harmonic_tone(hz, seconds), codec.config.concat_factor)
    fbank = front.fbank.reshape(-1, SEGMENT_FRAMES, front.fbank.shape[-1])
    steps = front.token_count // tokens_per_time_step(codec.config.concat_factor) - 1
    return fbank, codec.encoder.encode_segments_detailed(fbank), steps


@torch.no_grad()
def held_note_code_changes(codec: SemantiCodec, tones_hz: list[float], seconds: float = 6.0) -> list[float]:
    """Per frequency position: the share of time steps whose acoustic code differs from the step before,
    over held tones ``tones_hz`` (after their first two steps). A held note's input does not change, so a
    code that does follows the token's place in the window, not the sound: 0 is a stable description."""
    per_step = tokens_per_time_step(codec.config.concat_factor)
    changes = []
    for hz in tones_hz:
        _, out, steps = _encode_held_note(codec, hz, seconds)
        ids = out.tokens[0, : steps * per_step, 1].reshape(steps, per_step)[2:]
        changes.append((ids[1:] != ids[:-1]).float().mean(dim=0))
    return torch.stack(changes).mean(dim=0).tolist()


@torch.no_grad()
def note_identification(codec: SemantiCodec, tones_hz: list[float], seconds: float = 6.0) -> dict[str, float]:
    """How well each representation inside the encoder tells the notes ``tones_hz`` apart.

    Each tone is encoded once; per AudioMAE time step (160 ms; 320 ms at 25 tokens/s) the step's
    rows of a representation are joined into one vector: the normalised 128-bin fbank frames, the
    AudioMAE features the codebook reads, the semantic centroids, the acoustic code rows, and both
    token rows together (what the decoder reads). A nearest-class-mean classifier fitted on the first half
    of every note's steps labels the second half; returns {representation: share of steps given
    their own note} (chance is 1 / len(tones_hz)). The first two steps and the last one are left out.
    """
    if len(tones_hz) < 2:
        raise ValueError(f"need at least two tones to tell apart, got {len(tones_hz)}")
    encoder, config = codec.encoder, codec.config
    tokens_per_step = tokens_per_time_step(config.concat_factor)
    steps_per_segment = config.tokens_per_segment // tokens_per_step
    frames_per_step = SEGMENT_FRAMES // steps_per_segment
    per_note: dict[str, list[torch.Tensor]] = {name: [] for name in IDENTIFIED_REPRESENTATIONS}
    for hz in tones_hz:
        fbank, out, steps = _encode_held_note(codec, hz, seconds)
        kept = steps * tokens_per_step
        centroids, codes = out.centroids[0, :kept], encoder.quantizer.lookup(out.tokens[0, :kept, 1])
        rows = {"fbank": fbank[0, : steps * frames_per_step], "AudioMAE feature": out.features[0, :kept],
                "semantic centroid": centroids, "acoustic code": codes,
                "both tokens": torch.cat([codes, centroids], dim=-1)}
        for name, value in rows.items():
            per_note[name].append(value.reshape(steps, -1)[2:].float())
    shares = {}
    for name, notes in per_note.items():
        fitted = [note[: len(note) // 2] for note in notes]
        means = torch.stack([half.mean(dim=0) for half in fitted])
        # Each dimension in units of its within-note spread, so that noisy dimensions do not drown the telling ones.
        spread = torch.cat([half - half.mean(dim=0) for half in fitted]).pow(2).mean(dim=0).add(1e-6).sqrt()
        hits = total = 0
        for index, note in enumerate(notes):
            held_out = note[len(note) // 2:]
            hits += int((torch.cdist(held_out / spread, means / spread).argmin(dim=1) == index).sum())
            total += len(held_out)
        shares[name] = hits / total
    return shares


def main(argv: list[str] | None = None) -> dict[float, dict[str, float | None]]:
    """Print the tables; returns {tone Hz: {stage: measured Hz or None}}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codec", default="default", help="shipped name, save_pretrained folder or official-<rate>-<vocab>")
    parser.add_argument("--tones", default=",".join(f"{hz:g}" for hz in DEFAULT_TONES), help="fundamentals in Hz")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=25, help="DPM-Solver++ decoder steps for the whole codec")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--identify", action="store_true",
                        help="also measure how well the encoder's representations tell 37 semitones apart")
    args = parser.parse_args(argv)
    if args.seconds < 1.0:
        parser.error(f"--seconds must be at least 1 (the buzz measure resolves 2 Hz), got {args.seconds:g}")
    codec = SemantiCodec.from_pretrained(args.codec).eval()
    measured = measure_through_stages(codec, [float(f) for f in args.tones.split(",")], args.seconds, args.steps,
                                      args.seed)
    results = {hz: {name: cells["pitch"] for name, cells in row.items() if name != "input"}
               for hz, row in measured.items()}

    def cell(value: float | None, hz: float) -> str:
        return "none" if value is None else f"{value:.1f} ({cents(value, hz):+.0f} c)"

    print(f"Measured pitch (Hz, cents off) of harmonic tones through codec `{args.codec}` (swift-f0)\n")
    stages = available_stages(codec)
    print("| tone (Hz) | " + " | ".join(stages) + " |")
    print("|---|" + "---|" * len(stages))
    for hz, row in results.items():
        print(f"| {hz:g} | " + " | ".join(cell(row[name], hz) for name in stages) + " |")
    kept = [sum(is_kept(row[name], hz) for hz, row in results.items()) for name in stages]
    print(f"| kept within {KEPT_CENTS:g} cents | " + " | ".join(f"{k}/{len(results)}" for k in kept) + " |")
    frame_rate = decoder_frame_rate(codec)
    print(f"\nBuzz: share of each output's power within 2 Hz of the multiples of {frame_rate:g} Hz, the "
          "decoder's frame rate (`input`: the tone itself)\n")
    columns = ("input", *stages)
    print("| tone (Hz) | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for hz, row in measured.items():
        print(f"| {hz:g} | " + " | ".join(f"{row[name]['buzz']:.3f}" for name in columns) + " |")
    if args.identify:
        shares = note_identification(codec, list(SEMITONES_110_TO_880))
        print(f"\nNotes told apart per time step, {len(SEMITONES_110_TO_880)} semitones from 110 to 880 Hz (chance "
              f"{1 / len(SEMITONES_110_TO_880):.1%}): the decoder reads both tokens\n")
        print("| " + " | ".join(shares) + " |\n|" + "---|" * len(shares))
        print("| " + " | ".join(f"{share:.1%}" for share in shares.values()) + " |")
        changes = held_note_code_changes(codec, list(SEMITONES_110_TO_880))
        print("\nShare of time steps whose acoustic code changes on a held note, per frequency position "
              "(lowest first; 0: one code for one sound)\n")
        print("| " + " | ".join(str(position) for position in range(len(changes))) + " |\n|" + "---|" * len(changes))
        print("| " + " | ".join(f"{change:.0%}" for change in changes) + " |")
    return results


if __name__ == "__main__":
    main()
