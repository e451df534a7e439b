"""The continuation recipe end to end at tiny size, and every LM recipe config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from codec.config import get_config
from codec.model import SemantiCodec
from lm.api import AudioGenerator
from recipes.continuation.run import main
from recipes.data.world.family import SyntheticWorld

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes" / "continuation" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory, build_synthetic_corpus) -> Path:
    root = tmp_path_factory.mktemp("continuation")
    build_synthetic_corpus(root / "world", SyntheticWorld(12, 11, 1.5, 2.5, ("tone", "drums", "noise", "beeps")))
    SemantiCodec(get_config("tiny-100")).save_pretrained(root / "codec")
    return root


def test_tiny_config_runs_end_to_end_and_resumes(world, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_dir = world / "run"
    argv = ["--config", str(TINY), f"run_dir={run_dir}", "logger=none",
            f"tokenize.overrides.manifest={world / 'world' / 'manifest.jsonl'}",
            f"tokenize.overrides.out={world / 'tokens'}", f"tokenize.overrides.codec={world / 'codec'}",
            "tokenize.overrides.trainer.accelerator=cpu", "train.overrides.trainer.max_steps=3",
            "train.overrides.trainer.accelerator=cpu", "train.overrides.data.batch_size=2",
            "evaluate.split=train", "evaluate.prompts=2", "evaluate.prompt_seconds=0.5", "evaluate.continue_seconds=1.0",
            "evaluate.decode_steps=1", "evaluate.batch_size=2"]
    results = main(argv)
    assert results["train"]["global_step"] == 3
    assert np.isfinite(results["validation"]["valid_loss"]) and results["validation"]["valid_perplexity"] > 1
    assert "valid_loss_other_caption" not in results["validation"]  # no caption controls for an LM without text
    assert "class" in results["keep_rates"] and len(results["clips"]) == 2
    codec = SemantiCodec.from_pretrained(world / "codec")
    prompt_frames = int(codec.encode(torch.zeros(1, 8000), 16000).lengths[0])
    samples = sorted((run_dir / "samples").glob("*.wav"))
    assert len(samples) == 2
    for path in samples:
        wave, rate = soundfile.read(path)
        assert rate == 16000 and wave.shape == (codec.num_samples([prompt_frames])[0] + 16000,)
    reconstructions = sorted((run_dir / "samples" / "reconstruction").glob("*.wav"))
    assert [soundfile.read(path)[0].shape for path in reconstructions] == [(8000,), (8000,)]  # the 0.5-s prompts
    assert "| Property | continuation keeps it | chance (other clip) | codec reconstruction keeps it |" in \
        (run_dir / "results.md").read_text()
    assert json.loads((run_dir / "results.json").read_text())["timings_seconds"]["train"] > 0
    generator = AudioGenerator.from_pretrained(run_dir / "model")  # the exported LM, with its codec
    assert generator.codec.config.name == "tiny-100"

    checkpoint = run_dir / "train" / "checkpoints" / "last.ckpt"
    stamps = {path: path.stat().st_mtime_ns for path in [checkpoint, *samples, *reconstructions]}
    again = main(argv)  # every step is done: nothing is tokenized, trained or generated again
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items())
    assert again["validation"] == results["validation"] and again["keep_rates"] == results["keep_rates"]

    # model=: the exported LM is evaluated in another run folder without training anything there.
    reused = main([*argv, f"run_dir={world / 'reused'}", f"model={run_dir / 'model'}"])
    assert not (world / "reused" / "train").exists() and not (world / "reused" / "steps" / "train.json").exists()
    assert reused["train"]["model"] == str(run_dir / "model") and reused["timings_seconds"]["train"] == 0
    assert reused["validation"] == results["validation"]
    other_codec = world / "codec-25"
    SemantiCodec(get_config("tiny-25")).save_pretrained(other_codec)
    with pytest.raises(SystemExit, match="model: .*absent: no such LM folder"):
        main([*argv, f"run_dir={world / 'absent-run'}", f"model={world / 'absent'}"])
    with pytest.raises(SystemExit, match="trained on tokens of another codec"):
        main([*argv, f"run_dir={world / 'mismatch'}", f"model={run_dir / 'model'}",
              f"tokenize.overrides.codec={other_codec}", f"tokenize.overrides.out={world / 'tokens-25'}"])


CONFIGS = [path for recipe in ("tokenize", "continuation", "text_to_audio", "probe")
           for path in sorted((REPO / "recipes" / recipe).glob("configs/*.yaml"))]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: f"{path.parent.parent.name}-{path.stem}")
def test_every_recipe_config_names_its_command_and_loads(config):
    from lm.config import lm_config
    from lm.data import max_sequence_length
    from recipes.lm.train import START_KEYS
    from recipes.probe.run import KNOWN_KEYS as PROBE_KEYS
    from semanticodec_lm.corpus.token_corpus import CONFIG_KEYS as TOKENIZE_KEYS
    from semanticodec_lm.training.config import flatten_overrides, load_recipe_config
    from semanticodec_lm.training.lm_pipeline import RECIPE_KEYS, config_path
    from semanticodec_lm.training.runs import load_config as load_train_config

    recipe = config.parent.parent.name
    module = {"tokenize": "recipes.tokenize.tokenize_corpus"}.get(recipe, f"recipes.{recipe}.run")
    relative = config.relative_to(REPO)
    assert f"python -m {module} --config {relative}" in config.read_text().split("\n\n")[0]
    known = {"tokenize": TOKENIZE_KEYS, "probe": PROBE_KEYS}.get(recipe, RECIPE_KEYS)
    loaded = load_recipe_config(config, [], known)
    if recipe not in ("continuation", "text_to_audio"):
        return
    load_recipe_config(config_path(loaded["tokenize"]["config"]), flatten_overrides(loaded["tokenize"]["overrides"]),
                       TOKENIZE_KEYS)
    train = load_train_config(config_path(loaded["train"]["config"]), flatten_overrides(loaded["train"]["overrides"]))
    fields = dict(train["model"])
    for key in START_KEYS:  # where the weights start, not the model's shape
        fields.pop(key, None)
    text_vocab = loaded.get("text_tokenizer", {}).get("vocab_size", 0)
    model = lm_config(fields.pop("size"), semantic_vocab_size=1024, acoustic_vocab_size=1024,
                      text_vocab_size=text_vocab, **fields)
    text_tokens = train["data"]["max_text_tokens"] if text_vocab else None
    assert max_sequence_length(model.layout, train["data"]["max_frames"], text_tokens) <= model.max_seq_len
