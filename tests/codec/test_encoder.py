"""The whole encoder: official checkpoint layout, end-to-end parity (fixture 4), batching and errors."""

import ast
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codec.acoustic import mask_padding_rows
from codec.config import AudioMAEConfig, CodecConfig, get_config, official_config
from codec.encoder import CENTROIDS_KEY, SemantiCodecEncoder

KEY_LISTINGS = Path(__file__).resolve().parents[1] / "data" / "checkpoint-keys"
RATE_BY_FACTOR = {1: 100, 2: 50, 4: 25}
FIXTURE_PREFIXES = ("input.", "expected.", "intermediate.")


def _fixture_config(concat_factor: int) -> CodecConfig:
    return CodecConfig(
        name=f"fixture4-k{concat_factor}",
        token_rate=RATE_BY_FACTOR[concat_factor],
        semantic_vocab_size=64,
        acoustic_vocab_size=32,
        audiomae=AudioMAEConfig(
            embed_dim=8, depth=12, num_heads=2, decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2
        ),
    )


def _fixture_encoder(parity_dir: Path, concat_factor: int):
    fixture = load_file(parity_dir / f"acoustic_encoder_k{concat_factor}.safetensors")
    encoder = SemantiCodecEncoder(_fixture_config(concat_factor))
    weights = {key: value for key, value in fixture.items() if not key.startswith(FIXTURE_PREFIXES)}
    encoder.load_state_dict(weights, strict=True)
    encoder.semantic_codebook.load_centroids(fixture["input.semantic_codebook"])
    return encoder.eval(), fixture, weights


def _official_key_shapes(token_rate: int) -> dict[str, tuple[int, ...]]:
    listing = KEY_LISTINGS / f"keys_encoder_{token_rate}.txt"
    if not listing.is_file():
        pytest.fail(f"checkpoint key listing not found at {listing}")
    shapes = {}
    for line in listing.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        assert dtype == "torch.float32"
        shapes[key] = tuple(ast.literal_eval(shape))
    return shapes


@pytest.mark.parametrize("concat_factor", [1, 2, 4])
def test_encoder_matches_official_end_to_end(parity_dir, concat_factor):
    encoder, fixture, weights = _fixture_encoder(parity_dir, concat_factor)
    fbank = load_file(parity_dir / "acoustic_encoder_input.safetensors")["input.fbank"]
    assert set(encoder.official_state_dict()) == set(weights)

    with torch.inference_mode():
        outputs = encoder.encode_segments_detailed(fbank)
        tokens = encoder.encode_segments(fbank)
        trimmed = fixture["expected.tokens_trimmed"]
        decoder_condition = encoder.tokens_to_features(trimmed)
        encoder_condition = mask_padding_rows(encoder.tokens_to_features(tokens), outputs.cutoff_rows)

    assert (outputs.lstm_input - fixture["expected.lstm_input"]).abs().max().item() <= 1e-4
    assert tokens.dtype == torch.int64
    assert torch.equal(tokens, fixture["expected.tokens"])
    assert torch.equal(outputs.tokens, tokens)
    assert torch.equal(decoder_condition, fixture["expected.decoder_condition"][:, : trimmed.shape[1]])
    assert torch.equal(encoder_condition, fixture["expected.encoder_condition"])


@pytest.mark.parametrize("token_rate", [100, 50, 25])
def test_official_checkpoint_layout(token_rate):
    expected = _official_key_shapes(token_rate)
    with torch.device("meta"):
        encoder = SemantiCodecEncoder(official_config(token_rate))
    ours = {key: tuple(value.shape) for key, value in encoder.official_state_dict().items()}
    assert ours == expected
    assert set(encoder.state_dict()) == set(expected) | {CENTROIDS_KEY}

    checkpoint = {key: torch.empty(shape, device="meta") for key, shape in expected.items()}
    encoder.load_state_dict(checkpoint, strict=True, assign=True)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        encoder.load_state_dict({**checkpoint, "encoder.extra": torch.empty(1, device="meta")}, assign=True)


