"""Shared test set-up: offline wandb, quiet third-party telemetry, the parity-fixture folder, synthetic corpora."""

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Tiny models are dominated by per-op overhead; one thread is faster and immune to a busy machine.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
PARITY_DIR = REPO_ROOT / "tests" / "data" / "parity"


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """The official-code fixtures (``tests/data/parity``, see its README). A missing folder fails: parity
    is checked in every clone, never skipped."""
    if not (PARITY_DIR / "index.json").is_file():
        pytest.fail(f"parity fixtures missing at {PARITY_DIR}: they ship with the repository (git checkout tests/data)")
    return PARITY_DIR


@pytest.fixture(scope="session")
def build_synthetic_corpus() -> Callable[..., Path]:
    """A builder ``(out, world) -> manifest path`` of a corpus made only from a ``SyntheticWorld``, offline:
    no Debian package is installed or looked up (dpkg answers "not installed" for every one)."""
    from recipes.data.build import build_corpus
    from recipes.data.clips import ClipSettings
    from recipes.data.install import run_command

    def no_apt(command: list[str]):
        if command[0] == "dpkg-query":
            return run_command(["false"])
        raise AssertionError(f"a test corpus must not run {command}")

    def build(out: Path, world) -> Path:
        build_corpus(out, [world], ClipSettings(1.0, 10.0), workers=1, install=False, runner=no_apt,
                     log=lambda message: None)
        return Path(out) / "manifest.jsonl"

    return build
