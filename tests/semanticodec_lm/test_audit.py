"""The bad-input audit as a table: every case is refused with its exit status, in a message that names
the file or the argument, with no traceback and nothing partial left behind.

Command-line cases run ``semanticodec`` in-process (``main``); API cases call the library. A tiny
codec stands in for the shipped one where the model does not matter; ``generate`` uses the shipped LM.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from codec.audio import AudioError, write_audio
from codec.checkpoints import CheckpointError
from codec.config import get_config
from codec.model import SemantiCodec
from codec.tokenfile import TokenFileError, save_tokens
from semanticodec_lm.cli import main

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Case:
    """A command line (``{name}`` fields filled from the fixture's files) and what it must give."""

    argv: str
    status: int
    names: str  # what the message must contain: the file or the argument


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    """Files every case can name: a tiny codec, good and bad audio, good and bad token files."""
    root = tmp_path_factory.mktemp("audit")
    torch.manual_seed(0)
    codec_dir = SemantiCodec(get_config("tiny-100")).save_pretrained(root / "tiny")
    t = torch.arange(16000) / 16000
    tone = 0.3 * torch.sin(2 * math.pi * 300 * t)
    for name in ("clips/clip.wav", "clips/clip.flac", "a/x.wav", "b/x.wav", "good/one.wav"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_audio(root / name, tone, 16000)
    write_audio(root / "long.wav", torch.zeros(16000 * 20), 16000)
    (root / "notes.wav").write_text("not audio at all")
    (root / "zero.wav").write_bytes(b"")
    flac = (root / "good/one.wav").read_bytes()
    (root / "cut.wav").write_bytes(flac[: len(flac) // 3])
    (root / "empty").mkdir()
    save_tokens(root / "tokens/t.tokens.safetensors", torch.randint(0, 32, (1, 30, 2)), None, get_config("tiny-100"))
    save_tokens(root / "other.tokens.safetensors", torch.zeros(1, 5, 2, dtype=torch.long), None, get_config("tiny-50"))
    (root / "garbage.tokens.safetensors").write_bytes(b"\x00" * 64)
    (root / "out_is_dir/t.wav").mkdir(parents=True)
    (root / "manifest.jsonl").write_text(json.dumps({"path": "good/one.wav", "split": "test"}) + "\n")
    return {"root": str(root), "codec": str(codec_dir), "lm": str(REPO / "lm" / "pretrained" / "default")}


T = "--model {codec}"  # the tiny codec
CLI_CASES = [
    # encode
    Case("encode {root}/missing.wav -o {root}/o1 " + T, 1, "missing.wav"),
    Case("encode {root}/notes.wav -o {root}/o2 " + T, 1, "notes.wav"),
    Case("encode {root}/zero.wav -o {root}/o3 " + T, 1, "zero.wav"),
    Case("encode {root}/cut.wav -o {root}/o4 " + T, 1, "cut.wav"),
    Case("encode {root}/empty -o {root}/o5 " + T, 2, "no audio files"),
    Case("encode {root}/good -o {root}/o6 --files-per-batch 0 " + T, 2, "files_per_batch"),
    Case("encode {root}/good -o {root}/o7 --files-per-batch -1 " + T, 2, "files_per_batch"),
    Case("encode {root}/good -o {root}/o8 --model {root}/nothing", 2, "nothing"),
    Case("encode {root}/good -o {root}/o9 --model {lm}", 2, "an LM folder"),
    Case("encode {root}/a/x.wav {root}/b/x.wav -o {root}/o10 " + T, 1, "would also be written"),
    Case("encode {root}/good -o {root}/o11 --threads 0 " + T, 2, "threads"),
    Case("encode {root}/good -o {root}/o12 --threads -3 " + T, 2, "threads"),
    Case("encode {root}/good -o {root}/o13 --precision fp16 " + T, 2, "--precision"),
    Case("encode {root}/good -o {root}/o14 --channel-policy left " + T, 2, "--channel-policy"),
    # decode
    Case("decode {root}/tokens -o {root}/d1 --cfg-scale nan " + T, 2, "cfg_scale"),
    Case("decode {root}/tokens -o {root}/d2 --cfg-scale inf " + T, 2, "cfg_scale"),
    Case("decode {root}/tokens -o {root}/d3 --cfg-scale -1 " + T, 2, "cfg_scale"),
    Case("decode {root}/tokens -o {root}/d4 --eta nan " + T, 2, "eta"),
    Case("decode {root}/tokens -o {root}/d5 --eta 2 " + T, 2, "eta"),
    Case("decode {root}/tokens -o {root}/d6 --steps 0 " + T, 2, "steps"),
    Case("decode {root}/tokens -o {root}/d7 --steps 100000 " + T, 2, "steps"),
    Case("decode {root}/tokens -o {root}/d8 --batch-size 0 " + T, 2, "batch_size"),
    Case("decode {root}/tokens -o {root}/d9 --batch-size -1 " + T, 2, "batch_size"),
    Case("decode {root}/tokens -o {root}/d10 --sampler euler " + T, 2, "--sampler"),
    Case("decode {root}/tokens -o {root}/d11 --seed abc " + T, 2, "--seed"),
    Case("decode {root}/garbage.tokens.safetensors -o {root}/d12 " + T, 1, "garbage.tokens.safetensors"),
    Case("decode {root}/other.tokens.safetensors -o {root}/d13 " + T, 1, "other.tokens.safetensors"),
    Case("decode {root}/missing.tokens.safetensors -o {root}/d14 " + T, 1, "missing.tokens.safetensors"),
    Case("decode {root}/empty -o {root}/d15 " + T, 2, "no token files"),
    Case("decode {root}/tokens -o {root}/out_is_dir --steps 1 " + T, 1, "existing directory"),
    Case("decode {root}/tokens -o {root}/d17 --precision half " + T, 2, "--precision"),
    Case("decode {root}/tokens -o {root}/d18 --model {lm}", 2, "an LM folder"),
    # info
    Case("info {root}/tokens", 1, "a folder, not a token file"),
    Case("info {root}/garbage.tokens.safetensors", 1, "garbage.tokens.safetensors"),
    Case("info {root}/missing.tokens.safetensors", 1, "missing.tokens.safetensors"),
    Case("info {root}/notes.wav", 1, "notes.wav"),
    # reconstruct
    Case("reconstruct {root}/clips -o {root}/r1 --steps 1 " + T, 1, "would also be written"),
    Case("reconstruct {root}/notes.wav -o {root}/r2 --steps 1 " + T, 1, "notes.wav"),
    Case("reconstruct {root}/good -o {root}/r3 --cfg-scale nan " + T, 2, "cfg_scale"),
    Case("reconstruct {root}/good -o {root}/r4 --steps -5 " + T, 2, "steps"),
    Case("reconstruct {root}/good -o {root}/r5 --eta -0.5 " + T, 2, "eta"),
    Case("reconstruct {root}/empty -o {root}/r6 " + T, 2, "no audio files"),
    Case("reconstruct {root}/good -o {root}/r7 --batch-size 0 " + T, 2, "batch_size"),
    # generate (the shipped LM)
    Case("generate --seconds 1 -o {root}/g1.wav --temperature nan", 2, "temperature"),
    Case("generate --seconds 1 -o {root}/g2.wav --temperature -1", 2, "temperature"),
    Case("generate --seconds 1 -o {root}/g3.wav --top-p 0", 2, "top_p"),
    Case("generate --seconds 1 -o {root}/g4.wav --top-p 1.5", 2, "top_p"),
    Case("generate --seconds 1 -o {root}/g5.wav --top-k 0", 2, "top_k"),
    Case("generate --seconds 0 -o {root}/g6.wav", 2, "seconds"),
    Case("generate --seconds nan -o {root}/g7.wav", 2, "seconds"),
    Case("generate --seconds 1000 -o {root}/g8.wav", 2, "this LM holds"),
    Case("generate --seconds 1 -o {root}/g9.wav --text tone --cfg-scale nan", 2, "cfg_scale"),
    Case("generate --seconds 1 -o {root}/g10.mp3", 2, ".wav"),
    Case("generate --seconds 1 -o {root}/g11.wav --prompt {root}/missing.wav", 2, "missing.wav"),
    Case("generate --seconds 1 -o {root}/g12.wav --prompt {root}/empty", 2, "a folder, not an audio file"),
    Case("generate --seconds 1 -o {root}/g13.wav --prompt {root}/notes.wav", 2, "notes.wav"),
    Case("generate --seconds 1 -o {root}/g14.wav --prompt {root}/long.wav", 2, "long.wav: 20.00 s of prompt"),
    Case("generate --seconds 1 -o {root}/g15.wav --model {root}/nothing", 2, "nothing"),
    Case("generate --seconds 1 -o {root}/g16.wav --decode-steps 0", 2, "steps"),
    Case("generate --seconds 1 -o {root}/g17.wav --precision fp16", 2, "--precision"),
    Case("generate --seconds 1 -o {root}/g18.wav --threads 0", 2, "threads"),
    # eval
    Case("eval --manifest {root}/missing.jsonl -o {root}/e1 " + T, 2, "missing.jsonl"),
    Case("eval --manifest {root}/manifest.jsonl -o {root}/e2 --split valid " + T, 2, "manifest.jsonl"),
    Case("eval --manifest {root}/manifest.jsonl -o {root}/e3 --limit 0 " + T, 2, "--limit"),
]


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".") and p.is_file()]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.argv.split(" -o")[0].split("{root}/")[-1] + f"|{c.names}"
                                                 for c in CLI_CASES])
