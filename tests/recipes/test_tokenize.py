"""Corpus tokenization: 2-process DDP equals one process, resumption, bad clips, configuration errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codec.config import get_config
from codec.model import SemantiCodec
from codec.tokenfile import load_tokens
from lm.data import read_manifest as read_token_manifest
from recipes.data.world.family import SyntheticWorld
from recipes.tokenize.tokenize_corpus import main
from semanticodec_lm.corpus.token_corpus import shard_items

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes" / "tokenize" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, build_synthetic_corpus) -> Path:
    """A 10-clip synthetic world (1-1.5 s clips) whose manifest also lists one corrupt file, and a tiny codec."""
    root = tmp_path_factory.mktemp("tokenize")
    build_synthetic_corpus(root / "world", SyntheticWorld(10, 3, 1.0, 1.5, ("tone", "noise", "drums")))
    manifest = root / "world" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    (root / "world" / "broken.flac").write_bytes(b"fLaC" + bytes(200))
    rows.insert(2, {**rows[0], "id": "broken-clip", "path": "broken.flac"})
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    SemantiCodec(get_config("tiny-100")).save_pretrained(root / "codec")
    return root


def _args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", str(TINY), f"manifest={corpus / 'world' / 'manifest.jsonl'}", f"out={out}",
            f"codec={corpus / 'codec'}", "shard_size=2", "trainer.accelerator=cpu", "synthetic=null", *extra]


@pytest.fixture(scope="module")
def single(corpus) -> tuple[Path, dict]:
    out = corpus / "single"
    return out, main(_args(corpus, out))


def test_single_process_run_writes_shards_manifest_and_report(corpus, single):
    out, report = single
    rows = read_token_manifest(out / "manifest.jsonl")
    assert len(rows) == report["clips"] == 10
    assert report["shards"] == len(list((out / "shards").glob("*.json")))
    assert any("broken-clip" in problem for problem in report["problems"])
    assert report["this_run"]["clips"] == 10 and report["this_run"]["bad_clips"] == 1
    assert report["this_run"]["clips_per_second"] > 0 and report["this_run"]["audio_seconds_per_second"] > 0
    full = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert all(row["caption"] and row["labels"] and row["domain"] and "params" in row for row in full)
    codec = SemantiCodec.from_pretrained(corpus / "codec")
    for row in full[:3]:  # each clip's tokens are what the codec gives for that clip alone
        expected, lengths = codec.encode(str(out / row["audio"]))
        assert torch.equal(shard_items(out)[row["id"]], expected[0, : int(lengths[0])])
    assert load_tokens(out / full[0]["tokens"], expect=get_config("tiny-100")).lengths.numel() <= 2


def test_two_process_ddp_run_gives_the_same_tokens_as_one_process(corpus, single):
    out = corpus / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run(
        [sys.executable, "-m", "recipes.tokenize.tokenize_corpus",
         *_args(corpus, out, "trainer.devices=2", "trainer.strategy=ddp")],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("TOKENIZE_SUMMARY "))[17:])
    assert summary["this_run"]["world_size"] == 2 and summary["this_run"]["clips"] == 10
    one, two = shard_items(single[0]), shard_items(out)
    assert one.keys() == two.keys() and len(one) == 10
    for clip_id in one:
        assert torch.equal(one[clip_id], two[clip_id]), clip_id
    assert (out / "manifest.jsonl").read_text() == (single[0] / "manifest.jsonl").read_text()


def test_a_rerun_skips_finished_shards_and_redoes_a_missing_one(corpus, tmp_path):
    out = tmp_path / "resume"
    first = main(_args(corpus, out))
    manifest = (out / "manifest.jsonl").read_text()
    shards = sorted((out / "shards").glob("*.tokens.safetensors"))
    stamps = {path: path.stat().st_mtime_ns for path in shards}
    lost = out / "shards" / "train-00001.json"
    clips_in_lost = len(json.loads(lost.read_text())["rows"])
    lost.unlink()  # as if killed before this shard was finished
    again = main(_args(corpus, out))
    assert again["finished_before"] == first["shards"] - 1
    assert again["this_run"]["clips"] == clips_in_lost > 0
    changed = [path.name for path in shards if path.stat().st_mtime_ns != stamps[path]]
    assert changed == ["train-00001.tokens.safetensors"]
    assert (out / "manifest.jsonl").read_text() == manifest
    other_codec = tmp_path / "codec-50"
    SemantiCodec(get_config("tiny-50")).save_pretrained(other_codec)
    redone = main([*_args(corpus, out), f"codec={other_codec}"])  # another codec: nothing is reused
    assert redone["finished_before"] == 0 and redone["codec_identity"]["token_rate"] == 50


def test_configuration_errors_are_reported(corpus, tmp_path):
    with pytest.raises(SystemExit, match="unknown key"):
        main([*_args(corpus, tmp_path / "x"), "shardsize=3"])
    with pytest.raises(SystemExit, match="no clips selected"):
        main([*_args(corpus, tmp_path / "x"), "domains=[speech]"])
    with pytest.raises(SystemExit, match="unknown split"):
        main([*_args(corpus, tmp_path / "x"), "splits=[training]"])
    with pytest.raises(SystemExit, match="does not exist"):
        main([*_args(corpus, tmp_path / "x"), f"manifest={tmp_path / 'none.jsonl'}"])
