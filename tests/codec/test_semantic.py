"""AudioMAE, patch concatenation and k-means semantic tokens against the official-code fixtures 2 and 3."""

import pytest
import torch
from safetensors.torch import load_file

from codec.config import AudioMAEConfig
from codec.semantic import (
    AudioMAE,
    SemanticCodebook,
    concat_patches,
    nearest_codeword,
)

FIXTURE2_AUDIOMAE = AudioMAEConfig(
    embed_dim=64, depth=12, num_heads=4, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2
)
TINY_AUDIOMAE = AudioMAEConfig(
    embed_dim=8, depth=6, num_heads=2, decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2,
    averaged_blocks=(2, 3),
)


def _weights(tensors: dict, prefix: str) -> dict:
    return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}


@pytest.fixture(scope="module")
def audiomae_fixture(parity_dir):
    return load_file(parity_dir / "audiomae_encoder.safetensors")


@pytest.fixture(scope="module")
def semantic_fixture(parity_dir):
    return load_file(parity_dir / "semantic_tokens.safetensors")


def test_fresh_position_tables_are_the_official_ones(audiomae_fixture):
    torch.manual_seed(0)
    model = AudioMAE(FIXTURE2_AUDIOMAE).model
    assert torch.equal(model.pos_embed, audiomae_fixture["audiomae.model.pos_embed"])
    assert torch.equal(model.decoder_pos_embed, audiomae_fixture["audiomae.model.decoder_pos_embed"])
    assert not model.pos_embed.requires_grad


def test_audiomae_matches_official_features(parity_dir, audiomae_fixture):
    model = AudioMAE(FIXTURE2_AUDIOMAE)
    model.load_state_dict(_weights(audiomae_fixture, "audiomae."), strict=True)
    fbank = load_file(parity_dir / "fbank_frontend.safetensors")["expected.16k_10p24s.fbank"][:, :1024]
    with torch.inference_mode():
        features = model(fbank)
    expected = audiomae_fixture["expected.features"]
    assert features.shape == expected.shape
    assert (features - expected).abs().max().item() <= 2e-5


def test_audiomae_stops_after_last_averaged_block():
    torch.manual_seed(0)
    model = AudioMAE(TINY_AUDIOMAE).model
    fbank = torch.randn(1, 1024, 128)
    with torch.inference_mode():
        before = model(fbank)
        for parameter in model.blocks[4:].parameters():
            parameter.add_(1.0)
        unchanged = model(fbank)
        for parameter in model.blocks[3].parameters():
            parameter.add_(1.0)
        changed = model(fbank)
    assert before.shape == (1, 512, 8)
    assert torch.equal(before, unchanged)
    assert not torch.allclose(before, changed)


@pytest.mark.parametrize("concat_factor", [1, 2, 4])
def test_concat_and_semantic_tokens_match_official(semantic_fixture, concat_factor):
    features = semantic_fixture["input.audiomae_features"]
    concatenated = concat_patches(features, concat_factor)
    if concat_factor == 1:
        assert torch.equal(concatenated, features)
    else:
        assert torch.equal(concatenated, semantic_fixture[f"expected.k{concat_factor}.concat_features"])
    centroids = semantic_fixture[f"input.k{concat_factor}.codebook"]
    codebook = SemanticCodebook(*centroids.shape)
    codebook.load_centroids(centroids)
    ids = codebook.nearest(concatenated)
    assert ids.dtype == torch.int64
    assert torch.equal(ids, semantic_fixture[f"expected.k{concat_factor}.semantic_tokens"])
    assert torch.equal(codebook.lookup(ids), semantic_fixture[f"expected.k{concat_factor}.centroids"])


def test_concat_layout_by_patch_position():
    # Each patch carries its own (time, frequency) coordinates so the layout can be read back.
    time_index, freq_index = torch.meshgrid(torch.arange(64.0), torch.arange(8.0), indexing="ij")
    features = torch.stack([time_index, freq_index], dim=-1).reshape(1, 512, 2)
    pairs = concat_patches(features, 2).reshape(1, 64, 4, 2, 2)
    assert torch.equal(pairs[0, 5, 3, :, 1], torch.tensor([6.0, 7.0]))
    blocks = concat_patches(features, 4).reshape(1, 32, 4, 4, 2)
    token = blocks[0, 3, 1]  # time pair (6, 7), frequency pair (2, 3)
    assert token.tolist() == [[6, 2], [6, 3], [7, 2], [7, 3]]


