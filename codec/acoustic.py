"""Acoustic half of the SemantiCodec encoder: silence detection, the BiLSTM, projection and the VQ codebook.

The BiLSTM reads [AudioMAE feature | semantic centroid] per token (with the ``fbank`` acoustic input
of our ``small-fbank-*`` configs, [projected fbank patch | semantic centroid]); its projected output
is matched to the nearest acoustic code. Shapes use S (segments), T (tokens per segment), F (feature width)
and V (acoustic vocabulary size).
"""

from __future__ import annotations

import torch
from torch import nn

from codec.semantic import (
    PATCH_GRID,
    check_token_range,
    concat_patches,
    nearest_codeword,
)

# A frame whose 128 normalised bins have an (unbiased) std at or below this counts as silent padding.
SILENT_FRAME_STD = 1e-7
PADDING_VALUE = -1.0


def silence_cutoff_rows(fbank_segments: torch.Tensor, tokens_per_segment: int) -> torch.Tensor:
    """First token row to overwrite with -1 in each segment: fbank [S, frames, bins] -> int64 [S].

    Official rule: if any frame is silent, column_max = last non-silent frame + 1, else all frames;
    the cut-off row is ceil(T * column_max / frames) on the flattened token axis. With one or zero
    non-silent frames among silent ones the official code falls back to column_max = 0 (every row
    masked); that is kept.
    """
    if fbank_segments.dim() != 3:
        raise ValueError(f"expected fbank segments [S, frames, bins], got {list(fbank_segments.shape)}")
    frames = fbank_segments.shape[1]
    silent = torch.std(fbank_segments, dim=-1) <= SILENT_FRAME_STD
    active = ~silent
    frame_index = torch.arange(frames, device=fbank_segments.device)
    last_active = torch.where(active, frame_index, -1).max(dim=1).values
    column_max = torch.where(active.sum(dim=1) <= 1, 0, last_active + 1)
    column_max = torch.where(silent.any(dim=1), column_max, frames)
    return (tokens_per_segment * column_max + frames - 1) // frames


def mask_padding_rows(x: torch.Tensor, cutoff_rows: torch.Tensor) -> torch.Tensor:
    """Set rows >= cutoff_rows[s] of segment s to exactly -1: x [S, T, D], cutoff [S] -> [S, T, D]."""
    rows = torch.arange(x.shape[1], device=x.device)
    padded = rows[None, :] >= cutoff_rows.to(x.device)[:, None]
    return x.masked_fill(padded[..., None], PADDING_VALUE)


def build_lstm_input(
    features: torch.Tensor, centroids: torch.Tensor, cutoff_rows: torch.Tensor
) -> torch.Tensor:
    """LSTM input [feature | centroid] with padding rows at -1: [S, T, F] x2, [S] -> [S, T, 2F]."""
    return mask_padding_rows(torch.cat([features, centroids], dim=-1), cutoff_rows)


def build_acoustic_lstm(feature_dim: int, num_layers: int) -> nn.LSTM:
    """Official BiLSTM: input 2F, hidden 2F, batch_first; [S, T, 2F] -> ([S, T, 4F], state)."""
    return nn.LSTM(
        input_size=2 * feature_dim,
        hidden_size=2 * feature_dim,
        num_layers=num_layers,
        bias=True,
        batch_first=True,
        bidirectional=True,
    )


ONEDNN_MIN_BATCH = 8  # measured crossover on a 2-core CPU: oneDNN wins from about 8 sequences up


