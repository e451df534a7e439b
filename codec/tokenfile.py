"""The token container: codec tokens plus the identity of the codec that made them.

A token file is a safetensors file (no pickle, memory-mappable) holding

- ``tokens``  int64 [B, T, 2]: ``[..., 0]`` semantic id, ``[..., 1]`` acoustic id; rows past an
  item's length are padding (zeros);
- ``lengths`` int64 [B]: frames per item;

and, in the safetensors metadata, ``format`` (``semanticodec-tokens``), ``format_version``,
``codec`` (JSON: token rate, vocabulary sizes, sample rate, config name and hash, package
version), ``extra`` (JSON, free-form: source paths, captions...) and ``sha256`` of the tensor
bytes. Files are written atomically and validated on read: shape, dtype, id ranges, the checksum
and, if asked, that the codec identity matches the codec about to decode them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from codec.config import SAMPLE_RATE, CodecConfig
from codec.files import atomic_path

FORMAT = "semanticodec-tokens"
FORMAT_VERSION = "1"
SUFFIX = ".tokens.safetensors"


class TokenFileError(ValueError):
    """A token file or token tensor is malformed or belongs to another codec."""


def package_version() -> str:
    """The installed semanticodec-lm version (``unknown`` when running from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("semanticodec-lm")
    except PackageNotFoundError:
        return "unknown"


def codec_identity(config: CodecConfig, tokens_digest: str | None = None) -> dict:
    """What a token file records about the codec that produced it; ``tokens_digest``
    (:meth:`codec.model.SemantiCodec.tokens_digest`) names the encoder weights that gave its ids
    their meaning, so that two codecs of one configuration but different training are told apart."""
    identity = {
        "config_name": config.name,
        "config_hash": config.config_hash(),
        "token_rate": config.token_rate,
        "semantic_vocab_size": config.semantic_vocab_size,
        "acoustic_vocab_size": config.acoustic_vocab_size,
        "sample_rate": SAMPLE_RATE,
        "version": package_version(),
    }
    if tokens_digest is not None:
        identity["tokens_digest"] = tokens_digest
    return identity


@dataclass
class TokenFile:
    """Tokens [B, T, 2] int64, lengths [B] int64, the producing codec's identity and extras."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    codec: dict
    extra: dict = field(default_factory=dict)

    def items(self) -> list[torch.Tensor]:
        """Each item's tokens without padding: a list of [T_i, 2] int64 tensors."""
        return [self.tokens[i, : int(n)] for i, n in enumerate(self.lengths)]


def validate_tokens(
    tokens: torch.Tensor,
    lengths: torch.Tensor | None,
    semantic_vocab_size: int,
    acoustic_vocab_size: int,
    name: str = "<tokens>",
) -> torch.Tensor:
    """Check codec tokens [B, T, 2] (int) and lengths [B]; returns lengths (full T when None).

    Raises :class:`TokenFileError` naming ``name`` and the problem: wrong rank or last dimension,
    a non-integer dtype, no frames, lengths out of range, or ids outside the vocabularies.
    """
    if not isinstance(tokens, torch.Tensor):
        raise TokenFileError(f"{name}: tokens must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dim() == 2 and tokens.shape[-1] == 2:
        tokens = tokens.unsqueeze(0)
    if tokens.dim() != 3 or tokens.shape[-1] != 2:
        raise TokenFileError(
            f"{name}: tokens must have shape [B, T, 2] (semantic, acoustic), got {list(tokens.shape)}"
        )
    if tokens.dtype not in (torch.int16, torch.int32, torch.int64):
        # Unsigned bytes would show a -1 as "255 outside the vocabulary"; say what is wrong instead.
        raise TokenFileError(f"{name}: tokens must be integers of a signed type (int64, int32 or int16), got {tokens.dtype}")
    batch, frames = tokens.shape[0], tokens.shape[1]
    if batch == 0 or frames == 0:
        raise TokenFileError(f"{name}: tokens are empty (shape {list(tokens.shape)})")
    if lengths is None:
        lengths = torch.full((batch,), frames, dtype=torch.long)
    lengths = torch.as_tensor(lengths, dtype=torch.long).reshape(-1)
    if lengths.numel() != batch:
        raise TokenFileError(f"{name}: {lengths.numel()} lengths for {batch} items")
    if (lengths < 1).any() or (lengths > frames).any():
        raise TokenFileError(f"{name}: lengths must lie in [1, {frames}], got {lengths.tolist()}")
    valid = torch.arange(frames, device=tokens.device)[None, :] < lengths.to(tokens.device)[:, None]
    for column, vocab, stream in ((0, semantic_vocab_size, "semantic"), (1, acoustic_vocab_size, "acoustic")):
        ids = tokens[..., column][valid]
        bad = (ids < 0) | (ids >= vocab)
        if bad.any():
            first = int(ids[bad][0])
            raise TokenFileError(
                f"{name}: {int(bad.sum())} {stream} ids outside [0, {vocab}) (e.g. {first}); "
                "were these tokens made by another codec configuration?"
            )
    return lengths


def _checksum(tokens: torch.Tensor, lengths: torch.Tensor) -> str:
    digest = hashlib.sha256()
    digest.update(tokens.contiguous().numpy().tobytes())
    digest.update(lengths.contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_tokens(
    path: str | os.PathLike,
    tokens: torch.Tensor,
    lengths: torch.Tensor | None,
    config: CodecConfig,
    extra: dict | None = None,
    tokens_digest: str | None = None,
) -> None:
    """Validate and write tokens [B, T, 2] and lengths [B] atomically (temp file, then rename);
    ``tokens_digest``: the producing codec's :meth:`~codec.model.SemantiCodec.tokens_digest`."""
    path = Path(path)
    lengths = validate_tokens(tokens, lengths, config.semantic_vocab_size, config.acoustic_vocab_size, str(path))
    tokens = tokens.reshape(len(lengths), -1, 2).to(torch.long).cpu().contiguous()
    lengths = lengths.cpu().contiguous()
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "codec": json.dumps(codec_identity(config, tokens_digest), sort_keys=True),
        "extra": json.dumps(extra or {}, sort_keys=True),
        "sha256": _checksum(tokens, lengths),
    }
    with atomic_path(path) as temporary:
        save_file({"tokens": tokens, "lengths": lengths}, str(temporary), metadata=metadata)


def _read_metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_tokens(path: str | os.PathLike, expect: CodecConfig | None = None,
                tokens_digest: str | None = None) -> TokenFile:
    """Read and validate a token file; with ``expect`` (and the codec's ``tokens_digest``), also check
    it was made by that codec."""
    path = Path(path)
    if path.is_dir():
        raise TokenFileError(f"{path}: a folder, not a token file (decode takes folders; info takes files)")
    if not path.is_file():
        raise TokenFileError(f"{path}: no such token file")
    try:
        metadata = _read_metadata(path)
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise TokenFileError(f"{path}: not a readable token file ({error})") from None
    if metadata.get("format") != FORMAT:
        raise TokenFileError(f"{path}: not a semanticodec token file (format={metadata.get('format')!r})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise TokenFileError(f"{path}: unsupported token-file version {metadata.get('format_version')!r}")
    if set(tensors) != {"tokens", "lengths"}:
        raise TokenFileError(f"{path}: expected tensors 'tokens' and 'lengths', found {sorted(tensors)}")
    try:
        codec = json.loads(metadata["codec"])
        extra = json.loads(metadata.get("extra", "{}"))
    except (KeyError, json.JSONDecodeError):
        raise TokenFileError(f"{path}: codec identity missing or corrupt") from None
    tokens, lengths = tensors["tokens"], tensors["lengths"]
    if tokens.dtype != torch.long or lengths.dtype != torch.long:
        raise TokenFileError(f"{path}: tokens and lengths must be int64")
    if metadata.get("sha256") != _checksum(tokens, lengths):
        raise TokenFileError(f"{path}: checksum mismatch: the file was modified or is damaged")
    try:
        validate_tokens(tokens, lengths, int(codec["semantic_vocab_size"]), int(codec["acoustic_vocab_size"]), str(path))
    except KeyError as error:
        raise TokenFileError(f"{path}: codec identity lacks {error}") from None
    if expect is not None:
        check_identity(codec, expect, str(path), tokens_digest)
    return TokenFile(tokens=tokens, lengths=lengths, codec=codec, extra=extra)


def identity_mismatch(recorded: dict, expected: dict) -> str | None:
    """How two codec identities differ on what fixes the tokens' meaning (rate, vocabularies, config
    hash, and the encoder weights' ``tokens_digest`` where both record one: files written before it
    existed cannot be checked on it), as ``"key=recorded, not key=expected"``, or None when they
    agree (names and versions may differ)."""
    for key in ("token_rate", "semantic_vocab_size", "acoustic_vocab_size", "config_hash"):
        if recorded.get(key) != expected.get(key):
            return f"{key}={recorded.get(key)!r}, not {key}={expected.get(key)!r}"
    ours, theirs = recorded.get("tokens_digest"), expected.get("tokens_digest")
    if ours is not None and theirs is not None and ours != theirs:
        return f"tokens_digest={ours!r}, not tokens_digest={theirs!r}: same configuration, other encoder weights"
    return None


def check_identity(codec: dict, config: CodecConfig, name: str, tokens_digest: str | None = None) -> None:
    """Raise unless the recorded codec identity matches ``config`` (hash, rate and vocabularies) and,
    when both are known, the encoder weights' ``tokens_digest``."""
    mismatch = identity_mismatch(codec, codec_identity(config, tokens_digest))
    if mismatch:
        raise TokenFileError(
            f"{name}: made by codec {codec.get('config_name')!r}, but this codec is {config.name!r} ({mismatch})"
        )
