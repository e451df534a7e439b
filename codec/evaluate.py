"""``semanticodec eval``: reconstruct the clips of a manifest with one or more codecs and score them.

From Python: ``run_eval(EvalSettings(manifest=..., output=..., models=("default",)))``; from the
command line:

    semanticodec eval --manifest data/corpus/manifest.jsonl -o eval/ \\
        --model 'ours-{rate}=runs/small-{rate}' --token-rates 100,50,25 --steps 25 --seed 0

Models: each ``--model [LABEL=]SOURCE`` (repeatable) names a shipped codec, a folder written by
``save_pretrained`` or ``official-<rate>-<vocab>``; ``{rate}`` in it is replaced by every rate of
``--token-rates`` (default 100,50,25), so one option can name a family of codecs. A codec whose
token rate is not among ``--token-rates`` (when given) is left out.

Per clip (16 kHz; the reconstruction is cut or zero-padded to the original's length): ViSQOL
(speech mode for speech, audio mode otherwise), PESQ-WB and STOI (speech), mel distance,
multi-resolution STFT distance, SI-SDR, and for English speech with a transcript the WER of the
pocketsphinx recogniser on the original and on the reconstruction; plus the measured token rate,
bitrate and encode/decode real-time factors. Outputs in ``-o``: ``clips.csv`` (one row per model and
clip), ``results.json`` (settings, clips, aggregates per model and domain, skipped clips),
``results.md`` (the paper-shaped table) and ``spectrograms/<model>/<clip>.png``. A bad clip is
reported and skipped for every model (exit status 1); configuration errors raise ValueError.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from codec import metrics
from codec.config import SAMPLE_RATE, TOKEN_RATES
from codec.files import atomic_path, write_text_atomic
from codec.manifest import read_rows

METRICS = ("visqol", "pesq", "stoi", "mel", "stft", "sisdr", "wer")
CORE_METRICS = ("mel", "stft", "sisdr")
SPEECH_ONLY = ("pesq", "stoi")
MIN_SECONDS = 0.2  # the 2048-point STFT resolution needs more than 1024 samples; ViSQOL wants more
CLIP_COLUMNS = (
    "model", "source", "token_rate", "nominal_bitrate", "clip", "domain", "language", "seconds",
    "frames", "measured_token_rate", "measured_bitrate", "encode_seconds", "decode_seconds",
    "visqol", "visqol_mode", "pesq", "stoi", "mel_distance", "stft_distance", "si_sdr",
    "wer_original", "wer_reconstruction", "transcript", "hypothesis_original", "hypothesis_reconstruction", "notes",
)
AVERAGED = ("visqol", "pesq", "stoi", "mel_distance", "stft_distance", "si_sdr")


@dataclass(frozen=True)
class ManifestClip:
    """One manifest row with its audio path resolved (relative paths are relative to the manifest)."""

    id: str
    path: Path
    domain: str
    language: str | None
    transcript: str | None
    row: dict[str, Any]


@dataclass(frozen=True)
class ModelSpec:
    """A codec to evaluate: its table label, its source (name or folder) and an optional checkpoint folder."""

    label: str
    source: str
    checkpoint_path: str | None = None


def read_manifest_clips(manifest: str | os.PathLike, split: str = "test", limit: int | None = None
                        ) -> tuple[list[ManifestClip], list[str]]:
    """Read a JSON Lines manifest defensively: (clips of ``split`` in file order, up to ``limit``; problems).

    ``split="all"`` keeps every row. A malformed line or a row without a usable ``path`` is not
    fatal: it is described in the returned problems and left out. Raises ``codec.manifest.ManifestError``
    (a ValueError) if the file is missing or cannot be read.
    """
    manifest = Path(manifest)
    clips, problems, seen = [], [], set()
    for line in read_rows(manifest, problems=problems):
        where, row = line.where, line.row
        if not isinstance(row.get("path"), str) or not row["path"]:
            problems.append(f"{where}: a row must have a non-empty string 'path'")
            continue
        if split != "all" and row.get("split") != split:
            continue
        clip_id = str(row.get("id") or row["path"])
        if clip_id in seen:
            problems.append(f"{where}: duplicate clip id {clip_id!r}")
            continue
        seen.add(clip_id)
        language, transcript = row.get("language"), row.get("transcript")
        clips.append(ManifestClip(
            id=clip_id,
            path=(manifest.parent / row["path"]) if not os.path.isabs(row["path"]) else Path(row["path"]),
            domain=str(row.get("domain") or "unknown"),
            language=language if isinstance(language, str) and language else None,
            transcript=transcript if isinstance(transcript, str) and transcript.strip() else None,
            row=row,
        ))
        if limit is not None and len(clips) >= limit:
            break
    return clips, problems


def parse_token_rates(text: str) -> list[int]:
    """``"100,50,25"`` -> [100, 50, 25]; raises ValueError for anything but the codec's token rates."""
    try:
        rates = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--token-rates must be comma-separated integers, got {text!r}") from None
    if not rates or any(rate not in TOKEN_RATES for rate in rates):
        raise ValueError(f"--token-rates must be taken from {TOKEN_RATES}, got {text!r}")
    return rates


