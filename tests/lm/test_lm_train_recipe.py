"""The training recipe: config overrides, the LR schedule, 2-process DDP, exact resumption after a kill.

The DDP run and the run that gets killed are subprocesses of ``recipes/lm/train.py``: Lightning's
DDP re-runs ``sys.argv`` in its second rank, which must be the script, not pytest.
"""

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lm.module import warmup_cosine
from semanticodec_lm.training.runs import load_config
from recipes.lm.train import main as train_main
from recipes.lm.train_text_tokenizer import main as train_tokenizer_main

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "recipes" / "lm" / "train.py"
TINY = REPO / "recipes" / "lm" / "configs" / "tiny.yaml"


def train_args(manifest: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [
        "--config", str(TINY), f"data.manifest={manifest}", f"run_dir={run_dir}", "trainer.accelerator=cpu",
        "data.batch_size=2", "data.max_frames=12", "trainer.log_every_n_steps=1", *overrides,
    ]


def environment() -> dict:
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("WANDB_API_KEY", None)
    return env


def summaries(output: str) -> list[dict]:
    # Two ranks share one stdout: a summary may be glued to the other rank's progress output.
    decoder = json.JSONDecoder()
    prefix = "LM_TRAIN_SUMMARY "
    return [decoder.raw_decode(output, match.end())[0] for match in re.finditer(prefix, output)]


def run(command: list[str], timeout: float = 240) -> list[dict]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment(), cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return summaries(result.stdout)


def test_two_process_ddp_run_trains_on_both_ranks(token_corpus, tmp_path):
    reports = run([sys.executable, str(SCRIPT), *train_args(
        token_corpus, tmp_path / "run", "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=3",
        "logger=none", "trainer.val_check_interval=3",
    )])
    assert sorted(r["rank"] for r in reports) == [0, 1]
    assert all(r["world_size"] == 2 and r["global_step"] == 3 and r["batches"] == 3 for r in reports)
    assert reports[0]["first_batch"] != reports[1]["first_batch"]  # each rank read its own data
    assert reports[0]["parameters"] == reports[1]["parameters"]  # gradients were all-reduced
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def checkpoint_step(path: Path) -> tuple[int, int]:
    """(global step, AdamW step) stored in a Lightning checkpoint, loaded without executing code."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    adam_steps = [int(s["step"]) for s in checkpoint["optimizer_states"][0]["state"].values()]
    return checkpoint["global_step"], max(adam_steps)


def test_training_resumes_after_a_kill(token_corpus, tmp_path, recwarn):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    # A constant learning rate, so that runs planned for different lengths train alike.
    settings = ("checkpoint.every_n_train_steps=3", "trainer.val_check_interval=50",
                "optim.warmup_steps=1", "optim.min_lr_ratio=1.0")
    args = train_args(token_corpus, run_dir, *settings)
    first = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args, "trainer.max_steps=100000"], env=environment(), cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not last.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # its own session: the trainer and wandb's helper
        first.wait()
    assert last.exists(), "the first run wrote no checkpoint before the deadline"
    saved_step, saved_adam_step = checkpoint_step(last)
    assert saved_step >= 3 and saved_adam_step == saved_step
    assert list((run_dir / "wandb").glob("offline-run-*")), "wandb did not log offline"

    # The restart runs in this process (one Lightning import fewer); single-device is safe here.
    report = train_main([*args, f"trainer.max_steps={saved_step + 4}", "logger=none"])
    assert report["start_step"] == saved_step
    assert report["start_optimizer_step"] == saved_adam_step
    assert report["global_step"] == report["optimizer_step"] == saved_step + 4
    assert report["batches"] == 4
    # Stopped between checkpoint intervals, the run still leaves its final state to resume from.
    assert checkpoint_step(last) == (saved_step + 4, saved_step + 4)
    assert not [w for w in recwarn if "not resumable" in str(w.message)]  # resumed mid-epoch in place

    fresh = train_main([*train_args(token_corpus, tmp_path / "fresh", *settings),
                        f"trainer.max_steps={saved_step + 4}", "logger=none"])
    assert fresh["parameters"] == report["parameters"]  # same data, same updates: the kill changed nothing


def test_config_overrides_and_errors(tmp_path):
    config = load_config(TINY, ["trainer.max_steps=7", "optim.lr=0.5", "model.pattern=delay", "trainer.new_flag=[1, 2]"])
    assert config["trainer"]["max_steps"] == 7 and config["optim"]["lr"] == 0.5
    assert config["model"]["pattern"] == "delay" and config["trainer"]["new_flag"] == [1, 2]
    assert isinstance(config["optim"]["lr"], float) and config["model"]["size"] == "tiny"
    with pytest.raises(SystemExit, match="section.key=value"):
        load_config(TINY, ["trainer.max_steps"])
    with pytest.raises(SystemExit, match="unknown key"):
        load_config(TINY, ["optimiser.lr=1"])
    with pytest.raises(SystemExit, match="no such config file"):
        load_config(tmp_path / "absent.yaml", [])
    with pytest.raises(SystemExit, match=r"unknown key\(s\) \['batchsize'\] in section 'data'"):
        train_main(["--config", str(TINY), f"run_dir={tmp_path / 'run'}", "data.batchsize=3"])


def test_warmup_then_cosine_decay():
    values = [warmup_cosine(step, warmup_steps=10, total_steps=110, min_lr_ratio=0.1) for step in range(130)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(values[:10], values[1:10]))
    assert all(a >= b for a, b in zip(values[10:110], values[11:110]))
    assert values[60] == pytest.approx(0.55) and values[110] == pytest.approx(0.1) and values[129] == pytest.approx(0.1)


def test_tokenizer_recipe_reads_training_captions(token_corpus, tmp_path):
    vocab_size = train_tokenizer_main(["--manifest", str(token_corpus), "--out-prefix", str(tmp_path / "t"), "--vocab-size", "40"])
    assert (tmp_path / "t.model").is_file() and 8 <= vocab_size <= 40
