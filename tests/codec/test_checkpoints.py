"""Official-layout checkpoint folders: strict loading end to end, through real .ckpt/.npy files.

The folder is built from the parity fixtures (official key names, reduced sizes) plus what the
released files also hold (``model_ema.*``, the VAE encoder): loading it must give the official
tokens and the official recorded decode.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from codec.checkpoints import CheckpointError, load_official_weights, official_files, read_torch_checkpoint
from codec.config import AudioMAEConfig, CodecConfig, DiffusionConfig, UNetConfig, VAEConfig, VocoderConfig
from codec.diffusion.samplers import ReplayedNoise
from codec.model import SemantiCodec

ROLES = ("input.", "expected.", "intermediate.")

# Fixture 4 (K=4 encoder at width 8) and fixtures 5-8 (the reduced LatentDiffusion of fixture 6).
CONFIG = CodecConfig(
    name="parity-fixtures",
    token_rate=25,
    semantic_vocab_size=64,
    acoustic_vocab_size=32,
    audiomae=AudioMAEConfig(embed_dim=8, depth=12, num_heads=2, decoder_embed_dim=8, decoder_depth=1,
                            decoder_num_heads=2),
    unet=UNetConfig(model_channels=32, channel_mult=(1, 1), attention_resolutions=(2,), num_head_channels=16),
    vae=VAEConfig(ch=32, ch_mult=(1, 1, 2)),
    vocoder=VocoderConfig(upsample_initial_channel=64),
    diffusion=DiffusionConfig(latent_time=32),
)


def weights(path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(path)).items() if not k.startswith(ROLES)}


@pytest.fixture(scope="module")
def official_folder(parity_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub")
    files = official_files(CONFIG.token_rate, CONFIG.semantic_vocab_size)
    encoder_fixture = load_file(str(parity_dir / "acoustic_encoder_k4.safetensors"))
    encoder = weights(parity_dir / "acoustic_encoder_k4.safetensors")
    encoder["quantizer._codebook.initted"] = torch.tensor(True)  # newer vector-quantize-pytorch writes a 0-d bool
    decoder = {}
    for name in ("unet", "vae_decoder", "hifigan_vocoder", "ddim_sampler"):
        decoder.update(weights(parity_dir / f"{name}.safetensors"))
    fresh = SemantiCodec(CONFIG).decoder.state_dict()  # what the fixtures leave out, at the right shapes
    for key, value in fresh.items():
        if key.startswith(("first_stage_model.encoder.", "first_stage_model.quant_conv.")):
            decoder[key] = value
        if key.startswith("model.diffusion_model."):
            decoder["model_ema." + key[len("model."):].replace(".", "")] = value + 1  # never to be used
    for role, state in (("encoder", encoder), ("decoder", decoder)):
        (folder / files[role]).parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, folder / files[role])
    (folder / files["codebook"]).parent.mkdir(parents=True, exist_ok=True)
    np.save(folder / files["codebook"], encoder_fixture["input.semantic_codebook"].numpy())
    assert files["codebook"].endswith("combine_128_audioset_dominate/codebook_32_0.npy")
    return folder


def test_official_folder_loads_strictly_and_reproduces_official_outputs(official_folder, parity_dir):
    with torch.device("meta"):
        codec = SemantiCodec(CONFIG)
    load_official_weights(codec, official_folder)
    assert not any(t.is_meta for t in [*codec.parameters(), *codec.buffers()])
    codec.eval()

    shared = load_file(str(parity_dir / "acoustic_encoder_input.safetensors"))
    expected = load_file(str(parity_dir / "acoustic_encoder_k4.safetensors"))
    with torch.inference_mode():
        tokens = codec.encoder.encode_segments(shared["input.fbank"])
    assert torch.equal(tokens, expected["expected.tokens"])

    run = load_file(str(parity_dir / "ddim_sampler.safetensors"))
    waveform = codec.decoder.decode_windows(
        run["input.quantized_feature"], steps=10, cfg_scale=2.0, eta=1.0,
        noise=ReplayedNoise(run["input.x_T"], run["input.step_noise"]),
    )
    torch.testing.assert_close(waveform, run["expected.waveform"], atol=2e-5, rtol=0)


def test_loading_reports_missing_and_extra_keys(official_folder, tmp_path):
    files = official_files(CONFIG.token_rate, CONFIG.semantic_vocab_size)
    state = read_torch_checkpoint(official_folder / files["encoder"])
    state.pop("encoder_output_linear.weight")
    state["encoder.surprise"] = torch.zeros(1)
    broken = tmp_path / "broken"
    for role in ("encoder", "decoder", "codebook"):
        (broken / files[role]).parent.mkdir(parents=True, exist_ok=True)
        (broken / files[role]).write_bytes((official_folder / files[role]).read_bytes())
    torch.save(state, broken / files["encoder"])
    codec = SemantiCodec(CONFIG)
    with pytest.raises(CheckpointError, match=r"1 missing: encoder_output_linear.weight; 1 unexpected: encoder.surprise"):
        load_official_weights(codec, broken)
    np.save(broken / files["codebook"], np.zeros((10, 32), dtype=np.float32))
    with pytest.raises(CheckpointError, match=r"codebook shape \(10, 32\), expected \(64, 32\)"):
        load_official_weights(codec, broken)


def test_pickles_with_code_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.ckpt"
    torch.save({"weight": Payload()}, path)
    with pytest.raises(CheckpointError, match="cannot be loaded as plain weights"):
        read_torch_checkpoint(path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_torch_checkpoint(tmp_path / "missing.ckpt")
