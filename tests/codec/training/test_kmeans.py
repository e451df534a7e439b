"""Mini-batch k-means: it recovers separable clusters, re-seeds empty ones, keeps per-domain blocks
apart, and the stage writes the official ``.npy`` layout that ``codec.checkpoints.read_codebook`` reads."""

from pathlib import Path

import numpy as np
import pytest
import torch

from codec.checkpoints import CheckpointError, official_files, read_codebook
from codec.config import get_config
from codec.training.kmeans import MiniBatchKMeans, kmeans_plus_plus, lloyd_kmeans, write_codebook


def blobs(centres: torch.Tensor, per_centre: int, spread: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(centres), per_centre, centres.shape[1], generator=generator) * spread
    return (centres[:, None] + noise).reshape(-1, centres.shape[1])


def test_recovers_separable_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 5, generator=generator) * 10
    kmeans = MiniBatchKMeans([8], 5, reseed_after=5)
    data = blobs(centres, 200, 0.3, seed=1)
    blocks = torch.zeros(len(data), dtype=torch.long)
    kmeans.initialise(data[torch.randperm(len(data), generator=generator)[:400]], blocks[:400], generator)
    for step in range(30):
        batch = data[torch.randperm(len(data), generator=generator)[:256]]
        logs = kmeans.update(batch, blocks[:256], generator)
    # Every true centre has a learned centroid close to it, and vice versa.
    distance = torch.cdist(centres, kmeans.centroids)
    assert distance.min(dim=1).values.max() < 0.2
    assert distance.min(dim=0).values.max() < 0.2
    assert float(logs["inertia"]) < 5 * 0.3**2 * 1.5  # about the within-cluster variance (5 dims)


def test_empty_clusters_are_reseeded():
    generator = torch.Generator().manual_seed(0)
    data = blobs(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]), 100, 0.2, seed=2)
    blocks = torch.zeros(len(data), dtype=torch.long)
    kmeans = MiniBatchKMeans([3], 2, reseed_after=2)
    kmeans.initialise(data, blocks, generator)
    kmeans.centroids.copy_(torch.tensor([[0.0, 0.0], [0.1, 0.1], [500.0, 500.0]]))  # two stuck, one far away
    reseeded = sum(float(kmeans.update(data, blocks, generator)["reseeded"]) for _ in range(10))
    assert reseeded >= 1
    assert kmeans.centroids.abs().max() < 20  # the far-away cluster moved onto the data
    ids, _ = kmeans.assign(data, blocks)
    assert set(ids.tolist()) == {0, 1, 2}  # and now takes rows


def test_domain_blocks_only_take_their_own_rows():
    generator = torch.Generator().manual_seed(0)
    speech = blobs(torch.tensor([[0.0, 0.0], [4.0, 0.0]]), 50, 0.1, seed=3)
    music = blobs(torch.tensor([[0.0, 0.0], [0.0, 4.0], [4.0, 4.0]]), 50, 0.1, seed=4)
    data = torch.cat([speech, music])
    blocks = torch.cat([torch.zeros(len(speech), dtype=torch.long), torch.ones(len(music), dtype=torch.long)])
    kmeans = MiniBatchKMeans([2, 3], 2)
    kmeans.initialise(data, blocks, generator)
    for _ in range(5):
        kmeans.update(data, blocks, generator)
    ids, _ = kmeans.assign(data, blocks)
    assert (ids[blocks == 0] < 2).all() and (ids[blocks == 1] >= 2).all()
    # (0, 0) exists in both domains and gets a centroid in each block.
    assert torch.cdist(torch.zeros(1, 2), kmeans.centroids[:2]).min() < 0.2
    assert torch.cdist(torch.zeros(1, 2), kmeans.centroids[2:]).min() < 0.2


def test_kmeans_plus_plus_needs_enough_points_and_is_seeded():
    points = torch.randn(10, 3)
    with pytest.raises(ValueError, match="at least 11 points"):
        kmeans_plus_plus(points, 11, torch.Generator().manual_seed(0))
    first = kmeans_plus_plus(points, 4, torch.Generator().manual_seed(5))
    assert torch.equal(first, kmeans_plus_plus(points, 4, torch.Generator().manual_seed(5)))
    assert len({tuple(row.tolist()) for row in first}) == 4


def test_codebook_file_has_the_official_layout(tmp_path: Path):
    config = get_config("tiny-50")
    centroids = torch.randn(config.semantic_vocab_size, config.feature_dim)
    path = write_codebook(tmp_path, centroids, config)
    assert path == tmp_path / "codebook_idx/combine_256_audioset_dominate/codebook_32_0.npy"
    assert path == tmp_path / official_files(config.token_rate, config.semantic_vocab_size)["codebook"]
    assert np.load(path).dtype == np.float32
    assert torch.equal(read_codebook(path, config), centroids)
    with pytest.raises(CheckpointError, match="codebook shape"):
        read_codebook(path, get_config("tiny-100"))


def test_lloyd_kmeans_finds_separable_clusters_and_is_seeded():
    from codec.semantic import nearest_codeword

    centres = 3.0 * torch.randn(4, 4, generator=torch.Generator().manual_seed(123))
    data = blobs(centres, 30, 0.1, seed=0)
    labels = torch.arange(4).repeat_interleave(30)
    centroids = lloyd_kmeans(data, 4, seed=0)
    assert torch.equal(centroids, lloyd_kmeans(data, 4, seed=0))
    ids = nearest_codeword(data, centroids)
    for cluster in range(4):  # every cluster holds one true class only
        assert len(set(labels[ids == cluster].tolist())) == 1
    assert lloyd_kmeans(data[:3], 10, seed=0).shape == (3, 4)
    with pytest.raises(ValueError, match="k >= 1"):
        lloyd_kmeans(data, 0, seed=0)
