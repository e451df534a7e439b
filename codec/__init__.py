"""SemantiCodec: 16-kHz audio <-> (semantic, acoustic) tokens at 25/50/100 tokens/s.

The public surface: :class:`SemantiCodec` (encode / decode / reconstruct / from_pretrained),
:func:`load_audio`, the token-file functions and the configurations. Names are imported on first
use, so ``import codec.config`` stays light.
"""

from importlib import import_module

_EXPORTS = {
    "SemantiCodec": "codec.model",
    "Tokens": "codec.model",
    "AudioError": "codec.audio",
    "load_audio": "codec.audio",
    "CONFIGS": "codec.config",
    "CodecConfig": "codec.config",
    "get_config": "codec.config",
    "official_config": "codec.config",
    "TokenFile": "codec.tokenfile",
    "TokenFileError": "codec.tokenfile",
    "load_tokens": "codec.tokenfile",
    "save_tokens": "codec.tokenfile",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'codec' has no attribute {name!r}")
