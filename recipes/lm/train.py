"""Train an audio language model on codec token files.

    python recipes/lm/train.py --config recipes/lm/configs/tiny.yaml \
        data.manifest=data/tokens/manifest.jsonl run_dir=runs/lm-tiny

Any config entry can be overridden as ``section.key=value`` (the value is read as YAML), e.g.
``trainer.devices=8 trainer.strategy=ddp trainer.precision=bf16-mixed trainer.max_steps=100000``.
Everything under ``trainer:`` goes to ``lightning.Trainer`` as is. A run restarted with the same
``run_dir`` resumes from ``<run_dir>/checkpoints/last.ckpt``. A new run with ``model.init_from=<LM folder
or shipped name>`` (e.g. ``model.init_from=default``, as the codec stages' ``model.init_from``) starts from
that LM's weights wherever the shapes allow (:mod:`lm.warm_start`; its tokens must come from the same
codec, or with ``model.init_from_other_codec=true`` it gives its blocks and text rows only, and with
``model.align_tokens=<token manifest of the same clips tokenized by that LM's codec>`` also its audio
rows, translated by which ids share frames (:func:`lm.warm_start.co_occurrence`); a deeper
model of the same width (``model.n_layers=8`` from a 4-layer LM) grows from it, its added layers
starting as identity; the optimizer and the schedule start afresh. ``optim.warm_lr_scale=0.1``
trains the weights it copied at a tenth of ``optim.lr`` (the added layers at the full rate), so a
re-warmed schedule does not undo what the source had learned. Logs go to wandb (offline unless
WANDB_API_KEY is set; ``logger=csv`` or ``logger=none`` to skip wandb).

Each rank prints one line ``LM_TRAIN_SUMMARY {json}`` at the end (steps, batches, where it started).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from codec.manifest import ManifestError
from codec.tokenfile import load_tokens
from lm.api import LMFolderError, load_lm_folder
from lm.config import lm_config
from lm.data import ShardCache, read_manifest
from lm.layout import TokenLayout
from lm.module import AudioLMModule, TokenDataModule
from lm.text import TextTokenizer
from lm.warm_start import WarmStartError, check_same_codec, co_occurrence, warm_start
from semanticodec_lm.training.runs import (
    AtomicCheckpointIO,
    RunSummary,
    load_config,
    make_logger,
    print_line,
    section,
)

# Model-section keys that say where the weights start, not the model's shape (not LMConfig fields).
START_KEYS = ("init_from", "init_from_other_codec", "align_tokens")


def model_fields(config: dict, tokenizer: TextTokenizer | None) -> dict:
    """The model section, with vocabulary sizes the config leaves out taken from the data."""
    fields = dict(config.get("model") or {})
    if "semantic_vocab_size" not in fields or "acoustic_vocab_size" not in fields:
        rows = read_manifest(config["data"]["manifest"], "train")
        if not rows:
            raise SystemExit(f"{config['data']['manifest']}: no training rows")
        codec = load_tokens(rows[0].tokens).codec
        fields.setdefault("semantic_vocab_size", int(codec["semantic_vocab_size"]))
        fields.setdefault("acoustic_vocab_size", int(codec["acoustic_vocab_size"]))
    if tokenizer is not None:
        fields.setdefault("text_vocab_size", tokenizer.vocab_size)
    return fields


def aligned_counts(manifest: str | Path, aligned: str | Path, source_codec: dict,
                   vocab: dict[str, tuple[int, int]]) -> dict[str, torch.Tensor]:
    """Co-occurrence counts per stream ("semantic", "acoustic": [new_vocab, old_vocab] float64) of the
    ``train`` clips of ``manifest`` and of ``aligned`` (the same clips, matched by their ``id``, tokenized
    by the codec ``source_codec`` names); ``vocab`` gives the (new, old) vocabulary sizes per stream.
    SystemExit when ``aligned`` holds another codec's tokens or no clip of ``manifest``."""
    try:
        theirs = {row.record["id"]: row for row in read_manifest(aligned, "train") if "id" in row.record}
        ours = [row for row in read_manifest(manifest, "train") if row.record.get("id") in theirs]
    except ManifestError as error:
        raise SystemExit(f"model.align_tokens: {error}") from None
    if not ours:
        raise SystemExit(f"model.align_tokens={aligned}: none of its train clips (matched by id) is in {manifest}")
    try:
        check_same_codec(source_codec, load_tokens(theirs[ours[0].record["id"]].tokens).codec)
    except WarmStartError as error:
        raise SystemExit(f"model.align_tokens={aligned}: not the tokens of model.init_from's codec: {error}") from None
    new_shards = ShardCache(TokenLayout(vocab["semantic"][0], vocab["acoustic"][0]))
    old_shards = ShardCache(TokenLayout(vocab["semantic"][1], vocab["acoustic"][1]))
    try:
        pairs = [(new_shards.item(row), old_shards.item(theirs[row.record["id"]])) for row in ours]
    except ValueError as error:
        raise SystemExit(f"model.align_tokens: {error}") from None
    return {stream: co_occurrence(((new[:, index], old[:, index]) for new, old in pairs), *vocab[stream])
            for index, stream in enumerate(("semantic", "acoustic"))}


