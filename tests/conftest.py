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
PARITY_DIR = REPO_ROOT.parent / "shared" / "parity"


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """The official-code fixtures (``../shared/parity``); tests using it skip when it is absent."""
    if not PARITY_DIR.is_dir():
        pytest.skip(f"parity fixtures not found at {PARITY_DIR}")
    return PARITY_DIR
