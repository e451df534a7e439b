"""The Gradio demo: the page builds, and its handler returns audio of the requested length (no browser)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from codec.config import get_config
from codec.model import SemantiCodec
from lm.api import AudioGenerator
from lm.config import lm_config
from lm.model import AudioLM
from lm.text import train_text_tokenizer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def app_module():
    spec = importlib.util.spec_from_file_location("demo_app", REPO / "demos" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> AudioGenerator:
    torch.manual_seed(0)
    config = get_config("tiny-100")
    tokenizer = train_text_tokenizer(["pink noise", "a sine tone at A4", "drums at 90 bpm"] * 4,
                                     tmp_path_factory.mktemp("demo") / "captions", vocab_size=30)
    model = AudioLM(lm_config("tiny", semantic_vocab_size=config.semantic_vocab_size,
                              acoustic_vocab_size=config.acoustic_vocab_size, text_vocab_size=tokenizer.vocab_size))
    return AudioGenerator(model, SemantiCodec(config), tokenizer)


def test_the_page_builds_and_the_handler_returns_the_requested_length(app_module, generator):
    import gradio as gr

    assert isinstance(app_module.build_app(generator, decode_steps=1), gr.Blocks)
    handler = app_module.make_handler(generator, decode_steps=1)
    rate, samples = handler("pink noise", None, 0.5, 3, 1.0, 0, 1.0, 3.0)
    assert rate == 16000 and samples.shape == (8000,) and samples.dtype == np.int16
    again = handler("pink noise", None, 0.5, 3, 1.0, 0, 1.0, 3.0)[1]
    assert np.array_equal(samples, again)  # same seed, same clip
    unconditional = handler("", None, 1.0, 0, 0.8, 5, 0.9, 3.0)[1]  # guidance is ignored without a caption
    assert unconditional.shape == (16000,)


def test_bad_input_is_shown_as_a_gradio_error(app_module, generator, tmp_path):
    import gradio as gr

    handler = app_module.make_handler(generator, decode_steps=1)
    with pytest.raises(gr.Error, match="seconds must be a positive number"):
        handler("pink noise", None, 0.0, 0, 1.0, 0, 1.0, 3.0)
    (tmp_path / "bad.wav").write_bytes(b"RIFF not audio")
    with pytest.raises(gr.Error, match="bad.wav"):
        handler("", str(tmp_path / "bad.wav"), 0.5, 0, 1.0, 0, 1.0, 1.0)
