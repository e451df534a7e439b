"""The latent-diffusion UNet: parity with the official UNetModel (fixture 5), keys, context cache, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codec.config import POSITION_DIM, UNetConfig, official_config
from codec.diffusion.unet import EncodedContext, TokenGrid, UNet, timestep_embedding

PREFIX = "model.diffusion_model."
KEYS_DIR = Path(__file__).resolve().parents[1] / "data" / "checkpoint-keys"
# Fixture 5 constructor: the official layout pattern at reduced width.
FIXTURE_UNET = UNetConfig(model_channels=32, channel_mult=(1, 1), attention_resolutions=(2,), num_head_channels=16)
FIXTURE_CONTEXT_DIM = 256


@pytest.fixture(scope="module")
def fixture5(parity_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(parity_dir / "unet.safetensors")


@pytest.fixture(scope="module")
def fixture_unet(fixture5: dict[str, torch.Tensor]) -> UNet:
    unet = UNet(FIXTURE_UNET, FIXTURE_CONTEXT_DIM).eval()
    unet.load_state_dict({k[len(PREFIX) :]: v for k, v in fixture5.items() if k.startswith(PREFIX)}, strict=True)
    return unet


def test_time_embedding_matches_official(fixture_unet: UNet, fixture5: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        emb = fixture_unet.time_embed(timestep_embedding(fixture5["input.timesteps"], FIXTURE_UNET.model_channels))
    torch.testing.assert_close(emb, fixture5["intermediate.time_embed"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("branch", ["cond", "uncond"])
def test_velocity_matches_official(fixture_unet: UNet, fixture5: dict[str, torch.Tensor], branch: str) -> None:
    with torch.no_grad():
        v = fixture_unet(fixture5["input.x"], fixture5["input.timesteps"], fixture5[f"input.context_{branch}"])
    assert v.shape == fixture5[f"expected.v_{branch}"].shape
    assert (v - fixture5[f"expected.v_{branch}"]).abs().max().item() <= 5e-5


def test_encoded_context_gives_identical_output(fixture_unet: UNet, fixture5: dict[str, torch.Tensor]) -> None:
    x, t, context = fixture5["input.x"], fixture5["input.timesteps"], fixture5["input.context_cond"]
    with torch.no_grad():
        direct = fixture_unet(x, t, context)
        cached = fixture_unet(x, t, fixture_unet.encode_context(context))
    assert torch.equal(direct, cached)


def test_single_items_match_the_batch(fixture_unet: UNet, fixture5: dict[str, torch.Tensor]) -> None:
    x, t, context = fixture5["input.x"], fixture5["input.timesteps"], fixture5["input.context_cond"]
    with torch.no_grad():
        batched = fixture_unet(x, t, context)
        single = torch.cat([fixture_unet(x[i : i + 1], t[i : i + 1], context[i : i + 1]) for i in range(2)])
    assert (batched - single).abs().max().item() <= 5e-5


@pytest.mark.parametrize("config", [FIXTURE_UNET, UNetConfig(model_channels=32, channel_mult=(1, 1, 1),
                                                                 attention_resolutions=(4,), num_head_channels=16)])
def test_guidance_pair_equals_the_doubled_batch(config: UNetConfig, fixture5: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(0)
    unet = UNet(config, FIXTURE_CONTEXT_DIM).eval()
    if config == FIXTURE_UNET:
        unet.load_state_dict({k[len(PREFIX) :]: v for k, v in fixture5.items() if k.startswith(PREFIX)})
    x, t = torch.randn(2, 8, 16, 8), torch.tensor([3, 801])
    encoded = unet.encode_context(torch.randn(4, 16, FIXTURE_CONTEXT_DIM))
    with torch.no_grad():
        paired = unet.forward_guidance_pair(x, t, encoded)
        doubled = unet(torch.cat([x, x]), torch.cat([t, t]), encoded)
    assert paired.shape == (4, 8, 16, 8)
    assert (paired - doubled).abs().max().item() <= 1e-5
    assert (paired[:2] - paired[2:]).abs().max().item() > 1e-3  # the two halves did see different contexts


def test_guidance_pair_needs_a_context_twice_the_batch(small_unet: UNet) -> None:
    encoded = small_unet.encode_context(torch.zeros(3, 3, 20))
    with pytest.raises(ValueError, match="must be twice the latent batch"):
        small_unet.forward_guidance_pair(torch.zeros(2, 8, 8, 8), torch.tensor([1, 2]), encoded)


def _official_unet_shapes(token_rate: int) -> dict[str, tuple[int, ...]]:
    path = KEYS_DIR / f"keys_decoder_{token_rate}.txt"
    if not path.is_file():
        pytest.fail(f"official key listing not found at {path}")
    shapes = {}
    for line in path.read_text().splitlines():
        key, shape, _ = line.split("\t")
        if key.startswith(PREFIX):
            shapes[key[len(PREFIX) :]] = tuple(int(n) for n in shape.strip("()").split(",") if n.strip())
    return shapes


@pytest.mark.parametrize("token_rate", [100, 50, 25])
def test_official_keys_and_shapes(token_rate: int) -> None:
    cfg = official_config(token_rate)
    with torch.device("meta"):
        unet = UNet(cfg.unet, cfg.context_dim)
    ours = {key: tuple(value.shape) for key, value in unet.state_dict().items()}
    assert ours == _official_unet_shapes(token_rate)


def test_fixture_keys_load_strictly(fixture5: dict[str, torch.Tensor]) -> None:
    weights = {k[len(PREFIX) :]: v for k, v in fixture5.items() if k.startswith(PREFIX)}
    assert len(weights) == 458
    unet = UNet(FIXTURE_UNET, FIXTURE_CONTEXT_DIM)
    assert set(unet.state_dict()) == set(weights)


def test_output_shape_for_other_sizes() -> None:
    torch.manual_seed(0)
    cfg = UNetConfig(model_channels=32, channel_mult=(1, 2, 1), attention_resolutions=(2, 4), num_head_channels=32)
    unet = UNet(cfg, context_dim=12).eval()
    with torch.no_grad():
        v = unet(torch.randn(3, 8, 8, 4), torch.tensor([0, 500, 999]), torch.randn(3, 5, 12))
    assert v.shape == (3, 8, 8, 4)
    assert torch.isfinite(v).all()


@pytest.fixture(scope="module")
def small_unet() -> UNet:
    return UNet(FIXTURE_UNET, context_dim=20).eval()


@pytest.mark.parametrize(
    ("x_shape", "timesteps", "context_shape", "message"),
    [
        ((1, 4, 8, 8), torch.tensor([1]), (1, 3, 20), "UNet input must be"),
        ((1, 8, 7, 8), torch.tensor([1]), (1, 3, 20), "multiples of 2"),
        ((1, 8, 8, 8), torch.tensor([1.0]), (1, 3, 20), "timesteps must be an integer tensor"),
        ((2, 8, 8, 8), torch.tensor([1]), (2, 3, 20), "timesteps must be an integer tensor"),
        ((1, 8, 8, 8), torch.tensor([1]), (1, 3, 19), "UNet context must be"),
        ((2, 8, 8, 8), torch.tensor([1, 2]), (1, 3, 20), "context batch 1 does not match"),
    ],
)
def test_bad_inputs_are_named(small_unet: UNet, x_shape, timesteps, context_shape, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small_unet(torch.zeros(x_shape), timesteps, torch.zeros(context_shape))


def test_bad_widths_are_rejected() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        UNet(UNetConfig(model_channels=48, channel_mult=(1,), attention_resolutions=(), num_head_channels=16), 8)


# Aligned conditioning (our small configs only) ------------------------------------------------
ALIGNED_UNET = UNetConfig(model_channels=32, channel_mult=(1, 1), attention_resolutions=(2,), num_head_channels=16,
                          aligned_context_channels=4)


def test_aligned_context_is_absent_from_official_configs() -> None:
    config = official_config(100)
    assert config.unet.aligned_context_channels == 0
    with torch.device("meta"):
        unet = UNet(config.unet, config.context_dim)
    assert not [key for key in unet.state_dict() if key.startswith(("aligned_context", "latent_prior"))]
    assert unet.input_blocks[0][0].in_channels == config.unet.in_channels


@pytest.mark.parametrize("rows", [8, 2])
def test_aligned_context_rows_land_on_their_latent_frames(rows: int) -> None:
    aligned = torch.arange(rows, dtype=torch.float32).repeat(1, 3, 1)  # [1, 3, rows], row i holds i
    x = torch.zeros(1, 8, 4, 2)
    unet = UNet(ALIGNED_UNET, FIXTURE_CONTEXT_DIM)
    joined = unet._with_aligned_context(x, EncodedContext(keys_values=(), batch=1, aligned=aligned))
    assert joined.shape == (1, 11, 4, 2)
    assert torch.equal(joined[:, :8], x)
    # 8 rows -> 4 frames average row pairs; 2 rows -> 4 frames repeat each row twice.
    expected = torch.tensor([0.5, 2.5, 4.5, 6.5]) if rows == 8 else torch.tensor([0.0, 0.0, 1.0, 1.0])
    for channel in range(8, 11):
        for freq in range(2):
            assert torch.equal(joined[0, channel, :, freq], expected)


def test_aligned_context_is_cached_and_changes_the_output() -> None:
    torch.manual_seed(0)
    unet = UNet(ALIGNED_UNET, FIXTURE_CONTEXT_DIM).eval()
    assert unet.input_blocks[0][0].in_channels == 8 + 4
    x, t = torch.randn(2, 8, 8, 4), torch.tensor([10, 500])
    context = torch.randn(2, 16, FIXTURE_CONTEXT_DIM)
    with torch.no_grad():
        direct = unet(x, t, context)
        cached = unet(x, t, unet.encode_context(context))
        unet.aligned_context.weight.mul_(2.0)  # only the aligned path sees this
        changed = unet(x, t, context)
    assert torch.equal(direct, cached)
    assert (direct - changed).abs().max().item() > 1e-4


def test_guidance_pair_with_aligned_context_runs_the_doubled_batch() -> None:
    torch.manual_seed(0)
    unet = UNet(ALIGNED_UNET, FIXTURE_CONTEXT_DIM).eval()
    x, t = torch.randn(1, 8, 8, 4), torch.tensor([10])
    encoded = unet.encode_context(torch.randn(2, 16, FIXTURE_CONTEXT_DIM))
    with torch.no_grad():
        assert torch.equal(unet.forward_guidance_pair(x, t, encoded), unet(torch.cat([x, x]), torch.cat([t, t]), encoded))


# Latent prior (our small configs only) --------------------------------------------------------
PRIOR_UNET = dataclasses.replace(ALIGNED_UNET, latent_prior_width=16)
PRIOR_CONTEXT_DIM = 6 + POSITION_DIM
# 16 rows: 4 time steps x 4 frequency positions; each row covers 2 latent frames x 2 latent frequency rows
PRIOR_GRID = TokenGrid(positions=4, steps=4, latent_time=8, latent_freq=8)


def test_latent_prior_puts_each_rows_estimate_on_the_block_its_token_covers() -> None:
    torch.manual_seed(0)
    unet = UNet(PRIOR_UNET, PRIOR_CONTEXT_DIM, PRIOR_GRID).eval()
    assert unet.input_blocks[0][0].in_channels == 8 + 4 + 8
    context = torch.randn(1, 16, PRIOR_CONTEXT_DIM)
    moved = context.clone()
    moved[0, 4 * 2 + 1, :6] += 1.0  # row 9: time step 2, frequency position 1 (features only)
    with torch.no_grad():
        estimate = unet.estimate_latents(context)
        joined = unet._with_aligned_context(torch.zeros(1, 8, 8, 8), unet.encode_context(context))
        spread = (unet.estimate_latents(moved) - estimate).abs().sum(dim=(0, 1))  # [frames, freq rows]
        mixer = unet.latent_prior.net[2]  # without the 3x3 neighbourhood, a row reaches its own block only
        mixer.weight.zero_()
        mixer.weight[:, :, 1, 1] = torch.eye(16)
        own = (unet.estimate_latents(moved) - unet.estimate_latents(context)).abs().sum(dim=(0, 1))
    assert estimate.shape == (1, 8, 8, 8) and torch.equal(joined[:, 12:], estimate)
    changed = (own > 0).nonzero().tolist()
    assert sorted({frame for frame, _ in changed}) == [4, 5] and sorted({row for _, row in changed}) == [2, 3]
    # the 3x3 neighbourhood: time steps 1-3 (frames 2-7), frequency positions 0-2 (rows 0-5)
    assert spread[:2].sum() == 0 and spread[:, 6:].sum() == 0 and spread[2:, :6].min() > 0
    assert torch.equal(unet.estimate_latents(context.index_fill(2, torch.arange(6, PRIOR_CONTEXT_DIM), 9.0)),
                       unet.estimate_latents(context))  # the positions are the grid: the prior ignores them


def test_latent_prior_changes_the_output_and_guidance_pair_matches() -> None:
    torch.manual_seed(0)
    unet = UNet(PRIOR_UNET, PRIOR_CONTEXT_DIM, PRIOR_GRID).eval()
    x, t = torch.randn(1, 8, 8, 8), torch.tensor([10])
    context = torch.randn(2, 16, PRIOR_CONTEXT_DIM)
    encoded = unet.encode_context(context)
    with torch.no_grad():
        pair = unet.forward_guidance_pair(x, t, encoded)
        assert torch.equal(pair, unet(torch.cat([x, x]), torch.cat([t, t]), encoded))
        unet.latent_prior.net[-1].bias.add_(1.0)  # only the prior path sees this
        assert (unet(torch.cat([x, x]), torch.cat([t, t]), context) - pair).abs().max().item() > 1e-4


def test_a_decoder_gaining_a_latent_prior_keeps_its_tokens_identity() -> None:
    config = official_config(100)
    grown = dataclasses.replace(config, unet=dataclasses.replace(config.unet, latent_prior_width=64))
    assert grown.config_hash() == config.config_hash()  # token files and LMs made before stay valid
    wider = dataclasses.replace(config, unet=dataclasses.replace(config.unet, aligned_context_channels=8))
    assert wider.config_hash() != config.config_hash()


def test_residual_prior_blocks_start_as_the_identity_and_then_reach_further_in_time() -> None:
    torch.manual_seed(0)
    plain = UNet(PRIOR_UNET, PRIOR_CONTEXT_DIM, PRIOR_GRID).eval()
    deeper = UNet(dataclasses.replace(PRIOR_UNET, latent_prior_blocks=2), PRIOR_CONTEXT_DIM, PRIOR_GRID).eval()
    missing, unexpected = deeper.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".blocks." in key for key in missing)
    assert [block.net[3].dilation for block in deeper.latent_prior.blocks] == [(1, 1), (2, 1)]
    context = torch.randn(1, 16, PRIOR_CONTEXT_DIM)
    moved = context.clone()
    moved[0, 0, :6] += 1.0  # time step 0, frequency position 0
    with torch.no_grad():
        assert torch.equal(deeper.estimate_latents(context), plain.estimate_latents(context))
        reach = lambda unet: (unet.estimate_latents(moved) - unet.estimate_latents(context)).abs().sum(dim=(0, 1, 3))
        assert reach(plain)[4:].sum() == 0  # the 3x3 mixer: time steps 0-1 (frames 0-3) only
        for block in deeper.latent_prior.blocks:
            torch.nn.init.normal_(block.net[-1].weight, std=0.1)
        assert reach(deeper)[4:].sum() > 0  # dilated blocks carry a token further along time


def test_latent_prior_blocks_need_a_prior() -> None:
    with pytest.raises(ValueError, match="latent_prior_blocks > 0 needs a latent prior"):
        UNet(dataclasses.replace(ALIGNED_UNET, latent_prior_blocks=1), PRIOR_CONTEXT_DIM, PRIOR_GRID)
    config = official_config(100)
    deeper = dataclasses.replace(config, unet=dataclasses.replace(config.unet, latent_prior_width=64,
                                                                  latent_prior_blocks=3))
    assert deeper.config_hash() == config.config_hash()  # the tokens mean what they meant


def test_latent_prior_needs_its_grid() -> None:
    with pytest.raises(ValueError, match="needs the token_grid"):
        UNet(PRIOR_UNET, PRIOR_CONTEXT_DIM)
    with pytest.raises(ValueError, match="do not tile"):
        TokenGrid(positions=3, steps=4, latent_time=8, latent_freq=8)
    unet = UNet(PRIOR_UNET, PRIOR_CONTEXT_DIM, PRIOR_GRID)
    with pytest.raises(ValueError, match="makes 8 x 8 latents, got \\(8, 4\\)"):
        unet(torch.zeros(1, 8, 8, 4), torch.tensor([1]), torch.zeros(1, 16, PRIOR_CONTEXT_DIM))
    with pytest.raises(ValueError, match="reads 16 conditioning rows, got 12"):
        unet.estimate_latents(torch.zeros(1, 12, PRIOR_CONTEXT_DIM))
    with pytest.raises(ValueError, match="no latent prior"):
        UNet(ALIGNED_UNET, FIXTURE_CONTEXT_DIM).estimate_latents(torch.zeros(1, 16, FIXTURE_CONTEXT_DIM))
