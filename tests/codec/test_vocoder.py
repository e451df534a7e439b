"""HiFi-GAN generator: parity with the official Generator_old (fixture 8), key layout, shapes, errors."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from codec.config import VocoderConfig
from codec.vocoder import HiFiGAN

PARITY_DIR = Path(__file__).resolve().parents[1] / "data" / "parity"
KEYS_DIR = Path(__file__).resolve().parents[1] / "data" / "checkpoint-keys"
PREFIX = "first_stage_model.vocoder."


def _fixture(name: str) -> Path:
    path = PARITY_DIR / name
    if not path.is_file():
        pytest.fail(f"parity fixture {path} not found")
    return path


def _official_listing(prefix: str) -> dict[str, tuple[int, ...]]:
    path = KEYS_DIR / "keys_decoder_100.txt"
    if not path.is_file():
        pytest.fail(f"checkpoint key listing {path} not found")
    shapes = {}
    for line in path.read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        if key.startswith(prefix):
            shapes[key[len(prefix):]] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return shapes


def _fixture_vocoder() -> tuple[HiFiGAN, dict[str, torch.Tensor]]:
    path = _fixture("hifigan_vocoder.safetensors")
    with safe_open(str(path), "pt") as handle:
        constructor = json.loads(handle.metadata()["fixture_meta"])["constructor"]
    cfg = VocoderConfig(
        num_mels=constructor["num_mels"],
        upsample_rates=tuple(constructor["upsample_rates"]),
        upsample_kernel_sizes=tuple(constructor["upsample_kernel_sizes"]),
        upsample_initial_channel=constructor["upsample_initial_channel"],
        resblock_kernel_sizes=tuple(constructor["resblock_kernel_sizes"]),
        resblock_dilation_sizes=tuple(tuple(d) for d in constructor["resblock_dilation_sizes"]),
    )
    tensors = load_file(str(path))
    weights = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    vocoder = HiFiGAN(cfg).eval()
    vocoder.load_state_dict(weights, strict=True)
    return vocoder, tensors


def test_fixture8_waveform_matches_official():
    vocoder, tensors = _fixture_vocoder()
    log_mel = tensors["input.log_mel"]
    with torch.no_grad():
        conv_pre = vocoder.conv_pre(log_mel)
        waveform = vocoder(log_mel)
    expected = tensors["expected.waveform"]
    assert waveform.shape == expected.shape == (1, 1, 160 * log_mel.shape[-1] + 32)
    assert vocoder.output_length(log_mel.shape[-1]) == expected.shape[-1]
    assert (conv_pre - tensors["intermediate.conv_pre_out"]).abs().max() <= 1e-5
    assert (waveform - expected).abs().max() <= 1e-5


def test_official_key_layout_and_shapes():
    official = _official_listing(PREFIX)
    with torch.device("meta"):
        vocoder = HiFiGAN(VocoderConfig())
    ours = {k: tuple(v.shape) for k, v in vocoder.state_dict().items()}
    assert ours == official
    assert vocoder.hop_length == 160


def test_lengths_and_batch_independence():
    torch.manual_seed(0)
    vocoder = HiFiGAN(VocoderConfig(upsample_initial_channel=32)).eval()
    mel = torch.randn(2, 64, 7)
    with torch.no_grad():
        both = vocoder(mel)
        second = vocoder(mel[1:])
    assert both.shape == (2, 1, 160 * 7 + 32)
    assert both.abs().max() <= 1.0
    assert torch.allclose(both[1:], second, atol=1e-6)


@pytest.mark.parametrize("shape", [(64, 10), (1, 80, 10), (1, 1, 64, 10)])
def test_rejects_wrong_shape(shape):
    vocoder = HiFiGAN(VocoderConfig(upsample_initial_channel=32))
    with pytest.raises(ValueError, match="mel bins"):
        vocoder(torch.zeros(shape))


def test_rejects_bad_config():
    with pytest.raises(ValueError, match="divisible"):
        HiFiGAN(VocoderConfig(upsample_initial_channel=48))


@pytest.mark.parametrize("keep", [1, 3000, 16000])
def test_context_frames_bound_what_a_cropped_mel_changes(keep: int) -> None:
    torch.manual_seed(0)
    vocoder = HiFiGAN(VocoderConfig(upsample_initial_channel=32)).eval()  # official kernels and rates
    mel = torch.randn(1, 64, 200)
    needed = -(-keep // vocoder.hop_length) + vocoder.context_frames
    with torch.no_grad():
        full = vocoder(mel)[..., :keep]
        cropped = vocoder(mel[..., :needed])[..., :keep]
        short = vocoder(mel[..., : needed - vocoder.context_frames + 2])[..., :keep]
    assert (cropped - full).abs().max().item() <= 1e-6
    assert (short - full).abs().max().item() > 1e-5  # too little context does change the kept samples


@pytest.mark.parametrize("conv", [
    torch.nn.Conv1d(8, 6, 7, padding=9, dilation=3),
    torch.nn.Conv1d(8, 6, 3, stride=2, padding=1),
    torch.nn.ConvTranspose1d(8, 4, 16, 5, padding=(16 - 5) // 2),
    torch.nn.ConvTranspose1d(8, 4, 4, 2, padding=1, output_padding=1),
])
def test_convs_run_as_channels_last_2d_give_the_1d_result(conv):
    from codec.vocoder import _conv

    torch.manual_seed(0)
    x = torch.randn(2, 8, 50)
    with torch.no_grad():
        expected = conv(x)
        got = _conv(conv, x.unsqueeze(2).contiguous(memory_format=torch.channels_last))
    assert got.shape == (2, expected.shape[1], 1, expected.shape[2])
    torch.testing.assert_close(got.squeeze(2), expected, rtol=0, atol=1e-5)


def test_istft_vocoder_lengths_match_hifigan_and_context_bounds_a_crop() -> None:
    from codec.config import ISTFTVocoderConfig
    from codec.vocoder import ISTFTVocoder, build_vocoder

    torch.manual_seed(0)
    cfg = ISTFTVocoderConfig(dim=32, intermediate_dim=64, num_blocks=2)
    vocoder = build_vocoder(cfg).eval()
    assert isinstance(vocoder, ISTFTVocoder)
    hifigan = HiFiGAN(VocoderConfig(upsample_initial_channel=32))
    assert vocoder.output_length(1024) == hifigan.output_length(1024) == 163872
    mel = torch.randn(2, 64, 120)
    keep = 5000
    needed = -(-keep // vocoder.hop_length) + vocoder.context_frames
    with torch.no_grad():
        full = vocoder(mel)
        cropped = vocoder(mel[..., :needed])[..., :keep]
        short = vocoder(mel[..., : needed - vocoder.context_frames + 1])[..., :keep]
    assert full.shape == (2, 1, vocoder.output_length(120)) and full.dtype == torch.float32
    assert (cropped - full[..., :keep]).abs().max().item() <= 1e-6
    assert (short - full[..., :keep]).abs().max().item() > 1e-6


def test_istft_vocoder_under_bf16_autocast_returns_float32_close_to_float32() -> None:
    from codec.config import ISTFTVocoderConfig
    from codec.vocoder import ISTFTVocoder

    torch.manual_seed(0)
    vocoder = ISTFTVocoder(ISTFTVocoderConfig(dim=32, intermediate_dim=64, num_blocks=2)).eval()
    mel = torch.randn(1, 64, 50) - 4
    with torch.no_grad():
        exact = vocoder(mel)
        with torch.autocast("cpu", torch.bfloat16):
            fast = vocoder(mel)
    assert fast.dtype == torch.float32
    assert (fast - exact).norm() / exact.norm() < 0.1


def test_istft_vocoder_rejects_bad_config_and_input() -> None:
    from codec.config import ISTFTVocoderConfig
    from codec.vocoder import ISTFTVocoder

    with pytest.raises(ValueError, match="n_fft"):
        ISTFTVocoderConfig(n_fft=200)
    with pytest.raises(ValueError, match="64 mel bins"):
        ISTFTVocoder(ISTFTVocoderConfig(dim=16, intermediate_dim=16, num_blocks=1))(torch.zeros(1, 80, 10))


def test_codec_config_with_istft_vocoder_round_trips_and_official_hash_is_unchanged() -> None:
    from codec.config import CodecConfig, ISTFTVocoderConfig, get_config

    small = get_config("small-100")
    assert isinstance(small.vocoder, ISTFTVocoderConfig)
    assert CodecConfig.from_dict(small.to_dict()) == small
    # The official dict has no vocoder ``kind``: its identity (token files, LM folders) is unchanged.
    assert "kind" not in get_config("official-100-16384").to_dict()["vocoder"]
    assert get_config("official-100-16384").config_hash() == "0d8a6534e001acce"


def test_a_codec_with_the_istft_vocoder_saves_and_loads(tmp_path) -> None:
    from dataclasses import replace

    from codec.config import ISTFTVocoderConfig, get_config
    from codec.model import SemantiCodec

    torch.manual_seed(0)
    config = replace(get_config("tiny-100"), vocoder=ISTFTVocoderConfig(dim=16, intermediate_dim=32, num_blocks=1))
    codec = SemantiCodec(config).eval()
    loaded = SemantiCodec.from_pretrained(codec.save_pretrained(tmp_path / "codec"))  # built on the meta device
    assert loaded.config == config
    mel = torch.randn(1, 64, 40) - 4
    with torch.no_grad():
        assert torch.equal(loaded.decoder.first_stage_model.vocoder(mel), codec.decoder.first_stage_model.vocoder(mel))


def test_istft_vocoder_turns_a_steady_mel_into_a_hop_periodic_wave_unless_dithered() -> None:
    """Identical frames get identical phases, so the output repeats every hop (the frame-rate buzz);
    the dither makes the frames differ, and it is the same for every item and every call."""
    from codec.config import ISTFTVocoderConfig
    from codec.vocoder import ISTFTVocoder

    torch.manual_seed(0)
    plain = ISTFTVocoder(ISTFTVocoderConfig(dim=32, intermediate_dim=64, num_blocks=2)).eval()
    dithered = ISTFTVocoder(ISTFTVocoderConfig(dim=32, intermediate_dim=64, num_blocks=2, dither=0.02)).eval()
    dithered.load_state_dict(plain.state_dict())
    steady = (torch.randn(1, 64, 1) - 4).expand(2, 64, 300).contiguous()
    hop = plain.hop_length
    with torch.no_grad():
        periodic = plain(steady)[0, 0, 20 * hop : 270 * hop]
        wave = dithered(steady)
        alone = dithered(steady[:1])
    assert periodic.abs().max() > 0
    torch.testing.assert_close(periodic[hop:], periodic[:-hop], rtol=0, atol=1e-5 * periodic.abs().max().item())
    interior = wave[0, 0, 20 * hop : 270 * hop]
    # An untrained network barely reacts to 0.02 nepers (a trained one turns it into other phases);
    # the point is that the frames now differ at all.
    assert (interior[hop:] - interior[:-hop]).norm() > 1e-3 * interior.norm()
    torch.testing.assert_close(wave[0], wave[1], rtol=0, atol=0)
    torch.testing.assert_close(alone[0], wave[0], rtol=1e-5, atol=1e-6)


def test_dither_pattern_is_fixed_and_a_shorter_one_is_a_prefix() -> None:
    from codec.vocoder import DITHER_BLOCK_FRAMES, dither_pattern

    long = dither_pattern(64, 3 * DITHER_BLOCK_FRAMES + 5)
    short = dither_pattern(64, DITHER_BLOCK_FRAMES + 7)
    assert long.shape == (64, 3 * DITHER_BLOCK_FRAMES + 5) and long.dtype == torch.float32
    torch.testing.assert_close(short, long[:, : short.shape[1]], rtol=0, atol=0)
    assert 0.9 < long.std().item() < 1.1


def test_dither_is_checked_and_leaves_the_token_identity_alone() -> None:
    from dataclasses import replace

    from codec.config import CodecConfig, ISTFTVocoderConfig, get_config

    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="dither"):
            ISTFTVocoderConfig(dither=bad)
    small = get_config("small-100")
    assert small.vocoder.dither > 0
    plain = replace(small, vocoder=replace(small.vocoder, dither=0.0))
    assert CodecConfig.from_dict(small.to_dict()) == small
    assert plain.config_hash() == small.config_hash()
    # A config saved before the option existed loads with the input untouched.
    saved = small.to_dict()
    del saved["vocoder"]["dither"]
    assert CodecConfig.from_dict(saved).vocoder.dither == 0.0
