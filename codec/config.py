"""Codec configurations: the official SemantiCodec variants and our own small sizes, in one table.

Every size in the codec is read from a :class:`CodecConfig`; nothing below ``codec/`` hard-codes a
width. The official variants are ``official_config(token_rate, semantic_vocab_size)``; our own
sizes are ``CONFIGS["tiny-100"]`` etc. (see :data:`CONFIGS`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

SAMPLE_RATE = 16000
SEGMENT_SAMPLES = 163840  # 10.24 s at 16 kHz
SEGMENT_FRAMES = 1024  # Kaldi fbank frames per segment (10 ms hop)
PATCHES_PER_SEGMENT = 512  # 64 time x 8 frequency AudioMAE patches
POSITION_DIM = 192  # sinusoidal position appended to the decoder conditioning
TOKEN_RATES = (25, 50, 100)
ACOUSTIC_INPUTS = ("audiomae", "fbank")  # what the acoustic BiLSTM reads beside the semantic centroid
OFFICIAL_SEMANTIC_VOCAB_SIZES = (4096, 8192, 16384, 32768)
LSTM_LAYERS = {1: 4, 2: 3, 4: 2}  # official BiLSTM depth per concatenation factor K


@dataclass(frozen=True)
class AudioMAEConfig:
    """AudioMAE ViT (encoder used, MAE decoder kept only so official checkpoints load)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    averaged_blocks: tuple[int, ...] = (9, 10, 11)


@dataclass(frozen=True)
class UNetConfig:
    """Latent-diffusion UNet (openaimodel layout). ``context_dim`` comes from the codec config."""

    in_channels: int = 8
    out_channels: int = 8
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 3, 5)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (8, 4, 2)
    num_head_channels: int = 32
    # Not in the official model (0 there): > 0 projects the conditioning rows to this many channels,
    # averages them to the latent frame rate and concatenates them to the UNet input, so that a
    # briefly trained model need not learn the token-to-frame alignment through cross-attention.
    aligned_context_channels: int = 0
    # Not in the official model (0 there): > 0 adds a latent prior (``codec.diffusion.unet.LatentPrior``),
    # convolutions of this width over the conditioning rows laid on their (time step, frequency
    # position) grid that estimate the latent itself, [in_channels, T, F], each token predicting the
    # block it covers; the estimate is concatenated to the input. Unlike the aligned channels, which
    # are broadcast over frequency, it says where in frequency the energy lies (a note's harmonics),
    # which a small UNet trained briefly does not learn to place from cross-attention.
    latent_prior_width: int = 0
    # Residual blocks (``codec.diffusion.unet.PriorBlock``, time dilations 1, 2, 4, 8, ...) inside the
    # latent prior, between its 3x3 mixer and its output: the plain prior was capacity-limited (on the
    # same cached crops, four blocks took its `valid` latent MSE from 0.217 to 0.208). 0: as first shipped.
    latent_prior_blocks: int = 0


@dataclass(frozen=True)
class VAEConfig:
    """AudioLDM AutoencoderKL over 64-bin log-mels (4x down in time and frequency)."""

    embed_dim: int = 8
    z_channels: int = 8
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    in_channels: int = 1
    out_ch: int = 1
    mel_bins: int = 64


@dataclass(frozen=True)
class VocoderConfig:
    """HiFi-GAN generator ("Generator_old", resblock type 1)."""

    num_mels: int = 64
    upsample_rates: tuple[int, ...] = (5, 4, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8, 4, 4)
    upsample_initial_channel: int = 1024
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))