def test_official_load_keeps_centroids_and_own_export_carries_them():
    torch.manual_seed(0)
    source = SemantiCodecEncoder(get_config("tiny-50"))
    torch.manual_seed(1)
    target = SemantiCodecEncoder(get_config("tiny-50"))
    kept = target.semantic_codebook.centroids.clone()
    target.load_state_dict(source.official_state_dict(), strict=True)
    assert torch.equal(target.semantic_codebook.centroids, kept)
    assert torch.equal(target.quantizer.codes, source.quantizer.codes)
    target.load_state_dict(source.state_dict(), strict=True)
    assert torch.equal(target.semantic_codebook.centroids, source.semantic_codebook.centroids)


def test_batched_segments_equal_single_segments():
    torch.manual_seed(0)
    encoder = SemantiCodecEncoder(get_config("tiny-25")).eval()
    generator = torch.Generator().manual_seed(11)
    fbank = torch.randn(3, 1024, 128, generator=generator)
    fbank[1, 600:] = 0.4670324  # trailing silence: this segment gets its own -1 rows
    fbank[2, 3:] = 0.4670324
    with torch.inference_mode():
        batched = encoder.encode_segments_detailed(fbank)
        single = [encoder.encode_segments_detailed(fbank[i : i + 1]) for i in range(3)]
    assert batched.tokens.shape == (3, 128, 2)
    assert batched.cutoff_rows.tolist() == [128, 75, 1]
    assert torch.equal(batched.tokens, torch.cat([one.tokens for one in single]))
    merged = torch.cat([one.acoustic_features for one in single])
    assert torch.allclose(batched.acoustic_features, merged, atol=1e-6, rtol=0)


def test_vocab_sizes_and_token_feature_shapes():
    config = get_config("tiny-25")
    encoder = SemantiCodecEncoder(config)
    assert encoder.vocab_sizes == (config.semantic_vocab_size, config.acoustic_vocab_size)
    tokens = torch.zeros(2, 5, 2, dtype=torch.long)
    tokens[..., 0] = config.semantic_vocab_size - 1
    features = encoder.tokens_to_features(tokens)
    assert features.shape == (2, 5, 2 * config.feature_dim)
    assert torch.equal(features[0, 0, : config.feature_dim], encoder.quantizer.codes[0])
    assert torch.equal(features[0, 0, config.feature_dim :], encoder.semantic_codebook.centroids[-1])


