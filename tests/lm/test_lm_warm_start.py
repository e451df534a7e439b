"""lm/warm_start.py and ``model.init_from`` in recipes/lm/train.py: an LM starts from a trained one where shapes allow."""

import dataclasses
import json

import pytest
import torch

from codec.tokenfile import load_tokens, save_tokens
from lm.api import export_checkpoint, load_lm_folder
from lm.data import read_manifest
from lm.model import AudioLM
from lm.warm_start import WarmStartError, check_same_codec, co_occurrence, translate_rows, vocab_ranges, warm_start
from recipes.lm.train import main as train_main
from tests.lm.conftest import CODEC
from tests.lm.test_lm_train_recipe import train_args


def trained_pair(tiny_config, **target_fields):
    torch.manual_seed(0)
    source = AudioLM(tiny_config(text_vocab_size=20))
    torch.manual_seed(1)
    target = AudioLM(tiny_config(**{"text_vocab_size": 20, **target_fields}))
    return source, target


def test_blocks_and_audio_rows_copy_and_text_rows_only_with_the_same_tokenizer(tiny_config):
    source, target = trained_pair(tiny_config, text_vocab_size=30)
    before = target.embed.weight.clone()
    report = warm_start(target, source, same_text=True)  # text sizes differ: text rows stay
    for name, value in source.state_dict().items():
        if not name.startswith(("embed.", "head.")):
            assert torch.equal(target.state_dict()[name], value), name
    mine, theirs = vocab_ranges(target.config.layout, True), vocab_ranges(source.config.layout, True)
    for part in ("special", "semantic", "acoustic"):
        (start, end), (their_start, their_end) = mine[part], theirs[part]
        assert torch.equal(target.embed.weight[start:end], source.embed.weight[their_start:their_end]), part
    text_start, text_end = mine["text"]
    assert torch.equal(target.embed.weight[text_start:text_end], before[text_start:text_end])
    assert "embed.weight text" not in report.rows and report.rows["embed.weight semantic"] > 0

    same_size = trained_pair(tiny_config)
    warm_start(same_size[1], same_size[0], same_text=True)
    assert torch.equal(same_size[1].embed.weight, same_size[0].embed.weight)
    other_tokenizer = trained_pair(tiny_config)
    warm_start(other_tokenizer[1], other_tokenizer[0], same_text=False)
    start, end = vocab_ranges(other_tokenizer[1].config.layout, True)["text"]
    assert not torch.equal(other_tokenizer[1].embed.weight[start:end], other_tokenizer[0].embed.weight[start:end])


def test_another_width_copies_nothing_it_cannot_and_says_so(tiny_config):
    source, target = trained_pair(tiny_config, dim=96, n_heads=4)
    report = warm_start(target, source, same_text=True)
    assert not report.rows and "embed.weight" in report.skipped
    assert all(target.state_dict()[name].shape == source.state_dict()[name].shape for name in report.copied)
    assert "left at initialisation" in report.summary()


def test_a_deeper_model_grows_from_the_source_and_computes_its_function_at_step_0(tiny_config):
    source, target = trained_pair(tiny_config, n_layers=4)
    assert source.config.n_layers == 2
    ids = torch.randint(0, source.config.vocab_size, (2, 12))
    report = warm_start(target, source, same_text=True)
    assert report.grown == [2, 3]
    assert "blocks 2-3 added as identity" in report.summary() and "blocks.2" not in report.summary()
    source.eval(), target.eval()
    with torch.no_grad():
        torch.testing.assert_close(target(ids), source(ids), rtol=0, atol=0)
    # the added blocks still learn: their residual outputs get gradients
    target.train()
    target(ids).logsumexp(-1).mean().backward()
    assert target.blocks[3].ffn.down.weight.grad.abs().sum() > 0
    shallower = trained_pair(tiny_config, n_layers=1)
    assert warm_start(shallower[1], shallower[0], same_text=True).grown == []


