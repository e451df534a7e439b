"""Sampling codec tokens from an :class:`~lm.model.AudioLM`: batched, KV-cached, always valid.

    from lm.generate import generate
    out = generate(model, max_frames=250, temperature=0.9, top_k=200, seed=0)      # unconditional
    out = generate(model, text=["a dog barks"], tokenizer=tok, cfg_scale=3.0, max_frames=250, seed=0)
    out = generate(model, prompt=tokens, max_frames=100, top_p=0.9, seed=0)         # continuation
    out.tokens, out.lengths                   # [B, T, 2] int64 codec tokens, [B] frames

Every step samples only among the ids the layout allows there (:class:`lm.layout.AudioCursor`),
so the result decodes with the codec whatever the sampling settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Sequence

import torch

from codec.arguments import check_float, check_int
from lm.layout import PAD, AudioCursor
from lm.model import AudioLM


@dataclass
class Generation:
    """tokens [B, T, 2] int64 (prompt included, zeros past each length), lengths [B] int64 frames,
    ids [B, L] int64: each row's audio-segment ids (prompt prefix included, ``<pad>`` after)."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    ids: torch.Tensor


def sample_next(
    logits: torch.Tensor,
    allowed: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one id per row among the allowed ones.

    logits [B, V] float, allowed [B, V] bool (at least one True per row) -> ids [B] int64.
    ``temperature`` 0 is greedy; ``top_k`` keeps the k most likely allowed ids, ``top_p`` the
    smallest set whose probability reaches p (the most likely id always stays).
    """
    check_sampling(temperature, top_k, top_p)
    logits = logits.float().masked_fill(~allowed, float("-inf"))
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p
        drop[:, 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    # Inverse-CDF sampling: for one draw from a large vocabulary it is several times faster on a
    # CPU than torch.multinomial. u lies in (0, total], so the id found always has probability > 0.
    cdf = logits.softmax(-1).cumsum(-1)
    u = (1 - torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device)) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp_(max=cdf.shape[-1] - 1)


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ValueError naming the argument for a temperature, top_k or top_p outside its range."""
    # NaN would otherwise pass ``< 0`` and surface as an illegal id far from its cause.
    check_float("temperature", temperature, 0.0)
    if top_k is not None:
        check_int("top_k", top_k, 1)
    if top_p is not None and check_float("top_p", top_p, 0.0, 1.0) == 0.0:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")


def _text_ids(text, tokenizer, model: AudioLM) -> list[list[int]] | None:
    if text is None:
        return None
    if isinstance(text, str):
        raise ValueError("text must be a list (one caption per row), got a single string")
    if model.config.text_vocab_size == 0:
        raise ValueError("this model has no text vocabulary (text_vocab_size=0); it cannot take text")
    rows = []
    for caption in text:
        if isinstance(caption, str):
            if tokenizer is None:
                raise ValueError("text given as strings needs a tokenizer (lm.text.TextTokenizer)")
            rows.append(tokenizer.encode(caption))
        else:
            rows.append([int(t) for t in caption])
    return rows


def _left_pad(rows: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    valid = torch.zeros(len(rows), width, dtype=torch.bool)
    for b, row in enumerate(rows):
        ids[b, width - len(row) :] = torch.as_tensor(list(row), dtype=torch.long)
        valid[b, width - len(row) :] = True
    return ids.to(device), valid.to(device)


def _batch_size(prompt, text_ids, batch_size) -> int:
    sizes = {name: n for name, n in (("prompt", None if prompt is None else prompt.shape[0]),
                                     ("text", None if text_ids is None else len(text_ids)),
                                     ("batch_size", batch_size)) if n is not None}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch sizes disagree: {sizes}")
    size = next(iter(sizes.values()), 1)
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    return size


@torch.no_grad()
def generate(
    model: AudioLM,
    prompt: torch.Tensor | None = None,
    text: Sequence[str] | Sequence[Sequence[int]] | None = None,
    max_frames: int = 256,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    cfg_scale: float = 1.0,
    seed: int | torch.Generator | None = None,
    prompt_lengths: torch.Tensor | None = None,
    tokenizer=None,
    batch_size: int | None = None,
    use_cache: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> Generation:
    """Generate up to ``max_frames`` new frames per row; stop each row at its end marker.

    ``prompt`` [B, Tp, 2] int codec tokens (``prompt_lengths`` [B] when rows differ) is continued;
    ``text`` is one caption per row (strings with ``tokenizer``, or text ids); ``cfg_scale`` != 1
    mixes conditional and text-free log-probabilities (classifier-free guidance). ``seed`` makes
    the result reproducible. ``use_cache=False`` recomputes the whole context every step (slow;
    for checks and benchmarks). ``on_step(done, total)`` reports progress in LM steps (ids).
    Returns a :class:`Generation` whose tokens [B, T, 2] always lie in the codec's vocabularies.
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    check_sampling(temperature, top_k, top_p)
    layout = model.config.layout
    device = next(model.parameters()).device
    text_ids = _text_ids(text, tokenizer, model)
    if prompt is not None and (prompt.dim() != 3 or prompt.shape[-1] != 2):
        raise ValueError(f"prompt must be codec tokens [B, T, 2], got {list(prompt.shape)}")
    rows = _batch_size(prompt, text_ids, batch_size)
    guided = cfg_scale != 1.0
    if guided and text_ids is None:
        raise ValueError("cfg_scale != 1 needs text: guidance contrasts captioned and caption-free logits")

    cursor = AudioCursor(layout, rows, max_frames, prompt, prompt_lengths, device)
    audio_prefix = [ids.tolist() for ids in cursor.prompt_ids()]
    texts = text_ids if text_ids is not None else [None] * rows
    prefixes = [layout.prefix_ids(t) + a for t, a in zip(texts, audio_prefix)]
    if guided:
        prefixes += [layout.prefix_ids(None) + a for a in audio_prefix]
    ids, valid = _left_pad(prefixes, device)
    total_steps = cursor.remaining_steps
    needed = ids.shape[1] + total_steps
    if needed > model.config.max_seq_len:
        raise ValueError(
            f"prompt, text and max_frames={max_frames} need {needed} positions, "
            f"but the model's max_seq_len is {model.config.max_seq_len}"
        )
    if isinstance(seed, torch.Generator):
        generator = seed
    else:
        generator = torch.Generator(device=device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)

    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache(len(prefixes), needed) if use_cache else None
        logits = model(ids, cache=cache, key_valid=valid, last_only=True)[:, -1].float()
        produced = []
        while True:
            if guided:
                cond, uncond = logits.log_softmax(-1).chunk(2)
                logits = uncond + cfg_scale * (cond - uncond)
            allowed = cursor.allowed()
            next_ids = sample_next(logits, allowed, temperature, top_k, top_p, generator)
            cursor.advance(next_ids, allowed)
            produced.append(next_ids)
            if on_step is not None:
                on_step(len(produced), total_steps)
            if bool(cursor.done.all()):
                break
            feed = (next_ids.repeat(2) if guided else next_ids)[:, None]
            if use_cache:
                logits = model(feed, cache=cache, last_only=True)[:, -1].float()
            else:
                ids = torch.cat([ids, feed], dim=1)
                valid = torch.cat([valid, torch.ones_like(feed, dtype=torch.bool)], dim=1)
                logits = model(ids, key_valid=valid, last_only=True)[:, -1].float()
    finally:
        model.train(was_training)

    tokens, lengths = cursor.result()
    steps = torch.stack(produced, dim=1).cpu()
    # A row's own steps end at its <eos>; later columns are the <pad> it was fed while others ran.
    own_steps = (cursor.position.cpu() - torch.tensor([len(a) for a in audio_prefix])).tolist()
    segments = [torch.tensor(a + steps[b, :n].tolist(), dtype=torch.long) for b, (a, n) in enumerate(zip(audio_prefix, own_steps))]
    width = max(len(s) for s in segments)
    segment_ids = torch.full((rows, width), PAD, dtype=torch.long)
    for b, segment in enumerate(segments):
        segment_ids[b, : len(segment)] = segment
    return Generation(tokens=tokens, lengths=lengths, ids=segment_ids)
