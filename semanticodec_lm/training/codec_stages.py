"""What every codec training stage shares: config, corpus loaders, the Lightning run, stage weights files.

A stage script builds its LightningModule and calls :func:`run_stage`, which

- reads the YAML config (``--config``) with ``section.key=value`` overrides (the LM recipe's parser),
- trains with ``lightning.Trainer(**config["trainer"])`` (devices, strategy=ddp/fsdp, precision,
  num_nodes are plain Trainer flags), resuming from ``<run_dir>/checkpoints/last.ckpt`` when it exists,
- writes checkpoints atomically, logs to wandb (offline unless ``WANDB_API_KEY`` is set) or csv,
  prints progress lines to the console, and
- with every checkpoint (and at the end) writes ``<run_dir>/weights.safetensors``: the stage's trained
  weights under the :class:`~codec.model.SemantiCodec` key names (``recipes/codec/export.py``
  assembles them), so a run stopped at any point can be exported without resuming it.

Each rank prints ``CODEC_TRAIN_SUMMARY {json}`` when it finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Sampler

from codec.checkpoints import load_state
from codec.config import SAMPLE_RATE, SEGMENT_SAMPLES, CodecConfig, get_config
from codec.files import atomic_path
from codec.frontend import kaldi_fbank
from lm.module import warmup_cosine
from semanticodec_lm.corpus.datasets import ManifestDataset, collate_clips
from semanticodec_lm.training.config import load_recipe_config
from semanticodec_lm.training.runs import (
    SECTIONS,
    AtomicCheckpointIO,
    RunSummary,
    make_logger,
    print_line,
    section,
)

WEIGHTS_FILE = "weights.safetensors"
VALIDATION_SALT = 2**40  # keeps validation draws apart from the training steps' (seeded by global step)
CONFIG_NAME_KEY = "codec_config"
STAGE_KEY = "stage"


# Data -------------------------------------------------------------------------------------------
class RankEpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)`` keys of this rank's share of ``length`` clips, reshuffled every epoch.

    Each rank takes every ``world``-th clip of one seeded permutation, so ranks read disjoint clips
    and all ranks yield the same number of keys (the tail of the permutation is dropped).
    """

    def __init__(self, length: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True) -> None:
        self.length, self.seed, self.rank, self.world, self.shuffle = length, seed, rank, world, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=generator)
        else:
            order = torch.arange(self.length)
        order = order[: len(self) * self.world]
        return iter([(int(index), self.epoch) for index in order[self.rank :: self.world]])

    def __len__(self) -> int:
        return self.length // self.world


def rank_loader(datamodule: L.LightningDataModule, dataset: torch.utils.data.Dataset, train: bool, what: str,
                collate_fn: Callable | None = None) -> DataLoader:
    """This rank's loader of ``dataset`` with ``datamodule``'s ``batch_size``, ``num_workers`` and ``seed``:
    shuffled every epoch and cut to whole batches when ``train``; SystemExit naming ``what`` when a training
    set cannot give every rank one batch."""
    trainer = datamodule.trainer
    rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
    if train and len(dataset) < world * datamodule.batch_size:
        raise SystemExit(f"{what}: only {len(dataset)} for {world} rank(s) of batch {datamodule.batch_size}")
    sampler = RankEpochSampler(len(dataset), datamodule.seed, rank, world, shuffle=train)
    return DataLoader(dataset, batch_size=datamodule.batch_size, sampler=sampler, num_workers=datamodule.num_workers,
                      collate_fn=collate_fn, drop_last=train, persistent_workers=datamodule.num_workers > 0)


