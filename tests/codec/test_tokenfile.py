import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from codec.config import get_config
from codec.tokenfile import (
    TokenFileError,
    check_identity,
    codec_identity,
    identity_mismatch,
    load_tokens,
    save_tokens,
    validate_tokens,
)

CONFIG = get_config("tiny-100")


def random_tokens(batch=2, frames=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    sem = torch.randint(0, CONFIG.semantic_vocab_size, (batch, frames, 1), generator=g)
    ac = torch.randint(0, CONFIG.acoustic_vocab_size, (batch, frames, 1), generator=g)
    return torch.cat([sem, ac], dim=-1)


def test_round_trip_keeps_tokens_lengths_identity_and_extra(tmp_path):
    tokens = random_tokens()
    tokens[1, 20:] = 0
    lengths = torch.tensor([30, 20])
    path = tmp_path / "x.tokens.safetensors"
    save_tokens(path, tokens, lengths, CONFIG, extra={"source": "a.wav"})
    loaded = load_tokens(path, expect=CONFIG)
    assert torch.equal(loaded.tokens, tokens) and torch.equal(loaded.lengths, lengths)
    assert loaded.codec["config_hash"] == CONFIG.config_hash()
    assert loaded.codec["token_rate"] == 100 and loaded.codec["sample_rate"] == 16000
    assert loaded.extra == {"source": "a.wav"}
    assert [t.shape[0] for t in loaded.items()] == [30, 20]
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


def test_tampered_tensor_is_rejected_by_checksum(tmp_path):
    path = tmp_path / "x.tokens.safetensors"
    save_tokens(path, random_tokens(), None, CONFIG)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors["tokens"][0, 0, 0] = (tensors["tokens"][0, 0, 0] + 1) % CONFIG.semantic_vocab_size
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(TokenFileError, match="checksum mismatch"):
        load_tokens(path)


def test_tampered_identity_and_other_codec_are_rejected(tmp_path):
    path = tmp_path / "x.tokens.safetensors"
    save_tokens(path, random_tokens(), None, CONFIG)
    with pytest.raises(TokenFileError, match="this codec is 'tiny-50'"):
        load_tokens(path, expect=get_config("tiny-50"))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    codec = json.loads(meta["codec"])
    codec["semantic_vocab_size"] = 8  # ids now out of range for the claimed vocabulary
    meta["codec"] = json.dumps(codec)
    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(TokenFileError, match="semantic ids outside"):
        load_tokens(path)


def test_tokens_of_other_encoder_weights_are_refused_and_files_without_a_digest_still_load(tmp_path):
    path = tmp_path / "x.tokens.safetensors"
    save_tokens(path, random_tokens(), None, CONFIG, tokens_digest="aaaa")
    assert load_tokens(path, expect=CONFIG, tokens_digest="aaaa").codec["tokens_digest"] == "aaaa"
    assert load_tokens(path, expect=CONFIG).codec["tokens_digest"] == "aaaa"  # the caller knows no digest
    with pytest.raises(TokenFileError, match=r"x.tokens.safetensors: .*tokens_digest='aaaa', not tokens_digest='bbbb'"
                                             r": same configuration, other encoder weights"):
        load_tokens(path, expect=CONFIG, tokens_digest="bbbb")
    legacy = tmp_path / "legacy.tokens.safetensors"
    save_tokens(legacy, random_tokens(), None, CONFIG)
    assert "tokens_digest" not in load_tokens(legacy, expect=CONFIG, tokens_digest="bbbb").codec
    assert identity_mismatch(codec_identity(CONFIG, "aaaa"), codec_identity(CONFIG, "aaaa")) is None
    assert identity_mismatch(codec_identity(CONFIG), codec_identity(get_config("tiny-50"), "aaaa")).startswith(
        "token_rate=")


def test_not_a_token_file(tmp_path):
    junk = tmp_path / "junk.tokens.safetensors"
    junk.write_bytes(b"not safetensors at all")
    with pytest.raises(TokenFileError, match="junk.tokens.safetensors: not a readable token file"):
        load_tokens(junk)
    with pytest.raises(TokenFileError, match="no such token file"):
        load_tokens(tmp_path / "missing.tokens.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"tokens": torch.zeros(1, 2, 2, dtype=torch.long)}, str(other))
    with pytest.raises(TokenFileError, match="not a semanticodec token file"):
        load_tokens(other)


@pytest.mark.parametrize(
    "tokens, message",
    [
        (torch.zeros(1, 5, 3, dtype=torch.long), r"shape \[B, T, 2\]"),
        (torch.zeros(1, 5, 2), "must be integers"),
        (torch.zeros(1, 0, 2, dtype=torch.long), "empty"),
        (torch.full((1, 5, 2), -1, dtype=torch.long), "semantic ids outside"),
        (torch.tensor([[[0, 32]]]), "acoustic ids outside"),
    ],
)
def test_validate_rejects_bad_tokens(tokens, message):
    with pytest.raises(TokenFileError, match=message):
        validate_tokens(tokens, None, CONFIG.semantic_vocab_size, CONFIG.acoustic_vocab_size)


def test_validate_rejects_bad_lengths_and_ignores_padding():
    tokens = random_tokens(batch=1, frames=4)
    tokens[0, 3] = torch.tensor([999, 999])  # padding beyond the length is not checked
    assert validate_tokens(tokens, torch.tensor([3]), 64, 32).tolist() == [3]
    with pytest.raises(TokenFileError, match="lengths must lie"):
        validate_tokens(tokens, torch.tensor([5]), 64, 32)


def test_check_identity_names_the_file():
    identity = {"token_rate": 100, "semantic_vocab_size": 64, "acoustic_vocab_size": 32, "config_hash": "x"}
    with pytest.raises(TokenFileError, match="^f.tokens: made by codec"):
        check_identity(identity, CONFIG, "f.tokens")


def test_outputs_get_the_usual_permissions_and_no_temporary_file_stays(tmp_path):
    import os

    from codec.audio import write_audio
    from codec.files import atomic_path

    umask = os.umask(0o022)
    os.umask(umask)
    write_audio(tmp_path / "a.wav", torch.zeros(1600), 16000)
    assert (tmp_path / "a.wav").stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.txt") as temporary:
            temporary.write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]
