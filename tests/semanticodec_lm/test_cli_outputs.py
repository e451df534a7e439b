"""CLI outputs: never colliding, resumable, atomic, reported per file; empty inputs and bad options refused."""

import argparse
from pathlib import Path

import pytest
import torch

from codec.audio import AudioError, write_audio
from codec.config import get_config
from codec.model import SemantiCodec
from codec.tokenfile import save_tokens
from semanticodec_lm.cli import _decode_to_wavs, main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "tiny-100"
    SemantiCodec(get_config("tiny-100")).save_pretrained(folder)
    return folder


def _tone(path: Path, seconds: float = 1.0, hz: float = 300.0) -> Path:
    t = torch.arange(int(16000 * seconds)) / 16000
    write_audio(path, 0.3 * torch.sin(2 * torch.pi * hz * t), 16000)
    return path


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_inputs_that_would_share_an_output_are_refused_not_overwritten(model_dir, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    _tone(clips / "clip.wav")
    _tone(clips / "clip.flac", hz=500.0)
    _tone(clips / "other.wav")
    out = tmp_path / "recon"
    status = main(["reconstruct", str(clips), "-o", str(out), "--model", str(model_dir), "--steps", "1", "--seed", "0"])
    err = capsys.readouterr().err
    assert status == 1 and "clip.wav" in err and "clip.flac" in err and "separate output folders" in err
    assert sorted(p.name for p in out.iterdir()) == ["other.wav"]
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    status = main(["encode", str(_tone(tmp_path / "a" / "x.wav")), str(_tone(tmp_path / "b" / "x.wav")),
                   "-o", str(tmp_path / "tokens"), "--model", str(model_dir)])
    assert status == 1 and capsys.readouterr().err.count("would also be written") == 2
    assert not (tmp_path / "tokens" / "x.wav.tokens.safetensors").exists()


def test_decode_resumes_leaves_no_temporary_files_and_overwrite_redoes(model_dir, tmp_path, capsys):
    codec = SemantiCodec.from_pretrained(model_dir)
    tokens = tmp_path / "tokens"
    # 700 frames: two decoder windows, so the wav is written in several chunks.
    save_tokens(tokens / "long.tokens.safetensors", torch.randint(0, 32, (1, 700, 2)), None, codec.config)
    save_tokens(tokens / "short.tokens.safetensors", torch.randint(0, 32, (1, 50, 2)), None, codec.config)
    out = tmp_path / "wav"
    args = ["decode", str(tokens), "-o", str(out), "--model", str(model_dir), "--steps", "1", "--seed", "0"]
    assert main(args) == 0
    assert "decoded 2 file(s), kept 0" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["long.wav", "short.wav"] and not _leftovers(out)
    stamp = (out / "long.wav").stat().st_mtime_ns
    assert main(args) == 0
    assert "decoded 0 file(s), kept 2 finished earlier" in capsys.readouterr().out
    assert (out / "long.wav").stat().st_mtime_ns == stamp
    (out / "short.wav").write_bytes(b"half a wav")  # a damaged output is made again
    (out / ".short.wav.x1y2.tmp.wav").write_bytes(b"partial of a killed run")  # and a killed run's partial goes
    assert main(args) == 0 and "decoded 1 file(s), kept 1" in capsys.readouterr().out
    assert main(args + ["--overwrite"]) == 0 and "decoded 2 file(s), kept 0" in capsys.readouterr().out
    assert not _leftovers(out)


def test_a_bad_output_target_is_reported_for_that_file_and_the_batch_goes_on(model_dir, tmp_path, capsys):
    codec = SemantiCodec.from_pretrained(model_dir)
    tokens = tmp_path / "tokens"
    for name in ("a", "b"):
        save_tokens(tokens / f"{name}.tokens.safetensors", torch.randint(0, 32, (1, 40, 2)), None, codec.config)
    out = tmp_path / "wav"
    (out / "a.wav").mkdir(parents=True)  # a directory where an output should go
    status = main(["decode", str(tokens), "-o", str(out), "--model", str(model_dir), "--steps", "1"])
    err = capsys.readouterr().err
    assert status == 1 and "a.wav" in err and "existing directory" in err and "Traceback" not in err
    assert (out / "b.wav").is_file() and not _leftovers(out)


def test_empty_inputs_and_bad_threads_are_refused(model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for command in ("encode", "reconstruct", "decode"):
        status = main([command, str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "--model", str(model_dir)])
        assert status == 2 and "no " in capsys.readouterr().err
    status = main(["info", str(tmp_path / "x"), "--threads", "0"])
    assert status == 2 and "threads must be >= 1" in capsys.readouterr().err


def test_decode_progress_counts_windows_not_batches(model_dir, tmp_path):
    codec = SemantiCodec.from_pretrained(model_dir)

    class Bar:
        total = 0

        def update(self, n: int) -> None:
            self.total += n

    bar = Bar()
    args = argparse.Namespace(steps=1, cfg_scale=2.0, sampler="ddim", eta=1.0, seed=0, batch_size=2, precision="fp32")
    lengths = torch.tensor([700, 700, 40])  # 2 + 2 + 1 windows, in batches of 2
    tokens = torch.randint(0, 32, (3, 700, 2))
    _decode_to_wavs(codec, tokens, lengths, [tmp_path / f"{i}.wav" for i in range(3)], args, bar)
    assert bar.total == 5


def test_channels_last_stereo_tensor_is_refused_not_misread(model_dir):
    codec = SemantiCodec.from_pretrained(model_dir)
    with pytest.raises(AudioError, match="channels last"):
        codec.encode(torch.zeros(1, 32000, 2), 16000)


def test_unclear_messages_name_what_is_wrong(model_dir, tmp_path, capsys):
    import numpy as np

    from codec.tokenfile import TokenFileError, validate_tokens

    repo = Path(__file__).resolve().parents[2]
    clip = str(_tone(tmp_path / "a.wav"))
    assert main(["encode", clip, "-o", str(tmp_path / "o"), "--model", str(repo / "lm" / "pretrained" / "default")]) == 2
    assert "an LM folder, not a codec" in capsys.readouterr().err
    assert main(["info", str(tmp_path)]) == 1
    assert "a folder, not a token file" in capsys.readouterr().err
    assert main(["generate", "--prompt", str(tmp_path), "-o", str(tmp_path / "g.wav"), "--seconds", "1"]) == 2
    assert "a folder, not an audio file" in capsys.readouterr().err
    assert main(["generate", "--text", "word " * 1000, "-o", str(tmp_path / "g.wav"), "--seconds", "1"]) == 2
    assert "shorten the caption" in capsys.readouterr().err
    with pytest.raises(TokenFileError, match="must be integers of a signed type .* got torch.uint8"):
        validate_tokens(torch.full((1, 4, 2), 255, dtype=torch.uint8), None, 1024, 1024)
    codec = SemantiCodec.from_pretrained(model_dir)
    wave = 0.1 * np.sin(np.arange(16000) / 5).astype(np.float32)
    assert torch.equal(codec.encode(wave, 16000).tokens, codec.encode(torch.from_numpy(wave), 16000).tokens)


def test_an_offline_official_download_says_how_to_work_offline(tmp_path, monkeypatch):
    import huggingface_hub

    from codec.checkpoints import CheckpointError, download_official

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(CheckpointError, match="--checkpoint-path"):
        download_official(100, 16384, cache_dir=str(tmp_path))


@pytest.mark.parametrize("signal_name, status, message", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_mid_decode_stops_in_one_line_and_leaves_nothing(model_dir, tmp_path, signal_name, status, message):
    import signal
    import subprocess
    import sys
    import time

    codec = SemantiCodec.from_pretrained(model_dir)
    tokens = tmp_path / "tokens"
    # long enough that the decode is still running when the signal comes, even on an idle machine
    save_tokens(tokens / "long.tokens.safetensors", torch.randint(0, 32, (1, 400 * 512, 2)), None, codec.config)
    out = tmp_path / "wav"
    process = subprocess.Popen([sys.executable, "-m", "semanticodec_lm.cli", "decode", str(tokens), "-o", str(out),
                                "--model", str(model_dir), "--steps", "1", "--seed", "0", "--threads", "1"],
                               stderr=subprocess.PIPE, text=True,
                               # a shell's background job ignores SIGINT, and its children inherit that:
                               # give the CLI the disposition a terminal's Ctrl-C meets
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.iterdir())) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)  # wait until the wav is being written
    assert process.poll() is None, "the decode ended before it could be interrupted"
    process.send_signal(getattr(signal, signal_name))
    _, err = process.communicate(timeout=60)
    assert process.returncode == status and message in err and "Traceback" not in err
    assert list(out.iterdir()) == []
