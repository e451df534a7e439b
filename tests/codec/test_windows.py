"""Decoder windows, crossfade stitching and trim: parity with the official decode loop (fixture 9)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from codec.windows import OVERLAP_SAMPLES, OverlapAddStream, output_samples, overlap_add, split_windows

PARITY_DIR = Path(__file__).resolve().parents[1] / "data" / "parity"
WINDOW_TOKENS = {1: 512, 2: 256, 4: 128}


@pytest.fixture(scope="module")
def fixture9() -> tuple[dict[str, torch.Tensor], dict]:
    path = PARITY_DIR / "overlap_add.safetensors"
    if not path.is_file():
        pytest.fail(f"parity fixture {path} not found")
    with safe_open(str(path), "pt") as handle:
        meta = json.loads(handle.metadata()["fixture_meta"])
    return load_file(str(path)), meta


def _windows(tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    pcm = tensors["input.window_pcm_int16"]
    return [(row.to(torch.float32) / 32768).reshape(1, 1, -1) for row in pcm]


@pytest.mark.parametrize("k", [1, 2, 4])
def test_window_bounds_and_output_length(fixture9, k):
    tensors, meta = fixture9
    case = meta["K"][str(k)]
    num_tokens = tensors[f"input.k{k}.tokens"].shape[1]
    bounds = split_windows(num_tokens, WINDOW_TOKENS[k])
    assert bounds == [tuple(b) for b in tensors[f"expected.k{k}.window_bounds"].tolist()]
    assert output_samples(num_tokens, k) == case["output_samples"]
    for other_t, expected in case["split_bounds_for_other_T"].items():
        assert split_windows(int(other_t), WINDOW_TOKENS[k]) == [tuple(b) for b in expected], (k, other_t)


def test_overlap_add_matches_official_bit_exactly(fixture9):
    tensors, meta = fixture9
    windows = _windows(tensors)
    originals = [w.clone() for w in windows]
    stitched = overlap_add(windows)
    assert stitched.shape == (1, 1, meta["stitched_full_length"]) and stitched.dtype == torch.float32
    expected = tensors["expected.stitched_prefix"]
    assert torch.equal(stitched[..., : expected.shape[-1]], expected)
    assert all(torch.equal(w, o) for w, o in zip(windows, originals)), "inputs must not be modified"
    step = windows[0].shape[-1] - OVERLAP_SAMPLES
    assert [k * step for k in range(3)] == meta["window_start_offsets_in_stitched"]
    assert torch.equal(stitched[..., step + OVERLAP_SAMPLES : 2 * step], windows[1][..., OVERLAP_SAMPLES:step])


def test_overlap_add_accepts_numpy_windows(fixture9):
    tensors, _ = fixture9
    windows = _windows(tensors)
    from_numpy = overlap_add([w.numpy() for w in windows])
    assert torch.equal(from_numpy, overlap_add(windows))


@pytest.mark.parametrize("k", [1, 2, 4])
def test_stream_chunks_concatenate_to_trimmed_official_output(fixture9, k):
    tensors, meta = fixture9
    total = meta["K"][str(k)]["output_samples"]
    expected = tensors["expected.stitched_prefix"][..., :total]

    step = 163872 - OVERLAP_SAMPLES
    trimming = OverlapAddStream(total_samples=total)
    chunks = [trimming.push(window) for window in _windows(tensors)] + [trimming.finish()]
    assert [c.shape[-1] for c in chunks] == [step, step, total - 2 * step, 0]
    assert torch.equal(torch.cat(chunks, dim=-1), expected)

    # Without a total up front, every window but the last releases 153632 samples at once: the
    # official trim then falls inside audio that was already returned.
    untrimmed = OverlapAddStream()
    chunks = [untrimmed.push(window) for window in _windows(tensors)]
    assert [c.shape[-1] for c in chunks] == [step, step, step]
    with pytest.raises(ValueError, match="already returned"):
        untrimmed.finish(total)


def test_stream_without_total_reproduces_full_overlap_add(fixture9):
    tensors, _ = fixture9
    stream = OverlapAddStream()
    chunks = [stream.push(window) for window in _windows(tensors)] + [stream.finish()]
    assert chunks[-1].shape[-1] == OVERLAP_SAMPLES
    assert torch.equal(torch.cat(chunks, dim=-1), overlap_add(_windows(tensors)))


def test_stream_trims_inside_already_final_region():
    windows = [torch.full((1, 100), float(i + 1)) for i in range(3)]
    full = overlap_add(windows, overlap_samples=10)
    assert full.shape == (1, 280)
    stream = OverlapAddStream(overlap_samples=10, total_samples=95)
    chunks = [stream.push(w) for w in windows] + [stream.finish()]
    assert [c.shape[-1] for c in chunks] == [90, 5, 0, 0]
    assert torch.equal(torch.cat(chunks, dim=-1), full[..., :95])

    late = OverlapAddStream(overlap_samples=10)
    for window in windows:
        late.push(window)
    with pytest.raises(ValueError, match="already returned"):
        late.finish(95)


def test_crossfade_rounds_each_product_like_numpy():
    rng = np.random.default_rng(0)
    first, second = (rng.standard_normal((1, 1, 64)).astype(np.float32) for _ in range(2))
    expected_first, expected_second = first.copy(), second.copy()
    expected_second[..., :16] *= np.linspace(0, 1, 16).reshape(1, 1, -1)
    expected_first[..., -16:] *= np.linspace(1, 0, 16).reshape(1, 1, -1)
    expected_first[..., -16:] += expected_second[..., :16]
    expected = np.concatenate([expected_first, expected_second[..., 16:]], axis=2)
    assert np.array_equal(overlap_add([first, second], overlap_samples=16).numpy(), expected)


def test_zero_overlap_concatenates_and_short_windows_are_rejected():
    a, b = torch.ones(1, 5), torch.zeros(1, 3)
    assert torch.equal(overlap_add([a, b], overlap_samples=0), torch.cat([a, b], dim=-1))
    with pytest.raises(ValueError, match="at least 4 samples"):
        overlap_add([a, b], overlap_samples=4)
    with pytest.raises(ValueError, match="floating-point"):
        overlap_add([torch.ones(1, 5, dtype=torch.int16)], overlap_samples=2)
    with pytest.raises(ValueError, match="leading shape"):
        overlap_add([torch.ones(1, 5), torch.ones(2, 5)], overlap_samples=2)
    with pytest.raises(ValueError, match="at least one window"):
        overlap_add([])


def test_split_and_length_edge_cases():
    assert split_windows(0, 512) == []
    assert split_windows(520, 512) == [(0, 512), (480, 520)]
    assert output_samples(520, 1) == 166400
    assert output_samples(0, 2) == 0
    with pytest.raises(ValueError, match="overlap"):
        split_windows(10, 4, overlap=1.0)
    with pytest.raises(ValueError, match="num_tokens"):
        split_windows(-1, 512)
    stream = OverlapAddStream(overlap_samples=2)
    with pytest.raises(RuntimeError, match="before any window"):
        stream.finish()
    stream.push(torch.ones(4))
    stream.finish()
    with pytest.raises(RuntimeError, match="after finish"):
        stream.push(torch.ones(4))
