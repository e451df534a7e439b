"""The LM recipes' shared driver: sample folders keyed on weights, steps named by the calling recipe."""

from __future__ import annotations

import pytest
import torch

from codec.config import get_config
from codec.model import SemantiCodec
from semanticodec_lm.training.lm_pipeline import LMSteps, prepare_tokens, weights_digest


def test_samples_are_keyed_on_the_codec_weights():
    torch.manual_seed(0)
    codec = SemantiCodec(get_config("tiny-100"))
    first = weights_digest(codec)
    assert weights_digest(codec) == first and len(first) == 16
    with torch.no_grad():
        next(codec.decoder.parameters()).view(-1)[0] += 1e-3  # the same configuration, other weights
    assert weights_digest(codec) != first
    assert weights_digest(torch.nn.Linear(2, 2).to(torch.bfloat16))  # any dtype hashes


def test_a_tokenize_step_that_writes_nothing_is_named(tmp_path):
    config = tmp_path / "tokenize.yaml"
    config.write_text(f"manifest: {tmp_path / 'manifest.jsonl'}\nout: {tmp_path / 'tokens'}\n")
    (tmp_path / "manifest.jsonl").write_text("")
    # ``python -m this`` ignores its arguments and exits 0 without writing anything
    steps = LMSteps(tokenize_module="this", train_module="this", tokenize_config=str(config), train_config=str(config))
    with pytest.raises(SystemExit, match="this finished without writing .*tokenize_report.json"):
        prepare_tokens({}, tmp_path / "run", steps)