def parse_model_specs(models: Iterable[str], token_rates: list[int] | None,
                      checkpoint_path: str | None = None) -> list[ModelSpec]:
    """Expand ``[LABEL=]SOURCE`` strings (``{rate}`` placeholders over ``token_rates``) into ModelSpecs."""
    specs = []
    for text in models:
        # A label is whatever precedes the first '=', unless that '=' sits inside a folder path.
        label, _, source = text.partition("=") if "=" in text.split("/")[0] else ("", "", text)
        if not source:
            raise ValueError(f"--model {text!r} names no codec")
        rates = (token_rates or [100, 50, 25]) if "{rate}" in text else [None]
        for rate in rates:
            filled = [value.replace("{rate}", str(rate)) if value and rate is not None else value
                      for value in (label, source, checkpoint_path)]
            specs.append(ModelSpec(label=filled[0] or Path(filled[1]).name, source=filled[1],
                                   checkpoint_path=filled[2]))
    labels = [spec.label for spec in specs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"two models share the label(s) {duplicates}; give them labels with LABEL=SOURCE")
    return specs


def is_english(clip: ManifestClip) -> bool:
    """True for a clip whose language tag is English (``en``, ``en-US``, ``english``)."""
    return clip.language is not None and re.match(r"(?i)en(g|$|[-_])", clip.language) is not None


