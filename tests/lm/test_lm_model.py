"""The transformer: causality, KV cache == full forward, padding, attention back-ends, config errors."""

import importlib.util

import pytest
import torch

from lm.config import LM_SIZES, LMConfig, lm_config
from lm.model import AudioLM, attend


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    return AudioLM(tiny_config(text_vocab_size=12)).eval()


def random_ids(model, batch, length, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, length), generator=generator)


def test_logits_shape_and_dtype(model):
    logits = model(random_ids(model, 2, 9))
    assert logits.shape == (2, 9, model.config.vocab_size) and logits.dtype == torch.float32
    assert model(random_ids(model, 2, 9), last_only=True).shape == (2, 1, model.config.vocab_size)


def test_changing_a_later_token_leaves_earlier_logits_unchanged(model):
    ids = random_ids(model, 2, 20)
    changed = ids.clone()
    changed[:, 12] = (changed[:, 12] + 1) % model.config.vocab_size
    with torch.no_grad():
        before, after = model(ids), model(changed)
    torch.testing.assert_close(before[:, :12], after[:, :12], rtol=0, atol=1e-6)
    assert (before[:, 12:] - after[:, 12:]).abs().amax() > 1e-3


def test_kv_cache_logits_equal_full_forward_logits(model):
    ids = random_ids(model, 3, 24, seed=1)
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(3, 24)
        pieces = [model(ids[:, :7], cache=cache), model(ids[:, 7:12], cache=cache)]  # prefill, then a chunk
        pieces += [model(ids[:, t : t + 1], cache=cache) for t in range(12, 24)]  # one token at a time
    assert cache.length == 24
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_cache", [False, True])
def test_left_padding_does_not_change_a_rows_logits(model, use_cache):
    ids = random_ids(model, 1, 10, seed=2)
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], dim=1)
    batch = torch.cat([padded, random_ids(model, 1, 14, seed=3)])
    valid = torch.ones(2, 14, dtype=torch.bool)
    valid[0, :4] = False
    with torch.no_grad():
        alone = model(ids)[:, -1]
        cache = model.new_cache(2, 15) if use_cache else None
        together = model(batch, cache=cache, key_valid=valid)[:1, -1]
        assert torch.isfinite(model(batch, key_valid=valid)).all()
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_tied_embeddings_and_parameter_counts(tiny_config):
    model = AudioLM(tiny_config())
    assert model.head.weight is model.embed.weight
    untied = AudioLM(tiny_config(tie_embeddings=False))
    assert untied.num_parameters() == model.num_parameters() + model.embed.weight.numel()


def test_bfloat16_model_keeps_rotary_angles_in_float32(model):
    ids = random_ids(model, 1, 16, seed=4)
    with torch.no_grad():
        reference = model(ids)
        low = model.to(torch.bfloat16)(ids).float()
    assert model._rotary(ids.device)[0].dtype == torch.float32
    assert (low.softmax(-1) - reference.softmax(-1)).abs().max() < 0.05


def test_sequences_beyond_max_seq_len_are_rejected(tiny_config):
    model = AudioLM(tiny_config(max_seq_len=16))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="max_seq_len"):
        model.new_cache(1, 17)
    cache = model.new_cache(1, 8)
    with pytest.raises(ValueError, match="KV cache"):
        model(torch.zeros(1, 9, dtype=torch.long), cache=cache)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(dim=65), "divisible"),
        (dict(dim=12, n_heads=4), "even"),
        (dict(attention="flash3"), "attention"),
        (dict(pattern="spiral"), "pattern"),
        (dict(semantic_vocab_size=0), "vocabulary"),
    ],
)
def test_bad_configs_are_rejected(tiny_config, fields, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**fields)


def test_named_sizes_and_dict_round_trip():
    assert set(LM_SIZES) == {"tiny", "small", "medium", "1b"}
    config = lm_config("small", semantic_vocab_size=16384, acoustic_vocab_size=8192, text_vocab_size=1000)
    assert LMConfig.from_dict(config.to_dict()) == config
    assert config.hidden_dim % 64 == 0 and config.hidden_dim >= 8 * config.dim // 3
    # Body parameters (no vocabulary) of the largest size: about a billion.
    big = lm_config("1b")
    body = big.n_layers * (4 * big.dim**2 + 3 * big.dim * big.hidden_dim)
    assert 0.9e9 < body < 1.2e9
    with pytest.raises(KeyError, match="unknown LM size"):
        lm_config("huge")
    with pytest.raises(ValueError, match="unknown LMConfig fields"):
        LMConfig.from_dict({"dimension": 3})


def test_attend_matches_explicit_softmax_attention():
    generator = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, 6, 8, generator=generator) for _ in range(3))
    scores = (q @ k.transpose(-1, -2)) / 8**0.5
    scores = scores.masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(attend(q, k, v, None, causal=True), scores.softmax(-1) @ v, rtol=1e-5, atol=1e-5)


def _xformers_usable() -> bool:
    if not torch.cuda.is_available() or importlib.util.find_spec("xformers") is None:
        return False
    import xformers

    return bool(getattr(xformers, "_has_cpp_library", False))


@pytest.mark.skipif(not _xformers_usable(), reason="needs CUDA and xformers with its compiled kernels")
@pytest.mark.parametrize("causal", [True, False])
def test_xformers_attention_equals_sdpa(causal):
    generator = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, 128, 64, device="cuda", dtype=torch.bfloat16, generator=generator) for _ in range(3))
    reference = attend(q, k, v, None, causal, backend="sdpa")
    torch.testing.assert_close(attend(q, k, v, None, causal, backend="xformers"), reference, rtol=2e-2, atol=2e-2)


@pytest.mark.skipif(not _xformers_usable(), reason="needs CUDA and xformers with its compiled kernels")
def test_xformers_model_equals_sdpa_model(tiny_config):
    torch.manual_seed(0)
    sdpa = AudioLM(tiny_config()).cuda().eval()
    xformers_model = AudioLM(tiny_config(attention="xformers")).cuda().eval()
    xformers_model.load_state_dict(sdpa.state_dict())
    ids = torch.randint(0, sdpa.config.vocab_size, (2, 64), device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(xformers_model(ids), sdpa(ids), rtol=1e-3, atol=1e-3)
