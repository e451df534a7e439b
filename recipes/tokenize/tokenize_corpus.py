"""Tokenize a corpus: a clip manifest -> sharded codec token files + a token manifest.

    python -m recipes.tokenize.tokenize_corpus --config recipes/tokenize/configs/tiny.yaml \
        manifest=data/corpus/manifest.jsonl out=data/tokens/tiny codec=default

Any config key can be overridden as ``key=value`` (YAML), e.g. ``trainer.devices=8
trainer.strategy=ddp trainer.num_nodes=2``: the codec runs on every device of every node through
Lightning's predict loop, each rank encoding and writing its own shards. Output in ``out``: the
folder that ``semanticodec_lm.corpus.token_corpus`` describes; the token manifest's rows hold
``tokens``, ``item``, ``frames`` plus the clip's own fields (``id``, ``caption``, ``split``,
``domain``, ``labels``, ``transcript``, ``language``, ``params``, ...; ``audio`` is the clip's path
relative to ``out``); each shard's ``.json`` also records its bad clips and a fingerprint of what it
was made from.

Re-running skips finished shards (same clips, same codec), so a killed run resumes. A clip that
cannot be read or encoded is reported and skipped. Rank 0 prints ``TOKENIZE_SUMMARY {json}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from codec.audio import load_audio
from codec.config import SAMPLE_RATE
from codec.files import write_text_atomic
from codec.manifest import SPLITS, ManifestError, write_manifest
from codec.model import SemantiCodec
from codec.tokenfile import SUFFIX as TOKEN_SUFFIX
from codec.tokenfile import load_tokens, save_tokens
from semanticodec_lm.corpus.manifest import evenly_spaced, read_manifest
from semanticodec_lm.corpus.token_corpus import CONFIG_KEYS, MANIFEST_FILE, REPORT_FILE
from semanticodec_lm.training.config import load_recipe_config
from semanticodec_lm.training.runs import print_line


@dataclass(frozen=True)
class ShardJob:
    """One shard: its name (``<split>-<n>``) and the manifest rows it holds, in order."""

    name: str
    rows: tuple[dict[str, Any], ...]
    fingerprint: str


@dataclass
class ShardAudio:
    """A shard's clips as loaded: (row, float32 waveform [N] at 16 kHz) pairs, and the clips that failed."""

    job: ShardJob
    clips: list[tuple[dict[str, Any], torch.Tensor]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def select_rows(config: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The manifest rows to tokenize, per split, after the ``domains``/``synthetic`` filters.

    With ``limit``, at most that many rows per split, evenly spaced in manifest order (a manifest
    sorted by domain keeps every domain).
    """
    manifest = Path(config["manifest"])
    splits = list(config.get("splits") or SPLITS)
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise SystemExit(f"splits: unknown split(s) {unknown}; known: {list(SPLITS)}")
    domains, synthetic, limit = config.get("domains"), config.get("synthetic"), config.get("limit")
    chosen: dict[str, list[dict[str, Any]]] = {split: [] for split in splits}
    try:
        rows = list(read_manifest(manifest))
    except ManifestError as error:
        raise SystemExit(str(error)) from None
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get("path"), str) or not isinstance(row.get("id"), str):
            raise SystemExit(f"{manifest}:{number}: a clip row needs string 'id' and 'path'")
        split = row.get("split")
        if split not in chosen or (domains and row.get("domain") not in domains):
            continue
        if synthetic is not None and bool(row.get("synthetic")) != bool(synthetic):
            continue
        chosen[split].append({**row, "path": str(manifest.parent / row["path"])})
    if limit is not None:
        chosen = {split: evenly_spaced(candidates, int(limit)) for split, candidates in chosen.items()}
    return chosen


def plan_shards(rows_by_split: dict[str, list[dict[str, Any]]], shard_size: int, codec_hash: str,
                channel_policy: str) -> list[ShardJob]:
    """Cut each split's rows into consecutive shards of ``shard_size`` (independent of the number of ranks)."""
    if shard_size < 1:
        raise SystemExit(f"shard_size must be at least 1, got {shard_size}")
    jobs = []
    for split, rows in rows_by_split.items():
        for index, start in enumerate(range(0, len(rows), shard_size)):
            chunk = tuple(rows[start : start + shard_size])
            blob = json.dumps([codec_hash, channel_policy, [(row["id"], row["path"]) for row in chunk]])
            jobs.append(ShardJob(f"{split}-{index:05d}", chunk, hashlib.sha256(blob.encode()).hexdigest()[:16]))
    return jobs


def shard_paths(out: Path, name: str) -> tuple[Path, Path]:
    """(token file, rows file) of shard ``name``."""
    return out / "shards" / f"{name}{TOKEN_SUFFIX}", out / "shards" / f"{name}.json"


def read_finished(out: Path, job: ShardJob) -> dict[str, Any] | None:
    """The rows file of a finished shard made from the same clips and codec, else None."""
    tokens_path, rows_path = shard_paths(out, job.name)
    try:
        record = json.loads(rows_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("fingerprint") != job.fingerprint:
        return None
    if record.get("rows") and not tokens_path.is_file():
        return None
    return record


class ShardDataset(Dataset):
    """Shards of one rank; item i is :class:`ShardAudio` (loading happens in DataLoader workers)."""

    def __init__(self, jobs: list[ShardJob], channel_policy: str) -> None:
        self.jobs = jobs
        self.channel_policy = channel_policy

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> ShardAudio:
        job = self.jobs[index]
        shard = ShardAudio(job)
        for row in job.rows:
            try:
                shard.clips.append((row, load_audio(row["path"], channel_policy=self.channel_policy)))
            except ValueError as error:  # AudioError: unreadable, empty, non-finite ...
                shard.problems.append(f"{row['id']}: {error}")
        return shard


class TokenizeModule(L.LightningModule):
    """Encodes one shard per predict step and writes its token file and rows file."""

    allow_zero_length_dataloader_with_multiple_devices = True  # a rank may have no shards left

    def __init__(self, codec: SemantiCodec, out: Path, encode_batch_size: int) -> None:
        super().__init__()
        self.codec = codec
        self.tokens_digest = codec.tokens_digest()
        self.out = out
        self.encode_batch_size = encode_batch_size
        self.counts = torch.zeros(3, dtype=torch.float64)  # clips, audio seconds, bad clips this run
        self.started = time.monotonic()

    def setup(self, stage: str) -> None:
        self.started = time.monotonic()  # on every rank, once the processes are up

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # waveforms stay on the CPU: the front-end runs there, as the codec's own encode does

    def _encode(self, shard: ShardAudio) -> list[tuple[dict[str, Any], torch.Tensor, torch.Tensor]]:
        """(row, waveform, tokens [T, 2]) of every clip that encodes; the others go to shard.problems."""
        waves = [wave for _, wave in shard.clips]
        try:
            tokens, lengths = self.codec.encode_waveforms(waves, batch_size=self.encode_batch_size)
            return [(row, wave, tokens[i, :n].cpu())
                    for i, ((row, wave), n) in enumerate(zip(shard.clips, lengths.tolist()))]
        except (RuntimeError, ValueError):
            pass  # find the clip(s) at fault one by one
        encoded = []
        for row, wave in shard.clips:
            try:
                tokens, lengths = self.codec.encode_waveforms([wave], batch_size=self.encode_batch_size)
            except (RuntimeError, ValueError) as error:
                shard.problems.append(f"{row['id']}: cannot be encoded ({error})")
                continue
            encoded.append((row, wave, tokens[0, : int(lengths[0])].cpu()))
        return encoded

    def predict_step(self, shard: ShardAudio, batch_idx: int) -> None:
        tokens_path, rows_path = shard_paths(self.out, shard.job.name)
        encoded = self._encode(shard) if shard.clips else []
        manifest_rows = []
        if encoded:
            lengths = torch.tensor([len(tokens) for _, _, tokens in encoded])
            padded = torch.zeros(len(encoded), int(lengths.max()), 2, dtype=torch.long)
            for i, (_, _, tokens) in enumerate(encoded):
                padded[i, : len(tokens)] = tokens
            save_tokens(tokens_path, padded, lengths, self.codec.config,
                        extra={"ids": [row["id"] for row, _, _ in encoded]}, tokens_digest=self.tokens_digest)
            for i, (row, wave, tokens) in enumerate(encoded):
                clip = {key: value for key, value in row.items() if key != "path"}
                clip.setdefault("duration", wave.numel() / SAMPLE_RATE)
                manifest_rows.append({**clip, "tokens": f"shards/{tokens_path.name}", "item": i, "frames": len(tokens),
                                      "audio": os.path.relpath(row["path"], self.out)})
        for problem in shard.problems:
            print(f"warning: skipped {problem}", file=sys.stderr, flush=True)
        record = {"fingerprint": shard.job.fingerprint, "rows": manifest_rows, "problems": shard.problems}
        write_text_atomic(rows_path, json.dumps(record, ensure_ascii=False) + "\n")
        seconds = sum(wave.numel() for _, wave, _ in encoded) / SAMPLE_RATE
        self.counts += torch.tensor([len(encoded), seconds, len(shard.problems)], dtype=torch.float64)


def _as_is(shard: ShardAudio) -> ShardAudio:
    return shard


class ShardDataModule(L.LightningDataModule):
    """Plans the shards and gives each rank the unfinished ones at its place in round-robin order."""

    def __init__(self, jobs: list[ShardJob], out: Path, channel_policy: str, num_workers: int) -> None:
        super().__init__()
        self.jobs = jobs
        self.out = out
        self.channel_policy = channel_policy
        self.num_workers = num_workers
        self.finished_before = 0

    def predict_dataloader(self) -> DataLoader:
        # Called on every rank before the first shard is written, so all ranks see the same to-do list.
        todo = [job for job in self.jobs if read_finished(self.out, job) is None]
        self.finished_before = len(self.jobs) - len(todo)
        rank, world = self.trainer.global_rank, self.trainer.world_size
        dataset = ShardDataset(todo[rank::world], self.channel_policy)
        return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=self.num_workers,
                          collate_fn=_as_is)


def merge(out: Path, jobs: list[ShardJob]) -> tuple[list[dict[str, Any]], list[str]]:
    """All shards' rows in plan order and their bad clips; raises SystemExit naming an unfinished shard."""
    rows, problems = [], []
    for job in jobs:
        record = read_finished(out, job)
        if record is None:
            raise SystemExit(f"{shard_paths(out, job.name)[1]}: shard not finished; run the command again")
        rows += record["rows"]
        problems += record["problems"]
    return rows, problems


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Tokenize as configured; returns the report (rank 0) or this rank's counts (other ranks)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML file (recipes/tokenize/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value or trainer.key=value")
    args = parser.parse_args(argv)
    config = load_recipe_config(args.config, args.overrides, CONFIG_KEYS)
    for key in ("manifest", "out"):
        if not config.get(key):
            raise SystemExit(f"{args.config}: '{key}' is required")
    out = Path(config["out"])
    channel_policy = config.get("channel_policy", "first")
    try:
        codec = SemantiCodec.from_pretrained(config.get("codec") or "default")
    except ValueError as error:  # CheckpointError: no such codec, weights that do not fit
        raise SystemExit(f"codec: {error}") from None
    jobs = plan_shards(select_rows(config), int(config.get("shard_size", 64)), codec.config.config_hash(),
                       channel_policy)
    if not jobs:
        raise SystemExit(f"{config['manifest']}: no clips selected (check splits, domains, synthetic, limit)")
    (out / "shards").mkdir(parents=True, exist_ok=True)

    module = TokenizeModule(codec, out, int(config.get("encode_batch_size", 8)))
    data = ShardDataModule(jobs, out, channel_policy, int(config.get("num_workers", 0)))
    trainer = L.Trainer(default_root_dir=out, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        use_distributed_sampler=False, **(config.get("trainer") or {}))
    trainer.predict(module, datamodule=data, return_predictions=False)
    try:
        return _finish(trainer, module, data, out, jobs, config)
    finally:
        # Each rank leaves the process group itself: a gloo group still alive at interpreter exit
        # can abort the process ("terminate called without an active exception") after the work is done.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _finish(trainer: L.Trainer, module: TokenizeModule, data: ShardDataModule, out: Path, jobs: list,
            config: dict) -> dict[str, Any]:
    """Rank 0 merges the shards into the token manifest and writes the report; returns this rank's summary."""
    strategy = trainer.strategy
    strategy.barrier("tokenize-merge")
    clips, seconds, bad = strategy.reduce(module.counts.to(strategy.root_device), reduce_op="sum").tolist()
    if trainer.global_rank != 0:
        return {"rank": trainer.global_rank, "clips": int(module.counts[0])}
    wall = time.monotonic() - module.started
    rows, problems = merge(out, jobs)
    write_manifest(out / MANIFEST_FILE, rows)
    report = {
        "manifest": str(config["manifest"]), "codec": str(config.get("codec") or "default"),
        "codec_identity": load_tokens(out / rows[0]["tokens"]).codec if rows else None,
        "clips": len(rows), "audio_seconds": round(sum(r.get("duration", 0.0) for r in rows), 2),
        "shards": len(jobs), "finished_before": data.finished_before, "problems": problems,
        "this_run": {"world_size": trainer.world_size, "clips": int(clips), "audio_seconds": round(seconds, 2),
                     "bad_clips": int(bad), "wall_seconds": round(wall, 2),
                     "clips_per_second": round(clips / wall, 3) if wall > 0 else None,
                     "audio_seconds_per_second": round(seconds / wall, 3) if wall > 0 else None},
    }
    write_text_atomic(out / REPORT_FILE, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    run = report["this_run"]
    print_line(f"tokenized {run['clips']} clip(s) ({run['audio_seconds']:.1f} s of audio) in {run['wall_seconds']:.1f} s "
               f"on {run['world_size']} rank(s): {run['clips_per_second']} clips/s, {run['audio_seconds_per_second']} "
               f"audio s/s; {data.finished_before} of {len(jobs)} shard(s) were already done; {len(problems)} bad "
               f"clip(s) skipped -> {out / MANIFEST_FILE}")
    summary = {key: report[key] for key in ("clips", "shards", "finished_before", "this_run")}
    print_line("TOKENIZE_SUMMARY " + json.dumps(summary))
    return report


if __name__ == "__main__":
    main()
