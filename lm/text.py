"""Captions -> text ids: a sentencepiece tokenizer, trained on the corpus captions.

    from lm.text import TextTokenizer, train_text_tokenizer
    tokenizer = train_text_tokenizer(captions, "runs/text/captions", vocab_size=1024)
    tokenizer = TextTokenizer("runs/text/captions.model")
    tokenizer.encode("a dog barks")          # -> [int, ...] in [0, tokenizer.vocab_size)

The LM places these ids in its own text range (``lm.layout.TokenLayout.text_offset``); the model's
``text_vocab_size`` must be at least ``tokenizer.vocab_size``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable

from codec.files import write_bytes_atomic


def _sentencepiece():
    """sentencepiece, imported on first use: only text-conditioned models need it (the ``lm`` extra)."""
    try:
        import sentencepiece
    except ImportError as error:
        raise ImportError(f"captions need sentencepiece ({error}); install the lm extra: pip install 'semanticodec-lm[lm]'") from None
    return sentencepiece


class TextTokenizer:
    """A trained sentencepiece model: ``encode(str) -> list[int]``, ``decode(list[int]) -> str``."""

    def __init__(self, model_path: str | os.PathLike) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such sentencepiece model (train one with train_text_tokenizer)")
        self.path = path
        self._model = _sentencepiece().SentencePieceProcessor()
        try:
            self._model.Load(str(path))
        except (OSError, RuntimeError) as error:
            raise ValueError(f"{path}: not a sentencepiece model ({error})") from None

    @property
    def vocab_size(self) -> int:
        return self._model.GetPieceSize()

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """Ids of ``text`` (lower-cased, whitespace-normalised), cut to ``max_tokens`` when given."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = self._model.EncodeAsIds(_normalise(text))
        return ids[:max_tokens] if max_tokens is not None else ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._model.DecodeIds([int(i) for i in ids])


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def train_text_tokenizer(
    captions: Iterable[str],
    out_prefix: str | os.PathLike,
    vocab_size: int,
    model_type: str = "unigram",
) -> TextTokenizer:
    """Train on ``captions`` and write ``<out_prefix>.model`` / ``.vocab``; returns the tokenizer.

    ``vocab_size`` is an upper bound: a small corpus may give fewer pieces (read ``vocab_size``
    of the result). Training is deterministic for the same captions.
    """
    lines = [_normalise(c) for c in captions if isinstance(c, str) and c.strip()]
    if not lines:
        raise ValueError("no captions to train the text tokenizer on")
    if vocab_size < 8:
        raise ValueError(f"vocab_size must be at least 8, got {vocab_size}")
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    _sentencepiece().SentencePieceTrainer.Train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        hard_vocab_limit=False,
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        unk_id=0,
        num_threads=1,
        minloglevel=2,
    )
    model_path = out_prefix.with_name(out_prefix.name + ".model")
    write_bytes_atomic(model_path, model.getvalue())
    tokenizer = TextTokenizer(model_path)
    vocab_lines = [f"{tokenizer._model.IdToPiece(i)}\t{tokenizer._model.GetScore(i)}" for i in range(tokenizer.vocab_size)]
    out_prefix.with_name(out_prefix.name + ".vocab").write_text("\n".join(vocab_lines) + "\n", encoding="utf-8")
    return tokenizer
