"""A pre-norm decoder-only transformer over the unified token vocabulary, in one file.

RMSNorm, rotary positions, SwiGLU feed-forward, tied input/output embeddings. Attention goes
through ``torch.nn.functional.scaled_dot_product_attention``; with ``attention="xformers"`` on
CUDA, xformers' ``memory_efficient_attention`` is used where it applies (imported lazily, never
required). A :class:`KVCache` makes generation cost one token's work per step.

    from lm.config import lm_config
    from lm.model import AudioLM
    model = AudioLM(lm_config("tiny", semantic_vocab_size=64, acoustic_vocab_size=32))
    logits = model(ids)                      # ids [B, L] int64 -> logits [B, L, V]
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from lm.config import LMConfig


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dimension, computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


def rotary_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [length, head_dim / 2] float32 for rotary positions 0 .. length-1."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, L, D] by position; cos/sin [L, D/2]. Rotates (first half, second half) pairs."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


class KVCache:
    """Keys and values of every layer for one batch, preallocated to ``max_len`` positions.

    ``keys[layer]`` / ``values[layer]`` are [B, H, max_len, D]; ``length`` positions are filled;
    ``key_valid`` [B, max_len] bool marks real (non-padding) positions.
    """

    def __init__(self, config: LMConfig, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch_size, config.n_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.key_valid = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
        self.has_padding = False
        self.length = 0
        self.max_len = max_len

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, H, L, D] after the filled positions; return all keys/values so far."""
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


_XFORMERS_OPS = None
_XFORMERS_WARNED = False


def _xformers_ops():
    """xformers.ops when it imports with its compiled kernels, else None (warned once)."""
    global _XFORMERS_OPS, _XFORMERS_WARNED
    if _XFORMERS_OPS is None:
        try:
            import xformers
            import xformers.ops as xops

            _XFORMERS_OPS = xops if getattr(xformers, "_has_cpp_library", False) else False
        except Exception:
            _XFORMERS_OPS = False
    if _XFORMERS_OPS is False and not _XFORMERS_WARNED:
        warnings.warn("attention='xformers' but xformers cannot run here; using scaled_dot_product_attention")
        _XFORMERS_WARNED = True
    return _XFORMERS_OPS or None


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    backend: str = "sdpa",
    dropout: float = 0.0,
) -> torch.Tensor:
    """Attention over q [B, H, Lq, D], k/v [B, H, Lk, D] -> [B, H, Lq, D].

    ``mask`` [B, 1, Lq, Lk] bool (True = may attend) or None; ``causal`` applies when Lq == Lk
    and ``mask`` is None. xformers serves the unmasked CUDA cases; everything else is SDPA.
    """
    if backend == "xformers" and q.is_cuda and mask is None:
        xops = _xformers_ops()
        if xops is not None:
            bias = xops.LowerTriangularMask() if causal else None
            out = xops.memory_efficient_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias, p=dropout
            )
            return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None, dropout_p=dropout)


class Attention(nn.Module):
    """Multi-head self-attention with rotary positions and an optional KV cache."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.qkv = nn.Linear(config.dim, 3 * config.dim, bias=False)
        self.out = nn.Linear(config.dim, config.dim, bias=False)
        self.backend = config.attention
        self.dropout = config.dropout

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        causal = k.shape[2] == length
        out = attend(q, k, v, mask, causal, self.backend, self.dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).reshape(batch, length, -1))


class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(config.dim, config.hidden_dim, bias=False)
        self.up = nn.Linear(config.dim, config.hidden_dim, bias=False)
        self.down = nn.Linear(config.hidden_dim, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = Attention(config)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn = FeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        """x [B, L, dim] -> [B, L, dim]; see :meth:`AudioLM.forward` for mask and cache."""
        x = x + self.dropout(self.attention(self.attention_norm(x), cos, sin, mask, cache, layer))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class AudioLM(nn.Module):
    """Decoder-only transformer: ids [B, L] int64 -> next-id logits [B, L, V]."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight
        # Kept out of the buffers so that model.to(bfloat16) cannot round the angles.
        self._rope: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.apply(self._init_weights)
        # GPT-2's scaling keeps the residual stream's variance independent of depth.
        for name, param in self.named_parameters():
            if name.endswith(("attention.out.weight", "ffn.down.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty KV cache for ``batch_size`` rows of up to ``max_len`` positions."""
        if max_len > self.config.max_seq_len:
            raise ValueError(f"a cache of {max_len} positions exceeds max_seq_len={self.config.max_seq_len}")
        weight = self.embed.weight
        return KVCache(self.config, batch_size, max_len, weight.device, weight.dtype)

    def forward(
        self,
        ids: torch.Tensor,
        cache: KVCache | None = None,
        key_valid: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits [B, L, V] (or [B, 1, V] with ``last_only``) for ids [B, L] int64.

        With ``cache``, ids continue the cached positions and are appended to the cache.
        ``key_valid`` [B, L] bool marks real ids; False (left padding) is never attended to.
        Without padding and cache, training's pure causal attention path is taken.
        """
        batch, length = ids.shape
        start = cache.length if cache is not None else 0
        end = start + length
        if end > self.config.max_seq_len:
            raise ValueError(f"sequence of {end} positions exceeds max_seq_len={self.config.max_seq_len}")
        if cache is not None and end > cache.max_len:
            raise ValueError(f"the KV cache holds {cache.max_len} positions, {end} needed")
        mask = self._attention_mask(batch, start, length, ids.device, cache, key_valid)
        cos, sin = self._rotary(ids.device)
        cos, sin = cos[start:end], sin[start:end]
        x = self.embed(ids)
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, mask, cache, layer)
        if cache is not None:
            cache.length = end
        if last_only:
            x = x[:, -1:]
        return self.head(self.norm(x))

    def _rotary(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._rope:
            cos, sin = rotary_tables(self.config.head_dim, self.config.max_seq_len, self.config.rope_theta)
            self._rope[device] = (cos.to(device), sin.to(device))
        return self._rope[device]

    @staticmethod
    def _attention_mask(
        batch: int,
        start: int,
        length: int,
        device: torch.device,
        cache: KVCache | None,
        key_valid: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """A [B, 1, L, start+L] bool mask, or None where plain causal / full attention suffices."""
        if key_valid is None:
            key_valid = torch.ones(batch, length, dtype=torch.bool, device=device)
        padded = not bool(key_valid.all())
        if cache is not None:
            cache.key_valid[:, start : start + length] = key_valid
            cache.has_padding = cache.has_padding or padded
            padded = cache.has_padding
            valid = cache.key_valid[:, : start + length]
        else:
            valid = key_valid
        if not padded and (start == 0 or length == 1):
            return None
        query_pos = torch.arange(start, start + length, device=device)
        key_pos = torch.arange(start + length, device=device)
        causal = key_pos[None, :] <= query_pos[:, None]
        # A padding query still attends to itself, so its (ignored) row stays finite.
        self_key = key_pos[None, :] == query_pos[:, None]
        return (causal[None] & (valid[:, None, :] | self_key[None]))[:, None]