def test_bad_inputs_give_clear_errors():
    encoder = SemantiCodecEncoder(get_config("tiny-100"))
    with pytest.raises(ValueError, match=r"\[S, 1024, 128\]"):
        encoder.encode_segments(torch.zeros(1, 1000, 128))
    with pytest.raises(ValueError, match="float32"):
        encoder.encode_segments(torch.zeros(1, 1024, 128, dtype=torch.float64))
    nan_fbank = torch.zeros(1, 1024, 128)
    nan_fbank[0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        encoder.encode_segments(nan_fbank)
    with pytest.raises(ValueError, match=r"\[B, T, 2\]"):
        encoder.tokens_to_features(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="semantic token ids"):
        encoder.tokens_to_features(torch.tensor([[[64, 0]]]))


def test_a_centred_codebook_quantises_features_minus_their_position_mean():
    torch.manual_seed(0)
    encoder = SemantiCodecEncoder(get_config("tiny-50")).eval()
    fbank = torch.randn(2, 1024, 128)
    with torch.inference_mode():
        plain = encoder.encode_segments_detailed(fbank)
    mean = plain.features.mean(dim=0)  # [T, F]
    encoder.semantic_codebook.set_position_mean(mean)
    with torch.inference_mode():
        centred = encoder.encode_segments_detailed(fbank)
    torch.testing.assert_close(centred.features, plain.features - mean)
    assert torch.equal(centred.tokens[..., 0], encoder.semantic_codebook.nearest(plain.features - mean))
    assert not torch.equal(centred.tokens[..., 0], plain.tokens[..., 0])
    assert set(encoder.official_state_dict()) == set(SemantiCodecEncoder(get_config("tiny-50")).official_state_dict())
    assert CENTROIDS_KEY.replace("centroids", "position_mean") in encoder.state_dict()


@pytest.mark.parametrize("token_rate", [100, 50, 25])
def test_the_fbank_acoustic_input_reads_each_token_s_own_fbank_patch(token_rate):
    from dataclasses import replace

    from codec.acoustic import fbank_patches

    torch.manual_seed(0)
    config = replace(get_config(f"tiny-{token_rate}"), acoustic_input="fbank")
    encoder = SemantiCodecEncoder(config).eval()
    fbank = torch.randn(1, 1024, 128)
    patches = fbank_patches(fbank, config.concat_factor)
    assert patches.shape == (1, config.tokens_per_segment, 256 * config.concat_factor)
    with torch.inference_mode():
        out = encoder.encode_segments_detailed(fbank)
    torch.testing.assert_close(out.lstm_input[..., : config.feature_dim], encoder.fbank_projection(patches))
    torch.testing.assert_close(out.lstm_input[..., config.feature_dim:], out.centroids)
    # The same patch content at another place in the window gives the same acoustic input there.
    moved = fbank.clone()
    moved[:, 16:32] = fbank[:, :16]
    with torch.inference_mode():
        again = encoder.acoustic_input_features(moved, out.features)
    steps = 8 // min(config.concat_factor, 2)  # tokens per 16-frame time step
    if config.concat_factor < 4:
        torch.testing.assert_close(again[:, steps: 2 * steps], again[:, :steps])
    assert encoder.acoustic_modules[0] is encoder.fbank_projection
    assert not hasattr(SemantiCodecEncoder(get_config(f"tiny-{token_rate}")), "fbank_projection")


def test_the_fbank_patches_follow_the_audiomae_patch_order():
    from codec.acoustic import fbank_patches

    fbank = torch.zeros(1, 1024, 128)
    for time in range(64):
        for freq in range(8):
            fbank[0, 16 * time: 16 * time + 16, 16 * freq: 16 * freq + 16] = 8 * time + freq
    assert torch.equal(fbank_patches(fbank, 1)[0], torch.arange(512.0)[:, None].expand(512, 256))
    pairs = fbank_patches(fbank, 2)[0, 5]  # token 4t+j = patches (t, 2j), (t, 2j+1): 10 and 11
    assert pairs[:256].unique().tolist() == [10.0] and pairs[256:].unique().tolist() == [11.0]
    blocks = fbank_patches(fbank, 4)[0, 5]  # the 2x2 block (2, 2), (2, 3), (3, 2), (3, 3)
    assert [blocks[256 * i: 256 * (i + 1)].unique().item() for i in range(4)] == [18.0, 19.0, 26.0, 27.0]


def test_acoustic_input_is_checked_and_only_a_departure_from_the_official_input_changes_the_hash():
    from dataclasses import replace

    small, fbank = get_config("small-100"), get_config("small-fbank-100")
    assert fbank.acoustic_input == "fbank" and small.acoustic_input == "audiomae"
    assert replace(fbank, name="x", acoustic_input="audiomae").config_hash() == small.config_hash()
    assert fbank.config_hash() != small.config_hash()
    assert small.config_hash() == "00dcab36f0c5b8c2"  # the shipped codec's, recorded by its LM and token files
    assert CodecConfig.from_dict(fbank.to_dict()) == fbank
    legacy = small.to_dict()
    legacy.pop("acoustic_input")  # a config.json saved before the key existed
    assert CodecConfig.from_dict(legacy).acoustic_input == "audiomae"
    with pytest.raises(ValueError, match="acoustic_input"):
        replace(small, acoustic_input="mel")
