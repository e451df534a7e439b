"""SemantiCodec: audio <-> (semantic, acoustic) tokens.

    >>> from codec import SemantiCodec
    >>> codec = SemantiCodec.from_pretrained("default")          # shipped weights, offline
    >>> tokens, lengths = codec.encode(["a.wav", "b.flac"])        # int64 [2, T, 2], [2]
    >>> audio = codec.decode(tokens, lengths, seed=0)               # float32 [2, 1, N] @ 16 kHz

Encoding batches the 10.24-s segments of every input together; decoding batches the 10.24-s
windows of every input together and stitches them with the official crossfade. Both reproduce
the official numbers: the batching changes the schedule of the work, not its arithmetic.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from codec import checkpoints
from codec.arguments import check_float, check_int, check_seeds
from codec.audio import load_audio, prepare_waveform
from codec.config import SAMPLE_RATE, CodecConfig, get_config, official_config
from codec.decoder import LatentDiffusionDecoder, check_sampler, decode_samplers
from codec.encoder import SemantiCodecEncoder
from codec.frontend import iter_fbank_segments, pad_to_segments, segment_count, token_budget
from codec.tokenfile import validate_tokens
from codec.windows import OVERLAP_SAMPLES, OverlapAddStream, output_samples, split_windows

AudioInput = (str | os.PathLike | Sequence[str | os.PathLike] | torch.Tensor | Sequence[torch.Tensor]
              | np.ndarray | Sequence[np.ndarray])
PRETRAINED_DIR = Path(__file__).parent / "pretrained"
SEED_STRIDE = 0x9E3779B1  # spreads (seed, window) pairs over the generator's seed space


def window_generator(seed: int, window: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator that draws the diffusion noise of window ``window`` of an input decoded with ``seed``."""
    return torch.Generator(device=device).manual_seed((seed * SEED_STRIDE + window) % 2**63)


@contextmanager
def exact_float32(device: torch.device) -> Iterator[None]:
    """Disable TF32 on CUDA: it flips nearest-centroid decisions, so tokens would not match."""
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


PRECISIONS = ("fp32", "bf16")


