"""The SemantiCodec encoder: 10.24-s fbank segments -> (semantic, acoustic) token pairs.

``SemantiCodecEncoder`` reproduces the official ``encoder.ckpt`` module tree, so an official flat
state dict loads with ``load_state_dict(..., strict=True)``. The k-means centroids, which the official
code reads from a separate ``.npy``, live in ``semantic_codebook.centroids``; that key is optional
when loading (inject official centroids with ``semantic_codebook.load_centroids``).

Unlike the official loop, which encodes one segment at a time, ``encode_segments`` runs a batch of
independent segments through AudioMAE, k-means and the BiLSTM together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from codec.acoustic import (
    AcousticQuantizer,
    build_acoustic_lstm,
    build_fbank_projection,
    build_lstm_input,
    build_output_projection,
    fbank_patches,
    run_acoustic_lstm,
    silence_cutoff_rows,
)
from codec.config import SEGMENT_FRAMES, CodecConfig
from codec.semantic import MEL_BINS, AudioMAE, SemanticCodebook, concat_patches

CENTROIDS_KEY = "semantic_codebook.centroids"


@dataclass
class EncoderOutputs:
    """Everything ``encode_segments`` computes, per segment (shapes with T = 512/K, F = feature width).

    tokens [S, T, 2] int64 (semantic, acoustic); features [S, T, F] concatenated AudioMAE features
    (minus the codebook's ``position_mean`` where it has one);
    centroids [S, T, F]; cutoff_rows [S] first -1 row; lstm_input [S, T, 2F];
    acoustic_features [S, T, F] projected LSTM output (before quantisation).
    """

    tokens: torch.Tensor
    features: torch.Tensor
    centroids: torch.Tensor
    cutoff_rows: torch.Tensor
    lstm_input: torch.Tensor
    acoustic_features: torch.Tensor


class SemantiCodecEncoder(nn.Module):
    """AudioMAE + k-means semantic tokens and BiLSTM + VQ acoustic tokens (official module names).

    Attributes: ``audiomae`` (``.model`` is the ViT), ``encoder`` (BiLSTM), ``encoder_output_linear``,
    ``quantizer`` (acoustic VQ), ``semantic_codebook`` (k-means centroids, not in official checkpoints),
    and, only where ``acoustic_input`` is ``"fbank"`` (not official), ``fbank_projection``.
    """

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.audiomae = AudioMAE(cfg.audiomae)
        self.encoder = build_acoustic_lstm(cfg.feature_dim, cfg.num_lstm_layers)
        self.encoder_output_linear = build_output_projection(cfg.feature_dim)
        self.quantizer = AcousticQuantizer(cfg.acoustic_vocab_size, cfg.feature_dim)
        self.semantic_codebook = SemanticCodebook(cfg.semantic_vocab_size, cfg.feature_dim)
        if cfg.acoustic_input == "fbank":
            self.fbank_projection = build_fbank_projection(cfg.concat_factor, cfg.feature_dim)
        self.audiomae.requires_grad_(False)

    @property
    def acoustic_modules(self) -> tuple[nn.Module, ...]:
        """The modules that make the acoustic features from the LSTM input's first half onwards (trainable)."""
        extra = (self.fbank_projection,) if self.cfg.acoustic_input == "fbank" else ()
        return (*extra, self.encoder, self.encoder_output_linear)

    def acoustic_input_features(self, fbank: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """What the BiLSTM reads beside the centroids: fbank [S, 1024, 128] and the tokens' features
        [S, T, F] -> [S, T, F] (the features themselves, or the projected fbank patches)."""
        if self.cfg.acoustic_input == "fbank":
            return self.fbank_projection(fbank_patches(fbank, self.cfg.concat_factor))
        return features

    @property
    def vocab_sizes(self) -> tuple[int, int]:
        """(semantic, acoustic) vocabulary sizes, in token-channel order."""
        return self.semantic_codebook.vocab_size, self.quantizer.vocab_size

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict in the official encoder.ckpt layout (without the semantic centroids)."""
        state = self.state_dict()
        state.pop(CENTROIDS_KEY)
        state.pop(CENTROIDS_KEY.replace("centroids", "position_mean"), None)
        return state

    def encode_segments_detailed(self, fbank: torch.Tensor) -> EncoderOutputs:
        """Encode independent 10.24-s segments: normalised fbank [S, 1024, 128] float32 -> EncoderOutputs.

        Each segment is encoded exactly as the official encoder does one window (its own silence
        cut-off included); batching does not couple segments.
        """
        _check_fbank(fbank)
        tokens_per_segment = self.cfg.tokens_per_segment
        cutoff_rows = silence_cutoff_rows(fbank, tokens_per_segment)
        features = self.semantic_codebook.center(concat_patches(self.audiomae(fbank), self.cfg.concat_factor))
        semantic_ids = self.semantic_codebook.nearest(features)
        centroids = self.semantic_codebook.lookup(semantic_ids)
        lstm_input = build_lstm_input(self.acoustic_input_features(fbank, features), centroids, cutoff_rows)
        acoustic_features = self.encoder_output_linear(run_acoustic_lstm(self.encoder, lstm_input))
        acoustic_ids = self.quantizer.nearest(acoustic_features)
        return EncoderOutputs(
            tokens=torch.stack([semantic_ids, acoustic_ids], dim=-1),
            features=features,
            centroids=centroids,
            cutoff_rows=cutoff_rows,
            lstm_input=lstm_input,
            acoustic_features=acoustic_features,
        )

    def encode_segments(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised fbank [S, 1024, 128] float32 -> tokens [S, 512/K, 2] int64 (semantic, acoustic)."""
        return self.encode_segments_detailed(fbank).tokens

    def tokens_to_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Decoder conditioning (official ``token_to_quantized_feature``).

        tokens [B, T, 2] int64 -> [B, T, 2F] float32 = [acoustic code row | semantic centroid row].
        Raises ValueError on a bad shape or out-of-range ids.
        """
        if tokens.dim() != 3 or tokens.shape[-1] != 2:
            raise ValueError(f"expected tokens [B, T, 2] (semantic, acoustic), got {list(tokens.shape)}")
        acoustic = self.quantizer.lookup(tokens[..., 1])
        semantic = self.semantic_codebook.lookup(tokens[..., 0])
        return torch.cat([acoustic, semantic], dim=-1)


def _check_fbank(fbank: torch.Tensor) -> None:
    expected = (SEGMENT_FRAMES, MEL_BINS)
    if fbank.dim() != 3 or tuple(fbank.shape[1:]) != expected:
        raise ValueError(
            f"expected fbank segments [S, {SEGMENT_FRAMES}, {MEL_BINS}], got {list(fbank.shape)}"
        )
    if fbank.dtype != torch.float32:
        raise ValueError(f"expected a float32 fbank, got {fbank.dtype}")
    if not torch.isfinite(fbank).all():
        raise ValueError("fbank contains NaN or infinite values")
