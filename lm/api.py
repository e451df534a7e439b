"""Generate audio from a caption or a prompt clip, in three lines:

    from lm.api import AudioGenerator
    generator = AudioGenerator.from_pretrained("default")       # shipped LM + its text tokenizer + codec
    audio, tokens = generator.generate(text="a steady sine tone at A4", seconds=5, seed=0)

``audio`` is float32 [B, 1, N] at 16 kHz, ``tokens`` the codec tokens (prompt included). The same
from the command line: ``semanticodec generate --text "..." --seconds 5 -o out.wav`` (the CLI's
``run_generate``), which also writes ``out.tokens.safetensors`` (:func:`tokens_path_for`).

An LM folder (what ``from_pretrained`` reads, :func:`export_checkpoint` and ``save_pretrained``
write) holds ``config.json`` (format, the :class:`~lm.config.LMConfig`, the identity of the codec
whose tokens the model was trained on, and where to load that codec from), ``model.safetensors``
and, for a text-conditioned model, ``text.model`` (sentencepiece). Shipped folders live in
``lm/pretrained/<name>``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from codec.arguments import check_float
from codec.audio import audio_info
from codec.config import SAMPLE_RATE
from codec.files import atomic_path, write_bytes_atomic, write_text_atomic
from codec.model import SemantiCodec, Tokens, precision_context
from lm.config import LMConfig
from lm.data import max_sequence_length
from lm.generate import check_sampling, generate
from lm.layout import EOS, SEMANTIC_END
from lm.model import AudioLM
from lm.text import TextTokenizer

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
FORMAT = "semanticodec-lm"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, TEXT_FILE = "config.json", "model.safetensors", "text.model"
DEFAULT_TEXT_CFG_SCALE = 3.0
END_PENALTY = 1e4  # far below any real logit, yet finite: a forced end still has probability 1


class LMFolderError(ValueError):
    """An LM folder is missing, malformed, or does not fit the codec it is used with."""


@dataclass
class LMFolder:
    """What an LM folder holds: the model, its text tokenizer (or None) and its codec's identity."""

    model: AudioLM
    tokenizer: TextTokenizer | None
    codec: dict[str, Any]
    codec_source: str | None
    info: dict[str, Any]



