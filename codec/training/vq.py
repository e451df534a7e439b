"""Training-mode forward of the acoustic VQ (the inference module ``codec.acoustic.AcousticQuantizer``
only looks codes up): straight-through quantisation, commitment loss and EMA codebook updates.

The update follows vector-quantize-pytorch's EMA codebook, which the official model used (decay
0.9, commitment weight 1): cluster_size and embed_avg are exponential moving averages of the
per-code counts and sums of the assigned vectors, and the codes are embed_avg divided by the
Laplace-smoothed counts. Optionally, codes whose EMA count falls below ``dead_code_threshold`` are
moved onto random input vectors (vector-quantize-pytorch's ``threshold_ema_dead_code``; 0 = off,
the official setting). Counts and sums are summed over DDP ranks, so all ranks keep one codebook.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from codec.acoustic import AcousticQuantizer

LAPLACE_EPS = 1e-5


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def _is_rank_zero() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class EMAQuantizerTrainer:
    """Quantises with, and updates in place, the buffers of an :class:`AcousticQuantizer`.

    A plain object (not a module), so the codebook buffers stay registered once, in the codec.
    """

    def __init__(self, quantizer: AcousticQuantizer, decay: float = 0.9, dead_code_threshold: float = 0.0) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"VQ decay must lie in [0, 1), got {decay}")
        self.quantizer, self.decay, self.dead_code_threshold = quantizer, decay, dead_code_threshold

    def __call__(self, x: torch.Tensor, valid: torch.Tensor, generator: torch.Generator,
                 update: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """x [S, T, F] float, valid bool [S, T] (rows that count) -> (straight-through quantised
        [S, T, F], commitment MSE over valid rows, logs). ``update``: apply the EMA step first."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._quantize(x, valid, generator, update)

    def _quantize(self, x: torch.Tensor, valid: torch.Tensor, generator: torch.Generator,
                  update: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        ids = self.quantizer.nearest(x.detach().float())
        if update:
            self.ema_update(x.detach().float()[valid], ids[valid], generator)
            ids = self.quantizer.nearest(x.detach().float())
        quantized = self.quantizer.lookup(ids).to(x.dtype)
        mask = valid[..., None].to(x.dtype)
        commitment = ((x - quantized.detach()).pow(2) * mask).sum() / (mask.sum() * x.shape[-1]).clamp(min=1)
        used = torch.zeros(self.quantizer.vocab_size, device=x.device).index_fill_(0, ids[valid], 1)
        logs = {"codes_used": used.sum(), "perplexity": _perplexity(ids[valid], self.quantizer.vocab_size)}
        return x + (quantized - x).detach(), commitment, logs

    @torch.no_grad()
    def ema_update(self, rows: torch.Tensor, ids: torch.Tensor, generator: torch.Generator) -> None:
        """One EMA step from rows [N, F] assigned to codes ids [N] (sums over ranks)."""
        book = self.quantizer._codebook
        vocab = book.embed.shape[1]
        counts = _all_reduce(torch.bincount(ids, minlength=vocab).float())
        sums = _all_reduce(torch.zeros(vocab, rows.shape[1], device=rows.device).index_add_(0, ids, rows))
        book.cluster_size.mul_(self.decay).add_(counts[None], alpha=1 - self.decay)
        book.embed_avg.mul_(self.decay).add_(sums[None], alpha=1 - self.decay)
        size = book.cluster_size
        smoothed = (size + LAPLACE_EPS) / (size.sum() + vocab * LAPLACE_EPS) * size.sum()
        book.embed.copy_(book.embed_avg / smoothed[..., None])
        if self.dead_code_threshold > 0:
            self.replace_dead_codes(rows, generator)

    def replace_dead_codes(self, rows: torch.Tensor, generator: torch.Generator) -> None:
        """Codes with EMA count < threshold take random rows (rank 0's draw, shared by all ranks)."""
        book = self.quantizer._codebook
        dead = torch.nonzero(book.cluster_size[0] < self.dead_code_threshold).flatten()
        if not len(dead):
            return
        new = torch.zeros(len(dead), rows.shape[1], device=rows.device)
        if _is_rank_zero() and len(rows):
            picks = torch.randint(len(rows), (len(dead),), generator=generator, device=generator.device)
            new = rows[picks.to(rows.device)].clone()
        new = _all_reduce(new)
        book.embed[0, dead] = new
        book.embed_avg[0, dead] = new * self.dead_code_threshold
        book.cluster_size[0, dead] = self.dead_code_threshold


def _perplexity(ids: torch.Tensor, vocab: int) -> torch.Tensor:
    if not len(ids):
        return torch.zeros((), device=ids.device)
    probs = torch.bincount(ids, minlength=vocab).float() / len(ids)
    return torch.exp(-(probs * torch.log(probs.clamp(min=1e-12))).sum())
