"""The latent-diffusion decoder: official key set, the recorded official run (fixtures 5-8), seeding,
guidance batching and input errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codec.config import (
    AudioMAEConfig,
    CodecConfig,
    DiffusionConfig,
    UNetConfig,
    VAEConfig,
    VocoderConfig,
    official_config,
)
from codec.decoder import LatentDiffusionDecoder
from codec.diffusion.conditioning import build_context, unconditional_context
from codec.diffusion.samplers import ReplayedNoise

KEYS_DIR = Path(__file__).resolve().parents[1] / "data" / "checkpoint-keys"
ROLE_PREFIXES = ("input.", "expected.", "intermediate.")

# The reduced LatentDiffusion of fixture 6: K=4 with F=32 (context 256), latent 8 x 32 x 16,
# fixture 5's UNet, fixture 7's VAE and fixture 8's vocoder.
FIXTURE_CONFIG = CodecConfig(
    name="parity-fixture-6",
    token_rate=25,
    audiomae=AudioMAEConfig(embed_dim=8),
    unet=UNetConfig(model_channels=32, channel_mult=(1, 1), attention_resolutions=(2,), num_head_channels=16),
    vae=VAEConfig(ch=32, ch_mult=(1, 1, 2)),
    vocoder=VocoderConfig(upsample_initial_channel=64),
    diffusion=DiffusionConfig(latent_time=32),
)


def _official_shapes(token_rate: int) -> dict[str, tuple[tuple[int, ...], str]]:
    path = KEYS_DIR / f"keys_decoder_{token_rate}.txt"
    if not path.is_file():
        pytest.fail(f"official key listing not found at {path}")
    listing = {}
    for line in path.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        if not key.startswith("model_ema."):
            listing[key] = (tuple(int(n) for n in shape.strip("()").split(",") if n.strip()), dtype)
    return listing


@pytest.mark.parametrize("token_rate", [100, 50, 25])
def test_state_dict_matches_official_checkpoint(token_rate: int) -> None:
    with torch.device("meta"):
        decoder = LatentDiffusionDecoder(official_config(token_rate))
    ours = {key: (tuple(value.shape), str(value.dtype)) for key, value in decoder.state_dict().items()}
    assert ours == _official_shapes(token_rate)


@pytest.fixture(scope="module")
def fixture6(parity_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(parity_dir / "ddim_sampler.safetensors")


@pytest.fixture(scope="module")
def fixture_decoder(parity_dir: Path) -> LatentDiffusionDecoder:
    weights = {}
    for name in ("unet", "ddim_sampler", "vae_decoder", "hifigan_vocoder"):
        tensors = load_file(parity_dir / f"{name}.safetensors")
        weights.update({k: v for k, v in tensors.items() if not k.startswith(ROLE_PREFIXES)})
    decoder = LatentDiffusionDecoder(FIXTURE_CONFIG).eval()
    result = decoder.load_state_dict(weights, strict=False)
    # The fixtures leave out only the parts inference never runs.
    assert not result.unexpected_keys
    assert {k.split(".")[1] for k in result.missing_keys} == {"encoder", "quant_conv"}
    assert decoder.scale_factor.item() == pytest.approx(1.7)
    return decoder


def test_recorded_official_run(fixture_decoder: LatentDiffusionDecoder, fixture6: dict[str, torch.Tensor]) -> None:
    features = fixture6["input.quantized_feature"]
    steps, predictions = [], []
    latent = fixture_decoder.sample_latents(
        features,
        steps=10,
        cfg_scale=2.0,
        eta=1.0,
        noise=ReplayedNoise(fixture6["input.x_T"], fixture6["input.step_noise"]),
        on_step=lambda i, x, x0: (steps.append(x.clone()), predictions.append(x0.clone())),
    )
    assert len(steps) == 10
    assert (torch.stack(steps) - fixture6["expected.x_after_step"]).abs().max().item() <= 1e-4
    assert (predictions[0] - fixture6["expected.pred_x0_step0"]).abs().max().item() <= 1e-4
    assert (latent - fixture6["expected.final_latent"]).abs().max().item() <= 1e-4
    mel = fixture_decoder.latents_to_mel(latent)
    assert mel.shape == (1, 1, 128, 64)
    assert (mel - fixture6["expected.mel"]).abs().max().item() <= 1e-4
    waveform = fixture_decoder.first_stage_model.mel_to_waveform(mel)
    assert waveform.shape == (1, 1, 160 * 128 + 32)
    assert (waveform - fixture6["expected.waveform"]).abs().max().item() <= 2e-5


def test_first_step_velocities(fixture_decoder: LatentDiffusionDecoder, fixture6: dict[str, torch.Tensor]) -> None:
    features = fixture6["input.quantized_feature"]
    x_T, t = fixture6["input.x_T"], torch.tensor([901])
    with torch.no_grad():
        v_uncond = fixture_decoder.unet(x_T, t, unconditional_context(1, 128, 64))
        v_cond = fixture_decoder.unet(x_T, t, build_context(features))
        guided = fixture_decoder.velocity_model(features, 2.0)(x_T, t)
    assert (v_uncond - fixture6["expected.v_uncond_step0"]).abs().max().item() <= 5e-5
    assert (v_cond - fixture6["expected.v_cond_step0"]).abs().max().item() <= 5e-5
    expected = fixture6["expected.v_uncond_step0"] + 2.0 * (
        fixture6["expected.v_cond_step0"] - fixture6["expected.v_uncond_step0"]
    )
    assert (guided - expected).abs().max().item() <= 1e-4


def test_seeded_decode_reproduces_the_official_waveform(
    fixture_decoder: LatentDiffusionDecoder, fixture6: dict[str, torch.Tensor]
) -> None:
    # The official run was seeded with torch.manual_seed(1234): a generator seeded alike draws the same.
    waveform = fixture_decoder.decode_windows(
        fixture6["input.quantized_feature"], steps=10, generators=[torch.Generator().manual_seed(1234)]
    )
    assert (waveform - fixture6["expected.waveform"]).abs().max().item() <= 2e-5


@pytest.fixture(scope="module")
def random_decoder() -> LatentDiffusionDecoder:
    torch.manual_seed(0)
    return LatentDiffusionDecoder(FIXTURE_CONFIG).eval()


def _windows(count: int, seed: int = 5) -> torch.Tensor:
    features = torch.randn(count, 128, 64, generator=torch.Generator().manual_seed(seed))
    features[:, 100:] = -1.0  # the padding rows of a short last window
    return features


def test_batch_equals_windows_decoded_alone(random_decoder: LatentDiffusionDecoder) -> None:
    features = _windows(2)

    def generators(*seeds: int) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in seeds]

    batch = random_decoder.sample_latents(features, steps=2, generators=generators(21, 22))
    alone = [
        random_decoder.sample_latents(features[i : i + 1], steps=2, generators=generators(seed))
        for i, seed in enumerate((21, 22))
    ]
    assert (batch - torch.cat(alone)).abs().max().item() <= 1e-4
    assert not torch.allclose(alone[0], alone[1])


def test_guidance_scale_one_runs_only_the_conditional_pass(random_decoder: LatentDiffusionDecoder) -> None:
    features = _windows(2)
    batch_sizes = []
    # The output layer ends every UNet evaluation, whichever entry point ran it.
    hook = random_decoder.unet.out.register_forward_hook(lambda module, args, out: batch_sizes.append(out.shape[0]))
    try:
        random_decoder.sample_latents(features, steps=2, cfg_scale=1.0, generators=None)
        assert batch_sizes == [2, 2]
        batch_sizes.clear()
        random_decoder.sample_latents(features, steps=2, cfg_scale=3.0)
        assert batch_sizes == [4, 4]
    finally:
        hook.remove()
    x, t = torch.randn(2, 8, 32, 16), torch.tensor([500, 500])
    with torch.no_grad():
        unguided = random_decoder.velocity_model(features, 1.0)(x, t)
        conditional = random_decoder.unet(x, t, build_context(features))
    assert torch.equal(unguided, conditional)


def test_decode_windows_output_length(random_decoder: LatentDiffusionDecoder) -> None:
    waveform = random_decoder.decode_windows(
        _windows(1), steps=1, sampler="dpmpp2m", generators=[torch.Generator().manual_seed(0)]
    )
    assert waveform.shape == (1, 1, 160 * 4 * 32 + 32)
    assert waveform.dtype == torch.float32 and torch.isfinite(waveform).all()
    assert random_decoder.latent_shape == (8, 32, 16)


def test_kept_samples_are_exact_and_the_rest_zero(random_decoder: LatentDiffusionDecoder) -> None:
    features = _windows(2)
    options = dict(steps=1, sampler="dpmpp2m")
    full = random_decoder.decode_windows(features, generators=[torch.Generator().manual_seed(i) for i in (0, 1)],
                                         **options)
    kept = random_decoder.decode_windows(features, generators=[torch.Generator().manual_seed(i) for i in (0, 1)],
                                         keep_samples=[10**6, 3000], **options)
    assert kept.shape == full.shape == (2, 1, random_decoder.window_samples)
    assert (kept[0] - full[0]).abs().max().item() <= 1e-6
    assert (kept[1, :, :3000] - full[1, :, :3000]).abs().max().item() <= 1e-6
    assert not kept[1, :, 3000:].any()
    with pytest.raises(ValueError, match="keep_samples has 1 entries for 2 windows"):
        random_decoder.decode_windows(features, keep_samples=[5], **options)


@pytest.mark.parametrize(
    ("features", "options", "message"),
    [
        (torch.zeros(1, 127, 64), {}, r"must be \[batch, 128 tokens, 64\]"),
        (torch.zeros(1, 128, 63), {}, r"must be \[batch, 128 tokens, 64\]"),
        (torch.zeros(128, 64), {}, r"must be \[batch, 128 tokens, 64\]"),
        (torch.zeros(1, 128, 64, dtype=torch.int64), {}, "must be floating point"),
        (torch.zeros(1, 128, 64), {"sampler": "plms"}, "sampler must be one of ddim, dpmpp2m, prior, got 'plms'"),
        (torch.zeros(1, 128, 64), {"sampler": "prior"}, "'prior' needs a UNet with a latent prior"),
        (torch.zeros(1, 128, 64), {"steps": 0}, "sampling steps must be between 1 and 1000"),
        (torch.zeros(1, 128, 64), {"generators": []}, "got 0 generators for 1 windows"),
    ],
)
def test_bad_decoder_inputs_are_named(
    random_decoder: LatentDiffusionDecoder, features: torch.Tensor, options: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        random_decoder.decode_windows(features, **options)
