"""Lightning runs of the recipes: config sections, atomic checkpoints, loggers, where a run started.

Every training recipe (LM, codec stages) reads a YAML config with these top-level ``SECTIONS``,
passes ``trainer:`` to ``lightning.Trainer`` as is, writes checkpoints through
:class:`AtomicCheckpointIO` and reports a :class:`RunSummary` per rank.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.plugins.io import TorchCheckpointIO

from codec.files import atomic_path
from semanticodec_lm.training.config import load_recipe_config

SECTIONS = {"seed", "run_dir", "logger", "model", "data", "optim", "trainer", "checkpoint", "wandb"}


def print_line(text: str) -> None:
    """Write ``text`` and its newline to stdout in one write, flushed: print() writes them apart, and
    ranks sharing a stdout could then interleave their lines."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def load_config(path: str | Path, overrides: list[str]) -> dict:
    """The YAML file at ``path`` with ``a.b=value`` overrides applied (values parsed as YAML)."""
    return load_recipe_config(path, overrides, SECTIONS)


def section(config: dict, name: str, target) -> dict:
    """``config[name]``, checked to hold only keyword arguments that ``target`` accepts."""
    values = dict(config.get(name) or {})
    accepted = set(inspect.signature(target).parameters)
    unknown = sorted(set(values) - accepted)
    if unknown:
        raise SystemExit(f"unknown key(s) {unknown} in section {name!r}; known: {sorted(accepted)}")
    return values


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file first, so a kill never leaves a broken last.ckpt."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path) as temporary:
            super().save_checkpoint(checkpoint, temporary, storage_options)


class RunSummary(L.Callback):
    """Records where training started (step, optimizer step) and what this rank trained on
    (``batch_key``: the batch entry hashed to identify the first batch)."""

    def __init__(self, batch_key: str) -> None:
        self.batch_key = batch_key
        self.start_step = self.start_optimizer_step = 0
        self.batches = 0
        self.first_batch = ""

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_step = trainer.global_step
        self.start_optimizer_step = optimizer_step(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.batches:
            self.first_batch = hashlib.sha256(batch[self.batch_key].cpu().numpy().tobytes()).hexdigest()[:16]
        self.batches += 1

    def report(self, trainer) -> dict:
        return {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "start_step": self.start_step,
            "start_optimizer_step": self.start_optimizer_step,
            "global_step": trainer.global_step,
            "optimizer_step": optimizer_step(trainer),
            "batches": self.batches,
            "first_batch": self.first_batch,
            "parameters": parameter_digest(trainer.lightning_module),
        }


def parameter_digest(module: L.LightningModule) -> str:
    """A short hash of all weights: equal on every DDP rank when gradients were synchronised."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def optimizer_step(trainer) -> int:
    """AdamW's own step counter (0 before the first update)."""
    states = trainer.optimizers[0].state.values() if trainer.optimizers else []
    return max((int(s["step"]) for s in states if "step" in s), default=0)


def make_logger(config: dict, run_dir: Path):
    """The run's logger from ``config["logger"]``: wandb (offline without WANDB_API_KEY), csv, or none (False)."""
    kind = config.get("logger", "wandb")
    if kind in (None, "none", False):
        return False
    if kind == "csv":
        return L.pytorch.loggers.CSVLogger(run_dir, name="logs")
    if kind != "wandb":
        raise SystemExit(f"logger must be wandb, csv or none, got {kind!r}")
    from lightning.pytorch.loggers import WandbLogger

    # The run id lives in the run folder so that a resumed run logs into the same wandb run.
    id_file = run_dir / "wandb_id.txt"
    if not id_file.exists():
        id_file.write_text(uuid.uuid4().hex[:12])
    options = dict(config.get("wandb") or {})
    return WandbLogger(
        save_dir=str(run_dir), id=id_file.read_text().strip(), resume="allow",
        offline=not os.environ.get("WANDB_API_KEY"), **options,
    )


def log_to_wandb(config: dict[str, Any], folder: Path, metrics: dict[str, Any], tables: dict[str, str]) -> None:
    """Log metrics and Markdown tables to the wandb run kept in ``folder`` (its ``wandb_id.txt``, made if
    missing; for the LM recipes the training's run). Offline unless WANDB_API_KEY is set; a no-op unless
    ``config["logger"]`` is ``wandb``."""
    if config.get("logger", "wandb") != "wandb":
        return
    import wandb

    folder.mkdir(parents=True, exist_ok=True)
    id_file = folder / "wandb_id.txt"
    if not id_file.is_file():
        id_file.write_text(uuid.uuid4().hex[:12])
    options = dict(config.get("wandb") or {})
    run = wandb.init(dir=str(folder), id=id_file.read_text().strip(), resume="allow", reinit="finish_previous",
                     mode="online" if os.environ.get("WANDB_API_KEY") else "offline", **options)
    run.summary.update({f"eval/{key}": value for key, value in metrics.items() if isinstance(value, (int, float))})
    for name, markdown in tables.items():
        run.log({f"eval/{name}": wandb.Html(f"<pre>{markdown}</pre>")})
    run.finish()
