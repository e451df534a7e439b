"""k-means in torch (CPU or GPU): mini-batch (:class:`MiniBatchKMeans`, for the semantic codebook
over a stream of AudioMAE features) and full-batch Lloyd (:func:`lloyd_kmeans`, for small point
sets such as the probe's mel baseline); both assign with :func:`codec.semantic.nearest_codeword`.

Mini-batch: k-means++ initialisation, empty clusters re-seeded.

The centroids may be split into blocks, one per data group (e.g. per domain, as the paper fits
general sound, speech and music codebooks separately and concatenates them): a row is only ever
assigned to the centroids of its own block. Distributed training sums the per-cluster statistics
of all ranks (``reduce``), so every rank holds the same centroids.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from codec.checkpoints import official_files
from codec.config import CodecConfig
from codec.semantic import nearest_codeword

Reduce = Callable[[torch.Tensor], torch.Tensor]


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def kmeans_plus_plus(points: torch.Tensor, clusters: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: points [N, F] float -> centroids [clusters, F] (each next seed drawn with
    probability proportional to its squared distance to the seeds so far). Needs N >= clusters."""
    if points.shape[0] < clusters:
        raise ValueError(f"k-means++ needs at least {clusters} points, got {points.shape[0]}")
    points = points.float()
    first = int(torch.randint(points.shape[0], (1,), generator=generator, device=generator.device))
    centroids = [points[first]]
    nearest = (points - points[first]).pow(2).sum(dim=1)
    for _ in range(1, clusters):
        weights = nearest.clamp(min=0)
        if float(weights.sum()) <= 0:  # every point already coincides with a seed
            weights = torch.ones_like(weights)
        choice = int(torch.multinomial(weights.to(generator.device), 1, generator=generator))
        centroids.append(points[choice])
        nearest = torch.minimum(nearest, (points - points[choice]).pow(2).sum(dim=1))
    return torch.stack(centroids)