def test_tokens_of_another_codec_are_refused():
    record = {"semantic_vocab_size": 64, "acoustic_vocab_size": 32, "config_hash": "a", "tokens_digest": "d1"}
    check_same_codec(record, dict(record))
    check_same_codec({**record, "tokens_digest": None}, record)  # legacy records carry no digest
    with pytest.raises(WarmStartError, match="tokens_digest d1 against the training tokens' d2"):
        check_same_codec(record, {**record, "tokens_digest": "d2"})


def test_a_run_starts_from_an_lm_folder_and_refuses_one_of_another_codec(token_corpus, tmp_path):
    settings = ("trainer.val_check_interval=50", "logger=none")
    first = tmp_path / "first"
    train_main([*train_args(token_corpus, first, *settings), "trainer.max_steps=2"])
    codec = load_tokens(read_manifest(token_corpus, "train")[0].tokens).codec
    folder = export_checkpoint(first / "checkpoints" / "last.ckpt", tmp_path / "model", codec)
    report = train_main([*train_args(token_corpus, tmp_path / "second", *settings), "trainer.max_steps=1",
                         f"model.init_from={folder}"])
    assert report["init_from"]["copied"] > 0 and report["init_from"]["rows"]["embed.weight semantic"] > 0
    assert report["init_from"]["skipped"] == []
    resumed = train_main([*train_args(token_corpus, tmp_path / "second", *settings), "trainer.max_steps=2",
                          f"model.init_from={folder}"])
    assert "init_from" not in resumed  # a resumed run keeps its own weights

    config = json.loads((folder / "config.json").read_text())
    config["codec"]["config_hash"] = "another-configuration"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match="another codec"):
        train_main([*train_args(token_corpus, tmp_path / "third", *settings), "trainer.max_steps=1",
                    f"model.init_from={folder}"])
    with pytest.raises(SystemExit, match="model.init_from: .*no such LM folder"):
        train_main([*train_args(token_corpus, tmp_path / "fourth", *settings), f"model.init_from={tmp_path / 'none'}"])


