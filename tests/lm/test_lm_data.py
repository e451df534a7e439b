"""Token-file data: manifest parsing, crops and captions, batching, shard windows, rank splits."""

import json

import pytest
import torch

from codec.manifest import ManifestError
from lm.data import (
    IGNORE_INDEX,
    BucketBatchSampler,
    ShardWindowSampler,
    TokenSequenceDataset,
    collate,
    read_manifest,
)
from lm.layout import AUDIO, BOS, TEXT, TokenLayout
from lm.module import TokenDataModule
from lm.text import train_text_tokenizer

LAYOUT = TokenLayout(64, 32, text_vocab_size=40)


def test_manifest_rows_resolve_shards_and_filter_splits(token_corpus):
    train, valid = read_manifest(token_corpus, "train"), read_manifest(token_corpus, "valid")
    assert len(train) == 14 and len(valid) == 2
    assert all(row.tokens.is_file() for row in train + valid)
    assert len(read_manifest(token_corpus)) == 16


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"tokens": "x", "item": 0, "split": "train"}), "missing field"),
    (json.dumps({"tokens": "x", "item": 0, "frames": 3, "split": "dev"}), "split must be one of"),
    (json.dumps({"tokens": "x", "item": 0, "frames": 0, "split": "train"}), "frames must be"),
])
def test_bad_manifest_lines_are_named(tmp_path, line, message):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"tokens": "x", "item": 0, "frames": 3, "split": "train"}) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=f"m.jsonl:2: {message}"):
        read_manifest(manifest)
    with pytest.raises(ManifestError, match="no such token manifest"):
        read_manifest(tmp_path / "absent.jsonl")


def test_long_clips_are_cropped_and_only_the_final_crop_ends(token_corpus):
    rows = [row for row in read_manifest(token_corpus, "train") if row.frames > 12]
    dataset = TokenSequenceDataset(rows, LAYOUT, max_frames=6)
    lengths = set()
    for seed in range(40):
        ids = dataset[(0, seed)]["ids"]
        lengths.add(len(ids))
        assert len(ids) in (2 + LAYOUT.audio_length(6, ended=False), 2 + LAYOUT.audio_length(6, ended=True))
    assert len(lengths) == 2  # some crops stop inside the clip, some reach its end
    assert torch.equal(dataset[(0, 5)]["ids"], dataset[(0, 5)]["ids"])
    whole = TokenSequenceDataset(rows, LAYOUT, max_frames=100)[0]["ids"]
    assert len(whole) == 2 + LAYOUT.audio_length(rows[0].frames)


def test_unshuffled_dataset_crops_from_the_start(token_corpus):
    rows = [row for row in read_manifest(token_corpus, "train") if row.frames > 12]
    full = TokenSequenceDataset(rows, LAYOUT, max_frames=100)[0]["ids"]
    start = TokenSequenceDataset(rows, LAYOUT, max_frames=6, random_crop=False)[(0, 99)]["ids"]
    assert torch.equal(start, full[: len(start)])


def test_captions_become_a_text_prefix_unless_dropped(tmp_path, token_corpus):
    rows = read_manifest(token_corpus, "train")
    tokenizer = train_text_tokenizer([r.caption for r in rows], tmp_path / "tok", vocab_size=40)
    kept = TokenSequenceDataset(rows, LAYOUT, 8, tokenizer, text_dropout=0.0)[(0, 1)]
    dropped = TokenSequenceDataset(rows, LAYOUT, 8, tokenizer, text_dropout=1.0)[(0, 1)]
    assert kept["ids"][:2].tolist() == [BOS, TEXT] and dropped["ids"][:2].tolist() == [BOS, AUDIO]
    text_length = len(tokenizer.encode(rows[0].caption))
    assert not kept["loss_mask"][: text_length + 3].any() and kept["loss_mask"][text_length + 3 :].all()
    with pytest.raises(ValueError, match="text_vocab_size"):
        TokenSequenceDataset(rows, TokenLayout(64, 32, text_vocab_size=4), 8, tokenizer)


def test_collate_shifts_and_masks_targets():
    layout = TokenLayout(64, 32)
    long_ids, long_mask = layout.build_sequence(torch.tensor([[1, 2], [3, 4]]))
    short_ids, short_mask = layout.build_sequence(torch.tensor([[5, 6]]))
    batch = collate([{"ids": long_ids, "loss_mask": long_mask}, {"ids": short_ids, "loss_mask": short_mask}])
    assert batch["inputs"].shape == batch["targets"].shape == (2, len(long_ids) - 1)
    assert torch.equal(batch["inputs"][0], long_ids[:-1])
    assert batch["targets"][0, 0] == IGNORE_INDEX  # predicting <audio> from <bos> carries no loss
    assert torch.equal(batch["targets"][0, 1:], long_ids[2:])
    assert (batch["targets"][1, len(short_ids) - 1 :] == IGNORE_INDEX).all()