def score_clip(reference: torch.Tensor, reconstruction: torch.Tensor, domain: str,
               names: Iterable[str]) -> tuple[dict[str, float | str], list[str]]:
    """Signal metrics of one clip (both float32 [N] at 16 kHz): (scores by column name, notes on failures).

    An undefined metric (e.g. PESQ without speech) is NaN with a note; WER is handled by the caller.
    """
    speech = domain == "speech"
    jobs: dict[str, Callable[[], float]] = {
        "mel": lambda: metrics.mel_distance(reference, reconstruction),
        "stft": lambda: metrics.multi_resolution_stft_distance(reference, reconstruction),
        "sisdr": lambda: metrics.si_sdr(reference, reconstruction),
        "visqol": lambda: metrics.visqol(reference, reconstruction, "speech" if speech else "audio"),
        "pesq": lambda: metrics.pesq_wb(reference, reconstruction),
        "stoi": lambda: metrics.stoi(reference, reconstruction),
    }
    columns = {"mel": "mel_distance", "stft": "stft_distance", "sisdr": "si_sdr"}
    scores: dict[str, float | str] = {}
    notes = []
    for name in names:
        if name not in jobs or (name in SPEECH_ONLY and not speech):
            continue
        try:
            scores[columns.get(name, name)] = jobs[name]()
        except metrics.MetricError as error:
            scores[columns.get(name, name)] = math.nan
            notes.append(str(error))
    if "visqol" in names:
        scores["visqol_mode"] = "speech" if speech else "audio"
    return scores, notes


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and domain, plus domain ``all``: metric means over finite values, corpus WER
    (pooled word errors), bitrate and token rate (total bits or tokens / total seconds) and RTFs."""
    out = []
    for model in dict.fromkeys(row["model"] for row in rows):
        mine = [row for row in rows if row["model"] == model]
        for domain in ["all", *sorted({row["domain"] for row in mine})]:
            group = mine if domain == "all" else [row for row in mine if row["domain"] == domain]
            seconds = sum(row["seconds"] for row in group)
            summary = {"model": model, "domain": domain, "clips": len(group), "seconds": seconds,
                       "token_rate": group[0]["token_rate"], "nominal_bitrate": group[0]["nominal_bitrate"],
                       "measured_token_rate": sum(row["frames"] for row in group) * 2 / seconds,
                       "measured_bitrate": sum(row["measured_bitrate"] * row["seconds"] for row in group) / seconds,
                       "encode_rtf": sum(row["encode_seconds"] for row in group) / seconds,
                       "decode_rtf": sum(row["decode_seconds"] for row in group) / seconds}
            for column in AVERAGED:
                values = _finite(row.get(column) for row in group)
                summary[column] = sum(values) / len(values) if values else math.nan
                summary[f"{column}_count"] = len(values)
                if column == "visqol":
                    for mode in metrics.VISQOL_MODES:
                        scored = _finite(row.get("visqol") for row in group if row.get("visqol_mode") == mode)
                        summary[f"visqol_{mode}"] = sum(scored) / len(scored) if scored else math.nan
            with_text = [row for row in group if row.get("transcript")]
            for which in ("original", "reconstruction"):
                summary[f"wer_{which}"] = (metrics.word_error_rate(
                    [row["transcript"] for row in with_text], [row[f"hypothesis_{which}"] for row in with_text]
                ) if with_text else math.nan)
            summary["wer_clips"] = len(with_text)
            out.append(summary)
    return out


def _cell(value: Any, digits: int = 2, scale: float = 1.0) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return f"{value * scale:.{digits}f}"


def markdown_table(aggregates: list[dict[str, Any]]) -> str:
    """The paper-shaped table: one row per model (kbps, tokens/s, WER, ViSQOL by domain, PESQ, STOI,
    distances, RTFs), then a per-domain table of the signal metrics."""
    by = {(a["model"], a["domain"]): a for a in aggregates}
    models = list(dict.fromkeys(a["model"] for a in aggregates))
    lines = [
        "| Model | kbps | tokens/s | WER orig (%) | WER (%) ↓ | ViSQOL speech ↑ | ViSQOL music ↑ | ViSQOL sfx ↑ "
        "| PESQ ↑ | STOI ↑ | Mel ↓ | MR-STFT ↓ | SI-SDR (dB) ↑ | enc RTF | dec RTF |",
        "|" + "---|" * 15,
    ]
    for model in models:
        total = by[(model, "all")]
        visqol = [_cell(by.get((model, domain), {}).get("visqol")) for domain in ("speech", "music", "sfx")]
        lines.append(
            f"| {model} | {_cell(total['measured_bitrate'], 3, 1e-3)} | {_cell(total['measured_token_rate'], 1)} "
            f"| {_cell(total['wer_original'], 1, 100)} | {_cell(total['wer_reconstruction'], 1, 100)} "
            f"| {' | '.join(visqol)} | {_cell(total['pesq'])} | {_cell(total['stoi'], 3)} "
            f"| {_cell(total['mel_distance'], 3)} | {_cell(total['stft_distance'], 3)} | {_cell(total['si_sdr'], 1)} "
            f"| {_cell(total['encode_rtf'], 3)} | {_cell(total['decode_rtf'], 3)} |"
        )
    lines += ["", "| Model | Domain | Clips | ViSQOL ↑ | PESQ ↑ | STOI ↑ | Mel ↓ | MR-STFT ↓ | SI-SDR (dB) ↑ |",
              "|" + "---|" * 9]
    for summary in aggregates:
        lines.append(
            f"| {summary['model']} | {summary['domain']} | {summary['clips']} | {_cell(summary['visqol'])} "
            f"| {_cell(summary['pesq'])} | {_cell(summary['stoi'], 3)} | {_cell(summary['mel_distance'], 3)} "
            f"| {_cell(summary['stft_distance'], 3)} | {_cell(summary['si_sdr'], 1)} |"
        )
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def safe_name(text: str) -> str:
    """A file-name-safe version of a clip id or model label."""
    return re.sub(r"[^\w.-]+", "_", text).strip("._") or "clip"


def plot_spectrograms(path: Path, reference: torch.Tensor, reconstruction: torch.Tensor, title: str) -> None:
    """Save a PNG with the 64-bin log-mels of the original (top) and the reconstruction (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from codec.frontend import log_mel_64

    mels = [log_mel_64(reference).numpy(), log_mel_64(reconstruction).numpy()]
    low, high = min(m.min() for m in mels), max(m.max() for m in mels)
    figure, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True, constrained_layout=True)
    seconds = reference.numel() / SAMPLE_RATE
    for axis, mel, name in zip(axes, mels, ("original", "reconstruction"), strict=True):
        image = axis.imshow(mel, origin="lower", aspect="auto", vmin=low, vmax=high, cmap="magma",
                            extent=(0, seconds, 0, mel.shape[0]))
        axis.set_ylabel(f"{name}\nmel bin")
    axes[1].set_xlabel("seconds")
    axes[0].set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, label="log mel")
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)


def pick_plot_clips(clips: list[ManifestClip], count: int) -> set[str]:
    """Up to ``count`` clip ids, taken round-robin over domains so each domain gets a picture."""
    queues = {domain: [c.id for c in clips if c.domain == domain] for domain in dict.fromkeys(c.domain for c in clips)}
    chosen: list[str] = []
    while len(chosen) < count and any(queues.values()):
        for queue in queues.values():
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return set(chosen)


