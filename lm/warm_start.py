"""Start an LM's training from a trained LM: every weight whose shape allows it.

Training that accumulates: a new run (a longer schedule, a wider vocabulary of captions, another
pattern) begins where the shipped LM stopped instead of from noise. Matrices and gains copy when
their names and shapes match; the vocabulary-indexed ones (``embed.weight``, ``head.weight``, rows
in the layout's ranges ``[special | text | semantic | acoustic]``) copy range by range, so a model
with another text vocabulary still gets the audio rows.

A deeper model than the source grows from it: the source's blocks fill the first layers and each
added block starts with its two residual output projections at zero, so it adds nothing until
trained and the grown model computes exactly the source's function at step 0 (a larger LM that
starts where the shipped one stopped, rather than from noise).

An LM of another codec's tokens can still give its audio rows when the same clips were tokenized by
both codecs: each new id's row becomes the average of the source's rows of the ids it shares frames
with, weighted by how often (:func:`co_occurrence`, :func:`translate_rows`). A stream both codecs
tokenize alike (the semantic stream of a codec whose acoustic encoder alone was retrained) maps one
to one, so its rows copy exactly; a retrained stream starts from what its ids sounded like before.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from lm.layout import SPECIAL_TOKENS, TokenLayout
from lm.model import AudioLM

VOCAB_TENSORS = ("embed.weight", "head.weight")


class WarmStartError(ValueError):
    """The source LM cannot start this one (its tokens come from another codec)."""


@dataclass
class WarmStartReport:
    """What :func:`warm_start` copied: whole tensors, vocabulary rows per range, and what it left."""

    copied: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    grown: list[int] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)  # vocabulary ranges left out on purpose (another codec's)
    translated: list[str] = field(default_factory=list)  # ranges whose rows came through co-occurrence

    def summary(self) -> str:
        rows = ", ".join(f"{name} {count}" for name, count in self.rows.items()) or "none"
        left = ", ".join(name for name in self.skipped if block_index(name) not in self.grown) or "nothing"
        grown = f"; blocks {self.grown[0]}-{self.grown[-1]} added as identity" if self.grown else ""
        fresh = f"; fresh (another codec's tokens): {', '.join(self.fresh)}" if self.fresh else ""
        translated = (f"; translated from another codec's ids: {', '.join(self.translated)}"
                      if self.translated else "")
        return (f"{len(self.copied)} tensors copied; vocabulary rows: {rows}; left at initialisation: {left}"
                f"{grown}{fresh}{translated}")

    def trained_parameters(self) -> list[str]:
        """Names of the parameters that hold the source's weights: whole, or a vocabulary tensor whose
        audio rows were copied (one whose audio rows start fresh has to learn at the full rate)."""
        audio = {key.split(" ")[0] for key in self.rows if key.endswith((" semantic", " acoustic"))}
        return sorted(set(self.copied) | audio)

    def to_dict(self) -> dict[str, Any]:
        return {"copied": len(self.copied), "rows": dict(self.rows), "skipped": list(self.skipped),
                "grown": list(self.grown), "fresh": list(self.fresh), "translated": list(self.translated)}


RESIDUAL_OUTPUTS = ("attention.out.weight", "ffn.down.weight")


def block_index(name: str) -> int | None:
    """The layer of a parameter name ``blocks.<i>.…``, None for the others."""
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "blocks" and len(parts) > 2 and parts[1].isdigit() else None


def vocab_ranges(layout: TokenLayout, with_text: bool) -> dict[str, tuple[int, int]]:
    """Row ranges [start, end) of one vocabulary, by name (text only when ``with_text``)."""
    ranges = {"special": (0, len(SPECIAL_TOKENS)),
              "semantic": (layout.semantic_offset, layout.acoustic_offset),
              "acoustic": (layout.acoustic_offset, layout.acoustic_offset + layout.acoustic_vocab_size)}
    if with_text:
        ranges["text"] = (layout.text_offset, layout.semantic_offset)
    return ranges


def check_same_codec(source: dict[str, Any], tokens: dict[str, Any]) -> None:
    """Raise WarmStartError unless two codec identities (token-file ``codec`` records) name the same
    tokens: same vocabularies and configuration hash, and the same encoder weights where both record them."""
    for key in ("semantic_vocab_size", "acoustic_vocab_size", "config_hash", "tokens_digest"):
        theirs, ours = source.get(key), tokens.get(key)
        if theirs is not None and ours is not None and theirs != ours:
            raise WarmStartError(f"the LM was trained on tokens of another codec ({key} {theirs} against the "
                                 f"training tokens' {ours}): its audio embeddings would mean other sounds")


def co_occurrence(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], new_vocab: int, old_vocab: int) -> torch.Tensor:
    """Counts [new_vocab, old_vocab] float64: how many frames one codec gave id j where another gave id i.

    ``pairs``: per clip, the new and the old codec's ids of one stream, int64 [T] each (the longer is
    cut to the shorter; both codecs run at the same frame rate)."""
    counts = torch.zeros(new_vocab * old_vocab, dtype=torch.float64)
    for new, old in pairs:
        frames = min(len(new), len(old))
        new, old = new[:frames].long(), old[:frames].long()
        if frames and (int(new.max()) >= new_vocab or int(old.max()) >= old_vocab or min(new.min(), old.min()) < 0):
            raise ValueError(f"co_occurrence: ids outside the vocabularies ({new_vocab} new, {old_vocab} old)")
        counts += torch.bincount(new * old_vocab + old, minlength=new_vocab * old_vocab).double()
    return counts.view(new_vocab, old_vocab)


def translate_rows(source_rows: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows for new ids from ``source_rows`` [old_vocab, D]: each the average of the rows of the old
    ids it co-occurs with, weighted by ``counts`` [new_vocab, old_vocab] (:func:`co_occurrence`).

    Returns the rows [new_vocab, D] (source dtype; zero where an id was never seen) and a bool mask
    [new_vocab] of the ids that were seen."""
    seen = counts.sum(dim=1) > 0
    weights = counts / counts.sum(dim=1, keepdim=True).clamp_min(1.0)
    return (weights @ source_rows.double()).to(source_rows.dtype), seen


