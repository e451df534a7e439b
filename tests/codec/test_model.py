"""SemantiCodec end to end at tiny size: encode API, decode API, official outer loop, save/load."""

import pytest
import torch
from safetensors.torch import load_file

from codec.audio import AudioError, write_audio
from codec.checkpoints import CheckpointError
from codec.config import get_config
from codec.diffusion.conditioning import build_context
from codec.model import SemantiCodec
from codec.tokenfile import TokenFileError


def tone(seconds: float, freq: float = 330.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    return (0.4 * torch.sin(2 * torch.pi * freq * t) + 0.02 * torch.randn(t.shape, generator=g)).float()


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return SemantiCodec(get_config("tiny-100")).eval()


def test_encode_paths_tensor_and_ragged_batch_agree(codec, tmp_path):
    waves = [tone(1.0), tone(12.0, 220.0, 1), tone(3.7, 500.0, 2)]
    paths = []
    for i, wave in enumerate(waves):
        paths.append(tmp_path / f"clip{i}.wav")
        write_audio(paths[-1], wave, 16000, subtype="FLOAT")
    batched = codec.encode(paths, batch_size=3)
    assert batched.tokens.dtype == torch.int64
    assert batched.lengths.tolist() == [57, 600, 192]  # the official budget: ceil of 8 d'/0.16/K
    assert batched.tokens.shape == (3, 600, 2)
    for i, path in enumerate(paths):
        alone = codec.encode(path, batch_size=1)
        n = batched.lengths[i]
        assert torch.equal(alone.tokens[0, :n], batched.tokens[i, :n])
        assert (batched.tokens[i, n:] == 0).all()
    from_tensor = codec.encode(waves[0][None], sample_rate=16000)
    assert torch.equal(from_tensor.tokens, codec.encode(paths[0]).tokens)
    stereo = torch.stack([waves[0], torch.zeros_like(waves[0])])[None]  # [1, 2, N]
    assert torch.equal(codec.encode(stereo, sample_rate=16000).tokens, from_tensor.tokens)
    ragged_list = codec.encode(waves, sample_rate=16000, batch_size=3)  # waveforms of different lengths
    assert torch.equal(ragged_list.tokens, batched.tokens) and torch.equal(ragged_list.lengths, batched.lengths)
    semantic, acoustic = batched.tokens[..., 0], batched.tokens[..., 1]
    assert semantic.max() < codec.config.semantic_vocab_size and acoustic.max() < codec.config.acoustic_vocab_size


def test_encode_resamples_other_rates(codec):
    import torchaudio

    wave44 = torch.sin(2 * torch.pi * 440 * torch.arange(44100 * 2) / 44100).float()
    direct = codec.encode(wave44[None], sample_rate=44100)
    resampled = torchaudio.functional.resample(wave44, 44100, 16000)
    assert torch.equal(direct.tokens, codec.encode(resampled[None], sample_rate=16000).tokens)


def test_encode_errors_name_the_input(codec, tmp_path):
    with pytest.raises(AudioError, match="missing.wav"):
        codec.encode(tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="sample_rate"):
        codec.encode(torch.zeros(1, 16000))
    with pytest.raises(AudioError, match="NaN"):
        codec.encode(torch.full((1, 16000), float("nan")), sample_rate=16000)
    with pytest.raises(ValueError, match="sample_rate"):
        codec.encode([torch.zeros(16000)])
    with pytest.raises(ValueError, match="not a mixture"):
        codec.encode([torch.zeros(16000), tmp_path / "clip.wav"], sample_rate=16000)
    with pytest.raises(AudioError, match="<tensor 1>.*empty"):
        codec.encode([torch.rand(16000) - 0.5, torch.zeros(0)], sample_rate=16000)


def test_fix_exact_multiple_drops_the_silent_segment():
    torch.manual_seed(0)
    config = get_config("tiny-100")
    official = SemantiCodec(config).eval()
    fixed = SemantiCodec(config, fix_exact_multiple=True).eval()
    fixed.load_state_dict(official.state_dict())
    wave = tone(10.24)[None]
    assert official.encode(wave, 16000).lengths.item() == 520
    assert fixed.encode(wave, 16000).lengths.item() == 512
    other_length = tone(3.7)[None]  # the switch changes exact multiples of 10.24 s only
    assert torch.equal(official.encode(other_length, 16000).tokens, fixed.encode(other_length, 16000).tokens)


def test_official_outer_loop_window_conditions(parity_dir):
    """Fixture 9: token windows -> -1 padded [acoustic | centroid] conditions, exactly."""
    fixture = load_file(str(parity_dir / "overlap_add.safetensors"))
    for k, rate in ((1, 100), (2, 50), (4, 25)):
        weights = load_file(str(parity_dir / f"acoustic_encoder_k{k}.safetensors"))
        config = get_config(f"tiny-{rate}")
        config = type(config)(
            name="fixture", token_rate=rate, semantic_vocab_size=64, acoustic_vocab_size=32,
            audiomae=type(config.audiomae)(embed_dim=8, depth=12, num_heads=2, decoder_embed_dim=8,
                                           decoder_depth=1, decoder_num_heads=2),
            unet=config.unet, vae=config.vae, vocoder=config.vocoder,
        )
        codec = SemantiCodec(config)
        state = {k2: v for k2, v in weights.items() if k2.split(".")[0] in ("audiomae", "encoder", "encoder_output_linear", "quantizer")}
        state["semantic_codebook.centroids"] = weights["input.semantic_codebook"]
        codec.encoder.load_state_dict(state, strict=True)
        tokens = fixture[f"input.k{k}.tokens"][0]
        from codec.windows import split_windows

        bounds = split_windows(tokens.shape[0], config.window_tokens)
        assert bounds == [tuple(b) for b in fixture[f"expected.k{k}.window_bounds"].tolist()]
        conditions = torch.stack([codec._window_features(tokens, s, e) for s, e in bounds])
        assert torch.equal(conditions, fixture[f"expected.k{k}.window_conditions"])


def test_decode_shapes_seeds_and_batch_independence(codec):
    g = torch.Generator().manual_seed(3)
    lengths = torch.tensor([10, 530, 40])  # one item spans two windows
    tokens = torch.stack([
        torch.randint(0, codec.config.semantic_vocab_size, (3, 530), generator=g),
        torch.randint(0, codec.config.acoustic_vocab_size, (3, 530), generator=g),
    ], dim=-1)
    kwargs = dict(steps=2, seed=7, batch_size=3)
    audio = codec.decode(tokens, lengths, **kwargs)
    samples = codec.num_samples(lengths)
    assert samples == [3200, 169600, 12800] and audio.shape == (3, 1, 169600)
    assert torch.isfinite(audio).all() and audio.abs().max() <= 1
    again = codec.decode(tokens, lengths, **kwargs)
    assert torch.equal(audio, again)
    for i in range(3):
        alone = codec.decode(tokens[i : i + 1, : lengths[i]], steps=2, seed=7, batch_size=1)
        torch.testing.assert_close(alone[0, :, : samples[i]], audio[i, :, : samples[i]], atol=1e-5, rtol=0)
        assert (audio[i, :, samples[i]:] == 0).all()
    other_seed = codec.decode(tokens[:1, :10], steps=2, seed=8)
    assert not torch.equal(other_seed[0, :, :3200], audio[0, :, :3200])


def test_the_prior_sampler_decodes_the_latent_priors_estimate_without_noise():
    import dataclasses

    torch.manual_seed(0)
    tiny = get_config("tiny-100")
    codec = SemantiCodec(dataclasses.replace(tiny, unet=dataclasses.replace(tiny.unet, latent_prior_width=8))).eval()
    assert codec.samplers == ("ddim", "dpmpp2m", "prior")
    wave = tone(11.0)  # two windows: the prior is decoded window by window and crossfaded like diffusion
    audio = codec.reconstruct(wave[None], 16000, sampler="prior", seed=1)
    tokens, lengths = codec.encode(wave[None], 16000)
    assert audio.shape == (1, 1, codec.num_samples(lengths)[0]) and bool(audio.isfinite().all())
    # No noise is drawn: seed, steps and guidance change nothing.
    assert torch.equal(audio, codec.reconstruct(wave[None], 16000, sampler="prior", seed=2, steps=3, cfg_scale=5.0))
    assert not torch.equal(audio, codec.reconstruct(wave[None], 16000, sampler="dpmpp2m", steps=2, seed=1))
    features = codec._window_features(tokens[0], 0, codec.config.window_tokens)[None]
    with torch.no_grad():
        expected = codec.decoder.unet.estimate_latents(build_context(features))
        torch.testing.assert_close(codec.decoder.sample_latents(features, sampler="prior"), expected)
        codec.decoder.unet.latent_prior.net[-1].bias.add_(3.0)  # only the estimate sees this
    assert not torch.equal(audio, codec.reconstruct(wave[None], 16000, sampler="prior"))
    with pytest.raises(ValueError, match="'prior' needs a UNet with a latent prior; codec 'tiny-100' has none"):
        SemantiCodec(tiny).decode(tokens, lengths, sampler="prior")
    assert SemantiCodec(tiny).samplers == ("ddim", "dpmpp2m")


def test_iter_decode_streams_the_same_audio(codec):
    tokens = torch.randint(0, 32, (1, 600, 2))
    chunks = list(codec.iter_decode(tokens, steps=2, seed=1, batch_size=1))
    assert [last for _, _, last in chunks] == [False, True]
    streamed = torch.cat([c for _, c, _ in chunks], dim=-1)
    torch.testing.assert_close(streamed, codec.decode(tokens, steps=2, seed=1, batch_size=2)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "tokens, message",
    [
        (torch.zeros(1, 4, 3, dtype=torch.long), r"shape \[B, T, 2\]"),
        (torch.zeros(1, 0, 2, dtype=torch.long), "empty"),
        (torch.tensor([[[64, 0]]]), "semantic ids outside"),
        (torch.tensor([[[0, -1]]]), "acoustic ids outside"),
        (torch.zeros(1, 4, 2), "must be integers"),
    ],
)
def test_decode_rejects_bad_tokens(codec, tokens, message):
    with pytest.raises(TokenFileError, match=message):
        codec.decode(tokens, steps=1)


def test_save_and_load_pretrained_round_trip(codec, tmp_path):
    codec.save_pretrained(tmp_path / "tiny")
    loaded = SemantiCodec.from_pretrained(tmp_path / "tiny")
    assert loaded.config == codec.config
    for (name, a), (_, b) in zip(codec.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert not any(t.is_meta for t in list(loaded.parameters()) + list(loaded.buffers()))
    wave = tone(1.5)[None]
    assert torch.equal(loaded.encode(wave, 16000).tokens, codec.encode(wave, 16000).tokens)
    with pytest.raises(CheckpointError, match="no such codec folder"):
        SemantiCodec.from_pretrained(tmp_path / "nowhere")


def test_bf16_precision_keeps_most_tokens_and_stays_close_to_float32(codec):
    wave = tone(3.0)[None]
    exact = codec.encode(wave, 16000)
    fast = codec.encode(wave, 16000, precision="bf16")
    assert fast.tokens.dtype == torch.int64 and torch.equal(fast.lengths, exact.lengths)
    assert (fast.tokens == exact.tokens).float().mean() > 0.8
    audio = codec.decode(exact.tokens, exact.lengths, steps=2, sampler="dpmpp2m", seed=0)
    quick = codec.decode(exact.tokens, exact.lengths, steps=2, sampler="dpmpp2m", seed=0, precision="bf16")
    assert quick.dtype == torch.float32 and quick.shape == audio.shape
    assert 0 < ((quick - audio).norm() / audio.norm()).item() < 0.2
    conv_weights = [p for p in codec.decoder.parameters() if p.dim() == 4 and p.shape[-2:] != (1, 1)]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    # Float32 after bf16 puts the weights back as loaded: the official numbers, bit for bit.
    again = codec.decode(exact.tokens, exact.lengths, steps=2, sampler="dpmpp2m", seed=0)
    assert torch.equal(again, audio) and all(p.is_contiguous() for p in conv_weights)
    for call in (lambda: codec.encode(wave, 16000, precision="fp16"),
                 lambda: codec.decode(exact.tokens, precision="half"),
                 lambda: codec.reconstruct(wave, 16000, precision="int8")):
        with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
            call()


def test_tokens_digest_follows_the_encoder_weights_only():
    torch.manual_seed(0)
    codec = SemantiCodec(get_config("tiny-100"))
    twin = SemantiCodec(get_config("tiny-100"))
    twin.load_state_dict(codec.state_dict())
    digest = codec.tokens_digest()
    assert len(digest) == 16 and twin.tokens_digest() == digest
    with torch.no_grad():
        twin.decoder.first_stage_model.vocoder.conv_post.bias.add_(1.0)  # the decoder does not define the ids
        assert twin.tokens_digest() == digest
        twin.encoder.quantizer._codebook.embed.add_(1e-3)  # the acoustic codebook does
        assert twin.tokens_digest() != digest


def test_a_codec_with_a_centred_codebook_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    codec = SemantiCodec(get_config("tiny-100"))
    mean = torch.randn(codec.config.tokens_per_segment, codec.config.feature_dim)
    codec.encoder.semantic_codebook.set_position_mean(mean)
    loaded = SemantiCodec.from_pretrained(codec.save_pretrained(tmp_path / "centred"))
    assert torch.equal(loaded.encoder.semantic_codebook.position_mean, mean)
    assert loaded.tokens_digest() == codec.tokens_digest() != SemantiCodec(get_config("tiny-100")).tokens_digest()


def test_a_codec_reading_fbank_patches_saves_loads_and_encodes_the_same(tmp_path):
    from dataclasses import replace

    torch.manual_seed(0)
    codec = SemantiCodec(replace(get_config("tiny-100"), name="tiny-fbank-100", acoustic_input="fbank")).eval()
    loaded = SemantiCodec.from_pretrained(codec.save_pretrained(tmp_path / "fbank")).eval()
    assert loaded.config == codec.config
    wave = 0.1 * torch.randn(1, 24000)
    assert torch.equal(loaded.encode(wave, 16000).tokens, codec.encode(wave, 16000).tokens)