@dataclass(frozen=True)
class EvalSettings:
    """What ``semanticodec eval`` does: reconstruct the ``split`` clips of ``manifest`` with every codec
    of ``models`` and score them into ``output``.

    ``models``: ``[LABEL=]SOURCE`` strings (a ``{rate}`` placeholder expands over ``token_rates``);
    ``metrics``: names from ``METRICS``; ``spectrograms``: comparison images per model; the decoder
    settings (``steps``, ``cfg_scale``, ``sampler``, ``eta``, ``seed``, ``batch_size``) are those of
    :meth:`codec.model.SemantiCodec.decode`.
    """

    manifest: str
    output: str
    models: tuple[str, ...] = ("default",)
    token_rates: tuple[int, ...] | None = None
    checkpoint_path: str | None = None
    split: str = "test"
    limit: int | None = None
    metrics: tuple[str, ...] = METRICS
    spectrograms: int = 3
    save_audio: bool = False
    device: str = "cpu"
    steps: int = 50
    cfg_scale: float = 2.0
    sampler: str = "ddim"
    eta: float = 1.0
    seed: int = 0
    batch_size: int = 4

    def check(self) -> None:
        """Raise ValueError naming the setting that is wrong."""
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown or not self.metrics:
            raise ValueError(f"--metrics: unknown metric(s) {unknown or list(self.metrics)}; "
                             f"choose from {','.join(METRICS)}")
        if self.token_rates is not None and (not self.token_rates or
                                             any(rate not in TOKEN_RATES for rate in self.token_rates)):
            raise ValueError(f"--token-rates must be taken from {TOKEN_RATES}, got {list(self.token_rates)}")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"--limit must be a positive number of clips, got {self.limit}")
        if self.spectrograms < 0:
            raise ValueError(f"--spectrograms must be 0 or more, got {self.spectrograms}")


def load_codec(spec: ModelSpec, device: str):
    """Load the codec a ModelSpec names (eval mode, on ``device``); raises ValueError if it cannot."""
    from codec.model import SemantiCodec

    return SemantiCodec.from_pretrained(spec.source, checkpoint_path=spec.checkpoint_path, device=device)


class _Evaluator:
    """Reconstructs and scores clips for one run; caches decoded originals and recogniser output."""

    def __init__(self, settings: EvalSettings, names: list[str], out_dir: Path) -> None:
        from codec.audio import load_audio

        self.settings, self.names, self.out_dir = settings, names, out_dir
        self.load_audio = load_audio
        self.recognizer = metrics.SpeechRecognizer() if "wer" in names else None
        self.original_hypotheses: dict[str, str] = {}
        self.bad: dict[str, str] = {}

    def audio(self, clip: ManifestClip) -> torch.Tensor | None:
        if clip.id in self.bad:
            return None
        try:
            wave = self.load_audio(clip.path)
        except ValueError as error:  # AudioError is a ValueError
            self.bad[clip.id] = str(error)
            return None
        if wave.numel() < MIN_SECONDS * SAMPLE_RATE:
            seconds = wave.numel() / SAMPLE_RATE
            self.bad[clip.id] = f"{clip.path}: clip of {seconds:.3f} s is shorter than {MIN_SECONDS} s"
            return None
        return wave

    def run_clip(self, codec, spec: ModelSpec, clip: ManifestClip, wave: torch.Tensor, plot: bool) -> dict[str, Any]:
        args, config = self.settings, codec.config
        started = time.perf_counter()
        tokens, lengths = codec.encode_waveforms([wave.to(codec.device)])
        encoded = time.perf_counter()
        decoded = codec.decode(tokens, lengths, steps=args.steps, cfg_scale=args.cfg_scale, sampler=args.sampler,
                               eta=args.eta, seed=args.seed, batch_size=args.batch_size)
        finished = time.perf_counter()
        reconstruction = metrics.match_length(decoded[0, 0], wave.numel())
        seconds, frames = wave.numel() / SAMPLE_RATE, int(lengths[0])
        bits_per_frame = math.log2(config.semantic_vocab_size) + math.log2(config.acoustic_vocab_size)
        row: dict[str, Any] = {
            "model": spec.label, "source": spec.source, "token_rate": config.token_rate,
            "nominal_bitrate": config.bitrate, "clip": clip.id, "domain": clip.domain, "language": clip.language,
            "seconds": seconds, "frames": frames, "measured_token_rate": 2 * frames / seconds,
            "measured_bitrate": frames * bits_per_frame / seconds,
            "encode_seconds": encoded - started, "decode_seconds": finished - encoded,
        }
        scores, notes = score_clip(wave, reconstruction, clip.domain, self.names)
        row.update(scores)
        if self.recognizer is not None and clip.transcript and clip.domain == "speech" and is_english(clip):
            if clip.id not in self.original_hypotheses:
                self.original_hypotheses[clip.id] = self.recognizer.transcribe(wave)
            row.update(transcript=clip.transcript, hypothesis_original=self.original_hypotheses[clip.id],
                       hypothesis_reconstruction=self.recognizer.transcribe(reconstruction))
            for which in ("original", "reconstruction"):
                row[f"wer_{which}"] = metrics.word_error_rate(clip.transcript, row[f"hypothesis_{which}"])
        row["notes"] = "; ".join(notes)
        if plot:
            title = f"{spec.label} | {clip.id} | mel {row.get('mel_distance', math.nan):.3f}"
            plot_spectrograms(self.out_dir / "spectrograms" / safe_name(spec.label) / f"{safe_name(clip.id)}.png",
                              wave, reconstruction, title)
        if args.save_audio:
            from codec.audio import write_audio

            target = self.out_dir / "audio" / safe_name(spec.label) / f"{safe_name(clip.id)}.wav"
            target.parent.mkdir(parents=True, exist_ok=True)
            write_audio(target, reconstruction)
        return row


