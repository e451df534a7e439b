"""The semanticodec CLI end to end on generated audio with a tiny codec."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from codec.audio import write_audio
from semanticodec_lm.cli import main
from codec.config import get_config
from codec.model import SemantiCodec
from codec.tokenfile import load_tokens


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "tiny-100"
    SemantiCodec(get_config("tiny-100")).save_pretrained(folder)
    return folder


@pytest.fixture()
def clips(tmp_path):
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    t = torch.arange(16000 * 2) / 16000
    write_audio(folder / "a.wav", 0.3 * torch.sin(2 * torch.pi * 300 * t), 16000)
    write_audio(folder / "sub" / "b.flac", 0.3 * torch.sin(2 * torch.pi * 600 * t[:24000]), 16000)
    (folder / "sub" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    (folder / "notes.txt").write_text("not audio, ignored")
    return folder


def test_encode_folder_skips_corrupt_file_and_resumes(model_dir, clips, tmp_path, capsys):
    out = tmp_path / "tokens"
    status = main(["encode", str(clips), "-o", str(out), "--model", str(model_dir)])
    assert status == 1  # one input failed
    err = capsys.readouterr().err
    assert "broken.wav" in err
    a = out / "a.wav.tokens.safetensors"
    b = out / "sub" / "b.flac.tokens.safetensors"
    assert a.is_file() and b.is_file() and not (out / "sub" / "broken.wav.tokens.safetensors").exists()
    tokens = load_tokens(a, expect=get_config("tiny-100"))
    assert tokens.lengths.tolist() == [104] and tokens.extra["source"].endswith("a.wav")
    before = a.stat().st_mtime_ns
    (clips / "sub" / "broken.wav").unlink()
    assert main(["encode", str(clips), "-o", str(out), "--model", str(model_dir)]) == 0
    assert a.stat().st_mtime_ns == before  # valid outputs are not redone
    assert "encoded 0 file(s)" in capsys.readouterr().out


def test_info_and_decode_and_reconstruct(model_dir, clips, tmp_path, capsys):
    (clips / "sub" / "broken.wav").unlink()
    tokens_dir, wav_dir = tmp_path / "tokens", tmp_path / "decoded"
    assert main(["encode", str(clips), "-o", str(tokens_dir), "--model", str(model_dir)]) == 0
    capsys.readouterr()
    assert main(["info", str(tokens_dir / "a.wav.tokens.safetensors")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["frames"] == [104] and info["codec"]["config_name"] == "tiny-100"
    bad = tokens_dir / "zz.tokens.safetensors"
    bad.write_bytes(b"garbage")
    status = main(["decode", str(tokens_dir), "-o", str(wav_dir), "--model", str(model_dir), "--steps", "1", "--seed", "0"])
    assert status == 1 and "zz.tokens.safetensors" in capsys.readouterr().err
    audio, rate = sf.read(wav_dir / "a.wav")
    assert rate == 16000 and len(audio) == 104 * 320
    assert sf.info(wav_dir / "sub" / "b.wav").frames == 80 * 320
    assert not list(wav_dir.rglob(".*tmp*"))
    recon = tmp_path / "recon"
    assert main(["reconstruct", str(clips / "a.wav"), "-o", str(recon), "--model", str(model_dir), "--steps", "1", "--seed", "0"]) == 0
    again, _ = sf.read(recon / "a.wav")
    assert len(again) == len(audio)


def test_decode_refuses_tokens_of_another_codec(model_dir, tmp_path, capsys):
    from codec.tokenfile import save_tokens

    other = tmp_path / "other.tokens.safetensors"
    save_tokens(other, torch.zeros(1, 5, 2, dtype=torch.long), None, get_config("tiny-50"))
    assert main(["decode", str(other), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--steps", "1"]) == 1
    assert "made by codec 'tiny-50'" in capsys.readouterr().err


def test_tokens_of_a_retrained_codec_of_the_same_configuration_are_refused_and_re_encoded(model_dir, clips,
                                                                                          tmp_path, capsys):
    (clips / "sub" / "broken.wav").unlink()
    tokens_dir = tmp_path / "tokens"
    assert main(["encode", str(clips / "a.wav"), "-o", str(tokens_dir), "--model", str(model_dir)]) == 0
    retrained = SemantiCodec.from_pretrained(model_dir)
    with torch.no_grad():
        retrained.encoder.quantizer._codebook.embed.add_(1e-3)
    other = retrained.save_pretrained(tmp_path / "retrained")
    capsys.readouterr()
    token_file = tokens_dir / "a.wav.tokens.safetensors"
    assert main(["decode", str(token_file), "-o", str(tmp_path / "out"), "--model", str(other), "--steps", "1"]) == 1
    assert "same configuration, other encoder weights" in capsys.readouterr().err
    before = token_file.stat().st_mtime_ns
    assert main(["encode", str(clips / "a.wav"), "-o", str(tokens_dir), "--model", str(other)]) == 0
    assert token_file.stat().st_mtime_ns != before  # stale tokens of the other codec are made again
    assert load_tokens(token_file).codec["tokens_digest"] == retrained.tokens_digest()


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "semanticodec"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "encode" in result.stdout and "reconstruct" in result.stdout


def test_probe_command_refuses_bad_options_in_one_line(tmp_path, capsys):
    status = main(["probe", "--manifest", str(tmp_path / "m.jsonl"), "-o", str(tmp_path / "out"), "--tasks", "domain,mood"])
    err = capsys.readouterr().err
    assert status == 2 and "--tasks: unknown task(s) ['mood']" in err and "Traceback" not in err
    assert main(["probe", "--manifest", "m.jsonl", "-o", str(tmp_path / "out"), "--limit", "0"]) == 2
    assert "--limit must be a positive number" in capsys.readouterr().err


def test_eval_command_reports_errors_without_traceback(tmp_path, capsys):
    status = main(["eval", "--manifest", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "out"), "--metrics", "mel"])
    assert status == 2 and "cannot read manifest" in capsys.readouterr().err


def test_default_threads_are_the_cores_not_already_busy(monkeypatch):
    import os

    from semanticodec_lm import hardware

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    for load, expected in ((0.0, 4), (1.2, 3), (2.6, 1), (9.0, 1)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert hardware.usable_cores() == expected

    def no_load():
        raise OSError("no load average")

    monkeypatch.setattr(os, "getloadavg", no_load)
    assert hardware.usable_cores() == 4


def test_the_cli_sets_the_default_threads_unless_told(monkeypatch, tmp_path):
    from semanticodec_lm import hardware

    monkeypatch.setattr(hardware, "usable_cores", lambda: 1)
    chosen = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    before = torch.get_num_threads()
    main(["info", str(tmp_path / "missing.tokens.safetensors")])
    main(["info", str(tmp_path / "missing.tokens.safetensors"), "--threads", "2"])
    assert chosen == [1, before, 2, before]  # each run's choice, then the caller's count restored
