"""Generation: a tiny model memorises and regenerates; sampling settings and seeds; valid ids always."""

import pytest
import torch

from lm.data import collate
from lm.generate import generate, sample_next
from lm.layout import PATTERNS
from lm.model import AudioLM
from lm.text import train_text_tokenizer


def overfit(config, examples, steps=150, lr=1e-2, seed=0):
    """Train a fresh model on fixed (frames [T, 2], text ids or None) examples; returns (model, loss)."""
    torch.manual_seed(seed)
    model = AudioLM(config)
    sequences = [config.layout.build_sequence(frames, text) for frames, text in examples]
    batch = collate([{"ids": ids, "loss_mask": mask} for ids, mask in sequences])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        logits = model(batch["inputs"])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), loss.item()


@pytest.mark.parametrize("pattern", PATTERNS)
def test_tiny_model_overfits_and_regenerates_greedily(pattern, tiny_config, random_frames):
    clip = random_frames(10, seed=7)
    model, loss = overfit(tiny_config(pattern=pattern, delay=2), [(clip, None)])
    assert loss < 0.05
    out = generate(model, max_frames=30, temperature=0.0, seed=0)
    assert out.lengths.tolist() == [10]
    assert torch.equal(out.tokens[0], clip)


def test_text_guided_generation_follows_the_caption(tmp_path, tiny_config, random_frames):
    captions = ["a dog barks loudly", "rain on a tin roof", "a piano plays softly"]
    tokenizer = train_text_tokenizer(captions * 5, tmp_path / "captions", vocab_size=40)
    clips = [random_frames(8, seed=s) for s in (1, 2, 3)]
    examples = [(clip, tokenizer.encode(caption)) for clip, caption in zip(clips, captions)]
    examples.append((random_frames(8, seed=4), None))  # the caption-free (dropped-text) example
    model, loss = overfit(tiny_config(text_vocab_size=tokenizer.vocab_size), examples, steps=200)
    assert loss < 0.05
    for cfg_scale in (1.0, 3.0):
        out = generate(model, text=captions, tokenizer=tokenizer, cfg_scale=cfg_scale, max_frames=20, temperature=0.0, seed=0)
        assert out.lengths.tolist() == [8, 8, 8]
        for b, clip in enumerate(clips):
            assert torch.equal(out.tokens[b], clip)
    unconditional = generate(model, max_frames=20, temperature=0.0, seed=0)
    assert torch.equal(unconditional.tokens[0], examples[-1][0])


def test_continuation_keeps_the_prompt_and_follows_the_memorised_clip(tiny_config, random_frames):
    clip = random_frames(12, seed=5)
    model, _ = overfit(tiny_config(pattern="delay", delay=1), [(clip, None)])
    prompts = torch.stack([clip, clip])
    out = generate(model, prompt=prompts, prompt_lengths=torch.tensor([4, 9]), max_frames=20, temperature=0.0, seed=0)
    assert out.lengths.tolist() == [12, 12]
    assert torch.equal(out.tokens, prompts)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("settings", [
    dict(temperature=5.0),
    dict(temperature=1.0, top_k=1),
    dict(temperature=0.7, top_p=0.5),
    dict(temperature=0.0),
])
def test_generated_tokens_are_always_valid_codec_tokens(pattern, settings, tiny_config, random_frames):
    torch.manual_seed(1)
    model = AudioLM(tiny_config(pattern=pattern, delay=2, text_vocab_size=10)).eval()
    prompt = random_frames(3, seed=2, batch=3)
    out = generate(model, prompt=prompt, prompt_lengths=torch.tensor([3, 1, 2]), text=[[1], [2, 3], []],
                   cfg_scale=2.0, max_frames=6, seed=3, **settings)
    layout = model.config.layout
    assert out.tokens.dtype == torch.long and out.tokens.shape[-1] == 2
    assert (out.lengths >= torch.tensor([3, 1, 2])).all() and (out.lengths <= torch.tensor([9, 7, 8])).all()
    assert (out.tokens[..., 0] >= 0).all() and (out.tokens[..., 0] < layout.semantic_vocab_size).all()
    assert (out.tokens[..., 1] >= 0).all() and (out.tokens[..., 1] < layout.acoustic_vocab_size).all()
    for b in range(3):
        row = out.ids[b][: layout.audio_length(int(out.lengths[b]))]
        assert torch.equal(layout.decode_audio(row), out.tokens[b, : out.lengths[b]])


