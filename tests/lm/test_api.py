"""The generation API and the ``generate`` command: lengths, seeds, prompts, LM folders, errors."""

from __future__ import annotations

import argparse
import json

import pytest
import soundfile
import torch

from codec.audio import AudioError
from codec.config import get_config
from codec.model import SemantiCodec
from codec.tokenfile import codec_identity, load_tokens
from lm.api import (
    PRETRAINED_DIR,
    AudioGenerator,
    LMFolderError,
    export_checkpoint,
    load_lm_folder,
    save_lm_folder,
    tokens_path_for,
)
from lm.config import lm_config
from lm.data import collate
from lm.model import AudioLM
from lm.text import train_text_tokenizer
from semanticodec_lm.cli import add_generate_arguments, run_generate

CODEC = get_config("tiny-100")  # 50 frames/s, 320 samples per frame
CAPTIONS = ["a steady sine tone at A4", "pink noise", "a rock beat drum pattern at 120 bpm"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny codec folder and two LM folders over it: one with a caption tokenizer, one without."""
    root = tmp_path_factory.mktemp("api")
    torch.manual_seed(0)
    SemantiCodec(CODEC).save_pretrained(root / "codec")
    tokenizer = train_text_tokenizer(CAPTIONS * 4, root / "captions", vocab_size=40)
    fields = dict(semantic_vocab_size=CODEC.semantic_vocab_size, acoustic_vocab_size=CODEC.acoustic_vocab_size)
    save_lm_folder(root / "lm-text", AudioLM(lm_config("tiny", text_vocab_size=tokenizer.vocab_size, **fields)),
                   codec_identity(CODEC), tokenizer_path=tokenizer.path, codec_source=str(root / "codec"))
    save_lm_folder(root / "lm-audio", AudioLM(lm_config("tiny", **fields)), codec_identity(CODEC),
                   codec_source=str(root / "codec"))
    return root


@pytest.fixture(scope="module")
def generator(assets):
    return AudioGenerator.from_pretrained(assets / "lm-text")


def test_generate_from_text_has_the_requested_length_and_is_seeded(generator):
    audio, tokens = generator.generate(text="pink noise", seconds=0.5, seed=3, decode_steps=1)
    assert audio.shape == (1, 1, 8000) and audio.dtype == torch.float32
    assert tokens.tokens.shape == (1, 25, 2) and tokens.lengths.tolist() == [25]
    again_audio, again = generator.generate(text="pink noise", seconds=0.5, seed=3, decode_steps=1)
    assert torch.equal(again.tokens, tokens.tokens) and torch.equal(again_audio, audio)
    other = generator.generate_tokens(text="pink noise", seconds=0.5, seed=4)
    assert not torch.equal(other.tokens, tokens.tokens)


def test_a_batch_of_captions_gives_one_row_each(generator):
    tokens = generator.generate_tokens(text=CAPTIONS, seconds=0.3, seed=0, cfg_scale=5.0, top_k=10, top_p=0.9)
    assert tokens.tokens.shape == (3, 15, 2) and tokens.lengths.tolist() == [15, 15, 15]
    assert int(tokens.tokens[..., 0].max()) < CODEC.semantic_vocab_size
    assert int(tokens.tokens[..., 1].max()) < CODEC.acoustic_vocab_size


def test_prompt_continuation_keeps_the_prompt_tokens_and_appends_the_requested_seconds(generator):
    wave = 0.1 * torch.sin(torch.arange(16000) * 2 * torch.pi * 440 / 16000)[None]
    prompt = generator.codec.encode(wave, 16000)
    audio, tokens = generator.generate(prompt=wave, sample_rate=16000, seconds=0.4, seed=0, decode_steps=1)
    prompt_frames = int(prompt.lengths[0])
    assert tokens.lengths.tolist() == [prompt_frames + 20]
    assert torch.equal(tokens.tokens[0, :prompt_frames], prompt.tokens[0, :prompt_frames].cpu())
    assert audio.shape[-1] == generator.codec.num_samples([prompt_frames])[0] + 6400


def test_the_clip_lasts_its_length_even_when_the_model_wants_to_stop(assets, random_frames):
    # A model trained to end after three frames is asked for twenty: the end marker is held back.
    folder = load_lm_folder(assets / "lm-audio")
    model, clip = folder.model.train(), random_frames(3, seed=1)
    ids, mask = model.config.layout.build_sequence(clip)
    batch = collate([{"ids": ids, "loss_mask": mask}])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(100):
        logits = model(batch["inputs"])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    stubborn = AudioGenerator(model.eval(), SemantiCodec.from_pretrained(assets / "codec"))
    tokens = stubborn.generate_tokens(seconds=0.4, seed=0, temperature=0.0)
    assert tokens.lengths.tolist() == [20]
    assert torch.equal(tokens.tokens[0, :3], clip)  # it did learn the clip


def test_save_pretrained_and_export_checkpoint_round_trip(generator, assets, tmp_path):
    folder = generator.save_pretrained(tmp_path / "copy", codec_source=str(assets / "codec"))
    copy = AudioGenerator.from_pretrained(folder)
    expected = generator.generate_tokens(text="pink noise", seconds=0.2, seed=1)
    assert torch.equal(copy.generate_tokens(text="pink noise", seconds=0.2, seed=1).tokens, expected.tokens)
    state = {"hyper_parameters": {"model": generator.model.config.to_dict()},
             "state_dict": {f"model.{k}": v for k, v in generator.model.state_dict().items()}}
    torch.save(state, tmp_path / "last.ckpt")
    exported = export_checkpoint(tmp_path / "last.ckpt", tmp_path / "exported", codec_identity(CODEC),
                                 tokenizer_path=generator.tokenizer.path, codec_source=str(assets / "codec"))
    again = AudioGenerator.from_pretrained(exported)
    assert torch.equal(again.generate_tokens(text="pink noise", seconds=0.2, seed=1).tokens, expected.tokens)


def test_bad_requests_are_refused_with_clear_messages(generator, assets, tmp_path):
    audio_only = AudioGenerator.from_pretrained(assets / "lm-audio")
    with pytest.raises(ValueError, match="trained without captions"):
        audio_only.generate_tokens(text="pink noise", seconds=0.2)
    with pytest.raises(ValueError, match="seconds must be a positive number"):
        generator.generate_tokens(text="pink noise", seconds=0)
    with pytest.raises(ValueError, match="cfg_scale != 1 needs text"):
        generator.generate_tokens(seconds=0.2, cfg_scale=3.0)
    with pytest.raises(ValueError, match=r"0.00 s of prompt \+ 60 s of new audio need \d+ LM positions, but this LM "
                                         r"holds \d+ \(about \d+\.\d\d s of audio in all\)"):
        generator.generate_tokens(text="pink noise", seconds=60)
    fits = float(str(pytest.raises(ValueError, generator.generate_tokens, text="pink noise", seconds=60).value)
                 .split("about ")[1].split(" s")[0])
    assert generator.generate_tokens(text="pink noise", seconds=fits, seed=0).lengths.tolist() == \
        [generator.frames_for(fits)]  # what the message says fits does fit
    with pytest.raises(LMFolderError, match="no such LM folder"):
        load_lm_folder(tmp_path / "absent")
    other_codec = SemantiCodec(get_config("tiny-50"))
    with pytest.raises(LMFolderError, match="trained on tokens of codec 'tiny-100'"):
        AudioGenerator.from_pretrained(assets / "lm-text", codec=other_codec)
    retrained = SemantiCodec.from_pretrained(assets / "codec")
    with torch.no_grad():
        retrained.encoder.quantizer._codebook.embed.add_(1e-3)
    saved = generator.save_pretrained(tmp_path / "with-digest", codec_source=str(assets / "codec"))
    assert AudioGenerator.from_pretrained(saved).codec_identity["tokens_digest"] == generator.codec.tokens_digest()
    with pytest.raises(LMFolderError, match="trained on tokens of another 'tiny-100' codec"):
        AudioGenerator.from_pretrained(saved, codec=retrained)
    AudioGenerator.from_pretrained(assets / "lm-text", codec=retrained)  # recorded before digests: not checkable
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(LMFolderError, match="not an LM folder config"):
        load_lm_folder(broken)
    (broken / "config.json").write_text((assets / "lm-audio" / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(LMFolderError, match="model.safetensors"):
        load_lm_folder(broken)


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_generate_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_writes_the_wav_and_its_tokens_and_honours_the_seed(assets, tmp_path, capsys):
    common = ("--model", str(assets / "lm-text"), "--seconds", "0.5", "--decode-steps", "1", "--text", "pink noise")
    assert run_generate(_cli(*common, "--seed", "7", "-o", str(tmp_path / "a.wav"))) == 0
    assert run_generate(_cli(*common, "--seed", "7", "-o", str(tmp_path / "b.wav"))) == 0
    assert run_generate(_cli(*common, "--seed", "8", "-o", str(tmp_path / "c.wav"), "--top-k", "5")) == 0
    assert "seed 7" in capsys.readouterr().out
    wave, rate = soundfile.read(tmp_path / "a.wav")
    assert rate == 16000 and wave.shape == (8000,)
    a, b, c = (load_tokens(tokens_path_for(tmp_path / f"{n}.wav"), expect=CODEC) for n in "abc")
    assert a.lengths.tolist() == [25] and a.extra["seed"] == 7 and a.extra["text"] == "pink noise"
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_cli_continues_a_prompt_file(assets, tmp_path):
    prompt = tmp_path / "prompt.wav"
    soundfile.write(prompt, 0.1 * torch.randn(12000).numpy(), 16000)
    status = run_generate(_cli("--model", str(assets / "lm-audio"), "--prompt", str(prompt), "--seconds", "0.2",
                               "--decode-steps", "1", "--seed", "0", "-o", str(tmp_path / "out" / "cont.wav")))
    assert status == 0
    wave, _ = soundfile.read(tmp_path / "out" / "cont.wav")
    prompt_frames = int(SemantiCodec.from_pretrained(assets / "codec").encode(str(prompt)).lengths[0])
    assert wave.shape == (prompt_frames * 320 + 3200,)
    assert load_tokens(tmp_path / "out" / "cont.tokens.safetensors").lengths.tolist() == [prompt_frames + 10]


def test_cli_errors_name_the_problem(assets, tmp_path):
    with pytest.raises(AudioError, match="no such prompt file"):
        run_generate(_cli("--model", str(assets / "lm-audio"), "--prompt", str(tmp_path / "none.wav"),
                          "-o", str(tmp_path / "x.wav")))
    with pytest.raises(ValueError, match="must be a .wav file"):
        run_generate(_cli("--model", str(assets / "lm-audio"), "-o", str(tmp_path / "x.mp3")))


def test_the_shipped_lm_generates_offline():
    if not (PRETRAINED_DIR / "default" / "config.json").is_file():
        pytest.skip("no shipped LM in lm/pretrained/default yet (recipes/text_to_audio/configs/default.yaml makes it)")
    # The shipped LM names the shipped codec, not the folder its training tokens came from, which
    # exists only on the machine that trained it.
    assert load_lm_folder("default").codec_source == "default"
    generator = AudioGenerator.from_pretrained("default")
    # A new default codec must ship with an LM trained on its tokens: the recorded digest says which.
    assert generator.codec_identity["tokens_digest"] == generator.codec.tokens_digest()
    audio, tokens = generator.generate(text="a steady sine tone at A4 (440 Hz)", seconds=1.0, seed=0, decode_steps=2)
    assert audio.shape == (1, 1, 16000) and bool(torch.isfinite(audio).all())
    assert tokens.lengths.tolist() == [generator.frames_for(1.0)]


def test_export_refuses_what_is_not_an_lm_checkpoint(generator, tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(LMFolderError, match="not an AudioLMModule checkpoint"):
        export_checkpoint(tmp_path / "other.ckpt", tmp_path / "out", codec_identity(CODEC))
    wrong = {"hyper_parameters": {"model": generator.model.config.to_dict()},
             "state_dict": {"model.embed.weight": torch.zeros(3)}}
    torch.save(wrong, tmp_path / "wrong.ckpt")
    with pytest.raises(LMFolderError, match="weights do not fit"):
        export_checkpoint(tmp_path / "wrong.ckpt", tmp_path / "out", codec_identity(CODEC))
    with pytest.raises(LMFolderError, match="no such checkpoint"):
        export_checkpoint(tmp_path / "absent.ckpt", tmp_path / "out", codec_identity(CODEC))


@pytest.mark.parametrize("setting, match", [
    ({"temperature": float("nan")}, "temperature must be a finite number"),
    ({"top_p": 0.0}, "top_p must lie in"),
    ({"top_k": 0}, "top_k must be >= 1"),
    ({"seconds": float("inf")}, "seconds must be a finite number"),
    ({"cfg_scale": float("nan")}, "cfg_scale must be a finite number"),
    ({"precision": "fp16"}, "precision must be one of"),
])
def test_generation_refuses_bad_settings_naming_them(setting, match):
    generator = AudioGenerator.from_pretrained("default")
    with pytest.raises(ValueError, match=match):
        generator.generate(**{"seconds": 1.0, **setting})


def test_generation_reports_the_progress_of_the_lm_and_the_decoder():
    generator = AudioGenerator.from_pretrained("default")
    steps, windows = [], []
    audio, _ = generator.generate(seconds=0.5, seed=0, decode_steps=1, on_step=lambda d, t: steps.append((d, t)),
                                  on_window=lambda d, t: windows.append((d, t)))
    assert audio.shape[-1] == 8000
    assert [d for d, _ in steps] == list(range(1, len(steps) + 1)) and steps[-1][0] <= steps[-1][1]
    assert len(steps) >= 2 * 25  # two ids per frame, 25 frames per 0.5 s
    assert windows == [(1, 1)]


def test_the_longest_audio_is_derived_from_the_model_and_stated_in_the_help(capsys):
    from lm.api import folder_max_seconds

    generator = AudioGenerator.from_pretrained("default")
    longest = generator.max_seconds()
    assert folder_max_seconds("default") == pytest.approx(longest)
    assert generator.max_seconds("a steady sine tone at A4 (440 Hz)") < longest
    generator.generate_tokens(seconds=longest, seed=0)  # exactly the limit fits
    with pytest.raises(ValueError, match=f"about {longest:.2f} s of audio in all"):
        generator.generate_tokens(seconds=longest + 0.1, seed=0)
    parser = argparse.ArgumentParser()
    add_generate_arguments(parser)
    assert f"the shipped LM holds {longest:.1f} s" in " ".join(parser.format_help().split())


def test_a_prompt_too_long_is_refused_from_its_header_before_encoding(tmp_path, monkeypatch):
    from codec.audio import write_audio

    generator = AudioGenerator.from_pretrained("default")
    long_prompt = tmp_path / "long.wav"
    write_audio(long_prompt, torch.zeros(16000 * 20), 16000)
    monkeypatch.setattr(generator.codec, "encode", lambda *a, **k: pytest.fail("the prompt was encoded"))
    with pytest.raises(ValueError, match="long.wav: 20.00 s of prompt"):
        generator.generate(prompt=str(long_prompt), seconds=1.0)


def test_iter_audio_streams_what_generate_returns(generator, assets):
    audio, tokens = generator.generate(text="pink noise", seconds=0.5, seed=3, decode_steps=1)
    chunks = list(generator.iter_audio(tokens, 0.5, decode_steps=1, seed=3))
    assert {row for row, _ in chunks} == {0}
    assert torch.equal(torch.cat([chunk for _, chunk in chunks]), audio[0, 0])
    prompted = AudioGenerator.from_pretrained(assets / "lm-audio")
    prompt = 0.1 * torch.randn(1, 12000, generator=torch.Generator().manual_seed(0))
    audio, tokens = prompted.generate(prompt=prompt, sample_rate=16000, seconds=0.2, seed=1, decode_steps=1)
    streamed = torch.cat([chunk for _, chunk in prompted.iter_audio(tokens, 0.2, decode_steps=1, seed=1)])
    assert streamed.numel() == prompted.audio_samples(tokens, 0.2)[0] == audio.shape[-1]
    assert torch.equal(streamed, audio[0, 0])
