"""The driver the LM recipes share (continuation, text-to-audio): tokenize, train, export, validate, evaluate.

Tokenization and training run as subprocesses (``python -m <module>``, the modules the calling recipe
names in :class:`LMSteps`), so that each can start its own DDP ranks on GPUs and nodes; the
driver keeps a marker per finished step (``<run_dir>/steps/<name>.json``: the exact command and a
digest of its input) and skips a step whose command and input have not changed. Both steps resume
by themselves after a kill (finished shards, ``last.ckpt``); generated samples on disk are kept as
long as the model and the evaluation settings are the same.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import soundfile
import torch

from codec.audio import write_audio
from codec.config import SAMPLE_RATE
from codec.files import write_text_atomic
from lm.api import export_checkpoint, load_lm_folder
from lm.data import TokenSequenceDataset, collate, max_sequence_length, training_captions
from lm.data import read_manifest as read_token_rows
from lm.module import token_losses
from lm.text import train_text_tokenizer as train_sentencepiece
from semanticodec_lm.corpus.manifest import evenly_spaced, read_manifest
from semanticodec_lm.corpus.token_corpus import CONFIG_KEYS as TOKENIZE_KEYS
from semanticodec_lm.corpus.token_corpus import MANIFEST_FILE, REPORT_FILE
from semanticodec_lm.measure import KindProbe, stated_properties
from semanticodec_lm.training.config import flatten_overrides, load_recipe_config
from semanticodec_lm.training.runs import load_config as load_train_config

REPO = Path(__file__).resolve().parents[2]  # configs named relative to it are found from anywhere
RECIPE_KEYS = {"seed", "run_dir", "logger", "wandb", "tokenize", "text_tokenizer", "train", "evaluate", "model"}


@dataclass(frozen=True)
class LMSteps:
    """What the driver runs, named by the recipe that calls it: the tokenize and LM-training modules
    (run as ``python -m <module> --config <yaml> key=value...``) and the configs used when the recipe's
    ``tokenize`` or ``train`` section names none (paths relative to the repository root)."""

    tokenize_module: str
    train_module: str
    tokenize_config: str
    train_config: str


def digest(path: Path) -> str:
    """A short SHA-256 of a file's bytes ("missing" when it does not exist): a step's input identity."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"


def weights_digest(module: torch.nn.Module) -> str:
    """A short SHA-256 of a module's state dict (names, dtypes, shapes and bytes): which weights made a sample."""
    sha = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        sha.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        sha.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()[:16]