def test_mismatched_shards_are_reported(token_corpus, tmp_path):
    rows = read_manifest(token_corpus, "train")
    with pytest.raises(ValueError, match="semantic_vocab_size=64"):
        TokenSequenceDataset(rows, TokenLayout(128, 32), 8)[0]
    manifest = tmp_path / "wrong.jsonl"
    record = json.loads(token_corpus.read_text().splitlines()[0])
    record.update(tokens=str(rows[0].tokens), frames=record["frames"] + 1)
    manifest.write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match="wrong.jsonl:1: manifest says"):
        TokenSequenceDataset(read_manifest(manifest), LAYOUT, 8)[0]


def batches_of(rows, **kwargs):
    seed, epoch, shuffle = kwargs.pop("seed", 0), kwargs.pop("epoch", 0), kwargs.pop("shuffle", True)
    order = ShardWindowSampler(rows, shuffle=shuffle, seed=seed, shards_per_window=kwargs.pop("shards_per_window", 4))
    order.set_epoch(epoch)
    return list(BucketBatchSampler(order, **kwargs))


def test_bucketing_covers_every_row_once_and_groups_lengths(make_token_corpus, tmp_path):
    rows = read_manifest(make_token_corpus(tmp_path / "c", shards=3, items_per_shard=10), "train")
    batches = batches_of(rows, batch_size=4, drop_last=False, shuffle=False)
    seen = [index for batch in batches for index, _ in batch]
    assert sorted(seen) == list(range(len(rows)))
    frames = [rows[i].frames for i in seen]
    assert frames == sorted(frames)  # one bucket, unshuffled: batches run from short to long


def test_epochs_reshuffle_deterministically(make_token_corpus, tmp_path):
    rows = read_manifest(make_token_corpus(tmp_path / "c", shards=4, items_per_shard=6), "train")
    first = batches_of(rows, batch_size=2, epoch=0)
    assert first == batches_of(rows, batch_size=2, epoch=0)
    assert first != batches_of(rows, batch_size=2, epoch=1)
    assert first != batches_of(rows, batch_size=2, epoch=0, seed=1)


def test_windows_mix_few_shards(make_token_corpus, tmp_path):
    rows = read_manifest(make_token_corpus(tmp_path / "c", shards=6, items_per_shard=4), "train")
    sampler = ShardWindowSampler(rows, shuffle=True, seed=0, shards_per_window=2)
    windows = sampler.windows(sampler.rng())
    assert len(windows) == 3
    assert all(len({rows[i].tokens for i in window}) == 2 for window in windows)
    assert sorted(list(sampler)) == list(range(len(rows)))


def test_ranks_get_disjoint_equal_shares(make_token_corpus, tmp_path):
    rows = read_manifest(make_token_corpus(tmp_path / "c", shards=3, items_per_shard=9), "train")
    shares = [batches_of(rows, batch_size=3, num_replicas=2, rank=r) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) > 0
    ids = [{i for batch in share for i, _ in batch} for share in shares]
    assert not ids[0] & ids[1]
    padded = [batches_of(rows[:7], batch_size=3, num_replicas=2, rank=r, drop_last=False, shuffle=False) for r in (0, 1)]
    assert len(padded[0]) == len(padded[1]) == 2  # three batches, the first repeated for rank 1
    with pytest.raises(ValueError, match="fewer batches"):
        batches_of(rows[:4], batch_size=4, num_replicas=2, rank=0)


def test_datamodule_yields_padded_training_batches(token_corpus):
    datamodule = TokenDataModule(token_corpus, LAYOUT, batch_size=4, max_frames=10)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["inputs"].shape[0] == 4 and batch["inputs"].shape == batch["targets"].shape
    assert batch["inputs"].shape[1] <= datamodule.max_sequence_length() - 1
    assert len(datamodule.val_dataloader()) == 1  # two valid clips, one batch


def test_resuming_mid_epoch_skips_the_batches_already_done(make_token_corpus, tmp_path):
    rows = read_manifest(make_token_corpus(tmp_path / "c", shards=2, items_per_shard=10), "train")
    order = ShardWindowSampler(rows, shuffle=True, seed=0)
    order.set_epoch(2)
    sampler = BucketBatchSampler(order, batch_size=3)
    full = list(sampler)
    sampler.resume_at = (2, 2)
    assert list(sampler) == full[2:]
    assert list(sampler) == full  # only the first pass after a restore skips
    sampler.resume_at = (1, 2)  # the checkpoint's epoch is over: nothing to skip in this one
    assert list(sampler) == full
