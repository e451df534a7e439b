"""The codebook sweep: transforms that do what they say, one table per sweep, cached features reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from codec.config import get_config
from codec.model import SemantiCodec
from recipes.data.world.family import SyntheticWorld
from recipes.probe import codebook_sweep


@pytest.mark.parametrize("name, parsed", [("raw", ("raw", None)), ("diag", ("diag", None)), ("white", ("white", None)),
                                          ("white64", ("white", 64)), ("pca8", ("pca", 8))])
def test_transform_names_parse(name, parsed):
    assert codebook_sweep.parse_transform(name) == parsed


@pytest.mark.parametrize("name", ["pca", "raw3", "whiten", "pca0x", ""])
def test_unknown_transform_names_are_refused(name):
    with pytest.raises(ValueError, match="unknown transform"):
        codebook_sweep.parse_transform(name)


def test_whitening_decorrelates_and_pca_keeps_the_widest_directions():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.linalg.qr(torch.randn(6, 6, generator=generator))[0] * torch.tensor([10.0, 5.0, 2.0, 1.0, 0.5, 0.01])
    rows = torch.randn(20_000, 6, generator=generator) @ mixing.T + 3.0
    eigenvalues = torch.linalg.eigvalsh(torch.cov(rows.T))
    covariance = torch.cov(codebook_sweep.fit_transform("white", rows)(rows).T)
    assert (covariance - torch.diag(covariance.diagonal())).abs().max() < 1e-3
    # each principal direction scaled to variance lambda / (lambda + floor): about 1 for the wide ones
    floor = codebook_sweep.WHITENING_FLOOR * eigenvalues.max()
    assert torch.allclose(covariance.diagonal().sort().values, (eigenvalues / (eigenvalues + floor)).sort().values,
                          atol=1e-3)
    assert covariance.diagonal().max() > 0.99
    top2 = codebook_sweep.fit_transform("pca2", rows)(rows)
    assert top2.shape == (20_000, 2)
    assert torch.allclose(top2.var(0).sum(), eigenvalues[-2:].sum(), rtol=1e-3)
    with pytest.raises(ValueError, match="only 6 dimensions"):
        codebook_sweep.fit_transform("pca7", rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory, build_synthetic_corpus) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    build_synthetic_corpus(root / "world", SyntheticWorld(24, 4, 1.0, 1.2, ("tone", "noise", "drums", "sweep")))
    SemantiCodec(get_config("tiny-100")).save_pretrained(root / "codec")
    return root


def test_a_sweep_writes_one_table_and_reuses_its_features(world, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    argv = ["--manifest", str(world / "world" / "manifest.jsonl"), "--codec", str(world / "codec"), "--task", "class",
            "--rate", "25", "--codes", "8", "--baseline-codes", "8", "--transforms", "raw,white,pca4",
            "--blocks", "0,1", "--blocks", "11", "--eval-splits", "valid", "-o", str(out)]
    results = codebook_sweep.main(argv)
    names = {r["features"] for r in results}
    assert names == {"b0-1 raw", "b0-1 white", "b0-1 pca4", "b0-1 continuous",
                     "b11 raw", "b11 white", "b11 pca4", "b11 continuous", "mel-kmeans", "mel-kmeans at 25 frames/s"}
    assert all(0.0 <= r["linear_accuracy"] <= 1.0 and r["split"] == "valid" for r in results)
    table = (out / "sweep.md").read_text()
    assert "| b11 white |" in table and "| mel-kmeans |" in table
    assert json.loads((out / "sweep.json").read_text())["results"] == json.loads(json.dumps(results))
    assert sorted(p.name for p in out.iterdir()) == ["features-class-25-b0-1.pt", "features-class-25-b11.pt",
                                                    "sweep.json", "sweep.md"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("cached AudioMAE features were computed again")

    monkeypatch.setattr(codebook_sweep, "audiomae_features", must_not_run)
    again = codebook_sweep.main(argv)
    assert [r["linear_accuracy"] for r in again] == [r["linear_accuracy"] for r in results]


def test_a_retrained_codec_under_the_same_name_does_not_get_the_cached_features(world, tmp_path, monkeypatch):
    argv = ["--manifest", str(world / "world" / "manifest.jsonl"), "--codec", str(tmp_path / "codec"),
            "--task", "class", "--rate", "25", "--codes", "8", "--baseline-codes", "8", "--transforms", "raw",
            "--eval-splits", "valid", "-o", str(tmp_path / "sweep")]
    torch.manual_seed(0)
    SemantiCodec(get_config("tiny-100")).save_pretrained(tmp_path / "codec")
    codebook_sweep.main(argv)
    torch.manual_seed(1)
    SemantiCodec(get_config("tiny-100")).save_pretrained(tmp_path / "codec")

    def must_not_run(*args, **kwargs):
        raise AssertionError("features computed again")

    monkeypatch.setattr(codebook_sweep, "audiomae_features", must_not_run)
    with pytest.raises(AssertionError, match="computed again"):
        codebook_sweep.main(argv)


def test_the_rate_matched_baseline_averages_frames_to_the_token_rate():
    from semanticodec_lm.probe import ProbeClip

    generator = torch.Generator().manual_seed(0)
    clips = [ProbeClip(str(i), "train" if i < 6 else "valid", {}, {}, torch.randn(10 + i, 64, generator=generator))
             for i in range(8)]
    name = codebook_sweep.add_mel_baseline_at_rate(clips, 25, 4, seed=0)
    assert name == "mel-kmeans at 25 frames/s"
    assert all(clip.features[name].shape == (128,) for clip in clips)
    # frames alternating +1 / -1 average to one steady frame per group of four: one code, zero spread
    alternating = torch.ones(12, 64) * torch.tensor([1.0, -1.0]).repeat(6)[:, None]
    steady = ProbeClip("alternating", "valid", {}, {}, alternating)
    codebook_sweep.add_mel_baseline_at_rate([*clips[:6], steady], 25, 4, seed=0)
    assert torch.count_nonzero(steady.features[name][64:]) == 0


def test_bad_arguments_name_the_argument(world, tmp_path, capsys):
    base = ["--manifest", str(world / "world" / "manifest.jsonl"), "--codec", str(world / "codec"), "-o", str(tmp_path)]
    for extra, message in [(["--transforms", "raw,zca"], "unknown transform 'zca'"),
                           (["--blocks", "12"], "blocks 0..11"),
                           (["--blocks", "a,b"], "comma-separated block numbers"),
                           (["--codes", "1"], "at least 2")]:
        with pytest.raises(SystemExit):
            codebook_sweep.main([*base, *extra])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit, match="fewer than two labels"):
        codebook_sweep.main([*base, "--task", "language"])
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(SystemExit, match="nowhere.jsonl"):
        codebook_sweep.main(["--manifest", str(missing), *base[2:]])


def _kmeans_run(folder: Path, config_name: str, position_mean: bool) -> Path:
    """A k-means weights file as train_kmeans.py writes it, with a random position mean or none."""
    from safetensors.torch import save_file

    config = get_config(config_name)
    folder.mkdir()
    tensors = {"encoder.semantic_codebook.centroids": torch.randn(8, config.feature_dim)}
    if position_mean:
        tensors["encoder.semantic_codebook.position_mean"] = torch.randn(config.tokens_per_segment, config.feature_dim)
    save_file(tensors, str(folder / "weights.safetensors"), metadata={"codec_config": config_name, "stage": "kmeans"})
    return folder


def test_center_with_subtracts_the_codebook_s_position_mean_and_caches_apart(world, tmp_path):
    torch.manual_seed(0)
    run = _kmeans_run(tmp_path / "kmeans", "tiny-25", position_mean=True)
    base = ["--manifest", str(world / "world" / "manifest.jsonl"), "--codec", str(world / "codec"), "--task", "class",
            "--rate", "25", "--codes", "8", "--baseline-codes", "8", "--transforms", "raw", "--eval-splits", "valid"]
    codebook_sweep.main([*base, "-o", str(tmp_path / "plain")])
    codebook_sweep.main([*base, "--center-with", str(run), "-o", str(tmp_path / "centred")])
    [plain_file] = (tmp_path / "plain").glob("features-*.pt")
    [centred_file] = (tmp_path / "centred").glob("features-*.pt")
    plain, centred = (torch.load(f, weights_only=True) for f in (plain_file, centred_file))
    assert len(centred["key"]["centred_by"]) == 16 and plain["key"]["centred_by"] is None
    from safetensors.torch import load_file

    mean = load_file(str(run / "weights.safetensors"))["encoder.semantic_codebook.position_mean"]
    for raw, shifted in zip(plain["features"], centred["features"]):
        # rows follow the segments' token positions; clips here are shorter than one segment
        torch.testing.assert_close(shifted.float(), (raw.float() - mean[: raw.shape[0]]).half().float(),
                                   atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("config_name, position_mean, message", [("tiny-25", False, "has no position mean"),
                                                                  ("tiny-50", True, "fitted for 50 tokens/s")])
def test_center_with_refuses_a_codebook_it_cannot_use(world, tmp_path, config_name, position_mean, message):
    run = _kmeans_run(tmp_path / "kmeans", config_name, position_mean)
    with pytest.raises(SystemExit, match=message):
        codebook_sweep.main(["--manifest", str(world / "world" / "manifest.jsonl"), "--codec", str(world / "codec"),
                             "--task", "class", "--rate", "25", "--codes", "8", "--transforms", "raw",
                             "--center-with", str(run), "-o", str(tmp_path / "out")])