def _clips_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CLIP_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if isinstance(value, float) and not math.isfinite(value) else value
                         for key, value in row.items()})
    return buffer.getvalue()


def run_eval(settings: EvalSettings) -> int:
    """Reconstruct and score as ``settings`` say; writes ``clips.csv``, ``results.json`` and
    ``results.md`` (and spectrograms, audio) to ``settings.output``; returns 0, or 1 if clips were skipped.

    Raises ValueError (or MissingEvalDependency) for a configuration problem before any decoding.
    """
    settings.check()
    args = settings
    names = list(settings.metrics)
    token_rates = list(settings.token_rates) if settings.token_rates else None
    specs = parse_model_specs(settings.models or ["default"], token_rates, settings.checkpoint_path)
    metrics.check_dependencies(names)
    clips, problems = read_manifest_clips(args.manifest, args.split, args.limit)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not clips:
        raise ValueError(f"manifest {args.manifest} has no usable clips in split {args.split!r}")
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    evaluator = _Evaluator(args, names, out_dir)
    plotted = pick_plot_clips(clips, args.spectrograms)
    rows: list[dict[str, Any]] = []
    models: list[dict[str, Any]] = []
    for spec in specs:
        codec = load_codec(spec, args.device)
        if token_rates and codec.config.token_rate not in token_rates:
            print(f"note: {spec.label} runs at {codec.config.token_rate} tokens/s, not in --token-rates; skipped")
            continue
        models.append({"label": spec.label, "source": spec.source, "config": codec.config.name,
                       "token_rate": codec.config.token_rate, "bitrate": codec.config.bitrate})
        for clip in tqdm(clips, desc=f"eval {spec.label}", unit="clip"):
            wave = evaluator.audio(clip)
            if wave is None:
                continue
            try:
                rows.append(evaluator.run_clip(codec, spec, clip, wave, clip.id in plotted))
            except (ValueError, RuntimeError) as error:  # one clip the codec cannot handle: report, go on
                evaluator.bad[clip.id] = f"{clip.path}: {spec.label}: {error}"
        del codec
    if not models:
        raise ValueError(f"no model runs at the requested token rates {token_rates}")
    for clip_id, reason in evaluator.bad.items():
        tqdm.write(f"error: skipped {clip_id}: {reason}", file=sys.stderr)
    aggregates = aggregate(rows) if rows else []
    recorded = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(settings).items()}
    report = {"settings": recorded, "models": models, "clips": rows, "aggregates": aggregates,
              "skipped": [{"clip": clip_id, "reason": reason} for clip_id, reason in evaluator.bad.items()],
              "manifest_problems": problems}
    write_text_atomic(out_dir / "clips.csv", _clips_csv(rows))
    write_text_atomic(out_dir / "results.json", json.dumps(_jsonable(report), indent=2, allow_nan=False) + "\n")
    write_text_atomic(out_dir / "results.md", markdown_table(aggregates) if aggregates else "No clip was evaluated.\n")
    print(f"evaluated {len({row['clip'] for row in rows})} clip(s) with {len(models)} model(s), "
          f"skipped {len(evaluator.bad)} -> {out_dir}")
    return 1 if evaluator.bad else 0
