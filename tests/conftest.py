"""Shared test set-up: offline wandb, quiet third-party telemetry, the parity-fixture folder."""

import os
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