def start_from(module: AudioLMModule, name: str, manifest: str | Path, tokenizer: TextTokenizer | None,
               other_codec: bool = False, align_tokens: str | Path | None = None) -> dict:
    """Copy the LM ``name`` (a folder or shipped name) into ``module`` where shapes allow; returns the
    report. SystemExit when it cannot load, or was trained on another codec's tokens and ``other_codec``
    (``model.init_from_other_codec``) is false; with it true, such an LM gives its blocks and text rows,
    and its audio rows translated through ``align_tokens`` (:func:`aligned_counts`) when given."""
    try:
        folder = load_lm_folder(name)
    except LMFolderError as error:
        raise SystemExit(f"model.init_from: {error}") from None
    rows = read_manifest(manifest, "train")
    if not rows:
        raise SystemExit(f"{manifest}: no training rows")
    same_audio = True
    try:
        check_same_codec(folder.codec, load_tokens(rows[0].tokens).codec)
    except WarmStartError as error:
        if not other_codec:
            raise SystemExit(f"model.init_from={name}: {error} (model.init_from_other_codec=true copies its "
                             "blocks and text rows only)") from None
        same_audio = False
    translations = None
    if align_tokens is not None and not same_audio:
        ours, theirs = module.model.config, folder.model.config
        translations = aligned_counts(manifest, align_tokens, folder.codec, {
            "semantic": (ours.semantic_vocab_size, theirs.semantic_vocab_size),
            "acoustic": (ours.acoustic_vocab_size, theirs.acoustic_vocab_size)})
    same_text = (tokenizer is not None and folder.tokenizer is not None
                 and Path(tokenizer.path).read_bytes() == Path(folder.tokenizer.path).read_bytes())
    report = warm_start(module.model, folder.model, same_text=same_text, same_audio=same_audio,
                        translations=translations)
    module.mark_warm(report.trained_parameters())
    print_line(f"model.init_from={name}: {report.summary()}")
    return report.to_dict()


def main(argv: list[str] | None = None) -> dict:
    """Train as configured; returns this rank's summary (also printed as LM_TRAIN_SUMMARY)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML file (recipes/lm/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    L.seed_everything(int(config.get("seed", 0)), workers=True, verbose=False)

    run_dir = Path(config.get("run_dir", "runs/lm"))
    run_dir.mkdir(parents=True, exist_ok=True)
    data = section(config, "data", TokenDataModule)
    if "manifest" not in data:
        raise SystemExit("data.manifest is required (a token manifest, JSON Lines)")
    tokenizer = TextTokenizer(data["text_tokenizer"]) if data.get("text_tokenizer") else None
    fields = model_fields(config, tokenizer)
    init_from = fields.pop("init_from", None)
    init_from_other_codec = bool(fields.pop("init_from_other_codec", False))
    align_tokens = fields.pop("align_tokens", None)
    if align_tokens is not None and not (init_from and init_from_other_codec):
        raise SystemExit("model.align_tokens translates the audio rows of model.init_from's LM of another codec: "
                         "it needs model.init_from and model.init_from_other_codec=true")
    model_config = lm_config(fields.pop("size", "small"), **fields)
    datamodule = TokenDataModule(layout=model_config.layout, seed=int(config.get("seed", 0)), **data)
    if datamodule.max_sequence_length() > model_config.max_seq_len:
        raise SystemExit(
            f"data.max_frames={datamodule.max_frames} makes sequences of up to {datamodule.max_sequence_length()} "
            f"ids, more than model.max_seq_len={model_config.max_seq_len}"
        )
    try:
        module = AudioLMModule(model_config.to_dict(), **section(config, "optim", AudioLMModule))
    except ValueError as error:
        raise SystemExit(str(error)) from None

    checkpoint_dir = run_dir / "checkpoints"
    checkpoints = ModelCheckpoint(
        dirpath=checkpoint_dir, filename="step{step}", auto_insert_metric_name=False,
        save_last=True, enable_version_counter=False, **section(config, "checkpoint", ModelCheckpoint),
    )
    summary = RunSummary("inputs")
    trainer = L.Trainer(
        default_root_dir=run_dir,
        logger=make_logger(config, run_dir),
        callbacks=[checkpoints, summary],
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # TokenDataModule splits batches across ranks itself
        enable_model_summary=False,
        **(config.get("trainer") or {}),
    )
    last = checkpoint_dir / "last.ckpt"
    started_from = None
    if init_from and not last.exists():  # a resumed run already holds its weights
        started_from = start_from(module, init_from, data["manifest"], tokenizer, init_from_other_codec,
                                  align_tokens)
    trainer.fit(module, datamodule=datamodule, ckpt_path=last if last.exists() else None, weights_only=True)
    # A stop by max_time (or max_steps between intervals) would otherwise leave last.ckpt behind.
    trainer.save_checkpoint(last, weights_only=False)
    report = summary.report(trainer)
    if started_from is not None:
        report["init_from"] = {"name": str(init_from), **started_from}
    print_line("LM_TRAIN_SUMMARY " + json.dumps(report))
    return report


if __name__ == "__main__":
    main()
