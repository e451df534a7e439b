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


@pytest.fixture()
def demo(app_module, generator, tmp_path):
    return app_module.Demo(generator, tmp_path / "outputs", decode_steps=1, max_upload_seconds=3.0)


def _clip(path, seconds: float, hz: float = 330.0):
    from codec.audio import write_audio

    t = torch.arange(int(16000 * seconds)) / 16000
    write_audio(path, 0.3 * torch.sin(2 * torch.pi * hz * t), 16000)
    return str(path)


def test_the_page_has_three_tabs_and_the_slider_stops_at_the_models_limit(app_module, demo):
    import gradio as gr

    app = app_module.build_app(demo)
    assert isinstance(app, gr.Blocks)
    config = app.get_config_file()
    tabs = [c["props"].get("label") for c in config["components"] if c.get("type") == "tabitem"]
    assert tabs == ["Codec", "Text to audio", "Continue a clip"]
    sliders = [c["props"] for c in config["components"]
               if c.get("type") == "slider" and "Seconds" in str(c["props"].get("label"))]
    assert len(sliders) == 2 and all(0 < s["maximum"] <= demo.generator.max_seconds() for s in sliders)


def _sampler_radio(app_module, demo) -> dict:
    config = app_module.build_app(demo).get_config_file()
    return next(c["props"] for c in config["components"]
                if c.get("type") == "radio" and c["props"].get("label") == "Sampler")


def test_the_sampler_offers_the_latent_prior_first_only_where_the_codec_has_one(app_module, demo, tmp_path):
    import dataclasses

    radio = _sampler_radio(app_module, demo)  # tiny-100: no latent prior
    assert [choice[0] for choice in radio["choices"]] == ["dpmpp2m", "ddim"] and radio["value"] == "dpmpp2m"
    tiny = get_config("tiny-100")
    with_prior = dataclasses.replace(tiny, unet=dataclasses.replace(tiny.unet, latent_prior_width=8))
    demo.codec = demo.generator.codec = SemantiCodec(with_prior).eval()
    radio = _sampler_radio(app_module, demo)
    assert [choice[0] for choice in radio["choices"]] == ["prior", "dpmpp2m", "ddim"] and radio["value"] == "prior"
    clip = _clip(tmp_path / "clip.wav", 1.0)
    first = demo.round_trip(clip, 1, "prior", 0)[0][1]
    assert first.shape[0] >= 16000 and np.array_equal(first, demo.round_trip(clip, 7, "prior", 5)[0][1])


def test_generation_returns_the_requested_length_and_its_tokens(demo, tmp_path):
    (rate, samples), token_file = demo.generate("pink noise", None, 0.5, 3, 1.0, 0, 1.0, 3.0)
    assert rate == 16000 and samples.shape == (8000,) and samples.dtype == np.int16
    assert Path(token_file).is_file() and Path(token_file).is_relative_to(demo.workdir)
    again = demo.generate("pink noise", None, 0.5, 3, 1.0, 0, 1.0, 3.0)[0][1]
    assert np.array_equal(samples, again)  # same seed, same clip
    unconditional = demo.generate("", None, 1.0, 0, 0.8, 5, 0.9, 3.0)[0][1]  # guidance is ignored without a caption
    assert unconditional.shape == (16000,)
    continued = demo.generate("", _clip(tmp_path / "prompt.wav", 1.0), 0.5, 0, 1.0, 0, 1.0, 1.0)[0][1]
    assert continued.shape[0] > 8000  # the prompt's reconstruction comes first


def test_codec_round_trip_gives_audio_stats_spectrograms_and_downloads(demo, tmp_path):
    (rate, samples), stats, figure, token_file, wav = demo.round_trip(_clip(tmp_path / "my clip.wav", 1.5), 1,
                                                                      "dpmpp2m", 0)
    # The official budget rounds 1.5 s up to whole 0.16-s blocks: 80 pairs, 1.6 s of audio.
    assert rate == 16000 and samples.shape[0] == demo.codec.num_samples([80])[0] == 25600
    assert "100 tokens/s" in stats and "80 (semantic, acoustic) pairs for 1.50 s" in stats
    for path in (figure, token_file, wav):
        assert Path(path).is_file() and Path(path).is_relative_to(demo.workdir)
    assert Path(token_file).name == "my clip.tokens.safetensors"


def test_bad_uploads_are_refused_before_encoding_naming_the_users_file(demo, tmp_path):
    import gradio as gr

    (tmp_path / "notes.wav").write_bytes(b"RIFF not audio")
    (tmp_path / "empty.wav").write_bytes(b"")
    long_clip = _clip(tmp_path / "long.wav", 4.0)
    cases = [(str(tmp_path / "notes.wav"), "notes.wav: not an audio file"), (str(tmp_path / "empty.wav"), "empty.wav: the file is empty"),
             (long_clip, "long.wav: 4.0 s is longer than the 3 s"), (None, "no audio")]
    for path, message in cases:
        with pytest.raises(gr.Error, match=message) as caught:
            demo.round_trip(path, 1, "dpmpp2m", 0)
        assert str(tmp_path) not in str(caught.value)
    with pytest.raises(gr.Error, match="notes.wav"):
        demo.generate("", str(tmp_path / "notes.wav"), 0.5, 0, 1.0, 0, 1.0, 1.0)
    with pytest.raises(gr.Error, match="seconds must be a positive number"):
        demo.generate("pink noise", None, 0.0, 0, 1.0, 0, 1.0, 3.0)
    too_long = demo.max_seconds
    with pytest.raises(gr.Error, match="p.wav: 1.00 s of prompt .* this LM holds"):
        demo.generate("", _clip(tmp_path / "p.wav", 1.0), too_long, 0, 1.0, 0, 1.0, 1.0)


def test_the_streamed_round_trip_plays_window_by_window_and_ends_with_the_whole_reconstruction(app_module, generator,
                                                                                              tmp_path):
    import gradio as gr

    demo = app_module.Demo(generator, tmp_path / "outputs", decode_steps=1, max_upload_seconds=15.0)
    # 12 s: two decoder windows, so the page gets audio before the second one is decoded.
    items = list(demo.stream_round_trip(_clip(tmp_path / "long.wav", 12.0), 1, "dpmpp2m", 0))
    chunks, last = items[:-1], items[-1]
    assert len(chunks) == 2 and all(isinstance(value, type(gr.skip())) for item in chunks for value in item[1:])
    streamed = np.concatenate([item[0][1] for item in chunks])
    assert last[0] is None and np.array_equal(streamed, last[1][1])
    assert np.array_equal(streamed, demo.round_trip(_clip(tmp_path / "long.wav", 12.0), 1, "dpmpp2m", 0)[0][1])


def test_the_streamed_generation_plays_window_by_window_and_ends_with_the_whole_clip(demo):
    import gradio as gr

    items = list(demo.stream_generate("pink noise", None, 0.5, 3, 1.0, 0, 1.0, 3.0))
    chunks, last = items[:-1], items[-1]
    assert chunks and all(isinstance(value, type(gr.skip())) for item in chunks for value in item[1:])
    streamed = np.concatenate([item[0][1] for item in chunks])
    assert last[0] is None and np.array_equal(streamed, last[1][1]) and streamed.shape == (8000,)
    assert np.array_equal(streamed, demo.generate("pink noise", None, 0.5, 3, 1.0, 0, 1.0, 3.0)[0][1])
