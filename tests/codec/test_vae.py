"""AutoencoderKL: parity with the official decoder (fixtures 7 and 6), key layout, round trip, errors."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from codec.config import VAEConfig, VocoderConfig
from codec.vae import AutoencoderKL

PARITY_DIR = Path(__file__).resolve().parents[1] / "data" / "parity"
KEYS_DIR = Path(__file__).resolve().parents[1] / "data" / "checkpoint-keys"
PREFIX = "first_stage_model."
TINY_VAE = VAEConfig(ch=32, ch_mult=(1, 1, 2))


def _fixture(name: str) -> Path:
    path = PARITY_DIR / name
    if not path.is_file():
        pytest.fail(f"parity fixture {path} not found")
    return path


def _load_submodule(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    assert weights, f"no weights under {prefix}"
    module.load_state_dict(weights, strict=True)


def _fixture_vae() -> tuple[AutoencoderKL, dict[str, torch.Tensor]]:
    """The fixture-7 VAE (decoder + post_quant_conv) with the fixture-8 vocoder attached."""
    path = _fixture("vae_decoder.safetensors")
    with safe_open(str(path), "pt") as handle:
        ddconfig = json.loads(handle.metadata()["fixture_meta"])["constructor"]["AutoencoderKL"]["ddconfig"]
    cfg = VAEConfig(
        ch=ddconfig["ch"], ch_mult=tuple(ddconfig["ch_mult"]), num_res_blocks=ddconfig["num_res_blocks"],
        z_channels=ddconfig["z_channels"], mel_bins=ddconfig["mel_bins"],
    )
    vae = AutoencoderKL(cfg, VocoderConfig(upsample_initial_channel=64)).eval()
    tensors = load_file(str(path))
    _load_submodule(vae.decoder, tensors, PREFIX + "decoder.")
    _load_submodule(vae.post_quant_conv, tensors, PREFIX + "post_quant_conv.")
    _load_submodule(vae.vocoder, load_file(str(_fixture("hifigan_vocoder.safetensors"))), PREFIX + "vocoder.")
    return vae, tensors


def _unscale(latent: torch.Tensor, scale_factor: torch.Tensor) -> torch.Tensor:
    # Official: multiply by the float32 reciprocal of scale_factor (dividing can differ by 1 ulp).
    return (1.0 / scale_factor.float()) * latent


def test_fixture7_decode_matches_official():
    vae, tensors = _fixture_vae()
    z = _unscale(tensors["input.latent"], tensors["scale_factor"])
    with torch.no_grad():
        post_quant = vae.post_quant_conv(z)
        mel = vae.decode(z)
    assert (post_quant - tensors["intermediate.post_quant_conv_out"]).abs().max() <= 1e-6
    expected = tensors["expected.mel"]
    assert mel.shape == expected.shape == (1, 1, 128, 64)
    assert (mel - expected).abs().max() <= 5e-5


def test_fixture6_latent_to_waveform_chain():
    """decode_first_stage + mel_spectrogram_to_waveform of the official sampler run (fixture 6)."""
    vae, _ = _fixture_vae()
    run = load_file(str(_fixture("ddim_sampler.safetensors")))
    with torch.no_grad():
        mel = vae.decode(_unscale(run["expected.final_latent"], run["scale_factor"]))
        waveform = vae.mel_to_waveform(mel)
    assert (mel - run["expected.mel"]).abs().max() <= 1e-4
    assert waveform.shape == run["expected.waveform"].shape == (1, 1, 160 * 128 + 32)
    assert (waveform - run["expected.waveform"]).abs().max() <= 2e-5


def _official_listing() -> dict[str, tuple[int, ...]]:
    path = KEYS_DIR / "keys_decoder_100.txt"
    if not path.is_file():
        pytest.fail(f"checkpoint key listing {path} not found")
    shapes = {}
    for line in path.read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        if key.startswith(PREFIX):
            shapes[key[len(PREFIX):]] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return shapes


def test_official_key_layout_and_shapes():
    official = _official_listing()
    with torch.device("meta"):
        vae = AutoencoderKL(VAEConfig(), VocoderConfig())
    ours = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    assert set(ours) == set(official)
    assert ours == official
    decoder_params = sum(p.numel() for p in vae.decoder.parameters())
    encoder_params = sum(p.numel() for p in vae.encoder.parameters())
    assert (decoder_params, encoder_params) == (32_981_505, 22_395_024)


def test_fixture_keys_cover_exactly_the_inference_decoder():
    """The fixture omits only the encoder, quant_conv and (separately stored) vocoder keys."""
    vae, tensors = _fixture_vae()
    ours = {k: v.shape for k, v in vae.state_dict().items()}
    fixture = {k[len(PREFIX):]: v.shape for k, v in tensors.items() if k.startswith(PREFIX)}
    assert all(ours[k] == shape for k, shape in fixture.items())
    missing = {k.split(".")[0] for k in set(ours) - set(fixture)}
    assert missing == {"encoder", "quant_conv", "vocoder"}


def test_encode_decode_round_trip_shapes_and_seeded_sampling():
    torch.manual_seed(0)
    vae = AutoencoderKL(TINY_VAE, VocoderConfig(upsample_initial_channel=32)).eval()
    mel = torch.randn(2, 1, 32, 64)
    with torch.no_grad():
        posterior = vae.encode(mel)
        assert posterior.mean.shape == posterior.logvar.shape == (2, 8, 8, 16)
        first = posterior.sample(torch.Generator().manual_seed(3))
        again = posterior.sample(torch.Generator().manual_seed(3))
        other = posterior.sample(torch.Generator().manual_seed(4))
        assert torch.equal(first, again) and not torch.equal(first, other)
        assert torch.equal(posterior.mode(), posterior.mean)
        assert posterior.kl().shape == (2,) and bool((posterior.kl() >= 0).all())
        reconstruction, _ = vae(mel, generator=torch.Generator().manual_seed(3))
        assert torch.equal(reconstruction, vae.decode(first))
        assert reconstruction.shape == mel.shape
        waveform = vae.mel_to_waveform(reconstruction)
    assert waveform.shape == (2, 1, 160 * 32 + 32)


def test_rejects_bad_inputs():
    vae = AutoencoderKL(TINY_VAE, VocoderConfig(upsample_initial_channel=32))
    with pytest.raises(ValueError, match="latent"):
        vae.decode(torch.zeros(1, 4, 8, 16))
    with pytest.raises(ValueError, match="encoder input"):
        vae.encode(torch.zeros(1, 32, 64))
    with pytest.raises(ValueError, match="divisible"):
        vae.encode(torch.zeros(1, 1, 30, 64))
    with pytest.raises(ValueError, match="mel must be"):
        vae.mel_to_waveform(torch.zeros(1, 2, 16, 64))
    with pytest.raises(ValueError, match="GroupNorm"):
        AutoencoderKL(VAEConfig(ch=16), VocoderConfig())
    with pytest.raises(ValueError, match="num_mels"):
        AutoencoderKL(TINY_VAE, VocoderConfig(num_mels=80))


def test_bf16_decode_runs_channels_last_and_stays_close_to_float32():
    torch.manual_seed(0)
    vae = AutoencoderKL(TINY_VAE, VocoderConfig(upsample_initial_channel=32)).eval()
    z = torch.randn(2, 8, 8, 16)
    seen = []
    hook = vae.post_quant_conv.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        exact = vae.decode(z)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = vae.decode(z)
    hook.remove()
    assert seen[0].is_contiguous() and seen[1].is_contiguous(memory_format=torch.channels_last)
    assert fast.shape == exact.shape
    assert float((fast.float() - exact).norm() / exact.norm()) < 5e-2