def step_done(run_dir: Path, name: str, command: list[str]) -> dict[str, Any] | None:
    """The result recorded by a finished step with this exact command, else None."""
    try:
        marker = json.loads((run_dir / "steps" / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return marker.get("result") if marker.get("command") == command else None


def mark_done(run_dir: Path, name: str, command: list[str], result: dict[str, Any]) -> None:
    """Record that step ``name`` finished with ``command`` (atomically)."""
    marker = json.dumps({"command": command, "result": result}, indent=2)
    write_text_atomic(run_dir / "steps" / f"{name}.json", marker + "\n")


def config_path(name: str | Path) -> Path:
    """A config file named relative to the working directory, else to the repository root."""
    path = Path(name)
    return path if path.is_absolute() or path.exists() else REPO / path


def run_module(module: str, args: list[str], what: str) -> str:
    """Run ``python -m module args`` in this working directory (output streamed); returns its stdout."""
    command = [sys.executable, "-m", module, *args]
    print(f"[{what}] {' '.join(command)}", flush=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    if process.wait() != 0:
        raise SystemExit(f"[{what}] failed with exit status {process.returncode}")
    return "".join(lines)


def prepare_tokens(config: dict[str, Any], run_dir: Path, steps: LMSteps) -> tuple[Path, dict[str, Any]]:
    """Tokenize the corpus as the ``tokenize`` section says; returns (token manifest, tokenize report)."""
    section = dict(config.get("tokenize") or {})
    base = config_path(section.get("config", steps.tokenize_config))
    overrides = flatten_overrides(section.get("overrides"))
    resolved = load_recipe_config(base, overrides, TOKENIZE_KEYS)
    out = Path(resolved["out"]).absolute()
    command = ["--config", str(base), *overrides]
    key = [*command, f"# corpus {digest(Path(resolved['manifest']))}"]
    report_path = out / REPORT_FILE
    if step_done(run_dir, "tokenize", key) is None or not report_path.is_file():
        started = time.monotonic()
        run_module(steps.tokenize_module, command, "tokenize")
        if not report_path.is_file():
            raise SystemExit(f"[tokenize] {steps.tokenize_module} finished without writing {report_path}")
        mark_done(run_dir, "tokenize", key, {"seconds": round(time.monotonic() - started, 1)})
    report = json.loads(report_path.read_text(encoding="utf-8"))
    report["step_seconds"] = step_done(run_dir, "tokenize", key)["seconds"]
    return out / MANIFEST_FILE, report


def train_text_tokenizer(config: dict[str, Any], run_dir: Path, manifest: Path) -> Path:
    """Train the caption tokenizer (sentencepiece, as the ``text_tokenizer`` section says) on the token
    manifest's training captions; returns the ``.model`` file."""
    section = dict(config.get("text_tokenizer") or {})
    prefix = run_dir / "text" / "captions"
    vocab_size, model_type = int(section.get("vocab_size", 256)), str(section.get("model_type", "unigram"))
    model_path = prefix.with_name(prefix.name + ".model")
    key = [f"vocab_size={vocab_size}", f"model_type={model_type}", f"# tokens {digest(manifest)}"]
    if step_done(run_dir, "text_tokenizer", key) is None or not model_path.is_file():
        captions = training_captions(manifest)
        if not captions:
            raise SystemExit(f"{manifest}: no training captions for the text tokenizer")
        tokenizer = train_sentencepiece(captions, prefix, vocab_size, model_type)
        mark_done(run_dir, "text_tokenizer", key, {"vocab_size": tokenizer.vocab_size})
    return model_path


def train_and_export(config: dict[str, Any], run_dir: Path, manifest: Path, tokenize_report: dict[str, Any],
                     steps: LMSteps, text_tokenizer: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Train the LM (``steps.train_module``) and export ``last.ckpt`` as an LM folder (``<run_dir>/model``).

    Returns (model folder, train summary with the step's wall time).
    """
    section = dict(config.get("train") or {})
    base = config_path(section.get("config", steps.train_config))
    command = ["--config", str(base), f"data.manifest={manifest}", f"run_dir={run_dir / 'train'}",
               f"seed={int(config.get('seed', 0))}", f"logger={config.get('logger', 'wandb')}"]
    if text_tokenizer is not None:
        command.append(f"data.text_tokenizer={text_tokenizer}")
    command += flatten_overrides({"wandb": config["wandb"]} if config.get("wandb") else None)
    command += flatten_overrides(section.get("overrides"))
    key = [*command, f"# tokens {digest(manifest)}"]
    if text_tokenizer is not None:
        key.append(f"# text tokenizer {digest(text_tokenizer)}")
    summary = step_done(run_dir, "train", key)
    model_dir = run_dir / "model"
    if summary is None or not (model_dir / "config.json").is_file():
        started = time.monotonic()
        output = run_module(steps.train_module, command, "train")
        reports = [json.loads(line.split(" ", 1)[1]) for line in output.splitlines()
                   if line.startswith("LM_TRAIN_SUMMARY ")]
        rank_zero = next((report for report in reports if report.get("rank") == 0), {})
        summary = {**rank_zero, "seconds": round(time.monotonic() - started, 1)}
        export_checkpoint(run_dir / "train" / "checkpoints" / "last.ckpt", model_dir,
                          tokenize_report["codec_identity"], tokenizer_path=text_tokenizer,
                          codec_source=resolve_codec_source(tokenize_report["codec"]),
                          info={"train": summary, "token_manifest": str(manifest)})
        mark_done(run_dir, "train", key, summary)
    return model_dir, summary


class TrainedLM(NamedTuple):
    """What the first half of a generation recipe produced (see :func:`tokenize_and_train`)."""

    manifest: Path
    tokenize_report: dict[str, Any]
    model_dir: Path
    train_summary: dict[str, Any]
    validation: dict[str, Any]
    timings: dict[str, float]


def existing_model(spec: str, tokenize_report: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """An LM folder (path or shipped name) to evaluate instead of training one; its codec must be the
    tokenized corpus's. Returns (folder, its training summary plus ``seconds`` 0: nothing was trained here)."""
    from codec.tokenfile import identity_mismatch
    from lm.api import LMFolderError, resolve_lm_folder

    try:
        folder = resolve_lm_folder(spec)
        loaded = load_lm_folder(folder)
    except LMFolderError as error:
        raise SystemExit(f"model: {error}") from None
    mismatch = identity_mismatch(loaded.codec, tokenize_report["codec_identity"])
    if mismatch:
        raise SystemExit(f"model {folder}: trained on tokens of another codec ({loaded.codec.get('config_name')!r}) "
                         f"than the corpus tokenized with {tokenize_report['codec']} ({mismatch})")
    return folder, {**(loaded.info.get("train") or {}), "model": str(folder), "seconds": 0.0}


def tokenize_and_train(config: dict[str, Any], run_dir: Path, steps: LMSteps, *, with_text: bool) -> TrainedLM:
    """Tokenize the corpus, train the text tokenizer (``with_text``), train and export the LM, validate it.

    With ``model`` set in the config, that LM folder is evaluated instead and nothing is trained.
    """
    manifest, tokenize_report = prepare_tokens(config, run_dir, steps)
    if config.get("model"):
        model_dir, train_summary = existing_model(str(config["model"]), tokenize_report)
    else:
        text_model = train_text_tokenizer(config, run_dir, manifest) if with_text else None
        model_dir, train_summary = train_and_export(config, run_dir, manifest, tokenize_report, steps, text_model)
    validation = validation_metrics(model_dir, manifest, train_data_settings(config, manifest, steps))
    timings = {"tokenize": tokenize_report["step_seconds"], "train": train_summary["seconds"]}
    return TrainedLM(manifest, tokenize_report, model_dir, train_summary, validation, timings)


def samples_folder(folder: Path, key: dict[str, Any]) -> Path:
    """``folder`` for generated samples, emptied first when it holds samples made for another ``key``
    (other weights or evaluation settings), so that only stale samples are ever made again."""
    stamp = folder / "made_with.json"
    text = json.dumps(key, sort_keys=True, default=str)
    if folder.is_dir() and (not stamp.is_file() or stamp.read_text(encoding="utf-8") != text):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stamp, text)
    return folder


def write_in_batches(rows: list[dict[str, Any]], out_dir: Path, batch_size: int,
                     make: Callable[[list[int], int], Sequence[torch.Tensor]], what: str) -> list[Path]:
    """One wav per row, ``out_dir/<clip id>.wav``, made ``batch_size`` rows at a time by
    ``make(row indices, batch number)`` (one float waveform [N] per row, 16 kHz). A batch whose wavs
    all exist is skipped, so a killed evaluation resumes. Returns the paths in row order."""
    paths = [out_dir / f"{safe_name(row['id'])}.wav" for row in rows]
    for number, start in enumerate(range(0, len(rows), batch_size)):
        batch = list(range(start, min(start + batch_size, len(rows))))
        if all(paths[i].is_file() for i in batch):
            continue
        waves = make(batch, number)
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, wave in zip(batch, waves):
            write_audio(paths[i], wave)
        print(f"[{what}] {batch[-1] + 1}/{len(rows)} clips", flush=True)
    return paths


def reconstruct_clips(codec: Any, manifest: Path, rows: list[dict[str, Any]], seconds: float,
                      settings: dict[str, Any], out_dir: Path, seed: int) -> list[Path]:
    """The codec's reconstruction (encode, then decode with the evaluation's decoder settings) of the first
    ``seconds`` of each row's audio, one wav per row in ``out_dir`` (existing ones kept); batch n uses
    seed + n. What an LM generates through this codec can keep a property no better than these do."""
    samples = int(round(seconds * SAMPLE_RATE))

    def make(batch: list[int], number: int) -> list[torch.Tensor]:
        waves = [torch.from_numpy(clip_audio(manifest, rows[i])[:samples]) for i in batch]
        audio = codec.reconstruct(waves, SAMPLE_RATE, steps=int(settings["decode_steps"]), sampler=settings["sampler"],
                                  seed=seed + number)
        return [row_audio[0, : len(wave)] for wave, row_audio in zip(waves, audio)]

    return write_in_batches(rows, out_dir, int(settings["batch_size"]), make, "reconstruct")


def resolve_codec_source(spec: str) -> str:
    """A codec spec as an LM folder should record it: shipped names as is, folders as absolute paths."""
    return str(Path(spec).resolve()) if Path(spec).is_dir() else spec


def train_data_settings(config: dict[str, Any], manifest: Path, steps: LMSteps) -> dict[str, Any]:
    """The ``data`` section the LM was trained with (base config plus overrides)."""
    section = dict(config.get("train") or {})
    resolved = load_train_config(config_path(section.get("config", steps.train_config)),
                                 flatten_overrides(section.get("overrides")) + [f"data.manifest={manifest}"])
    return dict(resolved.get("data") or {})


def clip_group(record: dict[str, Any]) -> str:
    """The group a clip's caption worth is reported under: its domain, "synthetic" appended for the
    synthetic world's clips (whose captions state pitch, tempo and kind)."""
    domain = str(record.get("domain") or "unknown")
    return f"{domain}, synthetic" if record.get("synthetic") else domain


@torch.no_grad()
def validation_metrics(model_dir: Path, manifest: Path, data: dict[str, Any], batch_size: int = 8) -> dict[str, Any]:
    """Token-weighted cross-entropy and perplexity of the exported LM on the ``valid`` clips (no caption dropout).

    For a text-conditioned LM also the loss with each clip given another clip's caption (captions
    rotated by half the clips) and with no caption: how much the LM uses its caption; the same three
    losses per clip group (:func:`clip_group`) under ``by_group`` and per kind of target id
    (semantic, acoustic) under ``by_stream``: which of the codec's streams the caption informs.
    """
    folder = load_lm_folder(model_dir)
    rows = read_token_rows(manifest, "valid")
    if not rows:
        return {"valid_clips": 0, "valid_loss": None, "valid_perplexity": None}
    layout = folder.model.config.layout
    max_text = int(data.get("max_text_tokens", 64))
    max_frames = int(data.get("max_frames", 500))
    text_tokens = max_text if folder.tokenizer else None
    while max_frames > 1 and max_sequence_length(layout, max_frames, text_tokens) > folder.model.config.max_seq_len:
        max_frames -= 1
    groups = [clip_group(row.record) for row in rows]
    streams = {"semantic ids": (layout.semantic_offset, layout.acoustic_offset),
               "acoustic ids": (layout.acoustic_offset, layout.acoustic_offset + layout.acoustic_vocab_size)}
    Sums = dict[tuple[str, str], tuple[float, int]]  # (group, "all" or a stream) -> (nats, target ids)

    def summed_losses(clips: list, text_dropout: float = 0.0) -> Sums:
        sums: Sums = {}
        for group in dict.fromkeys(groups):  # batches never mix groups, so each group's sum is its own
            members = [clip for clip, g in zip(clips, groups) if g == group]
            dataset = TokenSequenceDataset(members, layout, max_frames, folder.tokenizer, text_dropout=text_dropout,
                                           max_text_tokens=max_text, random_crop=False)
            for start in range(0, len(dataset), batch_size):
                batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
                losses, targets = token_losses(folder.model, batch), batch["targets"]
                masks = {"all": targets != -100, **{name: (targets >= low) & (targets < high)
                                                    for name, (low, high) in streams.items()}}
                for kind, mask in masks.items():
                    total, count = sums.get((group, kind), (0.0, 0))
                    sums[group, kind] = (total + float(losses[mask].sum()), count + int(mask.sum()))
        return sums

    def mean(sums: Sums, group: str | None = None, kind: str = "all") -> float:
        parts = [cell for (g, k), cell in sums.items() if k == kind and group in (None, g)]
        return sum(total for total, _ in parts) / max(sum(count for _, count in parts), 1)

    own = summed_losses(rows)
    loss = mean(own)
    metrics: dict[str, Any] = {"valid_clips": len(rows), "valid_tokens": sum(c for (_, k), (_, c) in own.items() if k == "all"),
                               "valid_loss": round(loss, 4), "valid_perplexity": round(math.exp(loss), 3)}
    by_group: dict[str, dict[str, Any]] = {group: {"clips": groups.count(group), "loss": round(mean(own, group), 4)}
                                           for group in dict.fromkeys(groups)}
    by_stream: dict[str, dict[str, Any]] = {
        stream: {"ids": sum(c for (_, k), (_, c) in own.items() if k == stream), "loss": round(mean(own, kind=stream), 4)}
        for stream in streams}
    captioned = [i for i, row in enumerate(rows) if row.caption is not None]
    if folder.tokenizer is not None and len(captioned) > 1:
        swapped = list(rows)
        half = len(captioned) // 2  # neighbours in a manifest often share a source and a caption
        for i, j in zip(captioned, captioned[half:] + captioned[:half]):
            swapped[i] = replace(rows[i], caption=rows[j].caption)
        other, none = summed_losses(swapped), summed_losses(rows, text_dropout=1.0)
        metrics["valid_loss_other_caption"] = round(mean(other), 4)
        metrics["valid_loss_no_caption"] = round(mean(none), 4)
        for group, cells in by_group.items():
            cells["other_caption"] = round(mean(other, group), 4)
            cells["no_caption"] = round(mean(none, group), 4)
        for stream, cells in by_stream.items():
            cells["other_caption"] = round(mean(other, kind=stream), 4)
            cells["no_caption"] = round(mean(none, kind=stream), 4)
    metrics["by_group"] = by_group
    metrics["by_stream"] = by_stream
    return metrics


def caption_worth_table(validation: dict[str, Any]) -> str:
    """Markdown: per clip group, then per kind of target id, of :func:`validation_metrics`, the losses and
    the caption's worth (nats per id: loss with another clip's caption minus loss with its own); empty
    without caption controls."""
    groups = validation.get("by_group") or {}
    if not groups or "other_caption" not in next(iter(groups.values())):
        return ""
    tables = []
    for title, size, rows in (("clip group", "clips", sorted(groups.items())),
                              ("target ids", "ids", list((validation.get("by_stream") or {}).items()))):
        if not rows:
            continue
        lines = [f"| {title} | {size} | loss | another caption | no caption | caption worth |", "|---|---|---|---|---|---|"]
        for name, cells in rows:
            lines.append(f"| {name} | {cells[size]} | {cells['loss']:.3f} | {cells['other_caption']:.3f} "
                         f"| {cells['no_caption']:.3f} | {cells['other_caption'] - cells['loss']:.3f} |")
        tables.append("\n".join(lines) + "\n\n")
    return "".join(tables)


def token_rows(manifest: Path, split: str) -> list[dict[str, Any]]:
    """Full token-manifest rows (all the clip's fields) of one split."""
    return [row.record for row in read_token_rows(manifest, split)]


def clip_audio(manifest: Path, row: dict[str, Any]) -> np.ndarray:
    """The original audio of a token-manifest row: float32 [N] at 16 kHz (``audio`` is relative to the manifest)."""
    path = Path(row["audio"])
    wave, rate = soundfile.read(manifest.parent / path if not path.is_absolute() else path, dtype="float32")
    if rate != SAMPLE_RATE or wave.ndim != 1:
        raise ValueError(f"{row['audio']}: expected 16-kHz mono audio, got {rate} Hz with shape {wave.shape}")
    return wave


def fit_kind_probe(corpus_manifest: Path, max_clips: int, seed: int) -> KindProbe | None:
    """A :class:`KindProbe` fitted on up to ``max_clips`` synthetic training clips of the corpus (evenly
    spaced; all of them, not only the tokenized ones); None with fewer than two kinds."""
    rows = evenly_spaced([row for row in read_manifest(corpus_manifest)
                          if row.get("split") == "train" and "class" in stated_properties(row)], max_clips)
    kinds = [stated_properties(row)["class"] for row in rows]
    if len(set(kinds)) < 2:
        return None
    waves = [soundfile.read(corpus_manifest.parent / row["path"], dtype="float32")[0] for row in rows]
    return KindProbe.fit(waves, kinds, seed=seed)


def safe_name(clip_id: str) -> str:
    """A file name for a clip id."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in clip_id).strip("._") or "clip"


def write_results(run_dir: Path, results: dict[str, Any], markdown: str) -> None:
    """``results.json`` and ``results.md`` in ``run_dir``, atomically."""
    write_text_atomic(run_dir / "results.json", json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n")
    write_text_atomic(run_dir / "results.md", markdown)