def test_same_seed_same_tokens_other_seed_other_tokens(tiny_config):
    torch.manual_seed(0)
    model = AudioLM(tiny_config()).eval()
    first = generate(model, batch_size=2, max_frames=16, seed=11)
    again = generate(model, batch_size=2, max_frames=16, seed=11)
    other = generate(model, batch_size=2, max_frames=16, seed=12)
    assert torch.equal(first.tokens, again.tokens) and torch.equal(first.lengths, again.lengths)
    assert not torch.equal(first.ids, other.ids)


def test_kv_cached_generation_equals_recomputed_generation(tiny_config, random_frames):
    torch.manual_seed(2)
    model = AudioLM(tiny_config(pattern="delay", text_vocab_size=10)).eval()
    kwargs = dict(prompt=random_frames(4, seed=1, batch=2), prompt_lengths=torch.tensor([4, 2]), text=[[1, 2], [3]],
                  cfg_scale=1.5, max_frames=10, top_k=20, seed=5)
    cached, recomputed = generate(model, **kwargs), generate(model, use_cache=False, **kwargs)
    assert torch.equal(cached.ids, recomputed.ids)


def test_greedy_picks_the_best_allowed_id():
    logits = torch.tensor([[5.0, 1.0, 3.0, 2.0]])
    allowed = torch.tensor([[False, True, True, True]])
    assert sample_next(logits, allowed, temperature=0.0).tolist() == [2]


def draw(logits, n=4000, seed=0, **settings):
    """n samples from one row of logits (all ids allowed): a histogram over the vocabulary."""
    rows = logits.expand(n, -1)
    generator = torch.Generator().manual_seed(seed)
    ids = sample_next(rows, torch.ones_like(rows, dtype=torch.bool), generator=generator, **settings)
    return torch.bincount(ids, minlength=logits.shape[-1]).float() / n


def test_sampling_follows_the_tempered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    for temperature in (0.5, 1.0, 2.0):
        expected = (logits[0] / temperature).softmax(-1)
        assert (draw(logits, temperature=temperature) - expected).abs().max() < 0.03
    assert draw(logits, temperature=0.5)[0] > draw(logits, temperature=2.0)[0] + 0.2


def test_top_k_and_top_p_keep_only_the_head():
    logits = torch.log(torch.tensor([[0.05, 0.5, 0.15, 0.3]]))
    top2 = draw(logits, top_k=2)
    assert top2[0] == 0 and top2[2] == 0 and top2[1] > 0 and top2[3] > 0
    torch.testing.assert_close(top2[[1, 3]], torch.tensor([0.625, 0.375]), atol=0.03, rtol=0)
    nucleus = draw(logits, top_p=0.7)  # 0.5 + 0.3 reaches 0.7
    assert nucleus[0] == 0 and nucleus[2] == 0 and nucleus[1] > 0 and nucleus[3] > 0
    wider = draw(logits, top_p=0.85)
    assert wider[0] == 0 and (wider[1:] > 0).all()
    assert (draw(logits, top_p=0.1)[1] == 1.0).item()  # the most likely id always stays


def test_sampling_with_the_same_generator_seed_repeats():
    logits = torch.randn(1, 50)
    assert torch.equal(draw(logits, n=200, seed=3), draw(logits, n=200, seed=3))


@pytest.mark.parametrize("kwargs, message", [
    (dict(cfg_scale=3.0), "needs text"),
    (dict(text=[[1]]), "no text vocabulary"),
    (dict(max_frames=0), "max_frames"),
    (dict(max_frames=2000), "max_seq_len"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_k=0), "top_k"),
    (dict(batch_size=3, prompt=torch.zeros(2, 4, 2, dtype=torch.long)), "batch sizes disagree"),
    (dict(prompt=torch.zeros(2, 4, dtype=torch.long)), r"\[B, T, 2\]"),
    (dict(prompt=torch.full((1, 4, 2), 99)), "semantic ids must lie in"),
])
def test_bad_generation_requests_are_rejected(kwargs, message, tiny_config):
    model = AudioLM(tiny_config())
    with pytest.raises(ValueError, match=message):
        generate(model, **kwargs)


def test_string_text_needs_a_tokenizer(tiny_config):
    model = AudioLM(tiny_config(text_vocab_size=10))
    with pytest.raises(ValueError, match="tokenizer"):
        generate(model, text=["a dog"])
    with pytest.raises(ValueError, match="one caption per row"):
        generate(model, text="a dog")