def test_warm_lr_scale_slows_the_copied_layers_of_a_grown_model_and_survives_a_resume(token_corpus, tmp_path):
    settings = ("trainer.val_check_interval=50", "logger=none", "optim.weight_decay=0.0", "optim.warmup_steps=1",
                "optim.min_lr_ratio=1.0")
    train_main([*train_args(token_corpus, tmp_path / "source", *settings), "trainer.max_steps=1"])
    codec = load_tokens(read_manifest(token_corpus, "train")[0].tokens).codec
    folder = export_checkpoint(tmp_path / "source" / "checkpoints" / "last.ckpt", tmp_path / "model", codec)
    source = torch.load(tmp_path / "source" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    grown = ("model.n_layers=3", f"model.init_from={folder}", "optim.lr=1.0e-2", "optim.warm_lr_scale=1.0e-3")
    run = tmp_path / "grown"
    train_main([*train_args(token_corpus, run, *settings, *grown), "trainer.max_steps=3"])
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    weights = checkpoint["state_dict"]
    assert "model.blocks.0.ffn.down.weight" in source and "model.blocks.2.ffn.down.weight" not in source
    assert "blocks.0.ffn.down.weight" in checkpoint["warm_parameters"]
    assert not any(name.startswith("blocks.2.") for name in checkpoint["warm_parameters"])
    # Adam moves each weight by about lr per step: 3 steps at 1e-5 for the copied block, at 1e-2 for the added one
    copied_step = (weights["model.blocks.0.ffn.down.weight"] - source["model.blocks.0.ffn.down.weight"]).abs().max()
    added_step = weights["model.blocks.2.ffn.down.weight"].abs().max()  # it started at zero
    assert 0 < copied_step <= 3 * 1.0e-5 * 1.1
    assert added_step > 100 * copied_step
    rates = sorted({group["lr"] for group in checkpoint["optimizer_states"][0]["param_groups"]})
    assert rates == pytest.approx([1.0e-5, 1.0e-2])

    resumed = train_main([*train_args(token_corpus, run, *settings, *grown), "trainer.max_steps=4"])
    assert resumed["global_step"] == 4 and "init_from" not in resumed
    after = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert after["warm_parameters"] == checkpoint["warm_parameters"]
    moved = (after["state_dict"]["model.blocks.0.ffn.down.weight"] - weights["model.blocks.0.ffn.down.weight"]).abs().max()
    assert moved <= 1.0e-5 * 1.1  # still the slow rate after the resume

    with pytest.raises(SystemExit, match="optim.warm_lr_scale must be > 0"):
        train_main([*train_args(token_corpus, tmp_path / "bad", *settings), "optim.warm_lr_scale=0"])


def test_an_lm_of_another_codec_gives_its_blocks_and_text_rows_but_not_its_audio_rows(tiny_config):
    source, target = trained_pair(tiny_config)
    before = target.embed.weight.clone()
    report = warm_start(target, source, same_text=True, same_audio=False)
    ranges = vocab_ranges(target.config.layout, True)
    for part in ("semantic", "acoustic"):
        start, end = ranges[part]
        assert torch.equal(target.embed.weight[start:end], before[start:end]), part
        assert f"embed.weight {part}" not in report.rows and f"embed.weight {part}" in report.fresh
    assert "fresh (another codec's tokens): embed.weight semantic, embed.weight acoustic" in report.summary()
    for part in ("special", "text"):
        start, end = ranges[part]
        assert torch.equal(target.embed.weight[start:end], source.embed.weight[start:end]), part
    assert torch.equal(target.blocks[0].ffn.down.weight, source.blocks[0].ffn.down.weight)
    # its fresh audio rows must learn at the full rate: the embedding is not among the warm tensors
    assert "embed.weight" not in report.trained_parameters()
    assert "blocks.0.ffn.down.weight" in report.trained_parameters()
    assert "embed.weight" in warm_start(trained_pair(tiny_config)[1], source, same_text=True).trained_parameters()


def test_init_from_other_codec_lets_a_run_start_from_an_lm_of_other_tokens(token_corpus, tmp_path):
    settings = ("trainer.val_check_interval=50", "logger=none")
    train_main([*train_args(token_corpus, tmp_path / "first", *settings), "trainer.max_steps=1"])
    codec = load_tokens(read_manifest(token_corpus, "train")[0].tokens).codec
    folder = export_checkpoint(tmp_path / "first" / "checkpoints" / "last.ckpt", tmp_path / "model", codec)
    config = json.loads((folder / "config.json").read_text())
    config["codec"]["config_hash"] = "a-codec-since-retrained"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match="init_from_other_codec=true copies its blocks and text rows only"):
        train_main([*train_args(token_corpus, tmp_path / "refused", *settings), "trainer.max_steps=1",
                    f"model.init_from={folder}"])
    report = train_main([*train_args(token_corpus, tmp_path / "second", *settings), "trainer.max_steps=1",
                         f"model.init_from={folder}", "model.init_from_other_codec=true"])
    rows = report["init_from"]["rows"]
    assert report["init_from"]["copied"] > 0 and "embed.weight semantic" not in rows
    assert "embed.weight acoustic" not in rows and rows["embed.weight special"] > 0
    assert report["init_from"]["fresh"] == ["embed.weight semantic", "embed.weight acoustic"]


def test_co_occurrence_translates_rows_exactly_when_one_codec_renames_the_others_ids():
    old = torch.tensor([0, 1, 2, 2, 1])
    permutation = torch.tensor([2, 0, 1])
    counts = co_occurrence([(permutation[old], old), (torch.tensor([1]), torch.tensor([0, 2]))], 4, 3)
    assert counts.shape == (4, 3) and counts.sum() == 6  # the second clip is cut to its shorter stream
    rows = torch.randn(3, 5)
    translated, seen = translate_rows(rows, counts)
    assert seen.tolist() == [True, True, True, False]
    assert torch.allclose(translated[2], rows[0]) and torch.allclose(translated[0], rows[1])
    assert torch.allclose(translated[1], (2 * rows[2] + rows[0]) / 3)  # new id 1 shared frames with old 2 twice, 0 once
    with pytest.raises(ValueError, match="outside the vocabularies"):
        co_occurrence([(torch.tensor([4]), torch.tensor([0]))], 4, 3)


