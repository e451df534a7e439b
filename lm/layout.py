"""Token layouts: codec frames [T, 2] <-> one LM sequence, and the grammar generation follows.

One vocabulary holds everything, in ranges: ``[special | text | semantic | acoustic]``.
An example is ``<bos> [<text> text ids ...] <audio> AUDIO-SEGMENT``; the audio segment of T
frames (semantic s_t, acoustic a_t) depends on the pattern:

=================  ===============================================================================
``interleave``     ``s0 a0 s1 a1 ... s[T-1] a[T-1] <eos>``
``semantic_first`` ``s0 ... s[T-1] <semantic_end> a0 ... a[T-1] <eos>``
``delay`` (d)      steps j = 0 .. T+d-1 of (semantic slot, acoustic slot), then ``<eos>``: the
                   semantic slot holds s_j, ``<semantic_end>`` at j = T, ``<empty>`` after; the
                   acoustic slot holds ``<empty>`` for j < d, then a[j-d] (MusicGen's delay, the
                   acoustic stream d frames behind the semantic one)
=================  ===============================================================================

A crop from inside a longer clip is encoded with ``ended=False``: no ``<eos>``, and for ``delay``
only steps 0 .. T-1 (its last d acoustic tokens belong to the following steps). Round trips
``decode_audio(encode_audio(x)) == x`` are exact for ended segments and for non-ended
``interleave``/``semantic_first`` ones; a non-ended ``delay`` segment decodes to its T-d frames
whose both tokens it holds.

:class:`AudioCursor` is the same grammar run forwards: while generating it says which ids are legal
at each row's next position, so a semantic slot can only produce a semantic id (or the end marker)
and an acoustic slot only an acoustic id, whatever the sampler does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<text>", "<audio>", "<semantic_end>", "<empty>")
PAD, BOS, EOS, TEXT, AUDIO, SEMANTIC_END, EMPTY = range(len(SPECIAL_TOKENS))
PATTERNS = ("interleave", "semantic_first", "delay")

SEMANTIC, ACOUSTIC, FIXED = 0, 1, -1  # what the next audio slot holds (FIXED: a special token)


@dataclass(frozen=True)
class TokenLayout:
    """Vocabulary ranges and the frame <-> sequence pattern of one language model."""

    semantic_vocab_size: int
    acoustic_vocab_size: int
    text_vocab_size: int = 0
    pattern: str = "interleave"
    delay: int = 1

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}")
        if self.semantic_vocab_size < 1 or self.acoustic_vocab_size < 1 or self.text_vocab_size < 0:
            raise ValueError(
                "vocabulary sizes must be positive (text may be 0), got semantic="
                f"{self.semantic_vocab_size}, acoustic={self.acoustic_vocab_size}, text={self.text_vocab_size}"
            )
        if self.pattern == "delay" and self.delay < 1:
            raise ValueError(f"the delay pattern needs delay >= 1, got {self.delay}")

    # Vocabulary ------------------------------------------------------------------------------
    @property
    def text_offset(self) -> int:
        return len(SPECIAL_TOKENS)

    @property
    def semantic_offset(self) -> int:
        return self.text_offset + self.text_vocab_size

    @property
    def acoustic_offset(self) -> int:
        return self.semantic_offset + self.semantic_vocab_size

    @property
    def vocab_size(self) -> int:
        return self.acoustic_offset + self.acoustic_vocab_size

    @property
    def end_marker(self) -> int:
        """The id a semantic slot takes to end the semantic stream (``<eos>`` when interleaved)."""
        return EOS if self.pattern == "interleave" else SEMANTIC_END

    # Lengths ---------------------------------------------------------------------------------
    def audio_length(self, frames: int, ended: bool = True) -> int:
        """Number of ids in the audio segment of ``frames`` frames."""
        if self.pattern == "interleave":
            return 2 * frames + int(ended)
        if self.pattern == "semantic_first":
            return 2 * frames + 1 + int(ended)
        return 2 * (frames + self.delay) + 1 if ended else 2 * frames

    def prompt_slots(self, frames: int) -> int:
        """Number of ids in the generation prefix of a ``frames``-frame prompt (see prompt_ids)."""
        return frames if self.pattern == "semantic_first" else 2 * frames

    # Frames -> ids ---------------------------------------------------------------------------
    def _check_frames(self, frames: torch.Tensor, name: str = "frames") -> torch.Tensor:
        if not isinstance(frames, torch.Tensor) or frames.dim() != 2 or frames.shape[-1] != 2:
            shape = list(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise ValueError(f"{name} must be a [T, 2] tensor of (semantic, acoustic) ids, got {shape}")
        if frames.dtype.is_floating_point or frames.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer ids, got {frames.dtype}")
        for column, size, stream in ((0, self.semantic_vocab_size, "semantic"), (1, self.acoustic_vocab_size, "acoustic")):
            ids = frames[:, column]
            if ids.numel() and (ids.min() < 0 or ids.max() >= size):
                raise ValueError(
                    f"{name}: {stream} ids must lie in [0, {size}), got range "
                    f"[{int(ids.min())}, {int(ids.max())}]"
                )
        return frames.long()

    def encode_audio(self, frames: torch.Tensor, ended: bool = True) -> torch.Tensor:
        """Frames [T, 2] int (T >= 1) -> audio-segment ids [audio_length(T, ended)] int64."""
        frames = self._check_frames(frames)
        if frames.shape[0] == 0:
            raise ValueError("cannot encode an empty clip (T = 0 frames)")
        semantic = frames[:, 0] + self.semantic_offset
        acoustic = frames[:, 1] + self.acoustic_offset
        tail = [torch.tensor([EOS])] if ended else []
        if self.pattern == "interleave":
            return torch.cat([torch.stack([semantic, acoustic], dim=1).reshape(-1), *tail])
        if self.pattern == "semantic_first":
            return torch.cat([semantic, torch.tensor([SEMANTIC_END]), acoustic, *tail])
        steps = frames.shape[0] + (self.delay if ended else 0)
        semantic_slots = torch.full((steps,), EMPTY, dtype=torch.long)
        acoustic_slots = torch.full((steps,), EMPTY, dtype=torch.long)
        semantic_slots[: len(semantic)] = semantic
        if ended:
            semantic_slots[len(semantic)] = SEMANTIC_END
        acoustic_slots[self.delay :] = acoustic[: max(steps - self.delay, 0)]
        return torch.cat([torch.stack([semantic_slots, acoustic_slots], dim=1).reshape(-1), *tail])

    def prompt_ids(self, frames: torch.Tensor) -> torch.Tensor:
        """Prompt frames [T, 2] -> the ids fed before generation continues them [prompt_slots(T)].

        The longest start of the audio segment the prompt alone decides; the prompt tokens that
        come later (semantic_first's acoustic half, delay's last d acoustic ids) are forced by
        :class:`AudioCursor` while generating.
        """
        frames = self._check_frames(frames, "prompt")
        if self.pattern == "semantic_first":
            return frames[:, 0] + self.semantic_offset
        return self.encode_audio(frames, ended=False) if len(frames) else torch.zeros(0, dtype=torch.long)

    def prefix_ids(self, text_ids: Sequence[int] | None = None) -> list[int]:
        """``<bos> [<text> text...] <audio>``; text ids are the tokenizer's (0-based) ids."""
        if text_ids is None:
            return [BOS, AUDIO]
        text_ids = [int(t) for t in text_ids]
        bad = [t for t in text_ids if not 0 <= t < self.text_vocab_size]
        if bad:
            raise ValueError(
                f"text ids must lie in [0, {self.text_vocab_size}) (text_vocab_size), got e.g. {bad[0]}; "
                "does the model's text_vocab_size match the tokenizer?"
            )
        return [BOS, TEXT, *(t + self.text_offset for t in text_ids), AUDIO]

    def build_sequence(
        self, frames: torch.Tensor, text_ids: Sequence[int] | None = None, ended: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A training example: ids [L] int64 and loss mask [L] bool (True on the audio segment only)."""
        prefix = torch.tensor(self.prefix_ids(text_ids), dtype=torch.long)
        audio = self.encode_audio(frames, ended)
        mask = torch.cat([torch.zeros(len(prefix), dtype=torch.bool), torch.ones(len(audio), dtype=torch.bool)])
        return torch.cat([prefix, audio]), mask

    def encode_batch(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Codec tokens [B, T, 2] + lengths [B] -> ended audio segments [B, L] (``<pad>`` after) + lengths [B]."""
        if tokens.dim() != 3:
            raise ValueError(f"tokens must be [B, T, 2], got {list(tokens.shape)}")
        if lengths is None:
            lengths = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long)
        rows = [self.encode_audio(tokens[b, : int(n)]) for b, n in enumerate(lengths)]
        return _pad_right(rows), torch.tensor([len(r) for r in rows], dtype=torch.long)

    # ids -> frames ---------------------------------------------------------------------------
    def _expect(self, ids: torch.Tensor, low: int, size: int, what: str) -> torch.Tensor:
        bad = (ids < low) | (ids >= low + size)
        if bad.any():
            where = int(bad.nonzero()[0])
            raise ValueError(f"malformed {self.pattern} segment: {what} slot {where} holds id {int(ids[where])}")
        return ids - low

    def _expect_fixed(self, ids: torch.Tensor, token: int, what: str) -> None:
        if (ids != token).any():
            raise ValueError(f"malformed {self.pattern} segment: {what} slots must all be {SPECIAL_TOKENS[token]}")

    def decode_audio(self, ids: torch.Tensor) -> torch.Tensor:
        """Audio-segment ids [L] (ended with ``<eos>`` or not) -> frames [T, 2] int64.

        Raises ValueError naming the first slot that breaks the pattern.
        """
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        ended = len(ids) > 0 and int(ids[-1]) == EOS
        body = ids[:-1] if ended else ids
        if self.pattern == "semantic_first":
            ends = (body == SEMANTIC_END).nonzero()
            if len(ends) == 0:
                raise ValueError("malformed semantic_first segment: no <semantic_end>")
            frames = int(ends[0])
            if len(body) != 2 * frames + 1:
                raise ValueError(
                    f"malformed semantic_first segment: {frames} semantic ids but "
                    f"{len(body) - frames - 1} acoustic ids"
                )
            semantic = self._expect(body[:frames], self.semantic_offset, self.semantic_vocab_size, "semantic")
            acoustic = self._expect(body[frames + 1 :], self.acoustic_offset, self.acoustic_vocab_size, "acoustic")
            return torch.stack([semantic, acoustic], dim=1)
        if len(body) % 2:
            raise ValueError(f"malformed {self.pattern} segment: odd number of slots ({len(body)})")
        semantic_slots, acoustic_slots = body[0::2], body[1::2]
        if self.pattern == "interleave":
            semantic = self._expect(semantic_slots, self.semantic_offset, self.semantic_vocab_size, "semantic")
            acoustic = self._expect(acoustic_slots, self.acoustic_offset, self.acoustic_vocab_size, "acoustic")
            return torch.stack([semantic, acoustic], dim=1)
        steps = len(semantic_slots)
        if ended:
            ends = (semantic_slots == SEMANTIC_END).nonzero()
            if len(ends) == 0 or steps != int(ends[0]) + self.delay:
                raise ValueError(f"malformed delay segment: expected <semantic_end> at step {steps - self.delay}")
            frames = int(ends[0])
            self._expect_fixed(semantic_slots[frames + 1 :], EMPTY, "trailing semantic")
        else:
            frames = steps
        semantic = self._expect(semantic_slots[:frames], self.semantic_offset, self.semantic_vocab_size, "semantic")
        self._expect_fixed(acoustic_slots[: self.delay], EMPTY, "leading acoustic")
        acoustic = self._expect(acoustic_slots[self.delay :], self.acoustic_offset, self.acoustic_vocab_size, "acoustic")
        return torch.stack([semantic[: len(acoustic)], acoustic], dim=1)

    def decode_batch(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio segments [B, L] + lengths [B] -> codec tokens [B, T, 2] (zeros after) + frames [B]."""
        rows = [self.decode_audio(ids[b, : int(n)]) for b, n in enumerate(lengths)]
        frames = torch.tensor([len(r) for r in rows], dtype=torch.long)
        out = torch.zeros(len(rows), int(frames.max()) if len(rows) else 0, 2, dtype=torch.long)
        for b, row in enumerate(rows):
            out[b, : len(row)] = row
        return out, frames


def _pad_right(rows: Sequence[torch.Tensor], value: int = PAD) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for b, row in enumerate(rows):
        out[b, : len(row)] = row
    return out


class AudioCursor:
    """Where each row of a generating batch stands in its audio segment, and what may come next.

    Made with the prompt frames [B, Tp, 2] (+ lengths) already fed as ``prompt_ids``; call
    :meth:`allowed` for a [B, V] mask of legal next ids, sample within it, then :meth:`advance`.
    A row may add at most ``max_new_frames`` frames; after that the end marker is forced. When
    :attr:`done` is all True, :meth:`result` gives tokens [B, T, 2] and lengths [B].
    """

    def __init__(
        self,
        layout: TokenLayout,
        batch_size: int,
        max_new_frames: int,
        prompt: torch.Tensor | None = None,
        prompt_lengths: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if max_new_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_new_frames}")
        self.layout = layout
        self.device = torch.device(device)
        if prompt is None:
            prompt_lengths = torch.zeros(batch_size, dtype=torch.long)
            prompt = torch.zeros(batch_size, 0, 2, dtype=torch.long)
        elif prompt_lengths is None:
            prompt_lengths = torch.full((batch_size,), prompt.shape[1], dtype=torch.long)
        prompt_lengths = torch.as_tensor(prompt_lengths, dtype=torch.long).reshape(-1)
        if len(prompt_lengths) != batch_size or prompt.shape[0] != batch_size:
            raise ValueError(f"{prompt.shape[0]} prompts and {len(prompt_lengths)} prompt lengths for {batch_size} rows")
        if (prompt_lengths < 0).any() or (prompt_lengths > prompt.shape[1]).any():
            raise ValueError(f"prompt lengths must lie in [0, {prompt.shape[1]}], got {prompt_lengths.tolist()}")
        self.prompt_lengths = prompt_lengths.to(self.device)
        self.limit = self.prompt_lengths + max_new_frames
        self.frames = torch.zeros(batch_size, int(self.limit.max()), 2, dtype=torch.long, device=self.device)
        self.frames[:, : prompt.shape[1]] = prompt.to(self.device, torch.long)
        self.position = torch.tensor(
            [layout.prompt_slots(int(n)) for n in prompt_lengths], dtype=torch.long, device=self.device
        )
        self.frames_end = torch.full((batch_size,), -1, dtype=torch.long, device=self.device)
        self.done = torch.zeros(batch_size, dtype=torch.bool, device=self.device)

    def prompt_ids(self) -> list[torch.Tensor]:
        """Each row's prompt prefix ids (its audio segment so far), before padding."""
        return [
            self.layout.prompt_ids(self.frames[b, : int(n)].cpu()) for b, n in enumerate(self.prompt_lengths)
        ]

    @property
    def remaining_steps(self) -> int:
        """An upper bound on the ids any row still has to produce."""
        longest = max(self.layout.audio_length(int(n), ended=True) for n in self.limit)
        return longest - int(self.position.min())

    def _next_slot(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(stream [B]: SEMANTIC/ACOUSTIC/FIXED, frame index [B], fixed id [B] or -1)."""
        p, end = self.position, self.frames_end
        known = end >= 0
        fixed = torch.full_like(p, -1)
        if self.layout.pattern == "interleave":
            return p % 2, p // 2, fixed
        if self.layout.pattern == "semantic_first":
            acoustic_frame = p - end - 1
            finished = known & (acoustic_frame >= end)
            stream = torch.where(known, torch.full_like(p, ACOUSTIC), torch.full_like(p, SEMANTIC))
            stream = torch.where(finished, torch.full_like(p, FIXED), stream)
            fixed = torch.where(finished, torch.full_like(p, EOS), fixed)
            return stream, torch.where(known, acoustic_frame, p), fixed
        step, odd = p // 2, (p % 2).bool()
        acoustic_frame = step - self.layout.delay
        stream = torch.where(odd, torch.full_like(p, ACOUSTIC), torch.full_like(p, SEMANTIC))
        semantic_fixed = ~odd & known
        acoustic_fixed = odd & (acoustic_frame < 0)
        stream = torch.where(semantic_fixed | acoustic_fixed, torch.full_like(p, FIXED), stream)
        tail = torch.where(step == end + self.layout.delay, torch.full_like(p, EOS), torch.full_like(p, EMPTY))
        fixed = torch.where(semantic_fixed, tail, torch.where(acoustic_fixed, torch.full_like(p, EMPTY), fixed))
        return stream, torch.where(odd, acoustic_frame, step), fixed

    def allowed(self) -> torch.Tensor:
        """Legal next ids: bool [B, V]; exactly one True where the next id is forced."""
        layout = self.layout
        stream, frame, fixed = self._next_slot()
        rows = torch.arange(len(frame), device=self.device)
        safe_frame = frame.clamp(0, self.frames.shape[1] - 1)
        from_prompt = (stream >= 0) & (frame < self.prompt_lengths)
        prompt_id = self.frames[rows, safe_frame, stream.clamp(min=0)] + torch.where(
            stream == SEMANTIC, layout.semantic_offset, layout.acoustic_offset
        )
        fixed = torch.where(from_prompt, prompt_id, fixed)
        fixed = torch.where((stream == SEMANTIC) & (frame >= self.limit), layout.end_marker, fixed)
        fixed = torch.where(self.done, PAD, fixed)

        mask = torch.zeros(len(frame), layout.vocab_size, dtype=torch.bool, device=self.device)
        free = fixed < 0
        semantic_rows = free & (stream == SEMANTIC)
        mask[semantic_rows, layout.semantic_offset : layout.acoustic_offset] = True
        mask[semantic_rows & (frame >= 1), layout.end_marker] = True
        mask[free & (stream == ACOUSTIC), layout.acoustic_offset :] = True
        forced_rows = (~free).nonzero().squeeze(1)
        mask[forced_rows, fixed[forced_rows]] = True
        return mask

    def advance(self, ids: torch.Tensor, allowed: torch.Tensor | None = None) -> None:
        """Record the ids [B] just produced and move every live row on.

        Each id must be legal; pass the :meth:`allowed` mask it was sampled from to save its
        recomputation.
        """
        ids = ids.to(self.device).reshape(-1)
        allowed = self.allowed() if allowed is None else allowed
        rows = torch.arange(len(ids), device=self.device)
        if not allowed[rows, ids].all():
            bad = int((~allowed[rows, ids]).nonzero()[0])
            raise ValueError(f"row {bad}: id {int(ids[bad])} is not legal at this position of the {self.layout.pattern} layout")
        layout = self.layout
        stream, frame, _ = self._next_slot()
        live = ~self.done
        is_semantic = live & (stream == SEMANTIC) & (ids >= layout.semantic_offset) & (ids < layout.acoustic_offset)
        is_acoustic = live & (stream == ACOUSTIC) & (ids >= layout.acoustic_offset)
        self.frames[rows[is_semantic], frame[is_semantic], 0] = ids[is_semantic] - layout.semantic_offset
        self.frames[rows[is_acoustic], frame[is_acoustic], 1] = ids[is_acoustic] - layout.acoustic_offset
        ending = live & (stream == SEMANTIC) & (ids == layout.end_marker)
        self.frames_end = torch.where(ending, frame, self.frames_end)
        self.done = self.done | (live & (ids == EOS))
        self.position = self.position + live.long()

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Codec tokens [B, T, 2] int64 (zeros past each length) and lengths [B] int64."""
        if not self.done.all():
            raise RuntimeError("generation has not finished for every row")
        lengths = self.frames_end.clone()
        tokens = self.frames[:, : int(lengths.max())].clone()
        tokens[torch.arange(tokens.shape[1], device=self.device)[None, :] >= lengths[:, None]] = 0
        return tokens, lengths