@dataclass(frozen=True)
class ISTFTVocoderConfig:
    """A frame-rate vocoder (Vocos-style): ConvNeXt blocks at the mel frame rate, a head predicting
    STFT log-magnitude and phase, and an inverse STFT at ``hop_length``.

    Not in the official model: our small configurations use it because, unlike HiFi-GAN, it has no
    hop-strided upsampler that buzzes at the frame rate without a long adversarial phase, and it costs
    about 1/30 of HiFi-GAN's compute. ``kind`` marks the section in config files.
    """

    kind: str = "istft"
    num_mels: int = 64
    dim: int = 256
    intermediate_dim: int = 768
    num_blocks: int = 8
    kernel_size: int = 7
    n_fft: int = 640
    hop_length: int = 160
    # Samples past hop * frames, so that window stitching sees the same lengths as with HiFi-GAN.
    surplus_samples: int = 32
    # Standard deviation (nepers) of a fixed pseudo-random pattern added to the log-mel before the
    # network. Its phase is a function of a few neighbouring frames, so identical frames get identical
    # phases and a steady input comes out periodic at the hop: a 100-Hz buzz instead of the note. A
    # measured mel always fluctuates a little from frame to frame; the mels a VAE or the diffusion
    # decoder make of a held note do not. 0 leaves the input untouched (codecs saved without the key).
    dither: float = 0.0

    def __post_init__(self) -> None:
        if self.kind != "istft":
            raise ValueError(f"ISTFTVocoderConfig.kind must be 'istft', got {self.kind!r}")
        if self.n_fft < 2 * self.hop_length or self.surplus_samples >= self.n_fft // 2:
            raise ValueError("n_fft must be at least twice hop_length and surplus_samples below n_fft / 2")
        if not (math.isfinite(self.dither) and self.dither >= 0):
            raise ValueError(f"ISTFTVocoderConfig.dither must be a finite value >= 0, got {self.dither!r}")


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule and latent geometry of the latent-diffusion decoder."""

    timesteps: int = 1000
    linear_start: float = 0.0015
    linear_end: float = 0.0195
    parameterization: str = "v"
    latent_channels: int = 8
    latent_time: int = 256  # latent frames per 10.24-s window (mel frames / 4)
    latent_freq: int = 16  # 64 mel bins / 4


@dataclass(frozen=True)
class CodecConfig:
    """A complete SemantiCodec configuration.

    ``token_rate`` counts both streams (100 -> 50 frames/s of (semantic, acoustic) pairs).
    """

    name: str = "official-100-16384"
    token_rate: int = 100
    semantic_vocab_size: int = 16384
    acoustic_vocab_size: int = 8192
    audiomae: AudioMAEConfig = field(default_factory=AudioMAEConfig)
    lstm_layers: int | None = None  # None: the official depth for this token rate
    # What the acoustic BiLSTM reads beside each token's semantic centroid: "audiomae" (official: the
    # token's AudioMAE features) or "fbank" (ours: a linear projection of the token's own fbank
    # patch, which holds a note's partials where they are and is the same wherever the token sits).
    acoustic_input: str = "audiomae"
    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    vocoder: VocoderConfig | ISTFTVocoderConfig = field(default_factory=VocoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def __post_init__(self) -> None:
        if self.token_rate not in TOKEN_RATES:
            raise ValueError(f"token_rate must be one of {TOKEN_RATES}, got {self.token_rate}")
        if self.semantic_vocab_size < 2 or self.acoustic_vocab_size < 2:
            raise ValueError("vocabulary sizes must be at least 2")
        if self.acoustic_input not in ACOUSTIC_INPUTS:
            raise ValueError(f"acoustic_input must be one of {ACOUSTIC_INPUTS}, got {self.acoustic_input!r}")

    # Derived sizes -------------------------------------------------------------------------
    @property
    def concat_factor(self) -> int:
        """K: AudioMAE patches concatenated per token (1, 2, 4 for 100, 50, 25 tokens/s)."""
        return 100 // self.token_rate

    @property
    def feature_dim(self) -> int:
        """F: width of one semantic feature / centroid / acoustic code."""
        return self.audiomae.embed_dim * self.concat_factor

    @property
    def num_lstm_layers(self) -> int:
        return self.lstm_layers if self.lstm_layers is not None else LSTM_LAYERS[self.concat_factor]

    @property
    def tokens_per_segment(self) -> int:
        """Tokens per 10.24-s encoder segment and per decoder window (512/K)."""
        return PATCHES_PER_SEGMENT // self.concat_factor

    @property
    def window_tokens(self) -> int:
        return self.tokens_per_segment

    @property
    def context_dim(self) -> int:
        """Width of one decoder conditioning row: [acoustic F | semantic F | position 192]."""
        return 2 * self.feature_dim + POSITION_DIM

    @property
    def frames_per_second(self) -> float:
        """(semantic, acoustic) pairs per second."""
        return self.token_rate / 2

    @property
    def bitrate(self) -> float:
        """Bits per second of the token stream."""
        return self.frames_per_second * (
            math.log2(self.semantic_vocab_size) + math.log2(self.acoustic_vocab_size)
        )

    # Identity ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CodecConfig":
        def tup(value):
            return tuple(tup(v) for v in value) if isinstance(value, list) else value

        sub = {
            "audiomae": AudioMAEConfig,
            "unet": UNetConfig,
            "vae": VAEConfig,
            "vocoder": VocoderConfig,
            "diffusion": DiffusionConfig,
        }
        kwargs = {}
        for key, value in data.items():
            if key in sub:
                kind = sub[key]
                if key == "vocoder" and value.get("kind") == "istft":
                    kind = ISTFTVocoderConfig
                value = kind(**{k: tup(v) for k, v in value.items()})
            kwargs[key] = value
        return cls(**kwargs)

    def config_hash(self) -> str:
        """A short stable hash of everything that changes the meaning of the tokens (not the name)."""
        data = self.to_dict()
        data.pop("name")
        # The latent prior came after token files and LM folders recorded this hash, and it only
        # changes how the decoder reads tokens, not what they mean: a decoder that gains one keeps
        # its tokens' identity (and any LM trained on them).
        data["unet"].pop("latent_prior_width")
        data["unet"].pop("latent_prior_blocks")
        # Nor does the vocoder's dither: it changes the waveform a decoder makes, not what an id means.
        data["vocoder"].pop("dither", None)
        # The key came after hashes were recorded: the official input keeps the hashes it had.
        if data["acoustic_input"] == "audiomae":
            data.pop("acoustic_input")
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def official_config(token_rate: int = 100, semantic_vocab_size: int = 16384) -> CodecConfig:
    """The released SemantiCodec architecture for one token rate and semantic vocabulary size."""
    if semantic_vocab_size not in OFFICIAL_SEMANTIC_VOCAB_SIZES:
        raise ValueError(
            f"official semantic_vocab_size must be one of {OFFICIAL_SEMANTIC_VOCAB_SIZES}, "
            f"got {semantic_vocab_size}"
        )
    return CodecConfig(
        name=f"official-{token_rate}-{semantic_vocab_size}",
        token_rate=token_rate,
        semantic_vocab_size=semantic_vocab_size,
    )


def _small(token_rate: int) -> CodecConfig:
    """Our shipped-default size: trains on a CPU-class budget, under 60 MB of float32 weights in all.

    A 6-block AudioMAE (features averaged over its last three blocks), a one-layer BiLSTM and a
    three-level UNet keep every stage trainable on a few CPU cores; the UNet also reads the
    conditioning aligned to its input frames (``aligned_context_channels``) and a per-frequency
    estimate of the latent made from it (``latent_prior_width``), and the vocoder is a
    frame-rate iSTFT vocoder (:class:`ISTFTVocoderConfig`), which the official model does not have,
    reading its mel with a 0.02-neper dither (a held note through the VAE came back as a 100-Hz buzz).
    """
    return CodecConfig(
        name=f"small-{token_rate}",
        token_rate=token_rate,
        semantic_vocab_size=1024,
        acoustic_vocab_size=1024,
        audiomae=AudioMAEConfig(
            embed_dim=128, depth=6, num_heads=4, decoder_embed_dim=64, decoder_depth=2,
            decoder_num_heads=4, averaged_blocks=(3, 4, 5),
        ),
        lstm_layers=1,
        unet=UNetConfig(model_channels=32, channel_mult=(1, 2, 2), attention_resolutions=(4, 2),
                        num_res_blocks=1, num_head_channels=32, aligned_context_channels=32,
                        latent_prior_width=256, latent_prior_blocks=6),
        vae=VAEConfig(ch=32, ch_mult=(1, 2, 4)),
        vocoder=ISTFTVocoderConfig(dither=0.02),
    )


def _tiny(token_rate: int) -> CodecConfig:
    """Test size: every code path of the official architecture, seconds on a CPU."""
    return CodecConfig(
        name=f"tiny-{token_rate}",
        token_rate=token_rate,
        semantic_vocab_size=64,
        acoustic_vocab_size=32,
        audiomae=AudioMAEConfig(
            embed_dim=16, depth=12, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
            decoder_num_heads=2,
        ),
        unet=UNetConfig(model_channels=32, channel_mult=(1, 1), attention_resolutions=(2,),
                        num_head_channels=16),
        vae=VAEConfig(ch=32, ch_mult=(1, 1, 2)),
        vocoder=VocoderConfig(upsample_initial_channel=32),
    )


def _small_fbank(token_rate: int) -> CodecConfig:
    """``small-<rate>`` whose acoustic encoder reads each token's fbank patch instead of its AudioMAE
    features. On a held note the small AudioMAE's features change with the token's place in the window
    (time position explains 0.59 of their variance), so the shipped codec's acoustic code of the patch
    that holds a low note's fundamental changes almost every time step and is shared with the
    neighbouring semitones; the fbank patch is the same all along the note and differs between notes."""
    return dataclasses.replace(_small(token_rate), name=f"small-fbank-{token_rate}", acoustic_input="fbank")


CONFIGS: dict[str, CodecConfig] = {}
for _rate in TOKEN_RATES:
    CONFIGS[f"tiny-{_rate}"] = _tiny(_rate)
    CONFIGS[f"small-{_rate}"] = _small(_rate)
    CONFIGS[f"small-fbank-{_rate}"] = _small_fbank(_rate)
    for _vocab in OFFICIAL_SEMANTIC_VOCAB_SIZES:
        CONFIGS[f"official-{_rate}-{_vocab}"] = official_config(_rate, _vocab)


def get_config(name: str) -> CodecConfig:
    """Look up a named configuration (``tiny-100``, ``small-50``, ``official-25-16384``, ...)."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown codec config {name!r}; known: {', '.join(sorted(CONFIGS))}") from None