def test_cli_refuses_bad_input_clearly(world, case, capsys):
    argv = case.argv.format(**world).split()
    if "--text" in argv:  # a caption with spaces
        argv[argv.index("--text") + 1] = "a steady tone"
    outputs = [Path(a) for a in argv[argv.index("-o") + 1 : argv.index("-o") + 2]] if "-o" in argv else []
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse refuses unknown choices and malformed numbers itself
        status = exit_.code
    err = capsys.readouterr().err
    assert status == case.status, err
    assert case.names in err, err
    assert "Traceback" not in err
    assert not _leftovers(Path(world["root"]))
    for output in outputs:  # a refused run writes nothing under its output (pre-existing folders aside)
        assert not output.exists() or output.is_dir() and not [p for p in output.rglob("*") if p.is_file()]


API_CASES: list[tuple[str, Callable[[SemantiCodec], object], type[Exception], str]] = [
    ("nan guidance", lambda c: c.decode(torch.zeros(1, 5, 2, dtype=torch.long), cfg_scale=float("nan")), ValueError,
     "cfg_scale"),
    ("nan eta", lambda c: c.decode(torch.zeros(1, 5, 2, dtype=torch.long), eta=float("nan")), ValueError, "eta"),
    ("batch size 0", lambda c: c.encode(torch.zeros(1, 16000), 16000, batch_size=0), ValueError, "batch_size"),
    ("channels last", lambda c: c.encode(torch.zeros(1, 32000, 2), 16000), AudioError, "channels last"),
    ("uint8 tokens", lambda c: c.decode(torch.zeros(1, 5, 2, dtype=torch.uint8)), TokenFileError, "torch.uint8"),
    ("ids out of range", lambda c: c.decode(torch.full((1, 5, 2), 999)), TokenFileError, "outside"),
    ("mixed inputs", lambda c: c.encode(["a.wav", torch.zeros(16000)], 16000), ValueError, "mixture"),
    ("no sample rate", lambda c: c.encode(torch.zeros(1, 16000)), ValueError, "sample_rate"),
    ("bad precision", lambda c: c.reconstruct(torch.zeros(1, 16000), 16000, precision="fp16"), ValueError,
     "precision"),
    ("string seed", lambda c: c.decode(torch.zeros(1, 5, 2, dtype=torch.long), seed="7"), ValueError, "seed"),
    ("float seed", lambda c: c.decode(torch.zeros(1, 5, 2, dtype=torch.long), seed=1.5), ValueError, "seed"),
    ("seeds per item", lambda c: c.decode(torch.zeros(2, 5, 2, dtype=torch.long), seed=[1]), ValueError, "seeds"),
    ("nan samples", lambda c: c.encode(torch.full((1, 16000), float("nan")), 16000), AudioError, "NaN"),
    ("unknown codec", lambda c: SemantiCodec.from_pretrained("no-such-codec"), CheckpointError, "no-such-codec"),
    ("numpy int16", lambda c: c.encode(np.zeros((1, 16000), dtype=np.int16), 16000), AudioError, "floating-point"),
]


@pytest.mark.parametrize("name, call, error, names", API_CASES, ids=[case[0] for case in API_CASES])
def test_api_refuses_bad_input_clearly(world, name, call, error, names):
    codec = SemantiCodec.from_pretrained(world["codec"])
    with pytest.raises(error, match=names):
        call(codec)
