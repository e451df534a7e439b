from __future__ import annotations

import pytest
import torch

from codec.norm import GroupNorm32


def _norm(groups: int, channels: int) -> GroupNorm32:
    torch.manual_seed(0)
    norm = GroupNorm32(groups, channels)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    return norm


# 4 channels per group runs ATen's channels-last kernel; 6 takes the contiguous round trip.
@pytest.mark.parametrize("channels", [32, 48])
def test_group_norm_keeps_bf16_and_channels_last_at_cpu_inference(channels: int) -> None:
    norm = _norm(8, channels)
    x = (3 * torch.randn(2, channels, 16, 8) + 1).bfloat16().contiguous(memory_format=torch.channels_last)
    official = torch.nn.functional.group_norm(x.float(), 8, norm.weight, norm.bias, norm.eps)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast = norm(x)
    assert fast.dtype == torch.bfloat16 and fast.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fast.float(), official, rtol=2**-7, atol=1e-2)  # bf16 rounding of the same numbers


def test_group_norm_is_the_official_float32_computation_elsewhere() -> None:
    norm = _norm(8, 48)
    x = (3 * torch.randn(2, 48, 16, 8) + 1).bfloat16().contiguous(memory_format=torch.channels_last)
    official = torch.nn.functional.group_norm(x.float(), 8, norm.weight, norm.bias, norm.eps)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # training: the float32 round trip, exactly
        assert torch.equal(norm(x), official.to(torch.bfloat16))
    assert torch.equal(norm(x.float()), official)
    with torch.no_grad():  # bf16 input without autocast: float32 statistics, bf16 out
        assert torch.equal(norm(x), official.to(torch.bfloat16))
