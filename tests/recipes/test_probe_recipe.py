"""The probing recipe: one table over codecs of two token rates, resumable per codec; probing from tokens."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from codec.config import get_config
from codec.model import SemantiCodec
from recipes.data.world.family import SyntheticWorld
from semanticodec_lm import probe
from recipes.probe import run as probe_recipe
from recipes.tokenize.tokenize_corpus import main as tokenize

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes" / "probe" / "configs" / "tiny.yaml"
TOKENIZE_TINY = REPO / "recipes" / "tokenize" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory, build_synthetic_corpus) -> Path:
    root = tmp_path_factory.mktemp("probe")
    build_synthetic_corpus(root / "world", SyntheticWorld(24, 4, 1.0, 1.2, ("tone", "noise", "drums", "sweep")))
    for rate in (100, 25):
        SemantiCodec(get_config(f"tiny-{rate}")).save_pretrained(root / f"codec-{rate}")
    return root


def test_one_table_for_every_codec_and_a_rerun_reuses_the_results(world, monkeypatch):
    argv = ["--config", str(TINY), f"manifest={world / 'world' / 'manifest.jsonl'}", f"out={world / 'probe'}",
            f"codecs={{t100: {world / 'codec-100'}, t25: {world / 'codec-25'}}}", "logger=none", "report_split=valid",
            "eval_splits=[valid]", "kmeans_frames=1000"]
    combined = probe_recipe.main(argv)
    assert set(combined["reports"]) == {"t100", "t25"}
    assert combined["reports"]["t25"]["codec"] == "tiny-25"
    table = (world / "probe" / "probe.md").read_text()
    assert "t100 (tiny-100, 100 tokens/s) linear / MLP" in table and "t25 (tiny-25, 25 tokens/s) linear / MLP" in table
    for task in ("domain", "class"):
        for features in ("semantic", "acoustic", "both", "continuous", "mel-kmeans"):
            assert any(line.startswith(f"| {task} (") and f"| {features} |" in line for line in table.splitlines())
    result = combined["reports"]["t100"]["results"][0]
    assert 0.0 <= result["linear_accuracy"] <= 1.0 and result["split"] == "valid"

    def must_not_run(args):
        raise AssertionError("a finished codec was probed again")

    monkeypatch.setattr(probe_recipe, "run_probe", must_not_run)
    again = probe_recipe.main(argv)
    assert json.dumps(again["reports"], sort_keys=True) == json.dumps(combined["reports"], sort_keys=True)
    with pytest.raises(SystemExit, match="at least one entry under 'codecs'"):
        probe_recipe.main([*argv, "codecs={}"])


def test_a_semantic_codebook_probes_another_rate_over_a_codecs_audiomae(world, tmp_path):
    from safetensors.torch import save_file

    kmeans_run = tmp_path / "kmeans-50"
    kmeans_run.mkdir()
    save_file({"encoder.semantic_codebook.centroids": torch.randn(64, get_config("tiny-50").feature_dim)},
              str(kmeans_run / "weights.safetensors"), metadata={"codec_config": "tiny-50", "stage": "kmeans"})
    argv = ["--config", str(TINY), f"manifest={world / 'world' / 'manifest.jsonl'}", f"out={tmp_path / 'probe'}",
            f"codecs={{t100: {world / 'codec-100'}, t50: {world / 'codec-100'}}}", f"semantic_codebooks.t50={kmeans_run}",
            "logger=none", "report_split=valid", "eval_splits=[valid]", "kmeans_frames=1000", "tasks=[domain]"]
    combined = probe_recipe.main(argv)
    assert combined["reports"]["t50"]["token_rate"] == 50
    assert {r["features"] for r in combined["reports"]["t50"]["results"]} == {"semantic", "continuous", "mel-kmeans"}
    assert "t50 (tiny-100, 50 tokens/s)" in (tmp_path / "probe" / "probe.md").read_text()
    with pytest.raises(SystemExit, match="'semantic_codebooks' names codec"):
        probe_recipe.main([*argv, f"semantic_codebooks.t25={kmeans_run}"])


@pytest.fixture(scope="module")
def token_manifest(world) -> Path:
    """The world tokenized by the tiny-100 codec (recipes/tokenize), in shards of 5 clips."""
    out = world / "tokens-100"
    tokenize(["--config", str(TOKENIZE_TINY), f"manifest={world / 'world' / 'manifest.jsonl'}", f"out={out}",
              f"codec={world / 'codec-100'}", "shard_size=5", "trainer.accelerator=cpu", "synthetic=null"])
    return out / "manifest.jsonl"


def test_probing_from_tokens_gives_the_features_and_results_of_encoding(world, token_manifest, monkeypatch):
    seen = {}  # run -> {clip id: features}, as they are when the probes are fitted
    fit = probe.add_mel_kmeans_features

    def recording(clips, *args, **kwargs):
        centroids = fit(clips, *args, **kwargs)
        seen[len(seen)] = {clip.id: clip.features for clip in clips}
        return centroids

    monkeypatch.setattr(probe, "add_mel_kmeans_features", recording)
    combined = probe_recipe.main([
        "--config", str(TINY), f"manifest={world / 'world' / 'manifest.jsonl'}", f"out={world / 'probe-tokens'}",
        f"codecs={{encoded: {world / 'codec-100'}, tokens: {world / 'codec-100'}}}",
        f"tokens={{tokens: {token_manifest}}}", "logger=none", "eval_splits=[valid]", "report_split=valid",
        "kmeans_frames=1000"])
    encoded, from_tokens = combined["reports"]["encoded"], combined["reports"]["tokens"]
    assert from_tokens["settings"]["tokens"] == str(token_manifest) and from_tokens["settings"]["manifest"] is None
    assert encoded["settings"]["tokens"] is None
    assert encoded["problems"] == from_tokens["problems"] == []
    assert list(seen[0]) == list(seen[1]) and len(seen[0]) >= 10  # same clips, same order
    for clip_id, features in seen[0].items():
        assert features.keys() == set(probe.FEATURE_SETS)
        for name, vector in features.items():
            assert torch.equal(vector, seen[1][clip_id][name]), (clip_id, name)
    assert encoded["results"] and encoded["results"] == from_tokens["results"]
    with pytest.raises(SystemExit, match=r"'tokens' names codec\(s\) \['tokenz'\]"):
        probe_recipe.main(["--config", str(TINY), f"tokens={{tokenz: {token_manifest}}}"])


def _probe_args(tokens: Path, model: str, out: Path) -> probe.ProbeSettings:
    return probe.ProbeSettings(output=str(out), tokens=str(tokens), model=model, tasks=("domain", "class"),
                               eval_splits=("valid",), kmeans_frames=1000)


def test_tokens_of_another_codec_are_refused_and_bad_clips_skipped(world, token_manifest, tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"token manifest {token_manifest}") + ".*token_rate=100"):
        probe.run_probe(_probe_args(token_manifest, str(world / "codec-25"), tmp_path / "other"))

    rows = [json.loads(line) for line in token_manifest.read_text().splitlines()]
    train = [i for i, row in enumerate(rows) if row["split"] == "train"]
    rows[train[0]]["tokens"] = "shards/missing.tokens.safetensors"
    rows[train[1]]["audio"] = "missing.flac"
    damaged = token_manifest.parent / "damaged.jsonl"
    damaged.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert probe.run_probe(_probe_args(damaged, str(world / "codec-100"), tmp_path / "damaged")) == 1
    problems = json.loads((tmp_path / "damaged" / "probe.json").read_text())["problems"]
    assert len(problems) == 2
    assert f"{damaged}:{train[0] + 1}" in problems[0] and "no such token file" in problems[0]
    assert f"{damaged}:{train[1] + 1}" in problems[1] and "missing.flac" in problems[1]