def test_concat_rejects_bad_input():
    with pytest.raises(ValueError, match="concat_factor"):
        concat_patches(torch.zeros(1, 512, 4), 3)
    with pytest.raises(ValueError, match="512"):
        concat_patches(torch.zeros(1, 500, 4), 2)


def test_nearest_in_blocks_equals_one_block():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 50, 16, generator=generator)
    codebook = torch.randn(100, 16, generator=generator)
    whole = nearest_codeword(x, codebook)
    blocked = nearest_codeword(x, codebook, block_bytes=4 * 100 * 7)  # 7 rows per block
    assert torch.equal(whole, blocked)
    assert torch.equal(whole, torch.cdist(x, codebook[None]).argmin(dim=-1))
    assert torch.equal(
        nearest_codeword(x, codebook, euclidean=True, block_bytes=1), whole
    )


def test_nearest_ties_go_to_first_index():
    codebook = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    x = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    assert nearest_codeword(x, codebook).tolist() == [[0, 0]]


def test_nearest_refuses_nan_and_width_mismatch():
    codebook = SemanticCodebook(4, 3)
    with pytest.raises(ValueError, match="NaN"):
        codebook.nearest(torch.tensor([[[0.0, float("nan"), 1.0]]]))
    with pytest.raises(ValueError, match="width"):
        codebook.nearest(torch.zeros(1, 2, 5))


def test_codebook_rejects_bad_centroids_and_ids():
    codebook = SemanticCodebook(4, 3)
    with pytest.raises(ValueError, match=r"shape \[4, 3\]"):
        codebook.load_centroids(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        codebook.load_centroids(torch.full((4, 3), float("nan")))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        codebook.lookup(torch.tensor([[0, 4]]))


def test_codebook_state_dict_round_trip_and_optional_centroids():
    source = SemanticCodebook(4, 3)
    target = SemanticCodebook(4, 3)
    target.load_state_dict(source.state_dict(), strict=True)
    assert torch.equal(target.centroids, source.centroids)
    kept = target.centroids.clone()
    target.load_state_dict({}, strict=True)  # official checkpoints carry no centroids
    assert torch.equal(target.centroids, kept)


@pytest.mark.parametrize("concat_factor", [1, 2, 4])
def test_tokens_per_time_step_gives_each_tokens_frequency_position(concat_factor):
    from codec.semantic import concat_patches, tokens_per_time_step

    # Patch 8t + f carries its frequency index f; token n must cover position n % P, whose first
    # patch has frequency index (n % P) * min(K, 2).
    frequency = torch.arange(512).remainder(8).float()
    tokens = concat_patches(frequency.reshape(1, 512, 1), concat_factor)[0]
    positions = tokens_per_time_step(concat_factor)
    expected = torch.arange(tokens.shape[0]).remainder(positions) * min(concat_factor, 2)
    assert torch.equal(tokens[:, 0], expected.float())
    with pytest.raises(ValueError, match="concat_factor"):
        tokens_per_time_step(3)


def test_position_centring_is_absent_by_default_and_travels_in_the_state_dict():
    plain = SemanticCodebook(4, 3)
    assert "position_mean" not in plain.state_dict()  # official and shipped codecs: keys and digests unchanged
    features = torch.randn(2, 5, 3)
    assert torch.equal(plain.center(features), features)

    centred = SemanticCodebook(4, 3)
    mean = torch.randn(5, 3)
    centred.set_position_mean(mean)
    torch.testing.assert_close(centred.center(features), features - mean)
    assert torch.equal(centred.nearest(centred.center(features)), nearest_codeword(features - mean, centred.centroids))

    loaded = SemanticCodebook(4, 3)
    loaded.load_state_dict(centred.state_dict(), strict=True)
    assert torch.equal(loaded.position_mean, mean)
    loaded.load_state_dict({}, strict=True)  # an official checkpoint: what was injected stays
    assert torch.equal(loaded.position_mean, mean)
    loaded.load_state_dict(plain.state_dict(), strict=True)  # a codebook fitted without centring
    assert loaded.position_mean is None and torch.equal(loaded.centroids, plain.centroids)


def test_position_centring_refuses_bad_shapes():
    codebook = SemanticCodebook(4, 3)
    with pytest.raises(ValueError, match=r"position_mean must be \[positions, 3\]"):
        codebook.set_position_mean(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="NaN"):
        codebook.set_position_mean(torch.full((5, 3), float("nan")))
    codebook.set_position_mean(torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"segment features \[S, 5, 3\]"):
        codebook.center(torch.zeros(1, 4, 3))