@torch.no_grad()
def warm_start(model: AudioLM, source: AudioLM, *, same_text: bool, same_audio: bool = True,
               translations: dict[str, torch.Tensor] | None = None) -> WarmStartReport:
    """Copy ``source``'s weights into ``model`` where names and shapes allow; returns what was copied.

    ``same_audio`` says whether both read the same codec's tokens (:func:`check_same_codec`): the
    semantic and acoustic rows copy only then. Otherwise ``translations`` may map "semantic" and
    "acoustic" to co-occurrence counts [new_vocab, old_vocab] of the same clips tokenized by both
    codecs (:func:`co_occurrence`): each new id seen there gets :func:`translate_rows`' row, the
    others keep their initialisation. ``same_text`` says whether they share the text
    tokenizer (text rows copy only then, and only when the text vocabularies have the same size).
    Vocabulary tensors need the same model width. Blocks beyond the source's depth (same width)
    start as identity: their residual output projections are zeroed.
    """
    report = WarmStartReport()
    theirs = source.state_dict()
    ours_layout, their_layout = model.config.layout, source.config.layout
    for name, target in model.state_dict().items():
        if name == "head.weight" and model.config.tie_embeddings:
            continue  # the same tensor as embed.weight
        value = theirs.get(name)
        if value is None:
            report.skipped.append(name)
        elif name in VOCAB_TENSORS and value.shape[1:] == target.shape[1:]:
            with_text = same_text and ours_layout.text_vocab_size == their_layout.text_vocab_size
            mine, other = vocab_ranges(ours_layout, with_text), vocab_ranges(their_layout, with_text)
            for part, (start, end) in mine.items():
                if part in ("semantic", "acoustic") and not same_audio:
                    counts = (translations or {}).get(part)
                    if counts is None:
                        report.fresh.append(f"{name} {part}")
                        continue
                    their_start, their_end = other[part]
                    if counts.shape != (end - start, their_end - their_start):
                        raise WarmStartError(f"{part} co-occurrence counts {tuple(counts.shape)} do not match the "
                                             f"vocabularies ({end - start} new, {their_end - their_start} old)")
                    rows, seen = translate_rows(value[their_start:their_end], counts)
                    target[start:end][seen] = rows[seen]
                    report.rows[f"{name} {part}"] = int(seen.sum())
                    report.translated.append(f"{name} {part}")
                    continue
                their_start, their_end = other[part]
                if end - start == their_end - their_start and end > start:
                    target[start:end] = value[their_start:their_end]
                    report.rows[f"{name} {part}"] = end - start
        elif value.shape == target.shape:
            target.copy_(value)
            report.copied.append(name)
        else:
            report.skipped.append(name)
    if model.config.n_layers > source.config.n_layers and model.config.dim == source.config.dim:
        report.grown = list(range(source.config.n_layers, model.config.n_layers))
        for layer in report.grown:
            for output in RESIDUAL_OUTPUTS:
                model.get_parameter(f"blocks.{layer}.{output}").zero_()
    return report