def run_acoustic_lstm(lstm: nn.LSTM, lstm_input: torch.Tensor) -> torch.Tensor:
    """BiLSTM outputs of a batch of independent segments: [S, T, 2F] -> [S, T, 4F].

    On the CPU the per-step cost is streaming the recurrent weights from memory. PyTorch's native
    kernel is fastest for one sequence, and its small-batch matrix products are slower per
    sequence than running sequences one by one; oneDNN amortises the weights from about 8
    sequences up. Both paths agree to ~2e-7, far inside the official-parity tolerance. Under bf16
    autocast oneDNN is used at any batch: the native kernel's bf16 path is several times slower
    than its float32 one, oneDNN's about twice as fast.
    """
    if lstm_input.device.type != "cpu":
        return lstm(lstm_input)[0]
    bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    use_onednn = torch.backends.mkldnn.enabled and (bf16 or lstm_input.shape[0] >= ONEDNN_MIN_BATCH)
    # None leaves the other oneDNN settings alone (and avoids a TF32 warning on every call).
    with torch.backends.mkldnn.flags(enabled=use_onednn, deterministic=None, allow_tf32=None, fp32_precision=None):
        if use_onednn:
            return lstm(lstm_input)[0]
        return torch.cat([lstm(segment[None])[0] for segment in lstm_input])


def fbank_patches(fbank: torch.Tensor, concat_factor: int) -> torch.Tensor:
    """Each token's own fbank patch, in token order: [S, 1024, 128] -> [S, 512/K, 256 K].

    The patches are the AudioMAE's 16 x 16 (frames x bins) tiles in its 8t+f order, each flattened
    frame by frame, joined per token as :func:`codec.semantic.concat_patches` joins their features.
    """
    segments, frames, bins = fbank.shape
    time_patches, freq_patches = PATCH_GRID
    high, wide = frames // time_patches, bins // freq_patches
    tiles = fbank.reshape(segments, time_patches, high, freq_patches, wide).permute(0, 1, 3, 2, 4)
    return concat_patches(tiles.reshape(segments, time_patches * freq_patches, high * wide), concat_factor)


def build_fbank_projection(concat_factor: int, feature_dim: int) -> nn.Linear:
    """The ``fbank`` acoustic input's projection of a token's fbank patch to a feature: [.., 256 K] -> [.., F]."""
    return nn.Linear(256 * concat_factor, feature_dim)


def build_output_projection(feature_dim: int) -> nn.Linear:
    """Bias-free projection of the BiLSTM output: [S, T, 4F] -> [S, T, F]."""
    return nn.Linear(4 * feature_dim, feature_dim, bias=False)


class EuclideanCodebook(nn.Module):
    """EMA VQ codebook state under the vector-quantize-pytorch names (one codebook head).

    Buffers: ``initted`` [1] float, ``cluster_size`` [1, V], ``embed_avg`` [1, V, F], ``embed`` [1, V, F].
    Only ``embed`` is used at inference; the others are EMA training statistics.
    """

    def __init__(self, vocab_size: int, feature_dim: int) -> None:
        super().__init__()
        embed = torch.empty(1, vocab_size, feature_dim)
        nn.init.kaiming_uniform_(embed)
        self.register_buffer("initted", torch.ones(1))
        self.register_buffer("cluster_size", torch.zeros(1, vocab_size))
        self.register_buffer("embed_avg", embed.clone())
        self.register_buffer("embed", embed)


class AcousticQuantizer(nn.Module):
    """Acoustic VQ (official ``VectorQuantize``, Euclidean, eval mode): nearest code and code lookup."""

    def __init__(self, vocab_size: int, feature_dim: int) -> None:
        super().__init__()
        self._codebook = EuclideanCodebook(vocab_size, feature_dim)

    @property
    def vocab_size(self) -> int:
        return self._codebook.embed.shape[1]

    @property
    def codes(self) -> torch.Tensor:
        """The codebook [V, F] float32."""
        return self._codebook.embed[0]

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """Acoustic token ids of projected LSTM outputs [S, T, F] -> int64 [S, T].

        argmin of sqrt(clamp(||x||^2 + ||e||^2 - 2 x.e, 0)), first index on ties, as the official VQ.
        """
        return nearest_codeword(x, self.codes, euclidean=True)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Code rows of acoustic token ids [S, T] int64 -> [S, T, F] float32."""
        check_token_range(ids, self.vocab_size, "acoustic")
        return self.codes[ids]
