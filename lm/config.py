"""Language-model configuration: one dataclass, named sizes from ``tiny`` (tests) to ``1b`` (GPUs).

The codec's vocabulary sizes are fields of the config, so a model knows which token files it can
read: ``lm_config("small", semantic_vocab_size=16384, acoustic_vocab_size=8192)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lm.layout import PATTERNS, TokenLayout

ATTENTION_BACKENDS = ("sdpa", "xformers")

# Approximate parameter counts (transformer body, vocabulary excluded): tiny 0.1 M, small 25 M,
# medium 300 M, 1b 1.0 B.
LM_SIZES: dict[str, dict] = {
    "tiny": dict(dim=64, n_layers=2, n_heads=4, max_seq_len=1024),
    "small": dict(dim=512, n_layers=8, n_heads=8, max_seq_len=4096),
    "medium": dict(dim=1024, n_layers=24, n_heads=16, max_seq_len=4096),
    "1b": dict(dim=2048, n_layers=20, n_heads=16, max_seq_len=4096),
}


@dataclass(frozen=True)
class LMConfig:
    """Sizes of the decoder-only transformer and of the token vocabulary it reads and writes.

    ``pattern`` / ``delay`` choose how codec frames become one sequence (see :mod:`lm.layout`);
    ``text_vocab_size`` is 0 for a model without text conditioning.
    """

    semantic_vocab_size: int = 1024
    acoustic_vocab_size: int = 1024
    text_vocab_size: int = 0
    pattern: str = "interleave"
    delay: int = 1
    dim: int = 512
    n_layers: int = 8
    n_heads: int = 8
    ffn_dim: int | None = None  # None: 8/3 * dim rounded up to a multiple of 64 (SwiGLU)
    max_seq_len: int = 4096
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    dropout: float = 0.0
    attention: str = "sdpa"
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if (self.dim // self.n_heads) % 2:
            raise ValueError(f"head dimension {self.dim // self.n_heads} must be even for rotary positions")
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(f"attention must be one of {ATTENTION_BACKENDS}, got {self.attention!r}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}")
        if self.max_seq_len < 8:
            raise ValueError(f"max_seq_len must be at least 8, got {self.max_seq_len}")
        self.layout  # validates the vocabulary sizes and delay

    @property
    def layout(self) -> TokenLayout:
        """The token layout (vocabulary ranges, pattern) this model is trained on."""
        return TokenLayout(
            semantic_vocab_size=self.semantic_vocab_size,
            acoustic_vocab_size=self.acoustic_vocab_size,
            text_vocab_size=self.text_vocab_size,
            pattern=self.pattern,
            delay=self.delay,
        )

    @property
    def vocab_size(self) -> int:
        return self.layout.vocab_size

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden_dim(self) -> int:
        """Width of the SwiGLU feed-forward layer."""
        if self.ffn_dim is not None:
            return self.ffn_dim
        return -(-(8 * self.dim // 3) // 64) * 64

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LMConfig":
        """Build from a plain dict, naming any key that is not a field."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LMConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)


def lm_config(size: str = "small", **fields) -> LMConfig:
    """A named size (``tiny``, ``small``, ``medium``, ``1b``) with any field overridden by keyword."""
    if size not in LM_SIZES:
        raise KeyError(f"unknown LM size {size!r}; known: {', '.join(LM_SIZES)}")
    return LMConfig.from_dict({**LM_SIZES[size], **fields})
