"""The latent cache: what it stores is what the codec and the training step compute, a killed build
resumes, another codec's cache is refused, and the prior trains on it alone."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codec.model import SemantiCodec
from recipes.codec.cache_latents import LatentCacheDataset, build_latent_cache, main as cache_main
from recipes.codec.train_ldm import LDMModule
from recipes.codec.train_ldm import main as ldm_main
from recipes.codec.train_vae import crop_mel
from recipes.data.world.family import SyntheticWorld
from semanticodec_lm.corpus.datasets import ManifestDataset, collate_clips

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "codec" / "configs"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, build_synthetic_corpus) -> Path:
    world = SyntheticWorld(12, 3, 1.0, 3.0, ("tone", "noise", "chord"))
    return build_synthetic_corpus(tmp_path_factory.mktemp("cache-corpus"), world)


@pytest.fixture
def codec_folder(tmp_path, tiny_with_prior) -> Path:
    torch.manual_seed(0)
    codec = SemantiCodec(tiny_with_prior[1])
    codec.decoder.scale_factor.fill_(0.5)  # so that a missing scale shows
    return codec.save_pretrained(tmp_path / "codec")


def test_cache_holds_the_codecs_tokens_and_scaled_latent_means_and_resumes(corpus, codec_folder, tmp_path):
    codec = SemantiCodec.from_pretrained(codec_folder)
    out = tmp_path / "cache"
    summary = build_latent_cache(codec, corpus, out, pitched=3, shard_size=4, batch_size=3, latent_precision="fp32")
    train = ManifestDataset(corpus, splits=["train"], segment_seconds=10.24, random_crop=False)
    assert summary["train"] == len(train) and summary["pitched"] == 3 and not summary["skipped"]
    cached = LatentCacheDataset(out, "train", codec)
    assert len(cached) == len(train) + 3
    assert len(LatentCacheDataset(out, "valid", codec)) == summary["valid"] > 0

    # the tokens are the codec's own encoding of the clip, the latents its scaled VAE posterior mean
    clip = train[1]
    tokens, lengths = codec.encode(clip["audio"][: int(clip["length"])][None], 16000)
    item = cached[1]
    assert torch.equal(item["tokens"][: int(lengths[0])], tokens[0, : int(lengths[0])])
    assert int(item["length"]) == int(clip["length"])
    first_stage = codec.decoder.first_stage_model
    with torch.no_grad():
        mean = first_stage.encode(crop_mel(clip["audio"][None], first_stage.downsampling)).mode()
    torch.testing.assert_close(item["latents"], (0.5 * mean)[0], atol=2e-3, rtol=2e-3)

    # a killed build (a shard missing) resumes: only that shard is made again, with the same content
    shards = sorted(out.glob("*.safetensors"))
    assert {path.name.rsplit("-", 1)[0] for path in shards} == {"train", "valid", "train-pitched"}
    stamps = {path: path.stat().st_mtime_ns for path in shards}
    removed = {path: load_file(path) for path in (out / "train-00001.safetensors", out / "train-pitched-00000.safetensors")}
    for path in removed:
        path.unlink()
    build_latent_cache(codec, corpus, out, pitched=3, shard_size=4, batch_size=2, latent_precision="fp32")
    for path in shards:
        if path in removed:
            again = load_file(path)
            assert all(torch.equal(again[key], removed[path][key]) for key in again)
        else:
            assert path.stat().st_mtime_ns == stamps[path]
    assert not list(out.glob(".*"))  # no temporaries left

    # another codec (its tokens mean something else) or another precision is refused
    with pytest.raises(SystemExit, match="another codec or precision"):
        build_latent_cache(codec, corpus, out, latent_precision="bf16")
    other = SemantiCodec(codec.config)
    with pytest.raises(SystemExit, match="tokens_digest"):
        LatentCacheDataset(out, "train", other)
    with pytest.raises(SystemExit, match="no such manifest"):
        cache_main(["--codec", str(codec_folder), "--manifest", str(tmp_path / "none.jsonl"), "--out", str(out)])


def test_the_cached_prior_loss_is_the_training_steps(corpus, codec_folder, tmp_path):
    codec = SemantiCodec.from_pretrained(codec_folder)
    build_latent_cache(codec, corpus, tmp_path / "cache", splits=("train",), latent_precision="fp32")
    module = LDMModule("tiny-prior-100", init_from=str(codec_folder), train_encoder=False, train_unet=False,
                       latent_head_weight=1.0, cfg_dropout=0.0, latent_precision="fp32")
    dataset = ManifestDataset(corpus, splits=["train"], segment_seconds=10.24, random_crop=False)
    batch = collate_clips([dataset[index] for index in range(3)])
    cached = LatentCacheDataset(tmp_path / "cache", "train", codec)
    cached_batch = torch.utils.data.default_collate([cached[index] for index in range(3)])
    with torch.no_grad():
        from_audio = module.training_loss(batch, torch.Generator().manual_seed(0))[1]["latent_head"]
        from_cache = module.training_loss(cached_batch, torch.Generator().manual_seed(0))[1]["latent_head"]
    assert float(from_audio) > 0
    torch.testing.assert_close(from_cache, from_audio, rtol=1e-3, atol=0)


def test_ldm_trains_the_prior_alone_on_a_latent_cache(corpus, codec_folder, tmp_path):
    codec = SemantiCodec.from_pretrained(codec_folder)
    cache = tmp_path / "cache"
    build_latent_cache(codec, corpus, cache, pitched=2, latent_precision="fp32")
    common = ["--config", str(CONFIGS / "ldm_tiny.yaml"), "logger=none", "trainer.accelerator=cpu",
              "model.codec=tiny-prior-100", f"model.init_from={codec_folder}", "model.audiomae=null",
              "model.kmeans=null", "model.vae=null", "model.train_encoder=false", "model.latent_head_weight=1.0",
              f"data.latent_cache={cache}", "data.batch_size=2", "data.num_workers=0", "optim.lr=3e-3",
              "optim.warmup_steps=0", "trainer.limit_val_batches=1", "trainer.val_check_interval=4"]
    with pytest.raises(SystemExit, match="model.train_unet=false"):
        ldm_main([*common, f"run_dir={tmp_path / 'refused'}", "model.train_unet=true"])
    with pytest.raises(SystemExit, match="unknown key"):
        ldm_main([*common, f"run_dir={tmp_path / 'refused'}", "model.train_unet=false", "data.domains=[music]"])

    run = tmp_path / "run"
    report = ldm_main([*common, f"run_dir={run}", "model.train_unet=false", "model.ema_decay=0",
                       "trainer.max_steps=8"])
    assert report["global_step"] == 8
    trained = load_file(run / "weights.safetensors")
    start = codec.state_dict()
    prior = [key for key in trained if ".latent_prior." in key]
    assert prior and any(not torch.equal(trained[key], start[key]) for key in prior)
    assert all(torch.equal(trained[key], start[key]) for key in trained
               if key.startswith("decoder.model.") and key not in prior)

    def cached_mse(weights: dict) -> float:
        model = SemantiCodec.from_pretrained(codec_folder)
        model.load_state_dict(weights, strict=False)
        scorer = LDMModule("tiny-prior-100", init_from=str(codec_folder), train_encoder=False, train_unet=False,
                           latent_head_weight=1.0)
        scorer.codec = model
        data = torch.utils.data.default_collate(list(LatentCacheDataset(cache, "train", model)))
        with torch.no_grad():
            return float(scorer.cached_prior_loss(data)[0])

    assert cached_mse(trained) < cached_mse(start)

    # a cache of another codec is refused before training starts
    other = SemantiCodec(codec.config).save_pretrained(tmp_path / "other")
    with pytest.raises(SystemExit, match="tokens_digest"):
        ldm_main([*common, f"run_dir={tmp_path / 'other-run'}", "model.train_unet=false",
                  f"model.init_from={other}", "trainer.max_steps=1"])
