"""Token layouts: exact round trips for every pattern, vocabulary ranges, the generation grammar."""

import pytest
import torch

from lm.layout import (
    AUDIO,
    BOS,
    EMPTY,
    EOS,
    PATTERNS,
    SEMANTIC_END,
    SPECIAL_TOKENS,
    TEXT,
    AudioCursor,
    TokenLayout,
)

LAYOUTS = [
    TokenLayout(64, 32, 10, "interleave"),
    TokenLayout(64, 32, 10, "semantic_first"),
    TokenLayout(64, 32, 10, "delay", delay=1),
    TokenLayout(64, 32, 10, "delay", delay=3),
]
IDS = [f"{layout.pattern}-{layout.delay}" for layout in LAYOUTS]


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
@pytest.mark.parametrize("frames", [1, 2, 7, 40])
def test_ended_segment_round_trips_exactly(layout, frames, random_frames):
    tokens = random_frames(frames, seed=frames)
    ids = layout.encode_audio(tokens)
    assert len(ids) == layout.audio_length(frames)
    assert int(ids[-1]) == EOS
    assert torch.equal(layout.decode_audio(ids), tokens)


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_non_ended_segment_round_trips(layout, random_frames):
    tokens = random_frames(9, seed=1)
    ids = layout.encode_audio(tokens, ended=False)
    assert len(ids) == layout.audio_length(9, ended=False)
    assert EOS not in ids.tolist()
    decoded = layout.decode_audio(ids)
    # A non-ended delay segment holds the acoustic ids of only its first T - d frames.
    kept = 9 - layout.delay if layout.pattern == "delay" else 9
    assert torch.equal(decoded, tokens[:kept])


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_batch_round_trip_with_varied_lengths(layout, random_frames):
    tokens = random_frames(12, seed=3, batch=4)
    lengths = torch.tensor([12, 1, 5, 9])
    ids, id_lengths = layout.encode_batch(tokens, lengths)
    assert ids.shape == (4, int(id_lengths.max()))
    decoded, decoded_lengths = layout.decode_batch(ids, id_lengths)
    assert torch.equal(decoded_lengths, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(decoded[b, :n], tokens[b, :n])
        assert not decoded[b, n:].any()


def test_patterns_place_tokens_as_documented():
    frames = torch.tensor([[1, 2], [3, 4]])
    s, a = (lambda x: x + 7 + 10), (lambda x: x + 7 + 10 + 64)
    expected = {
        ("interleave", 1): [s(1), a(2), s(3), a(4), EOS],
        ("semantic_first", 1): [s(1), s(3), SEMANTIC_END, a(2), a(4), EOS],
        ("delay", 1): [s(1), EMPTY, s(3), a(2), SEMANTIC_END, a(4), EOS],
        ("delay", 2): [s(1), EMPTY, s(3), EMPTY, SEMANTIC_END, a(2), EMPTY, a(4), EOS],
    }
    for (pattern, delay), ids in expected.items():
        assert TokenLayout(64, 32, 10, pattern, delay).encode_audio(frames).tolist() == ids


def test_vocabulary_ranges_are_disjoint_and_cover_the_vocabulary():
    layout = TokenLayout(64, 32, 10)
    assert layout.text_offset == len(SPECIAL_TOKENS)
    assert layout.semantic_offset == layout.text_offset + 10
    assert layout.acoustic_offset == layout.semantic_offset + 64
    assert layout.vocab_size == layout.acoustic_offset + 32


def test_sequence_has_prefix_and_loss_only_on_audio(random_frames):
    layout = TokenLayout(64, 32, 10)
    ids, mask = layout.build_sequence(random_frames(3), text_ids=[4, 0, 9])
    assert ids[:6].tolist() == [BOS, TEXT, 4 + 7, 0 + 7, 9 + 7, AUDIO]
    assert not mask[:6].any() and mask[6:].all()
    plain, plain_mask = layout.build_sequence(random_frames(3))
    assert plain[:2].tolist() == [BOS, AUDIO] and torch.equal(plain[2:], ids[6:])


@pytest.mark.parametrize(
    "frames, message",
    [
        (torch.tensor([[64, 0]]), "semantic ids must lie in"),
        (torch.tensor([[0, -1]]), "acoustic ids must lie in"),
        (torch.zeros(3, 3, dtype=torch.long), r"\[T, 2\]"),
        (torch.zeros(2, 2), "integer"),
        (torch.zeros(0, 2, dtype=torch.long), "empty"),
    ],
)
def test_bad_frames_are_rejected_clearly(frames, message):
    with pytest.raises(ValueError, match=message):
        TokenLayout(64, 32).encode_audio(frames)


def test_bad_text_ids_and_settings_are_rejected():
    with pytest.raises(ValueError, match="text_vocab_size"):
        TokenLayout(64, 32, 10).prefix_ids([10])
    with pytest.raises(ValueError, match="pattern"):
        TokenLayout(64, 32, pattern="zigzag")
    with pytest.raises(ValueError, match="delay"):
        TokenLayout(64, 32, pattern="delay", delay=0)


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_malformed_segments_are_rejected(layout, random_frames):
    ids = layout.encode_audio(random_frames(4))
    swapped = ids.clone()
    semantic_slot = int((ids >= layout.semantic_offset).nonzero()[0])
    swapped[semantic_slot] = layout.acoustic_offset  # an acoustic id where a semantic one belongs
    with pytest.raises(ValueError, match="malformed"):
        layout.decode_audio(swapped)


def _walk(layout, cursor, generator, prefer_end=0.15):
    """Drive a cursor with random legal ids (ending early sometimes); returns each row's ids."""
    produced = []
    while not cursor.done.all():
        allowed = cursor.allowed()
        weights = allowed.float()
        choice = allowed.sum(1) > 1  # where the end marker is forced, its weight must stay
        weights[choice, layout.end_marker] *= prefer_end * layout.semantic_vocab_size
        ids = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        cursor.advance(ids)
        produced.append(ids)
    return torch.stack(produced, dim=1)


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
@pytest.mark.parametrize("seed", range(3))
def test_cursor_produces_decodable_segments_within_the_frame_limit(layout, seed):
    generator = torch.Generator().manual_seed(seed)
    cursor = AudioCursor(layout, batch_size=5, max_new_frames=6)
    steps = _walk(layout, cursor, generator)
    tokens, lengths = cursor.result()
    assert ((lengths >= 1) & (lengths <= 6)).all()
    for b in range(5):
        own = steps[b, : int((steps[b] == EOS).nonzero()[0]) + 1]
        assert torch.equal(layout.decode_audio(own), tokens[b, : lengths[b]])


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_cursor_forces_the_prompt_and_continues_it(layout, random_frames):
    prompt = random_frames(5, seed=9, batch=2)
    cursor = AudioCursor(layout, 2, max_new_frames=3, prompt=prompt, prompt_lengths=torch.tensor([5, 2]))
    prefixes = cursor.prompt_ids()
    steps = _walk(layout, cursor, torch.Generator().manual_seed(0), prefer_end=0.0)
    tokens, lengths = cursor.result()
    assert lengths.tolist() == [8, 5]  # the end marker was never preferred: the limit stopped both
    for b, n in enumerate([5, 2]):
        assert torch.equal(tokens[b, :n], prompt[b, :n])
        own = steps[b, : int((steps[b] == EOS).nonzero()[0]) + 1]
        assert torch.equal(layout.decode_audio(torch.cat([prefixes[b], own])), tokens[b, : lengths[b]])


def test_cursor_masks_put_each_slot_in_its_own_range():
    layout = TokenLayout(64, 32, 10, "interleave")
    cursor = AudioCursor(layout, 1, max_new_frames=4)
    first = cursor.allowed()[0]
    assert first[layout.semantic_offset : layout.acoustic_offset].all()
    assert not first[layout.acoustic_offset :].any() and not first[: layout.semantic_offset].any()
    cursor.advance(torch.tensor([layout.semantic_offset + 3]))
    second = cursor.allowed()[0]
    assert second[layout.acoustic_offset :].all() and not second[: layout.acoustic_offset].any()
    with pytest.raises(ValueError, match="not legal"):
        cursor.advance(torch.tensor([layout.semantic_offset]))


def test_every_pattern_is_covered():
    assert {layout.pattern for layout in LAYOUTS} == set(PATTERNS)
