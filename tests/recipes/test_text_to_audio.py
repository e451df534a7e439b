"""The text-to-audio recipe end to end at tiny size: caption tokenizer, text LM, guidance scales, adherence table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from codec.config import get_config
from codec.model import SemantiCodec
from lm.api import load_lm_folder
from recipes.data.world.family import SyntheticWorld
from recipes.text_to_audio.run import main

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes" / "text_to_audio" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory, build_synthetic_corpus) -> Path:
    root = tmp_path_factory.mktemp("text-to-audio")
    build_synthetic_corpus(root / "world", SyntheticWorld(12, 11, 2.0, 2.5, ("tone", "drums", "noise", "beeps")))
    SemantiCodec(get_config("tiny-100")).save_pretrained(root / "codec")
    return root


def test_tiny_config_runs_end_to_end(world, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_dir = world / "run"
    results = main([
        "--config", str(TINY), f"run_dir={run_dir}", "logger=wandb",
        f"tokenize.overrides.manifest={world / 'world' / 'manifest.jsonl'}", f"tokenize.overrides.out={world / 'tokens'}",
        f"tokenize.overrides.codec={world / 'codec'}", "tokenize.overrides.trainer.accelerator=cpu",
        "text_tokenizer.vocab_size=60", "train.overrides.trainer.max_steps=3", "train.overrides.trainer.accelerator=cpu",
        "train.overrides.data.batch_size=2", "evaluate.split=train", "evaluate.captions=2", "evaluate.seconds=0.5",
        "evaluate.decode_steps=1", "evaluate.batch_size=2", "evaluate.cfg_scales=[1, 3, 5]",
    ])
    model = load_lm_folder(run_dir / "model")
    assert model.tokenizer is not None and model.model.config.text_vocab_size == model.tokenizer.vocab_size
    validation = results["validation"]
    assert all(np.isfinite(validation[key]) for key in ("valid_loss", "valid_loss_other_caption", "valid_loss_no_caption"))
    groups = validation["by_group"]  # every valid clip in exactly one group, each with the three losses
    assert sum(cells["clips"] for cells in groups.values()) == validation["valid_clips"]
    assert all(np.isfinite(cells[key]) for cells in groups.values() for key in ("loss", "other_caption", "no_caption"))
    assert "| clip group | clips |" in (run_dir / "results.md").read_text()
    streams = validation["by_stream"]  # the audio targets split by kind: two ids per frame, a few others left out
    assert streams["semantic ids"]["ids"] == streams["acoustic ids"]["ids"] > 0
    assert 2 * streams["semantic ids"]["ids"] < validation["valid_tokens"]
    in_streams = sum(cells["loss"] * cells["ids"] for cells in streams.values())
    assert in_streams < validation["valid_loss"] * validation["valid_tokens"] + 1e-3 * validation["valid_tokens"]
    assert all(np.isfinite(cells[key]) for cells in streams.values() for key in ("loss", "other_caption", "no_caption"))
    assert "| target ids | ids |" in (run_dir / "results.md").read_text()
    assert list(results["adherence"]) == ["original audio", "codec reconstruction", "cfg 1", "cfg 3", "cfg 5"]
    # the measurements are right about the real clips, whatever a 3-step model generates
    assert all(hits == total for hits, total in results["adherence"]["original audio"].values())
    for folder in ("cfg1", "cfg3", "cfg5", "reconstruction"):  # reconstructions: the clips' first 0.5 s
        samples = sorted((run_dir / "samples" / folder).glob("*.wav"))
        assert len(samples) == 2
        assert all(soundfile.read(path)[0].shape == (8000,) for path in samples)
    table = (run_dir / "results.md").read_text()
    assert "| Property stated by the caption | original audio | codec reconstruction | cfg 1 | cfg 3 | cfg 5 |" in table
    assert list((run_dir / "train" / "wandb").glob("offline-run-*"))  # training and evaluation logged offline
