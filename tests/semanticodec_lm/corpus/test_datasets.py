"""Dataset classes over a corpus manifest: filters, seeded crops, fixed-length batches, Lightning loaders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from semanticodec_lm.corpus.datasets import CorpusDataModule, EpochSampler, ManifestDataset, collate_clips
from codec.manifest import ManifestError
from semanticodec_lm.corpus.manifest import read_manifest
from recipes.data.world.family import SyntheticWorld


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, build_synthetic_corpus) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    world = SyntheticWorld(40, 21, 1.2, 3.0, ("tone", "noise", "drums", "beeps"))
    return build_synthetic_corpus(out, world)


def test_filters_by_split_and_domain(manifest: Path) -> None:
    rows = list(read_manifest(manifest))
    train_sfx = ManifestDataset(manifest, splits=["train"], domains=["sfx"])
    expected = [row["id"] for row in rows if row["split"] == "train" and row["domain"] == "sfx"]
    assert expected and [row["id"] for row in train_sfx.rows] == expected
    assert len(ManifestDataset(manifest)) == len(rows)
    assert all(row["duration"] >= 2.0 for row in ManifestDataset(manifest, min_seconds=2.0).rows)


def test_bad_filters_and_lengths_are_refused(manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="split"):
        ManifestDataset(manifest, splits=["dev"])
    with pytest.raises(ManifestError, match="domain"):
        ManifestDataset(manifest, domains=["noise"])
    with pytest.raises(ManifestError, match="segment_seconds"):
        ManifestDataset(manifest, segment_seconds=0)
    broken = tmp_path / "manifest.jsonl"
    row = next(read_manifest(manifest))
    broken.write_text(json.dumps({**row, "domain": "music", "split": "holdout"}) + "\n")
    with pytest.raises(ManifestError, match="manifest.jsonl:1"):
        ManifestDataset(broken)


def test_fixed_length_examples_with_padding(manifest: Path) -> None:
    dataset = ManifestDataset(manifest, segment_seconds=2.5, seed=1)
    for index in range(len(dataset)):
        example = dataset[index]
        valid = min(dataset.rows[index]["num_samples"], 40000)
        assert example["audio"].shape == (40000,) and example["audio"].dtype == torch.float32
        assert int(example["length"]) == valid
        assert not example["audio"][valid:].any()
        assert example["caption"] == dataset.rows[index]["caption"]


def test_crops_are_seeded_and_change_with_the_epoch(manifest: Path) -> None:
    dataset = ManifestDataset(manifest, segment_seconds=1.0, seed=3)
    long_clips = [i for i, row in enumerate(dataset.rows) if row["num_samples"] > 32000]
    assert long_clips
    again = ManifestDataset(manifest, segment_seconds=1.0, seed=3)
    assert [dataset.crop_start(i) for i in long_clips] == [again.crop_start(i) for i in long_clips]
    assert [dataset.crop_start(i, 0) for i in long_clips] != [dataset.crop_start(i, 1) for i in long_clips]
    index = long_clips[0]
    assert torch.equal(dataset[(index, 1)]["audio"], again[(index, 1)]["audio"])
    fixed = ManifestDataset(manifest, segment_seconds=1.0, random_crop=False)
    assert all(fixed.crop_start(i, epoch) == 0 for i in long_clips for epoch in (0, 5))


def test_whole_clips_are_batched_with_lengths(manifest: Path) -> None:
    dataset = ManifestDataset(manifest)
    batch = collate_clips([dataset[0], dataset[1], dataset[2]])
    lengths = [dataset.rows[i]["num_samples"] for i in range(3)]
    assert batch["audio"].shape == (3, max(lengths)) and batch["length"].tolist() == lengths
    assert batch["id"] == [dataset.rows[i]["id"] for i in range(3)]


def test_epoch_sampler_reshuffles_per_epoch() -> None:
    sampler = EpochSampler(30, seed=2)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(i for i, _ in first) == list(range(30)) and {e for _, e in second} == {1}
    assert [i for i, _ in first] != [i for i, _ in second]
    assert [i for i, _ in EpochSampler(30, seed=2, shuffle=False)] == list(range(30))


def test_datamodule_keeps_the_splits_apart(manifest: Path) -> None:
    module = CorpusDataModule(manifest, segment_seconds=1.0, batch_size=4, seed=0)
    splits = {}
    for name, loader in (("train", module.train_dataloader()), ("valid", module.val_dataloader()),
                         ("test", module.test_dataloader())):
        ids = [clip_id for batch in loader for clip_id in batch["id"]]
        splits[name] = set(ids)
        assert all(batch["audio"].shape[1] == 16000 for batch in loader)
    rows = {row["id"]: row["split"] for row in read_manifest(manifest)}
    for name, ids in splits.items():
        assert ids and all(rows[clip_id] == name for clip_id in ids)