class MiniBatchKMeans(torch.nn.Module):
    """Mini-batch k-means state (buffers, so it is checkpointed with a LightningModule).

    ``block_sizes`` splits the ``sum(block_sizes)`` centroids into consecutive blocks; rows carry a
    block index. Buffers: ``centroids`` [V, F], ``counts`` [V] (rows assigned so far, the per-cluster
    learning rate is 1/count), ``idle`` [V] (updates since a cluster last received a row),
    ``initialised`` (0/1).
    """

    def __init__(self, block_sizes: list[int], feature_dim: int, reseed_after: int = 10) -> None:
        super().__init__()
        if not block_sizes or min(block_sizes) < 1:
            raise ValueError(f"block sizes must be positive, got {block_sizes}")
        self.block_sizes = list(block_sizes)
        self.reseed_after = reseed_after
        vocab = sum(block_sizes)
        block_of = torch.repeat_interleave(torch.arange(len(block_sizes)), torch.tensor(block_sizes))
        self.register_buffer("block_of_cluster", block_of, persistent=False)
        self.register_buffer("centroids", torch.zeros(vocab, feature_dim))
        self.register_buffer("counts", torch.zeros(vocab))
        self.register_buffer("idle", torch.zeros(vocab))
        self.register_buffer("initialised", torch.zeros(()))

    def assign(self, points: torch.Tensor, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest centroid of each row within its block: points [N, F], blocks int64 [N] ->
        (ids int64 [N], squared distances [N])."""
        ids = torch.zeros(len(points), dtype=torch.long, device=points.device)
        first = 0
        for block, size in enumerate(self.block_sizes):
            rows = blocks == block
            if bool(rows.any()):
                ids[rows] = first + nearest_codeword(points[rows], self.centroids[first : first + size])
            first += size
        distance = (points.float() - self.centroids[ids]).pow(2).sum(dim=1)
        return ids, distance

    def initialise(self, points: torch.Tensor, blocks: torch.Tensor, generator: torch.Generator) -> None:
        """k-means++ in every block from the rows of that block (all ranks must pass the same rows)."""
        for block, size in enumerate(self.block_sizes):
            rows = points[blocks == block]
            if rows.shape[0] < size:
                raise ValueError(f"block {block} has {rows.shape[0]} rows for {size} clusters; "
                                 "collect more batches before initialising")
            self.centroids[self.block_of_cluster == block] = kmeans_plus_plus(rows, size, generator).to(
                self.centroids.dtype)
        self.counts.zero_()
        self.idle.zero_()
        self.initialised.fill_(1)

    @torch.no_grad()
    def update(self, points: torch.Tensor, blocks: torch.Tensor, generator: torch.Generator,
               reduce: Reduce = _identity) -> dict[str, torch.Tensor]:
        """One mini-batch step on this rank's rows points [N, F], blocks [N]; returns logs.

        Each cluster moves to c + (sum of its new rows - n c) / count (count including the n new rows).
        A cluster that got no row for ``reseed_after`` updates is re-seeded on a row of its block
        far from its current centroid (drawn with probability proportional to the squared distance),
        its count reset; the choice is the same on every rank when ``generator`` is.
        """
        points = points.float()
        ids, distance = self.assign(points, blocks)
        vocab = self.centroids.shape[0]
        sums = reduce(torch.zeros_like(self.centroids).index_add_(0, ids, points))
        hits = reduce(torch.bincount(ids, minlength=vocab).float())
        inertia = reduce(torch.stack([distance.sum(), torch.tensor(float(len(points)), device=points.device)]))
        self.counts += hits
        moved = hits > 0
        rate = torch.where(moved, 1.0 / self.counts.clamp(min=1), torch.zeros_like(self.counts))
        self.centroids += rate[:, None] * (sums - hits[:, None] * self.centroids)
        self.idle = torch.where(moved, torch.zeros_like(self.idle), self.idle + 1)
        reseeded = self.reseed(points, blocks, distance, generator, reduce)
        return {"inertia": inertia[0] / inertia[1].clamp(min=1), "reseeded": reseeded.float(),
                "used": (self.counts > 0).float().mean()}

    def reseed(self, points: torch.Tensor, blocks: torch.Tensor, distance: torch.Tensor,
               generator: torch.Generator, reduce: Reduce) -> torch.Tensor:
        """Move clusters idle for ``reseed_after`` updates onto far rows; returns how many moved."""
        dead = torch.nonzero(self.idle >= self.reseed_after).flatten()
        if not len(dead):
            return torch.zeros((), device=points.device)
        new = torch.zeros(len(dead), points.shape[1], device=points.device)
        found = torch.zeros(len(dead), device=points.device)
        # Rank 0's rows only: the others contribute zeros, so the reduced sum is rank 0's choice.
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not distributed or torch.distributed.get_rank() == 0:
            for slot, cluster in enumerate(dead.tolist()):
                candidates = torch.nonzero(blocks == self.block_of_cluster[cluster]).flatten()
                if not len(candidates):
                    continue
                weights = distance[candidates] + 1e-12
                pick = candidates[int(torch.multinomial(weights.cpu(), 1, generator=generator))]
                new[slot], found[slot] = points[pick], 1
                distance[pick] = 0  # not picked twice in one update
        new, found = reduce(new), reduce(found)
        moved = dead[found > 0]
        self.centroids[moved] = new[found > 0]
        self.counts[moved] = 0
        self.idle[moved] = 0
        return found.sum()


def lloyd_kmeans(points: torch.Tensor, k: int, *, seed: int, iterations: int = 20) -> torch.Tensor:
    """Full-batch Lloyd k-means: float [N, D] -> centroids float32 [min(k, N), D]; seeded, so repeatable.

    Starts from ``k`` distinct random points; an emptied cluster restarts at a random point.
    """
    if points.dim() != 2 or points.shape[0] == 0:
        raise ValueError(f"k-means needs points [N, D] with N >= 1, got {list(points.shape)}")
    if k < 1:
        raise ValueError(f"k-means needs k >= 1, got {k}")
    points = points.float()
    generator = torch.Generator().manual_seed(seed)
    k = min(k, points.shape[0])
    centroids = points[torch.randperm(points.shape[0], generator=generator)[:k]].clone()
    for _ in range(iterations):
        ids = nearest_codeword(points, centroids)
        counts = torch.bincount(ids, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, ids, points)
        empty = counts == 0
        centroids = sums / counts.clamp(min=1)[:, None]
        if bool(empty.any()):
            centroids[empty] = points[torch.randint(points.shape[0], (int(empty.sum()),), generator=generator)]
    return centroids


def write_codebook(run_dir: Path, centroids: torch.Tensor, config: CodecConfig) -> Path:
    """Save centroids [V, F] float32 as the official ``codebook_idx/.../codebook_{V/2}_0.npy`` under run_dir."""
    path = run_dir / official_files(config.token_rate, config.semantic_vocab_size)["codebook"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, centroids.detach().cpu().float().numpy())
    tmp.replace(path)
    return path