def precision_context(precision: str, device: torch.device):
    """The numeric mode of a codec call: ``"fp32"`` (exact float32, the official numbers) or ``"bf16"``
    (bfloat16 autocast: several times faster matmuls and convs on AMX / AVX512-BF16 CPUs and on GPUs;
    nearest-code searches and the inverse STFT stay float32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return exact_float32(device)


class Tokens(NamedTuple):
    """Codec tokens int64 [B, T, 2] (semantic, acoustic; rows past ``lengths`` are 0) and lengths [B]."""

    tokens: torch.Tensor
    lengths: torch.Tensor


class SemantiCodec(nn.Module):
    """The complete codec: ``encoder`` (AudioMAE, k-means, BiLSTM, VQ) and ``decoder`` (LDM, VAE, HiFi-GAN).

    ``fix_exact_multiple`` switches off the official padding quirk that gives an input of exactly
    n x 10.24 s an extra silent segment (and 8/K extra tokens); it is off by default so tokens
    match the official implementation.
    """

    def __init__(self, config: CodecConfig, *, fix_exact_multiple: bool = False) -> None:
        super().__init__()
        self.config = config
        self.fix_exact_multiple = fix_exact_multiple
        self.encoder = SemantiCodecEncoder(config)
        self.decoder = LatentDiffusionDecoder(config)

    # Loading -----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name: str | os.PathLike = "default",
        *,
        checkpoint_path: str | os.PathLike | None = None,
        cache_dir: str | None = None,
        device: str | torch.device = "cpu",
        **kwargs,
    ) -> "SemantiCodec":
        """Load a codec by name or folder.

        - ``"default"`` (or any folder under ``codec/pretrained``): our shipped weights, offline.
        - a folder written by :meth:`save_pretrained` (``config.json`` + ``model.safetensors``).
        - ``"official-<rate>-<vocab>"``, e.g. ``official-100-16384``: the released checkpoints from
          ``checkpoint_path`` (a folder laid out like the hub repository) or downloaded from the hub.
        """
        name_str = str(name)
        if name_str.startswith("official-"):
            config = get_config(name_str)
            folder = checkpoint_path or checkpoints.download_official(
                config.token_rate, config.semantic_vocab_size, cache_dir
            )
            with torch.device("meta"):
                codec = cls(config, **kwargs)
            checkpoints.load_official_weights(codec, folder)
            return codec.to(device).eval()
        folder = Path(name_str)
        if not folder.is_dir():
            folder = PRETRAINED_DIR / name_str
        if not folder.is_dir():
            known = sorted(p.name for p in PRETRAINED_DIR.iterdir()) if PRETRAINED_DIR.is_dir() else []
            raise checkpoints.CheckpointError(
                f"{name_str}: no such codec folder; shipped: {known}; official: official-<25|50|100>-<vocab>"
            )
        config, state = checkpoints.read_safetensors_folder(folder)
        with torch.device("meta"):
            codec = cls(config, **kwargs)
        checkpoints.load_state(codec, state, str(folder))
        return codec.to(device).eval()

    @classmethod
    def official(cls, token_rate: int = 100, semantic_vocab_size: int = 16384, **kwargs) -> "SemantiCodec":
        """An official-architecture codec with freshly initialised weights (benchmarks, tests)."""
        return cls(official_config(token_rate, semantic_vocab_size), **kwargs)

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (atomically) into ``folder``."""
        return checkpoints.save_safetensors(self, folder)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokens_digest(self) -> str:
        """16 hex digits of SHA-256 over the encoder's weights and buffers (float32 bytes, keys sorted):
        what gives token ids their meaning. Token files and LM folders record it, so that tokens of one
        training are not decoded by another codec of the same configuration. About 1 s for an
        official-size encoder; callers compute it once per job."""
        digest = hashlib.sha256()
        for key, value in sorted(self.encoder.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    # Encoding ----------------------------------------------------------------------------------
    def _waveforms(self, audio: AudioInput, sample_rate: int | None, channel_policy: str) -> list[torch.Tensor]:
        # numpy arrays (soundfile's output, say) are taken as the tensors they hold.
        if isinstance(audio, np.ndarray):
            audio = torch.from_numpy(audio)
        elif isinstance(audio, (list, tuple)):
            audio = [torch.from_numpy(item) if isinstance(item, np.ndarray) else item for item in audio]
        if isinstance(audio, torch.Tensor):  # one batch tensor: its rows are the waveforms
            if audio.dim() == 1:
                audio = audio[None]
            if audio.dim() == 2:
                audio = audio[:, None]
            if audio.dim() != 3:
                raise ValueError(f"<tensor>: waveform must be [B, N] or [B, C, N], got {list(audio.shape)}")
            items = list(audio)
        else:
            items = [audio] if isinstance(audio, (str, os.PathLike)) else list(audio)
        tensors = [isinstance(item, torch.Tensor) for item in items]
        if not any(tensors):
            return [load_audio(path, channel_policy=channel_policy) for path in items]
        if not all(tensors):
            raise ValueError("audio: give a list of paths or a list of waveform tensors, not a mixture")
        if sample_rate is None:
            raise ValueError("<tensor>: pass sample_rate with waveform tensors")
        return [prepare_waveform(item, sample_rate, channel_policy=channel_policy, name=f"<tensor {i}>")
                for i, item in enumerate(items)]

    @torch.no_grad()  # not inference_mode: it defeats autocast's weight-cast cache
    def encode(
        self,
        audio: AudioInput,
        sample_rate: int | None = None,
        *,
        channel_policy: str = "first",
        batch_size: int = 8,
        device: str | torch.device | None = None,
        precision: str = "fp32",
    ) -> Tokens:
        """Audio to tokens.

        ``audio``: a path, a list of paths, a waveform tensor [B, N] / [B, C, N], or a list of
        waveform tensors [N_i] / [C, N_i] of any lengths; tensors need their ``sample_rate`` (any
        rate; resampled to 16 kHz). Returns :class:`Tokens`: int64 [B, T, 2]
        padded with zeros past each item's length, and lengths [B]. ``batch_size`` is the number of
        10.24-s segments (across all inputs) run through the encoder at once. ``precision``: ``"fp32"``
        (official tokens) or ``"bf16"`` (faster on bf16 hardware; most tokens agree, see the README).
        """
        check_int("batch_size", batch_size, 1)
        precision_context(precision, self.device)  # refuses a bad name before any work
        if device is not None:
            self.to(device)
        return self.encode_waveforms(self._waveforms(audio, sample_rate, channel_policy), batch_size=batch_size,
                                     precision=precision)

    @torch.no_grad()  # not inference_mode: it defeats autocast's weight-cast cache
    def encode_waveforms(self, waveforms: Sequence[torch.Tensor], *, batch_size: int = 8,
                         precision: str = "fp32") -> Tokens:
        """Mono 16-kHz waveforms (a list of float32 [N_i], already validated) to :class:`Tokens`."""
        return self._encode_waveforms(waveforms, batch_size, self.device, precision)

    def _encode_waveforms(self, waveforms: Sequence[torch.Tensor], batch_size: int, device: torch.device,
                          precision: str) -> Tokens:
        fix = self.fix_exact_multiple
        budgets = [token_budget(wave.numel(), self.config.concat_factor, fix_exact_multiple=fix) for wave in waveforms]

        def segments() -> Iterator[torch.Tensor]:
            """Every input's fbank segments [1024, 128] in order, computed a chunk at a time: the
            front-end's memory stays bounded however long the input."""
            for wave in waveforms:
                for chunk in iter_fbank_segments(pad_to_segments(wave, fix_exact_multiple=fix)):
                    yield from chunk

        pieces, batch = [], []
        with precision_context(precision, device):  # the front-end itself always runs in float32
            for segment in segments():
                batch.append(segment)
                if len(batch) == batch_size:
                    pieces.append(self.encoder.encode_segments(torch.stack(batch).to(device)))
                    batch = []
            if batch:
                pieces.append(self.encoder.encode_segments(torch.stack(batch).to(device)))
        per_segment = torch.cat(pieces).reshape(-1, 2)
        per_item = per_segment.split([segment_count(wave.numel(), fix_exact_multiple=fix) * self.config.tokens_per_segment
                                      for wave in waveforms])
        lengths = torch.tensor([count for _, count in budgets], dtype=torch.long)
        tokens = torch.zeros(len(waveforms), int(lengths.max()), 2, dtype=torch.long, device=device)
        for i, (item, count) in enumerate(zip(per_item, lengths.tolist())):
            tokens[i, :count] = item[:count]
        return Tokens(tokens, lengths.to(device))

    # Decoding ----------------------------------------------------------------------------------
    def num_samples(self, lengths: torch.Tensor | Sequence[int]) -> list[int]:
        """Output samples at 16 kHz for each token length (the official trim: 0.02*K s per token)."""
        return [output_samples(int(n), self.config.concat_factor) for n in lengths]

    def _window_features(self, tokens: torch.Tensor, start: int, end: int) -> torch.Tensor:
        width = self.config.window_tokens
        features = self.encoder.tokens_to_features(tokens[None, start:end])[0]
        padded = features.new_full((width, features.shape[-1]), -1.0)
        padded[: end - start] = features
        return padded

    @torch.no_grad()  # not inference_mode: it defeats autocast's weight-cast cache
    def iter_decode(
        self,
        tokens: torch.Tensor,
        lengths: torch.Tensor | Sequence[int] | None = None,
        *,
        steps: int = 50,
        cfg_scale: float = 2.0,
        sampler: str = "ddim",
        eta: float = 1.0,
        seed: int | Sequence[int] | None = None,
        batch_size: int = 4,
        on_window: Callable[[int, int], None] | None = None,
        precision: str = "fp32",
    ) -> Iterator[tuple[int, torch.Tensor, bool]]:
        """Decode progressively: yields ``(item, chunk [1, n] float32, is_last)`` in playback order.

        Windows of all items stream through the decoder ``batch_size`` at a time; each chunk is
        final audio as soon as the crossfade after it is known, so memory stays bounded however
        long the input. ``seed`` (one int, or one per item) makes window ``j`` of an item draw its
        noise from a generator seeded by ``(seed, j)``: an item decodes identically alone or in any
        batch. ``on_window(done, total)`` reports progress. ``precision``: ``"fp32"`` (official) or
        ``"bf16"`` (autocast; faster on bf16 hardware at a small cost in fidelity, see the README).
        """
        config = self.config
        self.check_decode_settings(steps, cfg_scale, sampler, eta, batch_size, precision)
        lengths = validate_tokens(tokens, lengths, config.semantic_vocab_size, config.acoustic_vocab_size)
        if tokens.dim() == 2:
            tokens = tokens[None]
        tokens = tokens.to(self.device)
        seeds = self._item_seeds(seed, len(lengths))
        jobs = [
            (item, index, bounds)
            for item, length in enumerate(lengths.tolist())
            for index, bounds in enumerate(split_windows(length, config.window_tokens))
        ]
        last_window = {item: index for item, index, _ in jobs}
        totals = self.num_samples(lengths)
        streams = [OverlapAddStream(total_samples=total) for total in totals]
        # Window j of an item starts at j * (window - overlap) output samples: a last window that
        # the trim cuts short is vocoded only as far as the kept samples reach.
        advance = self.decoder.window_samples - OVERLAP_SAMPLES
        self.decoder.use_channels_last_weights(precision == "bf16")
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            features = torch.stack([self._window_features(tokens[item], *bounds) for item, _, bounds in batch])
            generators = [window_generator(seeds[item], index, self.device) for item, index, _ in batch]
            with precision_context(precision, self.device):
                audio = self.decoder.decode_windows(
                    features, steps=steps, cfg_scale=cfg_scale, sampler=sampler, eta=eta, generators=generators,
                    keep_samples=[max(0, totals[item] - index * advance) for item, index, _ in batch],
                )
            for (item, index, _), window in zip(batch, audio):
                is_last = index == last_window[item]
                chunk = streams[item].push(window.reshape(1, -1).float().cpu())
                if is_last:
                    chunk = torch.cat([chunk, streams[item].finish()], dim=-1)
                yield item, chunk, is_last
            if on_window is not None:
                on_window(min(start + batch_size, len(jobs)), len(jobs))

    @staticmethod
    def _item_seeds(seed: int | Sequence[int] | None, count: int) -> list[int]:
        seeds = check_seeds(seed, count)
        return torch.randint(0, 2**62, (count,)).tolist() if seeds is None else seeds

    @property
    def samplers(self) -> tuple[str, ...]:
        """The ``sampler`` values :meth:`decode` accepts for this codec (``"prior"`` only where its UNet has
        a latent prior)."""
        return decode_samplers(self.config)

    def check_decode_settings(self, steps: object, cfg_scale: object, sampler: object, eta: object,
                              batch_size: object, precision: object = "fp32") -> None:
        """Raise ValueError for decoder settings that would run but give garbage (NaN guidance, an empty
        batch), naming the argument and its accepted range."""
        check_int("steps", steps, 1, self.config.diffusion.timesteps)
        check_float("cfg_scale", cfg_scale, 0.0)
        check_float("eta", eta, 0.0, 1.0)
        check_int("batch_size", batch_size, 1)
        check_sampler(self.config, sampler)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")

    def decode(
        self,
        tokens: torch.Tensor,
        lengths: torch.Tensor | Sequence[int] | None = None,
        *,
        steps: int = 50,
        cfg_scale: float = 2.0,
        sampler: str = "ddim",
        eta: float = 1.0,
        seed: int | Sequence[int] | None = None,
        batch_size: int = 4,
        on_window: Callable[[int, int], None] | None = None,
        precision: str = "fp32",
    ) -> torch.Tensor:
        """Tokens [B, T, 2] (+ lengths [B]) to audio float32 [B, 1, N] at 16 kHz (zero-padded).

        ``sampler``: ``"ddim"`` (official; ``eta=1`` stochastic as released, ``eta=0``
        deterministic), ``"dpmpp2m"`` (DPM-Solver++(2M), deterministic, good at 10-25 steps) or
        ``"prior"`` (no diffusion: the UNet's latent prior, where the codec has one; ignores
        ``steps``, ``cfg_scale``, ``eta`` and ``seed``).
        """
        self.check_decode_settings(steps, cfg_scale, sampler, eta, batch_size, precision)
        self._item_seeds(seed, tokens.shape[0] if tokens.dim() == 3 else 1)
        if tokens.dim() == 2:
            tokens = tokens[None]
        lengths_list = validate_tokens(
            tokens, lengths, self.config.semantic_vocab_size, self.config.acoustic_vocab_size
        )
        totals = self.num_samples(lengths_list)
        out = torch.zeros(len(totals), 1, max(totals))
        filled = [0] * len(totals)
        for item, chunk, _ in self.iter_decode(
            tokens, lengths_list, steps=steps, cfg_scale=cfg_scale, sampler=sampler, eta=eta,
            seed=seed, batch_size=batch_size, on_window=on_window, precision=precision,
        ):
            out[item, :, filled[item] : filled[item] + chunk.shape[-1]] = chunk
            filled[item] += chunk.shape[-1]
        return out

    def reconstruct(
        self,
        audio: AudioInput,
        sample_rate: int | None = None,
        *,
        channel_policy: str = "first",
        encode_batch_size: int = 8,
        precision: str = "fp32",
        **decode_kwargs,
    ) -> torch.Tensor:
        """Encode then decode: audio in, float32 [B, 1, N] at 16 kHz out (see :meth:`decode`);
        ``precision`` applies to both."""
        # Settings are checked before encoding, so a bad one costs no encoder work.
        defaults = inspect.signature(self.decode).parameters
        self.check_decode_settings(*(decode_kwargs.get(name, defaults[name].default)
                                     for name in ("steps", "cfg_scale", "sampler", "eta", "batch_size")), precision)
        tokens, lengths = self.encode(audio, sample_rate, channel_policy=channel_policy, batch_size=encode_batch_size,
                                      precision=precision)
        return self.decode(tokens, lengths, precision=precision, **decode_kwargs)


__all__ = ["PRECISIONS", "SAMPLE_RATE", "SemantiCodec", "Tokens", "precision_context", "window_generator"]