def _with_ids(manifest):
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps({**row, "id": f"clip-{n}"}) + "\n" for n, row in enumerate(rows)))
    return rows


def test_align_tokens_translates_the_audio_rows_of_an_lm_of_another_codec(token_corpus, tmp_path):
    """The same clips tokenized by a retrained codec: semantic ids the same, acoustic ids renamed."""
    rows = _with_ids(token_corpus)
    retrained = dataclasses.replace(CODEC, acoustic_input="fbank")
    permutation = torch.randperm(CODEC.acoustic_vocab_size, generator=torch.Generator().manual_seed(0))
    corpus = tmp_path / "retrained"
    for shard in sorted({row["tokens"] for row in rows}):
        tokens = load_tokens(token_corpus.parent / shard)
        renamed = torch.stack([tokens.tokens[..., 0], permutation[tokens.tokens[..., 1]]], dim=-1)
        save_tokens(corpus / shard, renamed, tokens.lengths, retrained)
    (corpus / "manifest.jsonl").write_text(token_corpus.read_text())
    settings = ("trainer.val_check_interval=50", "logger=none", "trainer.max_steps=1")
    train_main([*train_args(token_corpus, tmp_path / "first", *settings)])
    codec = load_tokens(read_manifest(token_corpus, "train")[0].tokens).codec
    folder = export_checkpoint(tmp_path / "first" / "checkpoints" / "last.ckpt", tmp_path / "model", codec)

    with pytest.raises(SystemExit, match="needs model.init_from and model.init_from_other_codec=true"):
        train_main([*train_args(corpus / "manifest.jsonl", tmp_path / "refused", *settings),
                    f"model.align_tokens={token_corpus}"])
    with pytest.raises(SystemExit, match="not the tokens of model.init_from's codec"):
        train_main([*train_args(corpus / "manifest.jsonl", tmp_path / "refused", *settings),
                    f"model.init_from={folder}", "model.init_from_other_codec=true",
                    f"model.align_tokens={corpus / 'manifest.jsonl'}"])
    run = tmp_path / "second"
    report = train_main([*train_args(corpus / "manifest.jsonl", run, *settings, "optim.lr=0"),
                         f"model.init_from={folder}", "model.init_from_other_codec=true",
                         f"model.align_tokens={token_corpus}"])
    assert report["init_from"]["translated"] == ["embed.weight semantic", "embed.weight acoustic"]
    assert report["init_from"]["fresh"] == []
    theirs = load_lm_folder(str(folder)).model.embed.weight
    ours = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["model.embed.weight"]
    layout = load_lm_folder(str(folder)).model.config.layout
    (start, end), (a_start, a_end) = (vocab_ranges(layout, False)[part] for part in ("semantic", "acoustic"))
    seen = report["init_from"]["rows"]
    assert seen["embed.weight semantic"] > 0 and seen["embed.weight acoustic"] > 0
    used = torch.zeros(CODEC.semantic_vocab_size, dtype=torch.bool)
    used_acoustic = torch.zeros(CODEC.acoustic_vocab_size, dtype=torch.bool)
    for row in read_manifest(token_corpus, "train"):
        ids = load_tokens(row.tokens).items()[row.item]
        used[ids[:, 0]] = True
        used_acoustic[ids[:, 1]] = True
    assert torch.equal(ours[start:end][used], theirs[start:end][used])  # the same ids: copied as they were
    old_ids = used_acoustic.nonzero().flatten()
    assert torch.equal(ours[a_start:a_end][permutation[old_ids]], theirs[a_start:a_end][old_ids])  # renamed rows