class AudioDataModule(L.LightningDataModule):
    """Random crops of the corpus ``train`` split (validation on ``valid``; ``test`` is never read).

    Batches are dicts from :func:`semanticodec_lm.corpus.datasets.collate_clips`: ``audio`` float32
    [B, segment_samples] (zero-padded past ``length``), ``length`` int64 [B], ``domain`` list[str].
    Run the Trainer with ``use_distributed_sampler=False``: each rank picks its own clips.
    """

    def __init__(
        self,
        manifest: str | os.PathLike,
        segment_seconds: float = SEGMENT_SAMPLES / SAMPLE_RATE,
        batch_size: int = 8,
        domains: list[str] | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.manifest = Path(manifest)
        self.segment_seconds, self.batch_size, self.domains = segment_seconds, batch_size, domains
        self.num_workers, self.seed = num_workers, seed
        if not self.manifest.is_file():
            raise SystemExit(f"{self.manifest}: no such manifest (build the corpus first: recipes/data/README.md)")

    def dataset(self, split: str, random_crop: bool) -> ManifestDataset:
        return ManifestDataset(self.manifest, splits=[split], domains=self.domains,
                               segment_seconds=self.segment_seconds, random_crop=random_crop, seed=self.seed)

    def _loader(self, split: str, train: bool) -> DataLoader:
        return rank_loader(self, self.dataset(split, random_crop=train), train,
                           f"{self.manifest}: {split!r} clips (domains {self.domains})", collate_clips)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list:
        world = self.trainer.world_size if self.trainer else 1
        if len(self.dataset("valid", random_crop=False)) < world:  # every rank needs a clip
            return []
        return self._loader("valid", train=False)


def segment_fbank(audio: torch.Tensor) -> torch.Tensor:
    """Normalised Kaldi fbank of 10.24-s crops: float [B, 163840] -> float32 [B, 1024, 128].

    A crop shorter than 10.24 s arrives zero-padded, exactly as the official front-end pads a clip.
    """
    if audio.dim() != 2 or audio.shape[1] != SEGMENT_SAMPLES:
        raise ValueError(f"expected 10.24-s crops [batch, {SEGMENT_SAMPLES}], got {list(audio.shape)} "
                         "(set data.segment_seconds to 10.24)")
    with full_precision(audio.device):
        return torch.stack([kaldi_fbank(row) for row in audio.float().cpu()]).to(audio.device)


@contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Switch mixed-precision autocast off: frozen front-ends and nearest-code searches stay float32
    under ``trainer.precision=bf16-mixed``."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


# Modules ----------------------------------------------------------------------------------------
class StageModule(L.LightningModule):
    """Base of the stage modules: codec config, AdamW with warm-up + cosine, per-step generators.

    Subclasses set ``stage`` and implement ``training_loss(batch, generator) -> (loss, logs)`` and
    ``export_weights() -> {SemantiCodec key: tensor}``.
    """

    stage = ""

    def __init__(self, codec: str, lr: float, weight_decay: float, betas: tuple[float, float],
                 warmup_steps: int, min_lr_ratio: float, seed: int) -> None:
        super().__init__()
        self.codec_config: CodecConfig = get_config(codec)
        self.seed = seed

    def _generator(self, counter: int, per_rank: bool = True, device: torch.device | None = None) -> torch.Generator:
        """A generator seeded by (seed, rank or 0, ``counter``)."""
        rank = self.trainer.global_rank if self._trainer is not None and per_rank else 0
        mixed = ((self.seed * 1_000_003 + rank) * 1_000_003 + counter) % (2**63 - 1)
        return torch.Generator(device=device or self.device).manual_seed(mixed)

    def step_generator(self, device: torch.device | None = None, per_rank: bool = True) -> torch.Generator:
        """A generator seeded by (seed, rank, global step): resumed runs draw what an uninterrupted run
        draws. ``per_rank=False``: the same draws on every rank (for decisions all ranks must share)."""
        return self._generator(self.global_step, per_rank, device)

    def validation_generator(self, batch_idx: int) -> torch.Generator:
        """A generator seeded by (seed, rank, validation batch): every validation of a run draws the same
        noise levels and noise for its batch ``batch_idx``, so `valid` losses compare across the run."""
        return self._generator(VALIDATION_SALT + batch_idx)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def make_optimizer(self, params: list[torch.nn.Parameter], lr: float | None = None):
        hp = self.hparams
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": hp.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=lr or hp.lr, betas=tuple(hp.betas))

    def make_schedule(self, optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
        hp = self.hparams
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, hp.warmup_steps, total_steps, hp.min_lr_ratio))

    def configure_optimizers(self):
        optimizer = self.make_optimizer(self.trainable_parameters())
        schedule = self.make_schedule(optimizer, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, logs = self.training_loss(batch, self.step_generator())
        self.log_all("train", loss, logs, len(batch["length"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, logs = self.training_loss(batch, self.validation_generator(batch_idx))
        self.log_all("valid", loss, logs, len(batch["length"]))

    def log_all(self, prefix: str, loss: torch.Tensor, logs: dict[str, torch.Tensor], batch_size: int) -> None:
        sync = prefix == "valid"
        self.log(f"{prefix}/loss", loss.detach(), prog_bar=True, batch_size=batch_size, sync_dist=sync)
        for name, value in logs.items():
            self.log(f"{prefix}/{name}", value.detach(), batch_size=batch_size, sync_dist=sync)

    def training_loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def export_weights(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def prefixed(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict with every key prefixed (``encoder.audiomae.`` etc.), detached on the CPU."""
    return {prefix + key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}


# Stage weights files ----------------------------------------------------------------------------
def write_weights(path: Path, weights: dict[str, torch.Tensor], codec: CodecConfig, stage: str) -> Path:
    """Save a stage's weights (SemantiCodec key names) as safetensors, with the codec config name."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in weights.items()}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata={CONFIG_NAME_KEY: codec.name, STAGE_KEY: stage,
                                                     "config": json.dumps(codec.to_dict(), sort_keys=True)})
    return path


# The config entries a stage's weights depend on (None: all but the name). The AudioMAE, VAE and
# vocoder do not depend on the token rate, so one run serves the codecs of every rate.
CONFIG_KEYS_OF_STAGE = {"audiomae": ("audiomae",), "kmeans": ("audiomae", "token_rate", "semantic_vocab_size"),
                        "vae": ("vae",), "vocoder": ("vocoder",), "ldm": None}


def _stage_keys(config: dict, stage: str) -> list[str]:
    keys = CONFIG_KEYS_OF_STAGE.get(stage)
    return sorted(key for key in config if key != "name") if keys is None else list(keys)


def read_weights(path: str | os.PathLike, codec: CodecConfig, stage: str) -> dict[str, torch.Tensor]:
    """A stage's weights file (or its run folder), checked to come from ``stage`` of a codec config that
    agrees with ``codec`` on what the stage depends on (``CONFIG_KEYS_OF_STAGE``)."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise SystemExit(f"{path}: no {stage} weights (run recipes/codec/train_{stage}.py first)")
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata() or {}
    if meta.get(STAGE_KEY) != stage:
        raise SystemExit(f"{path}: holds {meta.get(STAGE_KEY)!r} weights, expected {stage!r}")
    trained_for, wanted = json.loads(meta.get("config", "{}")), codec.to_dict()
    differing = [key for key in _stage_keys(wanted, stage)  # compared as JSON: tuples come back as lists
                 if json.dumps(wanted.get(key), sort_keys=True) != json.dumps(trained_for.get(key), sort_keys=True)]
    if differing:
        raise SystemExit(f"{path}: trained for codec config {meta.get(CONFIG_NAME_KEY)!r}, which differs from "
                         f"{codec.name!r} in {', '.join(differing)}")
    return load_file(str(path))


def codec_part_state(codec_source: str, config: CodecConfig, part: str) -> dict[str, torch.Tensor]:
    """The state dict of a codec (shipped name or folder) to start a stage from (``model.init_from``),
    checked to have the same ``part`` config (``audiomae``, ``vae``, ``vocoder``) as ``config``."""
    from codec.model import SemantiCodec

    source = SemantiCodec.from_pretrained(codec_source)
    if getattr(source.config, part) != getattr(config, part):
        raise SystemExit(f"model.init_from={codec_source}: its {part} config {getattr(source.config, part)} "
                         f"differs from {config.name}'s {getattr(config, part)}")
    return source.state_dict()


def load_into(module: torch.nn.Module, prefix: str, weights: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load the ``prefix``-ed entries of ``weights`` into ``module`` (prefix removed)."""
    state = {key[len(prefix):]: value for key, value in weights.items() if key.startswith(prefix)}
    load_state(module, state, f"{source} ({prefix}*)")


# The run ----------------------------------------------------------------------------------------
class ConsoleProgress(L.Callback):
    """Prints ``[stage] step N/M loss ... (s/step)`` every ``every`` steps on rank 0 (for log files)."""

    def __init__(self, stage: str, every: int) -> None:
        self.stage, self.every = stage, max(1, every)
        self.started = time.monotonic()
        self.first_step = self.last_step = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self.last_step or step % self.every or not trainer.is_global_zero:
            return
        elapsed = time.monotonic() - self.started
        values = " ".join(f"{k.split('/', 1)[1]}={float(v):.4g}" for k, v in trainer.callback_metrics.items()
                          if k.startswith("train/"))
        print(f"[{self.stage}] step {step}/{trainer.max_steps} {values} "
              f"({elapsed / max(1, step - self.first_step):.2f} s/step)", flush=True)
        self.last_step = step

    def on_train_start(self, trainer, pl_module) -> None:
        self.first_step = trainer.global_step
        self.started = time.monotonic()


def parse_args(description: str, argv: list[str] | None, extra_sections: tuple[str, ...] = ()) -> dict:
    """``--config FILE [section.key=value ...]`` -> the config dict (see the stage YAML headers);
    ``extra_sections``: top-level keys a stage reads besides the common ones."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML file (recipes/codec/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args(argv)
    return load_recipe_config(args.config, args.overrides, SECTIONS | set(extra_sections))


class WeightsWithCheckpoints(L.Callback):
    """Rank 0 writes the stage's weights file (atomically) whenever a full checkpoint is saved."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: StageModule, checkpoint: dict) -> None:
        if trainer.is_global_zero:
            write_weights(self.path, pl_module.export_weights(), pl_module.codec_config, pl_module.stage)


def audio_data(values: dict, seed: int) -> AudioDataModule:
    """The ``data`` section's corpus crops (every stage's data unless it builds its own)."""
    values = section({"data": values}, "data", AudioDataModule)
    if "manifest" not in values:
        raise SystemExit("data.manifest is required (the corpus manifest.jsonl)")
    return AudioDataModule(seed=seed, **values)


def run_stage(config: dict, build_module: Callable[[dict, int], StageModule],
              callbacks: list[L.Callback] | None = None,
              build_data: Callable[[dict, int], L.LightningDataModule] | None = None) -> dict:
    """Train one stage as configured; returns this rank's summary (also printed as CODEC_TRAIN_SUMMARY).

    ``build_module(model_and_optim_kwargs, seed)`` makes the LightningModule from the ``model`` and
    ``optim`` sections; ``build_data(data_section, seed)`` its data (default :func:`audio_data`; a data
    module's ``batch_key`` names the batch entry the summary hashes, ``audio`` if it has none);
    ``callbacks`` join the run's own. Rank 0 writes ``<run_dir>/weights.safetensors`` with every
    checkpoint, the last one when training ends.
    """
    seed = int(config.get("seed", 0))
    L.seed_everything(seed, workers=True, verbose=False)
    run_dir = Path(config.get("run_dir", "runs/codec"))
    run_dir.mkdir(parents=True, exist_ok=True)
    datamodule = (build_data or audio_data)(dict(config.get("data") or {}), seed)
    module = build_module({**(config.get("model") or {}), **(config.get("optim") or {})}, seed)

    checkpoint_dir = run_dir / "checkpoints"
    checkpoints = ModelCheckpoint(
        dirpath=checkpoint_dir, filename="step{step}", auto_insert_metric_name=False, save_last=True,
        enable_version_counter=False, **section(config, "checkpoint", ModelCheckpoint),
    )
    summary = RunSummary(getattr(datamodule, "batch_key", "audio"))
    trainer_options = dict(config.get("trainer") or {})
    progress = ConsoleProgress(module.stage, int(trainer_options.get("log_every_n_steps", 50)))
    trainer = L.Trainer(
        default_root_dir=run_dir, logger=make_logger(config, run_dir),
        callbacks=[checkpoints, WeightsWithCheckpoints(run_dir / WEIGHTS_FILE), summary, progress, *(callbacks or [])],
        plugins=[AtomicCheckpointIO()], use_distributed_sampler=False, enable_model_summary=False,
        **trainer_options,
    )
    last = checkpoint_dir / "last.ckpt"
    trainer.fit(module, datamodule=datamodule, ckpt_path=last if last.exists() else None, weights_only=True)
    # A stop by max_time (or max_steps between intervals) would otherwise leave last.ckpt (and the
    # weights written with it) behind the trained state.
    trainer.save_checkpoint(last, weights_only=False)  # optimizer state too: the run resumes from it
    report = summary.report(trainer)
    print_line("CODEC_TRAIN_SUMMARY " + json.dumps(report))
    return report


def model_kwargs(values: dict, target, seed: int) -> dict:
    """``values`` (model + optim sections) checked against ``target``'s keyword arguments, plus the seed."""
    return {**section({"model": values}, "model", target), "seed": seed}
