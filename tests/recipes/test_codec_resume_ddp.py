"""Codec recipes as scripts: a killed run resumes at its saved step with the saved optimizer state,
and a 2-process DDP run on CPU (gloo) trains one model on both ranks.

Both are subprocesses of ``recipes/codec/train_audiomae.py``: Lightning's DDP re-runs ``sys.argv``
in its second rank, which must be the script, not pytest.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from semanticodec_lm.training.codec_stages import parse_args, run_stage
from recipes.codec.train_audiomae import AudioMAEModule
from recipes.data.world.family import SyntheticWorld

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "recipes" / "codec" / "train_audiomae.py"
CONFIG = REPO / "recipes" / "codec" / "configs" / "audiomae_tiny.yaml"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, build_synthetic_corpus) -> Path:
    out = tmp_path_factory.mktemp("codec-corpus")
    world = SyntheticWorld(16, 6, 1.0, 2.0, ("tone", "noise", "beeps"))
    return build_synthetic_corpus(out, world)


def environment() -> dict:
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("WANDB_API_KEY", None)
    return env


def args(manifest: Path, run_dir: Path, *overrides: str) -> list[str]:
    return ["--config", str(CONFIG), f"data.manifest={manifest}", f"run_dir={run_dir}", "trainer.accelerator=cpu",
            "data.batch_size=1", "trainer.log_every_n_steps=1", "trainer.val_check_interval=1000", *overrides]


def test_two_process_ddp_run_trains_one_model(corpus, tmp_path):
    command = [sys.executable, str(SCRIPT), *args(corpus, tmp_path / "run", "trainer.devices=2",
                                                  "trainer.strategy=ddp", "trainer.max_steps=2", "logger=none")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment(), cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    prefix = "CODEC_TRAIN_SUMMARY "
    reports = [json.loads(line[len(prefix):]) for line in result.stdout.splitlines() if line.startswith(prefix)]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    assert all(r["world_size"] == 2 and r["global_step"] == 2 and r["batches"] == 2 for r in reports)
    assert reports[0]["first_batch"] != reports[1]["first_batch"]  # each rank read its own clips
    assert reports[0]["parameters"] == reports[1]["parameters"]  # gradients were all-reduced
    assert (tmp_path / "run" / "weights.safetensors").is_file()


class RecordingAudioMAE(AudioMAEModule):
    """Records the step and optimizer state the trainer starts from (after any checkpoint restore)."""

    def on_train_start(self) -> None:
        optimizer = self.optimizers().optimizer
        self.start = (self.trainer.global_step, {
            index: {key: value.clone() for key, value in state.items()}
            for index, state in optimizer.state_dict()["state"].items()})


def test_killed_run_resumes_at_the_saved_step_and_optimizer_state(corpus, tmp_path):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    overrides = ("checkpoint.every_n_train_steps=2", "optim.warmup_steps=1")
    first = subprocess.Popen([sys.executable, str(SCRIPT), *args(corpus, run_dir, *overrides), "trainer.max_steps=1000"],
                             env=environment(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not last.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # its own session: the trainer and wandb's helper
        first.wait()
    assert last.exists(), "the first run wrote no checkpoint before the deadline"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] >= 2
    assert list((run_dir / "wandb").glob("offline-run-*")), "wandb did not log offline"

    modules = []

    def build(values: dict, seed: int) -> RecordingAudioMAE:
        modules.append(RecordingAudioMAE(**{**values, "seed": seed}))
        return modules[0]

    config = parse_args("", args(corpus, run_dir, *overrides, f"trainer.max_steps={saved['global_step'] + 2}",
                                 "logger=none"), extra_sections=("probe",))
    report = run_stage(config, build)
    step, state = modules[0].start
    assert step == report["start_step"] == saved["global_step"]
    assert report["global_step"] == saved["global_step"] + 2
    saved_state = saved["optimizer_states"][0]["state"]
    assert state.keys() == saved_state.keys() and state
    for index, values in saved_state.items():
        for key, value in values.items():
            assert torch.equal(state[index][key], value), (index, key)
