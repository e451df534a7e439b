"""Codec training stages on a tiny synthetic corpus: every stage lowers its loss on a fixed batch,
every tiny config runs through its script, and the five outputs export to a loadable codec."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codec.config import SEGMENT_SAMPLES, get_config
from codec.model import SemantiCodec
from semanticodec_lm.training.codec_stages import read_weights, segment_fbank
from recipes.codec.export import export
from recipes.codec.train_audiomae import AudioMAEModule, probe_accuracy
from recipes.codec.train_audiomae import main as audiomae_main
from recipes.codec.train_kmeans import main as kmeans_main
from recipes.codec.train_ldm import LDMModule
from recipes.codec.train_ldm import main as ldm_main
from recipes.codec.train_vae import VAEModule, crop_mel
from recipes.codec.train_vae import main as vae_main
from recipes.codec.train_vocoder import VocoderModule, vae_round_trip
from recipes.codec.train_vocoder import main as vocoder_main
from semanticodec_lm.corpus.datasets import ManifestDataset, collate_clips
from recipes.data.world.family import SyntheticWorld

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "codec" / "configs"
STAGE_MAINS = {"audiomae": audiomae_main, "kmeans": kmeans_main, "vae": vae_main, "ldm": ldm_main,
               "vocoder": vocoder_main}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, build_synthetic_corpus) -> Path:
    """A small synthetic corpus (pure-Python kinds only); its manifest."""
    world = SyntheticWorld(24, 5, 1.0, 3.0, ("tone", "noise", "drums", "beeps", "chord", "sweep"))
    return build_synthetic_corpus(tmp_path_factory.mktemp("codec-corpus"), world)


def fixed_batch(manifest: Path, seconds: float, count: int = 1) -> dict:
    dataset = ManifestDataset(manifest, splits=["train"], segment_seconds=seconds, random_crop=False)
    return collate_clips([dataset[index] for index in range(count)])


def overfit(module, batch: dict, params, steps: int, lr: float) -> tuple[float, float]:
    """(first, last) loss of ``steps`` Adam steps on one batch, with the same random draws every step."""
    optimizer = torch.optim.Adam(list(params), lr=lr)
    losses = []
    for _ in range(steps):
        loss, _ = module.training_loss(batch, torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses[0], losses[-1]


def test_audiomae_overfits_a_fixed_batch(corpus):
    torch.manual_seed(0)
    module = AudioMAEModule("tiny-100")
    first, last = overfit(module, fixed_batch(corpus, 10.24), module.trainable_parameters(), 25, 3e-3)
    assert last < 0.6 * first


def test_audiomae_starts_from_a_codec_and_refuses_another_size(tmp_path):
    torch.manual_seed(0)
    source = SemantiCodec(get_config("tiny-100"))
    folder = source.save_pretrained(tmp_path / "codec")
    module = AudioMAEModule("tiny-100", init_from=str(folder))
    expected = source.encoder.audiomae.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in module.audiomae.state_dict().items())
    with pytest.raises(SystemExit, match="its audiomae config .* differs"):
        AudioMAEModule("small-100", init_from=str(folder))


def test_probe_accuracy_separates_what_is_separable_and_skips_one_class():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=generator)
    labels = ["a" if value > 0 else "b" for value in x[:, 0].tolist()]
    x_eval = torch.randn(20, 3, generator=generator)
    eval_labels = ["a" if value > 0 else "b" for value in x_eval[:, 0].tolist()]
    assert probe_accuracy(x, labels, x_eval, eval_labels) >= 0.9
    shuffled = [eval_labels[(i + 7) % 20] for i in range(20)]  # labels unrelated to the features
    assert probe_accuracy(x, labels, x_eval, shuffled) < 0.9
    assert probe_accuracy(x, ["a"] * 40, x_eval, eval_labels) is None
    assert probe_accuracy(x, labels, x_eval, [None] * 20) is None


def test_audiomae_run_logs_the_feature_probe(corpus, tmp_path):
    import csv

    run = tmp_path / "run"
    audiomae_main(["--config", str(CONFIGS / "audiomae_tiny.yaml"), f"data.manifest={corpus}", f"run_dir={run}",
                   "logger=csv", "trainer.accelerator=cpu", "trainer.max_steps=2", "trainer.limit_val_batches=1",
                   "trainer.val_check_interval=2", "data.batch_size=1", "probe.clips=40"])
    rows = list(csv.DictReader(next(run.rglob("metrics.csv")).open()))
    logged = [float(row[f"valid/probe_{task}"]) for row in rows for task in ("domain", "class")
              if row.get(f"valid/probe_{task}")]
    assert len(logged) == 2 and all(0.0 <= value <= 1.0 for value in logged)
    with pytest.raises(SystemExit, match="probe: unknown key"):
        audiomae_main(["--config", str(CONFIGS / "audiomae_tiny.yaml"), f"data.manifest={corpus}",
                       f"run_dir={tmp_path / 'bad'}", "probe.clip=3"])


def test_vae_overfits_a_fixed_batch(corpus):
    torch.manual_seed(0)
    module = VAEModule("tiny-100")
    first, last = overfit(module, fixed_batch(corpus, 0.32), module.trainable_parameters(), 25, 3e-3)
    assert last < 0.5 * first


def test_vocoder_overfits_a_fixed_batch(corpus):
    torch.manual_seed(0)
    module = VocoderModule("tiny-100", adversarial_start=10**9)  # mel loss only: the GAN terms are not monotone
    first, last = overfit(module, fixed_batch(corpus, 0.16), module.generator.parameters(), 20, 2e-3)
    assert last < 0.6 * first


@pytest.fixture
def tiny_istft(monkeypatch) -> str:
    """A tiny-100 codec config whose vocoder is a small iSTFT vocoder, registered for the test."""
    from dataclasses import replace

    from codec import config as codec_config

    name = "tiny-100-istft"
    tiny = codec_config.get_config("tiny-100")
    vocoder = codec_config.ISTFTVocoderConfig(dim=32, intermediate_dim=64, num_blocks=2)
    monkeypatch.setitem(codec_config.CONFIGS, name, replace(tiny, name=name, vocoder=vocoder))
    return name


def test_istft_vocoder_overfits_a_fixed_batch_with_spectral_and_phase_losses(corpus, tiny_istft):
    torch.manual_seed(0)
    module = VocoderModule(tiny_istft, stft_weight=15.0, phase_weight=10.0, adversarial_start=10**9)
    assert list(module.discriminators) == ["mrd"]
    first, last = overfit(module, fixed_batch(corpus, 0.32), module.generator.parameters(), 30, 5e-3)
    assert last < 0.75 * first  # the phase terms fall slower than the mel and STFT terms


def test_istft_vocoder_adversarial_terms_reach_the_generator(corpus, tiny_istft):
    torch.manual_seed(0)
    module = VocoderModule(tiny_istft, adversarial_start=0)
    real, fake, mel = module.generate(fixed_batch(corpus, 0.32, count=2)["audio"])
    loss, logs = module.generator_loss(real, fake, mel)
    assert {"adversarial", "feature_matching"} <= set(logs)
    loss.backward()
    assert all(p.grad is not None for p in module.generator.parameters())
    assert module.discriminate(real, fake.detach()) > 0
    with pytest.raises(SystemExit, match="discriminators"):
        VocoderModule(tiny_istft, discriminators=["nope"])


def test_vocoder_reads_the_vaes_mel_for_its_share_of_a_batch_and_is_scored_on_the_real_one(corpus, tmp_path):
    from codec.model import SemantiCodec

    torch.manual_seed(0)
    SemantiCodec(get_config("tiny-100")).save_pretrained(tmp_path / "codec")
    module = VocoderModule("tiny-100", adversarial_start=10**9, input_vae=str(tmp_path / "codec"), input_vae_share=0.5)
    assert not any(p.requires_grad for p in module.input_vae.parameters())
    seen = []
    generator_forward = module.generator.forward
    module.generator.forward = lambda mel: seen.append(mel) or generator_forward(mel)
    audio = fixed_batch(corpus, 0.32, count=2)["audio"]
    real, fake, mel = module.generate(audio)
    assert mel.shape[-1] % module.input_vae.downsampling == 0 and real.shape[-1] == fake.shape[-1] == mel.shape[-1] * 160
    assert torch.equal(seen[0][1:], mel[1:])  # the second half of the batch: the real mel
    assert torch.allclose(seen[0][:1], vae_round_trip(module.input_vae, mel[:1]))
    assert not torch.allclose(seen[0][:1], mel[:1], atol=1e-2)  # an untrained VAE changes it
    loss, _ = module.generator_loss(real, fake, mel)
    loss.backward()
    assert all(p.grad is not None for p in module.generator.parameters())
    with pytest.raises(SystemExit, match="input_vae_share"):
        VocoderModule("tiny-100", input_vae_share=1.5)


def test_ldm_overfits_a_fixed_batch(corpus):
    torch.manual_seed(0)
    module = LDMModule("tiny-100", cfg_dropout=0.0)
    first, last = overfit(module, fixed_batch(corpus, 10.24), module.trainable_parameters(), 7, 3e-3)
    assert last < 0.7 * first
    assert float(module.scale_ready) == 1 and float(module.codec.decoder.scale_factor) != 1.0


def test_ldm_fine_tune_keeps_the_tokens_weights_by_min_snr_and_exports_the_ema(corpus, tmp_path):
    torch.manual_seed(0)
    start = SemantiCodec(get_config("tiny-100"))
    start.decoder.scale_factor.fill_(0.5)
    folder = start.save_pretrained(tmp_path / "start")
    module = LDMModule("tiny-100", init_from=str(folder), train_encoder=False, min_snr_gamma=5.0, ema_decay=0.5,
                       cfg_dropout=0.0, latent_head_weight=1.0)  # the head has no encoder to teach: ignored
    assert module.latent_head is None
    encoder_before = {k: v.clone() for k, v in module.codec.encoder.state_dict().items()}
    unet_before = {k: v.clone() for k, v in module.codec.decoder.model.state_dict().items()}
    weights = module.loss_weights(torch.tensor([0, 500, 999]))
    # min(SNR, 5) / (SNR + 1): small where the noise is tiny (SNR huge) or total (SNR ~ 0), largest between.
    assert bool((weights > 0).all()) and weights[1] > weights[0] and weights[1] > weights[2] and weights[1] <= 1.0
    first, last = overfit(module, fixed_batch(corpus, 10.24), module.trainable_parameters(), 3, 3e-3)
    assert float(module.codec.decoder.scale_factor) == 0.5  # the latent space does not move
    assert all(torch.equal(v, encoder_before[k]) for k, v in module.codec.encoder.state_dict().items())
    assert not all(torch.equal(v, unet_before[k]) for k, v in module.codec.decoder.model.state_dict().items())
    module.on_train_batch_end(None, None, 0)
    exported = module.export_weights()
    live = module.codec.decoder.model.state_dict()
    ema = module.unet_ema.state_dict()
    key = next(k for k in ema if ema[k].is_floating_point() and not torch.equal(ema[k], live[k]))
    assert torch.equal(exported[f"decoder.model.{key}"], ema[key])
    with pytest.raises(SystemExit, match="needs model.init_from"):
        LDMModule("tiny-100", train_encoder=False)


def test_ldm_replaces_its_share_of_training_crops_by_random_notes_and_never_validation_s(corpus, monkeypatch):
    batch = fixed_batch(corpus, 10.24)
    original = batch["audio"].clone()
    module = LDMModule("tiny-100", pitched_share=1.0)
    mixed = module.with_pitched_audio(batch, torch.Generator().manual_seed(0))
    assert torch.equal(batch["audio"], original)  # the loader's batch is not written to
    assert mixed["audio"].shape == original.shape
    assert all(not torch.equal(new, old) for new, old in zip(mixed["audio"], original))
    assert bool((mixed["length"] == original.shape[-1]).all())
    again = module.with_pitched_audio(batch, torch.Generator().manual_seed(0))
    assert torch.equal(again["audio"], mixed["audio"])  # the step's generator decides everything
    seen = []
    monkeypatch.setattr(module, "loss", lambda batch, generator, update_codebook: seen.append(batch) or (0, {}))
    module.train()
    module.training_loss(batch, torch.Generator().manual_seed(0))
    module.eval()
    module.training_loss(batch, torch.Generator().manual_seed(0))
    assert not torch.equal(seen[0]["audio"], original) and torch.equal(seen[1]["audio"], original)
    untouched = LDMModule("tiny-100", pitched_share=0.0).train()
    monkeypatch.setattr(untouched, "loss", lambda batch, generator, update_codebook: seen.append(batch) or (0, {}))
    untouched.training_loss(batch, torch.Generator().manual_seed(0))
    assert seen[-1] is batch
    with pytest.raises(SystemExit, match="pitched_share"):
        LDMModule("tiny-100", pitched_share=1.5)


def test_ldm_latent_head_trains_the_acoustic_encoder_and_is_not_exported(corpus):
    torch.manual_seed(0)
    module = LDMModule("tiny-100", latent_head_weight=1.0)
    batch = fixed_batch(corpus, 10.24)
    _, logs = module.training_loss(batch, torch.Generator().manual_seed(0))
    lstm = list(module.codec.encoder.encoder.parameters())
    head_gradients = torch.autograd.grad(logs["latent_head"], lstm, allow_unused=True)
    assert any(g is not None and float(g.abs().sum()) > 0 for g in head_gradients)  # through the VQ
    first, last = overfit(module, batch, module.trainable_parameters(), 6, 3e-3)
    assert last < first
    _, after = module.training_loss(batch, torch.Generator().manual_seed(0))
    assert float(after["latent_head"]) < 0.5 * float(logs["latent_head"])
    assert not any("latent_head" in key for key in module.export_weights())
    with pytest.raises(SystemExit, match="latent_head_weight"):
        LDMModule("tiny-100", latent_head_weight=-1.0)


def test_ldm_grows_a_latent_prior_that_changes_nothing_until_trained_and_ships(corpus, tmp_path, tiny_with_prior):
    from codec.diffusion.conditioning import build_context

    torch.manual_seed(0)
    tiny, with_prior = tiny_with_prior
    start = SemantiCodec(tiny)
    folder = start.save_pretrained(tmp_path / "start")
    module = LDMModule("tiny-prior-100", init_from=str(folder), train_encoder=False, latent_head_weight=1.0,
                       cfg_dropout=0.0)
    unet, old_unet = module.codec.decoder.unet, start.decoder.unet
    assert module.latent_head is None and module.codec.config.unet.latent_prior_width == 16
    x, t = torch.randn(1, *start.decoder.latent_shape), torch.tensor([300])
    context = build_context(torch.randn(1, tiny.window_tokens, 2 * tiny.feature_dim))
    with torch.no_grad():
        # the new input channels start at zero: the same numbers up to the wider convolution's summation order
        assert torch.allclose(unet(x, t, context), old_unet(x, t, context), atol=1e-5)
    batch = fixed_batch(corpus, 10.24)
    _, logs = module.training_loss(batch, torch.Generator().manual_seed(0))
    first, last = overfit(module, batch, module.trainable_parameters(), 6, 3e-3)
    _, after = module.training_loss(batch, torch.Generator().manual_seed(0))
    assert last < first and float(after["latent_head"]) < 0.8 * float(logs["latent_head"])
    exported = module.export_weights()
    assert any(".latent_prior." in key for key in exported)
    grown = SemantiCodec(with_prior)
    grown.load_state_dict({**grown.state_dict(), **exported})
    with torch.no_grad():
        assert (grown.decoder.unet(x, t, context) - old_unet(x, t, context)).abs().max() > 1e-3


def test_ldm_trains_a_grown_latent_prior_alone_leaving_the_rest_of_the_unet(corpus, tmp_path, monkeypatch,
                                                                           tiny_with_prior):
    import dataclasses

    from codec.config import CONFIGS
    from codec.diffusion.conditioning import build_context

    torch.manual_seed(0)
    tiny, with_prior = tiny_with_prior
    deeper = dataclasses.replace(with_prior, name="tiny-deeper-100",
                                 unet=dataclasses.replace(with_prior.unet, latent_prior_blocks=2))
    monkeypatch.setitem(CONFIGS, "tiny-deeper-100", deeper)
    start = SemantiCodec(with_prior)
    folder = start.save_pretrained(tmp_path / "start")
    for wrong in ({"latent_head_weight": 0.0}, {"train_encoder": True}):
        with pytest.raises(SystemExit, match="train_unet=false"):
            LDMModule("tiny-deeper-100", init_from=str(folder), **{"train_encoder": False, "latent_head_weight": 1.0,
                                                                   "train_unet": False, **wrong})
    with pytest.raises(SystemExit, match="cannot lose blocks"):
        LDMModule("tiny-prior-100", init_from=str(SemantiCodec(deeper).save_pretrained(tmp_path / "deeper")),
                  train_encoder=False)
    module = LDMModule("tiny-deeper-100", init_from=str(folder), train_encoder=False, latent_head_weight=1.0,
                       train_unet=False, cfg_dropout=0.0)
    unet = module.codec.decoder.unet
    assert len(unet.latent_prior.blocks) == 2
    trained = {name for name, p in module.named_parameters() if p.requires_grad}
    assert trained and all(".latent_prior." in name for name in trained)
    context = build_context(torch.randn(1, tiny.window_tokens, 2 * tiny.feature_dim))
    with torch.no_grad():
        assert torch.equal(unet.estimate_latents(context), start.decoder.unet.estimate_latents(context))
    batch = fixed_batch(corpus, 10.24)
    _, logs = module.training_loss(batch, torch.Generator().manual_seed(0))
    assert "diffusion" not in logs
    rest = {name: p.detach().clone() for name, p in unet.named_parameters() if ".latent_prior." not in f".{name}"}
    overfit(module, batch, module.trainable_parameters(), 6, 3e-3)
    _, after = module.training_loss(batch, torch.Generator().manual_seed(0))
    assert float(after["latent_head"]) < 0.8 * float(logs["latent_head"])
    assert all(torch.equal(p, rest[name]) for name, p in unet.named_parameters() if name in rest)
    assert any(".latent_prior.blocks." in key for key in module.export_weights())


def test_ldm_prior_mel_loss_trains_the_prior_through_the_frozen_vae_decoder(corpus, tmp_path, tiny_with_prior):
    from codec.diffusion.conditioning import build_context

    torch.manual_seed(0)
    tiny, with_prior = tiny_with_prior
    folder = SemantiCodec(with_prior).save_pretrained(tmp_path / "start")
    common = {"init_from": str(folder), "train_encoder": False, "train_unet": False, "cfg_dropout": 0.0}
    for wrong in ({"prior_mel_weight": -1.0}, {"prior_mel_weight": 1.0, "prior_mel_frames": 0}):
        with pytest.raises(SystemExit, match="prior_mel"):
            LDMModule("tiny-prior-100", latent_head_weight=1.0, **common, **wrong)
    with pytest.raises(SystemExit, match="latent_head_weight > 0"):
        LDMModule("tiny-100", init_from=str(SemantiCodec(tiny).save_pretrained(tmp_path / "plain")),
                  train_encoder=False, latent_head_weight=0.0, prior_mel_weight=1.0)
    module = LDMModule("tiny-prior-100", latent_head_weight=1.0, prior_mel_weight=1.0, prior_mel_frames=4, **common)
    decoder = module.codec.decoder
    batch = fixed_batch(corpus, 10.24)
    _, logs = module.training_loss(batch, torch.Generator().manual_seed(0))
    assert float(logs["prior_mel"]) > 0
    # the mel term alone reaches the prior, through the VAE decoder, which stays frozen
    mel = crop_mel(batch["audio"].float(), decoder.first_stage_model.downsampling)
    estimate = decoder.unet.estimate_latents(build_context(torch.randn(1, tiny.window_tokens, 2 * tiny.feature_dim)))
    module.prior_mel_l1(estimate, mel, torch.Generator().manual_seed(0)).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.unet.latent_prior.parameters())
    assert all(p.grad is None for p in decoder.first_stage_model.parameters())
    vae = {name: p.detach().clone() for name, p in decoder.first_stage_model.named_parameters()}

    def mel_l1_after_training(latent_weight: float, mel_weight: float) -> float:
        trained = LDMModule("tiny-prior-100", latent_head_weight=latent_weight, prior_mel_weight=mel_weight,
                            prior_mel_frames=4, **common)
        overfit(trained, batch, trained.trainable_parameters(), 6, 3e-3)
        assert all(torch.equal(p, vae[name]) for name, p in trained.codec.decoder.first_stage_model.named_parameters())
        return float(trained.training_loss(batch, torch.Generator().manual_seed(0))[1]["prior_mel"])

    # the same steps led by the mel term lower the mel distance, more than the latent MSE does
    with_mel, without = mel_l1_after_training(1e-3, 1.0), mel_l1_after_training(1.0, 1e-6)
    assert with_mel < float(logs["prior_mel"]) and with_mel < without


def test_ldm_moves_a_codec_to_the_fbank_acoustic_input_keeping_every_other_weight(corpus, tmp_path, monkeypatch):
    import dataclasses

    from codec.config import CONFIGS

    torch.manual_seed(0)
    tiny = get_config("tiny-100")
    monkeypatch.setitem(CONFIGS, "tiny-fbank-100", dataclasses.replace(tiny, name="tiny-fbank-100",
                                                                       acoustic_input="fbank"))
    start = SemantiCodec(tiny)
    start.decoder.scale_factor.fill_(0.5)
    folder = start.save_pretrained(tmp_path / "start")
    with pytest.raises(SystemExit, match="train_encoder=true"):
        LDMModule("tiny-fbank-100", init_from=str(folder), train_encoder=False)
    module = LDMModule("tiny-fbank-100", init_from=str(folder), cfg_dropout=0.0)
    encoder = module.codec.encoder
    assert module.codec.config.acoustic_input == "fbank" and float(module.codec.decoder.scale_factor) == 0.5
    kept = {key: value for key, value in start.state_dict().items()}
    assert all(torch.equal(value, kept[key]) for key, value in module.codec.state_dict().items()
               if not key.startswith("encoder.fbank_projection."))
    assert encoder.fbank_projection.weight.requires_grad and encoder.encoder.weight_ih_l0.requires_grad
    batch = fixed_batch(corpus, 10.24)
    loss, _ = module.training_loss(batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert float(encoder.fbank_projection.weight.grad.abs().sum()) > 0
    exported = module.export_weights()
    assert {"encoder.fbank_projection.weight", "encoder.fbank_projection.bias"} <= set(exported)
    moved = SemantiCodec(CONFIGS["tiny-fbank-100"])
    moved.load_state_dict({**moved.state_dict(), **exported})
    assert torch.equal(moved.encoder.fbank_projection.weight, encoder.fbank_projection.weight)


def test_ldm_continues_a_codec_on_new_semantic_tokens(tmp_path):
    from semanticodec_lm.training.codec_stages import write_weights

    torch.manual_seed(0)
    config = get_config("tiny-100")
    start = SemantiCodec(config)
    start.decoder.scale_factor.fill_(0.5)
    folder = start.save_pretrained(tmp_path / "start")
    centroids = torch.randn_like(start.encoder.semantic_codebook.centroids)
    kmeans = write_weights(tmp_path / "kmeans.safetensors", {"encoder.semantic_codebook.centroids": centroids},
                           config, "kmeans")
    module = LDMModule("tiny-100", init_from=str(folder), kmeans=str(kmeans))
    assert torch.equal(module.codec.encoder.semantic_codebook.centroids, centroids)
    assert all(torch.equal(v, start.decoder.model.state_dict()[k]) for k, v in module.codec.decoder.model.state_dict().items())
    assert float(module.codec.decoder.scale_factor) == 0.5 and float(module.scale_ready) == 1
    assert all(p.requires_grad for p in module.codec.encoder.encoder.parameters())
    with pytest.raises(SystemExit, match="needs model.train_encoder=true"):
        LDMModule("tiny-100", init_from=str(folder), kmeans=str(kmeans), train_encoder=False)
    vae_weights = {k: v for k, v in start.state_dict().items() if k.startswith("decoder.first_stage_model.")
                   and not k.startswith("decoder.first_stage_model.vocoder.")}
    vae = write_weights(tmp_path / "vae.safetensors", vae_weights, config, "vae")
    with_new_vae = LDMModule("tiny-100", init_from=str(folder), vae=str(vae))
    assert float(with_new_vae.scale_ready) == 0  # a new latent space: the scale is measured again


def test_ldm_targets_in_bf16_stay_close_to_float32_and_bad_precision_is_named():
    torch.manual_seed(0)
    exact, fast = (LDMModule("tiny-100", latent_precision=p) for p in ("fp32", "bf16"))
    fast.load_state_dict(exact.state_dict())
    g = torch.Generator().manual_seed(0)
    audio = 0.3 * torch.randn(2, SEGMENT_SAMPLES, generator=g)
    mel = crop_mel(audio, exact.codec.decoder.first_stage_model.downsampling)
    targets = [m.target_latents(mel, torch.Generator().manual_seed(1))[0] for m in (exact, fast)]
    assert targets[1].dtype == torch.float32 and targets[1].shape == targets[0].shape
    error = (targets[1] - targets[0]).pow(2).mean().sqrt() / targets[0].std()
    assert 0 < error < 0.05
    with pytest.raises(SystemExit, match="model.latent_precision must be one of fp32, bf16"):
        LDMModule("tiny-100", latent_precision="fp16")


def test_every_stage_script_runs_and_exports_a_loadable_codec(corpus, tmp_path):
    runs = tmp_path / "runs"
    common = [f"data.manifest={corpus}", "logger=none", "trainer.accelerator=cpu", "trainer.max_steps=2",
              "trainer.limit_val_batches=1", "trainer.val_check_interval=2", "data.batch_size=1"]
    dependencies = {"kmeans": ["audiomae"], "ldm": ["audiomae", "kmeans", "vae"]}
    for stage in ("audiomae", "kmeans", "vae", "ldm", "vocoder"):
        links = [f"model.{name}={runs / name}" for name in dependencies.get(stage, [])]
        report = STAGE_MAINS[stage](["--config", str(CONFIGS / f"{stage}_tiny.yaml"), f"run_dir={runs / stage}",
                                     *common, *links])
        assert report["global_step"] == 2 and (runs / stage / "weights.safetensors").is_file()
        assert (runs / stage / "checkpoints" / "last.ckpt").is_file()
    assert (runs / "kmeans" / "codebook_idx" / "combine_512_audioset_dominate" / "codebook_32_0.npy").is_file()

    folder = export("tiny-100", {stage: runs / stage for stage in STAGE_MAINS}, tmp_path / "codec", max_mb=60)
    codec = SemantiCodec.from_pretrained(folder)  # strict: every key present, none extra
    ldm_weights = read_weights(runs / "ldm", codec.config, "ldm")
    assert torch.equal(codec.decoder.scale_factor, ldm_weights["decoder.scale_factor"])
    assert torch.equal(codec.encoder.semantic_codebook.centroids,
                       read_weights(runs / "kmeans", codec.config, "kmeans")["encoder.semantic_codebook.centroids"])
    tokens, lengths = codec.encode(torch.randn(1, 16000) * 0.1, 16000)
    assert tokens.shape[-1] == 2 and int(lengths[0]) == tokens.shape[1]

    # A base codec fills the stages not given: the same vocoder on the base gives the same codec.
    rebased = export("tiny-100", {"vocoder": runs / "vocoder"}, tmp_path / "rebased", base=str(folder))
    assert all(torch.equal(a, b) for a, b in zip(SemantiCodec.from_pretrained(rebased).state_dict().values(),
                                                 codec.state_dict().values()))
    with pytest.raises(SystemExit, match="differs from 'tiny-50' in token_rate"):
        export("tiny-50", {"vocoder": runs / "vocoder"}, tmp_path / "bad", base=str(folder))
    with pytest.raises(SystemExit, match="holds 'vae' weights, expected 'vocoder'"):
        export("tiny-100", {**{s: runs / s for s in STAGE_MAINS}, "vocoder": runs / "vae"}, tmp_path / "bad")
    with pytest.raises(SystemExit, match="differs from 'tiny-50'"):
        export("tiny-50", {stage: runs / stage for stage in STAGE_MAINS}, tmp_path / "bad")
    with pytest.raises(SystemExit, match="over the 0.001 MB budget"):
        export("tiny-100", {stage: runs / stage for stage in STAGE_MAINS}, tmp_path / "small", max_mb=0.001)


def test_validation_draws_the_same_for_a_batch_at_every_step(corpus):
    module = LDMModule("tiny-100", cfg_dropout=0.0)
    module.eval()
    batch = fixed_batch(corpus, 10.24, count=2)
    first = module.training_loss(batch, module.validation_generator(0))[0]
    module.training_loss(batch, module.step_generator())  # whatever the training steps drew meanwhile
    assert torch.equal(module.training_loss(batch, module.validation_generator(0))[0], first)
    assert not torch.equal(module.training_loss(batch, module.validation_generator(1))[0], first)


def test_a_killed_run_holds_the_weights_of_its_last_checkpoint(corpus, tmp_path):
    import lightning as L

    from semanticodec_lm.training.codec_stages import WEIGHTS_FILE, model_kwargs, parse_args, run_stage

    class Killed(Exception):
        pass

    class KillAtStep3(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 3:
                raise Killed

    run = tmp_path / "vae"
    config = parse_args("", ["--config", str(CONFIGS / "vae_tiny.yaml"), f"run_dir={run}", f"data.manifest={corpus}",
                             "logger=none", "trainer.accelerator=cpu", "trainer.limit_val_batches=1",
                             "trainer.val_check_interval=100", "data.batch_size=1",
                             "checkpoint.every_n_train_steps=2", "trainer.max_steps=10"])
    with pytest.raises(Killed):
        run_stage(config, lambda values, seed: VAEModule(**model_kwargs(values, VAEModule, seed)), [KillAtStep3()])
    weights = load_file(str(run / WEIGHTS_FILE))  # written with the step-2 checkpoint, not at the end
    checkpoint = torch.load(run / "checkpoints" / "step2.ckpt", weights_only=True)
    module = VAEModule(**checkpoint["hyper_parameters"])
    module.load_state_dict(checkpoint["state_dict"])
    exported = module.export_weights()
    assert weights.keys() == exported.keys() and all(torch.equal(weights[k], v) for k, v in exported.items())


def test_bad_inputs_get_clear_errors(corpus, tmp_path):
    with pytest.raises(SystemExit, match="no such manifest"):
        audiomae_main(["--config", str(CONFIGS / "audiomae_tiny.yaml"), f"data.manifest={tmp_path / 'none.jsonl'}",
                       f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit, match="no audiomae weights"):
        LDMModule("tiny-100", audiomae=str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="must name domains"):
        kmeans_main(["--config", str(CONFIGS / "kmeans_tiny.yaml"), f"data.manifest={corpus}", "model.audiomae=null",
                     f"run_dir={tmp_path / 'km'}", "model.domain_sizes={speech: 10}"])
    with pytest.raises(ValueError, match="10.24-s crops"):
        segment_fbank(torch.zeros(2, SEGMENT_SAMPLES - 1))


def test_stage_weights_fit_configs_that_agree_on_what_the_stage_depends_on(tmp_path):
    import dataclasses

    from codec.config import get_config
    from semanticodec_lm.training.codec_stages import write_weights

    config = get_config("tiny-100")
    weights = {"encoder.audiomae.x": torch.zeros(2)}
    path = write_weights(tmp_path / "w.safetensors", weights, config, "audiomae")
    other_unet = dataclasses.replace(config, unet=dataclasses.replace(config.unet, aligned_context_channels=8))
    assert torch.equal(read_weights(path, other_unet, "audiomae")["encoder.audiomae.x"], weights["encoder.audiomae.x"])
    other_audiomae = dataclasses.replace(config, audiomae=dataclasses.replace(config.audiomae, depth=2))
    with pytest.raises(SystemExit, match="differs"):
        read_weights(path, other_audiomae, "audiomae")
    ldm = write_weights(tmp_path / "ldm.safetensors", weights, config, "ldm")
    with pytest.raises(SystemExit, match="differs"):
        read_weights(ldm, other_unet, "ldm")
    # The AudioMAE serves every token rate; a k-means codebook only its own.
    assert read_weights(path, get_config("tiny-25"), "audiomae").keys() == weights.keys()
    kmeans = write_weights(tmp_path / "kmeans.safetensors", weights, config, "kmeans")
    with pytest.raises(SystemExit, match="differs from 'tiny-25' in token_rate"):
        read_weights(kmeans, get_config("tiny-25"), "kmeans")


@pytest.mark.parametrize("stage", ["vae", "vocoder", "ldm"])
def test_every_stage_trains_under_bf16_autocast_with_its_float32_targets(corpus, stage):
    """bf16-mixed (Lightning's autocast) with the default float32 latent targets: the mel the targets are
    made from stays float32, so the frozen float32 VAE encoder can read it."""
    torch.manual_seed(0)
    module = {"vae": lambda: VAEModule("tiny-100"), "vocoder": lambda: VocoderModule("tiny-100", adversarial_start=10**9),
              "ldm": lambda: LDMModule("tiny-100", cfg_dropout=0.0)}[stage]()
    batch = fixed_batch(corpus, 10.24 if stage == "ldm" else 0.32)
    with torch.autocast("cpu", torch.bfloat16):
        loss, _ = module.training_loss(batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.trainable_parameters())


def test_kmeans_with_centred_positions_fits_content_not_position(corpus, tmp_path):
    from semanticodec_lm.probe import load_semantic_tokenizer

    def fit(name: str, *extra: str) -> dict:
        kmeans_main(["--config", str(CONFIGS / "kmeans_tiny.yaml"), f"data.manifest={corpus}", "model.audiomae=null",
                     f"run_dir={tmp_path / name}", "logger=none", "trainer.max_steps=4", "trainer.accelerator=cpu",
                     "model.init_batches=2", *extra])
        return read_weights(tmp_path / name, get_config("tiny-100"), "kmeans")

    plain, centred = fit("plain"), fit("centred", "model.center_positions=true")
    assert "encoder.semantic_codebook.position_mean" not in plain
    mean = centred["encoder.semantic_codebook.position_mean"]
    config = get_config("tiny-100")
    assert mean.shape == (config.tokens_per_segment, config.feature_dim) and torch.isfinite(mean).all()
    # An untrained AudioMAE's features are its position embeddings plus a little content: the plain
    # codebook's centroids sit far from zero, the centred one's around it.
    assert centred["encoder.semantic_codebook.centroids"].mean(0).norm() < 0.2 * plain["encoder.semantic_codebook.centroids"].mean(0).norm()

    codec = SemantiCodec(config)
    tokenizer = load_semantic_tokenizer(codec, tmp_path / "centred")
    torch.testing.assert_close(tokenizer.codebook.position_mean, mean)


def test_ldm_conditions_on_the_codebook_s_centred_tokens_as_the_encoder_gives_them(tmp_path):
    from semanticodec_lm.training.codec_stages import write_weights

    torch.manual_seed(0)
    config = get_config("tiny-100")
    folder = SemantiCodec(config).save_pretrained(tmp_path / "start")
    weights = {"encoder.semantic_codebook.centroids": torch.randn(config.semantic_vocab_size, config.feature_dim),
               "encoder.semantic_codebook.position_mean": torch.randn(config.tokens_per_segment, config.feature_dim)}
    kmeans = write_weights(tmp_path / "kmeans.safetensors", weights, config, "kmeans")
    module = LDMModule("tiny-100", init_from=str(folder), kmeans=str(kmeans), cfg_dropout=0.0)
    encoder = module.codec.encoder
    assert torch.equal(encoder.semantic_codebook.position_mean, weights["encoder.semantic_codebook.position_mean"])
    audio = 0.1 * torch.randn(1, SEGMENT_SAMPLES, generator=torch.Generator().manual_seed(1))
    batch = {"audio": audio, "length": torch.tensor([SEGMENT_SAMPLES])}
    with torch.no_grad():
        _, kept, _, _ = module.conditioning(batch, torch.Generator().manual_seed(0), update_codebook=False)
        expected = encoder.encode_segments_detailed(segment_fbank(audio)).centroids
    torch.testing.assert_close(kept[..., config.feature_dim:], expected)