def save_lm_folder(
    folder: str | os.PathLike,
    model: AudioLM,
    codec_identity: dict[str, Any],
    *,
    tokenizer_path: str | os.PathLike | None = None,
    codec_source: str | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (and the sentencepiece file at ``tokenizer_path``) as an LM folder; returns it.

    ``codec_identity`` is the ``codec`` record of the token files the model was trained on
    (:func:`codec.tokenfile.codec_identity`); ``codec_source`` says where to load that codec from
    (a shipped name or a folder). Each file is written atomically, ``config.json`` last.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if model.config.text_vocab_size and tokenizer_path is None:
        raise LMFolderError(f"{folder}: the model reads text (text_vocab_size={model.config.text_vocab_size}); "
                            "pass its tokenizer_path")
    with atomic_path(folder / WEIGHTS_FILE) as temporary:
        save_model(model, str(temporary), metadata={"format": FORMAT})
    if tokenizer_path is not None:
        data = Path(tokenizer_path).read_bytes()
        write_bytes_atomic(folder / TEXT_FILE, data)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "codec": codec_identity,
        "codec_source": codec_source,
        "text_tokenizer": TEXT_FILE if tokenizer_path is not None else None,
        "info": info or {},
    }
    write_text_atomic(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return folder


def resolve_lm_folder(name: str | os.PathLike) -> Path:
    """A folder path, or the shipped folder ``lm/pretrained/<name>``; raises LMFolderError naming both."""
    folder = Path(name)
    if folder.is_dir():
        return folder
    shipped = PRETRAINED_DIR / str(name)
    if shipped.is_dir():
        return shipped
    known = sorted(p.name for p in PRETRAINED_DIR.iterdir() if p.is_dir()) if PRETRAINED_DIR.is_dir() else []
    raise LMFolderError(
        f"{name}: no such LM folder, and no shipped LM of that name (shipped: {known or 'none'}); "
        "train one with recipes/text_to_audio or recipes/continuation and pass its <run_dir>/model folder"
    )


def load_lm_folder(name: str | os.PathLike = "default", device: str | torch.device = "cpu") -> LMFolder:
    """Read an LM folder (a path or a shipped name); errors name the folder and the problem."""
    folder = resolve_lm_folder(name)
    config_path = folder / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LMFolderError(f"{folder}: not an LM folder (no {CONFIG_FILE})") from None
    except (OSError, json.JSONDecodeError) as error:
        raise LMFolderError(f"{config_path}: unreadable ({error})") from None
    found = config.get("format") if isinstance(config, dict) else None
    if found != FORMAT:
        raise LMFolderError(f"{config_path}: not an LM folder config (format={found!r}, expected {FORMAT!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise LMFolderError(f"{config_path}: unsupported format_version {config.get('format_version')!r}")
    try:
        model = AudioLM(LMConfig.from_dict(config["model"]))
    except (KeyError, TypeError, ValueError) as error:
        raise LMFolderError(f"{config_path}: bad model section ({error})") from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise LMFolderError(f"{folder}: {WEIGHTS_FILE} is missing")
    try:
        load_model(model, str(weights), strict=True)
    except (SafetensorError, OSError, RuntimeError) as error:
        raise LMFolderError(f"{weights}: does not fit the configured model ({str(error).splitlines()[0]})") from None
    tokenizer = None
    if config.get("text_tokenizer"):
        tokenizer = TextTokenizer(folder / config["text_tokenizer"])
        if tokenizer.vocab_size > model.config.text_vocab_size:
            raise LMFolderError(f"{folder}: the text tokenizer has {tokenizer.vocab_size} ids, the model "
                                f"only {model.config.text_vocab_size}")
    elif model.config.text_vocab_size:
        raise LMFolderError(f"{config_path}: the model reads text but the folder names no text tokenizer")
    codec = config.get("codec")
    if not isinstance(codec, dict):
        raise LMFolderError(f"{config_path}: the codec identity is missing")
    return LMFolder(model.to(device).eval(), tokenizer, codec, config.get("codec_source"), config.get("info") or {})


def frames_that_fit(config: LMConfig, text_ids: int | None) -> int:
    """The most codec frames (prompt + new) an LM's positions hold after ``text_ids`` caption ids."""
    layout, limit = config.layout, config.max_seq_len
    low, high = 0, limit  # a frame takes at least one position
    while low < high:
        middle = (low + high + 1) // 2
        if max_sequence_length(layout, middle, text_ids) <= limit:
            low = middle
        else:
            high = middle - 1
    return low


def folder_max_seconds(name: str | os.PathLike = "default") -> float | None:
    """Seconds of audio (prompt + new, no caption) the LM folder ``name`` holds, read from its config
    alone (no weights loaded); None when it cannot be read."""
    try:
        config = json.loads((resolve_lm_folder(name) / CONFIG_FILE).read_text(encoding="utf-8"))
        frames_per_second = config["codec"]["token_rate"] / 2
        return frames_that_fit(LMConfig.from_dict(config["model"]), None) / frames_per_second
    except (LMFolderError, OSError, KeyError, TypeError, ValueError):
        return None


def export_checkpoint(
    checkpoint: str | os.PathLike,
    folder: str | os.PathLike,
    codec_identity: dict[str, Any],
    *,
    tokenizer_path: str | os.PathLike | None = None,
    codec_source: str | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Turn a Lightning checkpoint of ``lm.module.AudioLMModule`` into an LM folder (no code is executed)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise LMFolderError(f"{checkpoint}: no such checkpoint")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        config = LMConfig.from_dict(dict(state["hyper_parameters"]["model"]))
        weights = {key[len("model."):]: value for key, value in state["state_dict"].items() if key.startswith("model.")}
    except (KeyError, TypeError, ValueError, RuntimeError, OSError) as error:
        raise LMFolderError(f"{checkpoint}: not an AudioLMModule checkpoint ({error})") from None
    model = AudioLM(config)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise LMFolderError(f"{checkpoint}: weights do not fit the model config ({str(error).splitlines()[0]})") from None
    return save_lm_folder(folder, model, codec_identity, tokenizer_path=tokenizer_path,
                          codec_source=codec_source, info=info)


class _NoEarlyEnd(nn.Module):
    """An AudioLM whose end markers are pushed far down, so every clip lasts its requested length.

    Where the layout forces the end (after the last requested frame) the marker is the only legal
    id and is still taken. Everything ``lm.generate.generate`` uses is passed through.
    """

    def __init__(self, model: AudioLM) -> None:
        super().__init__()
        self.model = model

    @property
    def config(self) -> LMConfig:
        return self.model.config

    def new_cache(self, batch_size: int, max_len: int):
        return self.model.new_cache(batch_size, max_len)

    def forward(self, ids: torch.Tensor, **kwargs) -> torch.Tensor:
        logits = self.model(ids, **kwargs)
        logits[..., [EOS, SEMANTIC_END]] -= END_PENALTY
        return logits


class GeneratedAudio(NamedTuple):
    """audio float32 [B, 1, N] at 16 kHz (zero-padded past each row's length) and the codec tokens."""

    audio: torch.Tensor
    tokens: Tokens


class AudioGenerator:
    """An audio LM, its text tokenizer and the codec that turns its tokens into audio."""

    def __init__(self, model: AudioLM, codec: SemantiCodec, tokenizer: TextTokenizer | None = None,
                 codec_identity: dict[str, Any] | None = None) -> None:
        config = codec.config
        for field in ("semantic_vocab_size", "acoustic_vocab_size"):
            if getattr(model.config, field) != getattr(config, field):
                raise LMFolderError(f"the LM has {field}={getattr(model.config, field)}, "
                                    f"the codec {config.name!r} {getattr(config, field)}")
        if codec_identity and codec_identity.get("config_hash") not in (None, config.config_hash()):
            raise LMFolderError(
                f"the LM was trained on tokens of codec {codec_identity.get('config_name')!r} "
                f"(hash {codec_identity.get('config_hash')}), not of {config.name!r} (hash {config.config_hash()})"
            )
        # Same configuration, other training: the ids would mean other sounds. LM folders written
        # before the digest existed record none and cannot be checked on it.
        self.tokens_digest = codec.tokens_digest()  # hashed once: token files written later record it
        recorded = (codec_identity or {}).get("tokens_digest")
        if recorded is not None and recorded != self.tokens_digest:
            raise LMFolderError(
                f"the LM was trained on tokens of another {config.name!r} codec (encoder weights {recorded}, "
                f"this codec's {self.tokens_digest}): load the codec it names (codec_source) or retrain the LM "
                "on this codec's tokens"
            )
        self.model = model.eval()
        self.codec = codec.eval()
        self.tokenizer = tokenizer
        self.codec_identity = codec_identity

    @classmethod
    def from_pretrained(cls, name: str | os.PathLike = "default", *,
                        codec: SemantiCodec | str | os.PathLike | None = None,
                        device: str | torch.device = "cpu") -> "AudioGenerator":
        """Load an LM folder (shipped name or path) and its codec.

        ``codec``: a loaded SemantiCodec, a name/folder for ``SemantiCodec.from_pretrained``, or None
        for the codec the LM folder names (its ``codec_source``, else the shipped ``default``).
        """
        folder = load_lm_folder(name, device)
        if not isinstance(codec, SemantiCodec):
            codec = SemantiCodec.from_pretrained(codec or folder.codec_source or "default", device=device)
        return cls(folder.model, codec.to(device), folder.tokenizer, folder.codec)

    def save_pretrained(self, folder: str | os.PathLike, codec_source: str | None = None) -> Path:
        """Write the LM (and its text tokenizer) as an LM folder; the codec is recorded, not copied."""
        from codec.tokenfile import codec_identity

        return save_lm_folder(folder, self.model, codec_identity(self.codec.config, self.tokens_digest),
                              tokenizer_path=self.tokenizer.path if self.tokenizer else None,
                              codec_source=codec_source)

    @property
    def frames_per_second(self) -> float:
        return self.codec.config.frames_per_second

    def frames_for(self, seconds: float) -> int:
        """Codec frames needed to cover ``seconds`` of audio (at least one)."""
        if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"seconds must be a positive number, got {seconds!r}")
        return max(1, math.ceil(seconds * self.frames_per_second - 1e-9))

    def _texts(self, text: str | Sequence[str] | None) -> list[str] | None:
        if text is None:
            return None
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError("text must be a non-empty caption or a list of them")
        if self.tokenizer is None:
            raise ValueError("this LM was trained without captions (it has no text tokenizer); "
                             "use a text-conditioned LM or a prompt")
        return texts

    def _frames_that_fit(self, text_ids: int | None) -> int:
        return frames_that_fit(self.model.config, text_ids)

    def max_seconds(self, caption: str | None = None) -> float:
        """The longest prompt + new audio, in seconds, that this LM holds with ``caption`` (or none)."""
        text_ids = None if caption is None else len(self.tokenizer.encode(self._texts(caption)[0]))
        return self._frames_that_fit(text_ids) / self.frames_per_second

    def _check_length(self, texts: list[str] | None, prompt: Tokens | None, seconds: float) -> None:
        """Refuse, in seconds, a prompt plus new audio longer than the model's positions hold."""
        layout, limit = self.model.config.layout, self.model.config.max_seq_len
        text_ids = None if texts is None else max(len(self.tokenizer.encode(t)) for t in texts)
        prompt_frames = 0 if prompt is None else int(prompt.lengths.max())
        frames = prompt_frames + self.frames_for(seconds)
        if max_sequence_length(layout, frames, text_ids) <= limit:
            return
        fits = self._frames_that_fit(text_ids)
        rate = self.frames_per_second
        if text_ids is not None and fits < self.frames_for(seconds) and fits < self._frames_that_fit(None) / 2:
            raise ValueError(f"the caption is {text_ids} text ids long and leaves room for only {fits / rate:.2f} s "
                             f"of audio in this LM's {limit} positions: shorten the caption")
        raise ValueError(
            f"{prompt_frames / rate:.2f} s of prompt + {seconds:g} s of new audio need "
            f"{max_sequence_length(layout, frames, text_ids)} LM positions, but this LM holds {limit} "
            f"(about {fits / rate:.2f} s of audio in all): use a shorter prompt or fewer seconds"
        )

    def _check_prompt_files(self, prompt, texts: list[str] | None, seconds: float) -> None:
        """Refuse prompt files too long for the LM from their headers, before any encoding."""
        if isinstance(prompt, (str, os.PathLike)):
            paths = [prompt]
        elif isinstance(prompt, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in prompt):
            paths = list(prompt)
        else:
            return
        longest = min(self.max_seconds(t) for t in texts) if texts else self.max_seconds()
        for path in paths:
            info = audio_info(path)
            prompt_seconds = info.frames / info.sample_rate
            if prompt_seconds + seconds > longest:
                raise ValueError(f"{path}: {prompt_seconds:.2f} s of prompt + {seconds:g} s of new audio is more "
                                 f"than the {longest:.2f} s this LM holds: use a shorter prompt or fewer seconds")

    def _prompt_tokens(self, prompt, sample_rate: int | None, precision: str = "fp32") -> Tokens | None:
        if prompt is None:
            return None
        if isinstance(prompt, Tokens):
            return Tokens(prompt.tokens.to(self.codec.device), prompt.lengths.to(self.codec.device))
        return self.codec.encode(prompt, sample_rate, precision=precision)

    @torch.inference_mode()
    def generate_tokens(
        self,
        text: str | Sequence[str] | None = None,
        prompt: str | os.PathLike | Sequence[str | os.PathLike] | torch.Tensor | Tokens | None = None,
        seconds: float = 5.0,
        *,
        sample_rate: int | None = None,
        seed: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        cfg_scale: float | None = None,
        precision: str = "fp32",
        on_step: Callable[[int, int], None] | None = None,
    ) -> Tokens:
        """Sample ``seconds`` of new codec frames per row: tokens [B, Tp + T, 2] (prompt first) and lengths [B].

        ``text``: one caption or a list (one row each); ``prompt``: audio path(s), a waveform tensor
        [B, N] with ``sample_rate``, or codec :class:`Tokens`, continued by the LM. ``cfg_scale``
        (classifier-free guidance on the text) defaults to 3 with text and 1 without. The end marker
        is held back until the requested length, so every row gets exactly the same number of new
        frames. Same seed and settings, same tokens. ``precision="bf16"`` runs the transformer under
        bfloat16 autocast (faster on bf16 hardware; sampling still reads float32 probabilities).
        ``on_step(done, total)`` reports progress in LM steps.
        """
        check_float("seconds", seconds, 0.0)
        check_sampling(temperature, top_k, top_p)  # before the prompt is encoded
        if cfg_scale is not None:
            check_float("cfg_scale", cfg_scale, 0.0)
        texts = self._texts(text)
        self._check_prompt_files(prompt, texts, seconds)
        prompt_tokens = self._prompt_tokens(prompt, sample_rate, precision)
        if cfg_scale is None:
            cfg_scale = DEFAULT_TEXT_CFG_SCALE if texts is not None else 1.0
        if texts is not None and prompt_tokens is not None and len(texts) != len(prompt_tokens.lengths):
            raise ValueError(f"{len(texts)} captions but {len(prompt_tokens.lengths)} prompts")
        self._check_length(texts, prompt_tokens, seconds)
        with precision_context(precision, self.codec.device):
            result = generate(
                _NoEarlyEnd(self.model),
                prompt=None if prompt_tokens is None else prompt_tokens.tokens,
                prompt_lengths=None if prompt_tokens is None else prompt_tokens.lengths,
                text=texts, tokenizer=self.tokenizer, max_frames=self.frames_for(seconds),
                temperature=temperature, top_k=top_k, top_p=top_p, cfg_scale=cfg_scale, seed=seed, on_step=on_step,
            )
        return Tokens(result.tokens, result.lengths)

    def audio_samples(self, tokens: Tokens, seconds: float) -> list[int]:
        """Samples of audio each row of generated ``tokens`` stands for: its prompt's reconstruction
        (the frames before the ``seconds`` of new ones) followed by exactly ``seconds`` of new audio."""
        new_frames = self.frames_for(seconds)
        return [self.codec.num_samples([max(0, int(n) - new_frames)])[0] + round(seconds * SAMPLE_RATE)
                for n in tokens.lengths.tolist()]

    def iter_audio(self, tokens: Tokens, seconds: float, *, decode_steps: int = 25, sampler: str = "dpmpp2m",
                   seed: int | None = None, precision: str = "fp32",
                   on_window: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """Decode generated ``tokens`` (of :meth:`generate_tokens` with these ``seconds``) progressively:
        yields ``(row, chunk float32 [n])`` in playback order, a decoder window at a time, each row cut
        (or zero-padded) to :meth:`audio_samples`: what :meth:`generate` returns, streamed."""
        self.codec.check_decode_settings(decode_steps, 0.0, sampler, 0.0, 1, precision)
        totals = self.audio_samples(tokens, seconds)
        emitted = [0] * len(totals)
        for row, chunk, is_last in self.codec.iter_decode(tokens.tokens, tokens.lengths, steps=decode_steps,
                                                          sampler=sampler, seed=seed, precision=precision,
                                                          on_window=on_window):
            chunk = chunk.reshape(-1)[: max(0, totals[row] - emitted[row])]
            if is_last and emitted[row] + chunk.numel() < totals[row]:
                chunk = torch.cat([chunk, chunk.new_zeros(totals[row] - emitted[row] - chunk.numel())])
            emitted[row] += chunk.numel()
            if chunk.numel():
                yield row, chunk

    def generate(
        self,
        text: str | Sequence[str] | None = None,
        prompt: str | os.PathLike | Sequence[str | os.PathLike] | torch.Tensor | Tokens | None = None,
        seconds: float = 5.0,
        *,
        sample_rate: int | None = None,
        seed: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        cfg_scale: float | None = None,
        decode_steps: int = 25,
        sampler: str = "dpmpp2m",
        precision: str = "fp32",
        on_step: Callable[[int, int], None] | None = None,
        on_window: Callable[[int, int], None] | None = None,
    ) -> GeneratedAudio:
        """Generate tokens (see :meth:`generate_tokens`) and decode them through the diffusion decoder.

        Returns :class:`GeneratedAudio`: audio float32 [B, 1, N] at 16 kHz, where row b holds the
        prompt's reconstruction (when prompted) followed by exactly ``seconds`` of new audio
        (zeros after), and the tokens. ``seed`` drives both the LM sampling and the decoder noise;
        None draws one at random. ``precision`` (``"fp32"`` or ``"bf16"``) applies to the prompt's
        encoding, the LM and the decoder. ``on_step`` and ``on_window`` report the LM's and the
        decoder's progress (done, total).
        """
        self.codec.check_decode_settings(decode_steps, 0.0, sampler, 0.0, 1, precision)
        check_float("seconds", seconds, 0.0)
        self._check_prompt_files(prompt, self._texts(text), seconds)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        prompt_tokens = self._prompt_tokens(prompt, sample_rate, precision)
        tokens = self.generate_tokens(text, prompt_tokens, seconds, seed=seed, temperature=temperature,
                                      top_k=top_k, top_p=top_p, cfg_scale=cfg_scale, precision=precision,
                                      on_step=on_step)
        totals = self.audio_samples(tokens, seconds)
        audio = torch.zeros(len(totals), 1, max(totals))
        filled = [0] * len(totals)
        for row, chunk in self.iter_audio(tokens, seconds, decode_steps=decode_steps, sampler=sampler, seed=seed,
                                          precision=precision, on_window=on_window):
            audio[row, 0, filled[row] : filled[row] + chunk.numel()] = chunk
            filled[row] += chunk.numel()
        return GeneratedAudio(audio, Tokens(tokens.tokens.cpu(), tokens.lengths.cpu()))


def tokens_path_for(wav: str | os.PathLike) -> Path:
    """Where the tokens of ``out.wav`` go: ``out.tokens.safetensors`` in the same folder."""
    from codec.tokenfile import SUFFIX

    wav = Path(wav)
    return wav.with_name(wav.stem + SUFFIX)


__all__ = ["AudioGenerator", "GeneratedAudio", "LMFolder", "LMFolderError", "export_checkpoint", "load_lm_folder",
           "save_lm_folder", "tokens_path_for"]
