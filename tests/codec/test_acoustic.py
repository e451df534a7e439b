"""Silence cut-off, LSTM input and the LSTM -> Linear -> VQ branch against the official-code fixture 4."""

import math

import pytest
import torch
from safetensors.torch import load_file

from codec.acoustic import (
    ONEDNN_MIN_BATCH,
    AcousticQuantizer,
    build_acoustic_lstm,
    build_lstm_input,
    build_output_projection,
    mask_padding_rows,
    run_acoustic_lstm,
    silence_cutoff_rows,
)

FIXTURE_LAYERS = {1: 4, 2: 3, 4: 2}


def _fbank_with_active_frames(active: list[int]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    fbank = torch.full((1, 1024, 128), 0.4670324)  # the normalised value of a zero pad frame
    for frame in active:
        fbank[0, frame] = torch.randn(128, generator=generator)
    return fbank


def _prefixed(tensors: dict, prefix: str) -> dict:
    return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}


@pytest.mark.parametrize(
    "active_frames, tokens, expected",
    [
        (range(1024), 512, 512),  # no silent frame: nothing masked
        (range(730), 512, 365),
        (range(730), 256, 183),
        (range(730), 128, 92),
        (range(1022), 512, 511),  # only the two final zero-pad frames are silent
        (range(1022), 256, 256),
        (list(range(100)) + [900], 512, math.ceil(512 * 901 / 1024)),  # only trailing silence counts
        ([], 512, 0),  # all silent
        ([17], 512, 0),  # one active frame: the official fallback masks everything
    ],
)
def test_silence_cutoff_rows(active_frames, tokens, expected):
    fbank = _fbank_with_active_frames(list(active_frames))
    assert silence_cutoff_rows(fbank, tokens).tolist() == [expected]


def test_silence_cutoff_rows_is_per_segment():
    fbank = torch.cat([_fbank_with_active_frames(list(range(n))) for n in (1024, 730, 0)])
    assert silence_cutoff_rows(fbank, 128).tolist() == [128, 92, 0]


def test_mask_padding_rows_sets_exactly_minus_one():
    x = torch.randn(2, 6, 3)
    masked = mask_padding_rows(x, torch.tensor([4, 0]))
    assert torch.equal(masked[0, :4], x[0, :4])
    assert torch.all(masked[0, 4:] == -1.0)
    assert torch.all(masked[1] == -1.0)


@pytest.mark.parametrize("concat_factor", [1, 2, 4])
def test_acoustic_branch_matches_official(parity_dir, concat_factor):
    shared = load_file(parity_dir / "acoustic_encoder_input.safetensors")
    fixture = load_file(parity_dir / f"acoustic_encoder_k{concat_factor}.safetensors")
    feature_dim = 8 * concat_factor
    lstm = build_acoustic_lstm(feature_dim, FIXTURE_LAYERS[concat_factor])
    lstm.load_state_dict(_prefixed(fixture, "encoder."), strict=True)
    projection = build_output_projection(feature_dim)
    projection.load_state_dict(_prefixed(fixture, "encoder_output_linear."), strict=True)
    quantizer = AcousticQuantizer(32, feature_dim)
    quantizer.load_state_dict(_prefixed(fixture, "quantizer."), strict=True)

    tokens = 512 // concat_factor
    cutoff = silence_cutoff_rows(shared["input.fbank"], tokens)
    lstm_input = build_lstm_input(
        fixture["intermediate.concat_features"], fixture["intermediate.centroids"], cutoff
    )
    assert torch.equal(lstm_input, fixture["expected.lstm_input"])
    with torch.inference_mode():
        lstm_output = run_acoustic_lstm(lstm, lstm_input)
        linear_output = projection(lstm_output)
        batched_output = run_acoustic_lstm(lstm, lstm_input.repeat(ONEDNN_MIN_BATCH, 1, 1))  # the oneDNN path
    assert (lstm_output - fixture["intermediate.lstm_output"]).abs().max().item() <= 5e-6
    assert (batched_output - fixture["intermediate.lstm_output"]).abs().max().item() <= 5e-6
    assert (linear_output - fixture["intermediate.linear_output"]).abs().max().item() <= 5e-6
    acoustic_ids = quantizer.nearest(linear_output)
    assert torch.equal(acoustic_ids, fixture["expected.tokens"][..., 1])
    assert torch.equal(quantizer.lookup(acoustic_ids), fixture["intermediate.vq_quantized"])


def test_run_acoustic_lstm_restores_backend_flags():
    torch.manual_seed(0)
    lstm = build_acoustic_lstm(4, 2)
    x = torch.randn(ONEDNN_MIN_BATCH, 20, 8)
    enabled_before = torch.backends.mkldnn.enabled
    with torch.inference_mode():
        single = run_acoustic_lstm(lstm, x[:1])
        batched = run_acoustic_lstm(lstm, x)
    assert torch.backends.mkldnn.enabled == enabled_before
    assert single.shape == (1, 20, 16) and batched.shape == (ONEDNN_MIN_BATCH, 20, 16)
    assert torch.allclose(single, batched[:1], atol=1e-6, rtol=0)


def test_quantizer_is_euclidean_nearest_and_checks_ids():
    torch.manual_seed(0)
    quantizer = AcousticQuantizer(20, 6)
    x = torch.randn(2, 30, 6)
    expected = torch.cdist(x, quantizer.codes[None]).argmin(dim=-1)
    assert torch.equal(quantizer.nearest(x), expected)
    assert quantizer.vocab_size == 20
    with pytest.raises(ValueError, match=r"acoustic token ids must lie in \[0, 20\)"):
        quantizer.lookup(torch.tensor([[-1, 3]]))
    with pytest.raises(ValueError, match="integers"):
        quantizer.lookup(torch.tensor([[1.0]]))
