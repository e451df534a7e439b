"""The caption tokenizer: training, encode/decode, determinism, errors."""

import pytest

from lm.text import TextTokenizer, train_text_tokenizer

CAPTIONS = ["A dog barks loudly", "rain falls on a tin roof", "a piano plays  softly", "wind and rain"] * 10


def test_trains_encodes_and_decodes(tmp_path):
    tokenizer = train_text_tokenizer(CAPTIONS, tmp_path / "tok" / "captions", vocab_size=50)
    assert (tmp_path / "tok" / "captions.model").is_file() and (tmp_path / "tok" / "captions.vocab").is_file()
    assert 8 <= tokenizer.vocab_size <= 50
    ids = tokenizer.encode("A  dog barks")
    assert ids and all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == "a dog barks"  # lower-cased, whitespace collapsed
    assert tokenizer.encode("rain falls on a tin roof", max_tokens=2) == tokenizer.encode("rain falls on a tin roof")[:2]
    reloaded = TextTokenizer(tmp_path / "tok" / "captions.model")
    assert reloaded.encode("wind and rain") == tokenizer.encode("wind and rain")


def test_training_is_deterministic(tmp_path):
    first = train_text_tokenizer(CAPTIONS, tmp_path / "a", vocab_size=40)
    second = train_text_tokenizer(CAPTIONS, tmp_path / "b", vocab_size=40)
    assert first.path.read_bytes() == second.path.read_bytes()


def test_bad_inputs_are_reported(tmp_path):
    with pytest.raises(ValueError, match="no captions"):
        train_text_tokenizer(["", "   "], tmp_path / "x", vocab_size=40)
    with pytest.raises(ValueError, match="vocab_size"):
        train_text_tokenizer(CAPTIONS, tmp_path / "x", vocab_size=2)
    with pytest.raises(FileNotFoundError, match="no such sentencepiece model"):
        TextTokenizer(tmp_path / "missing.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a sentencepiece model"):
        TextTokenizer(tmp_path / "junk.model")
    tokenizer = train_text_tokenizer(CAPTIONS, tmp_path / "ok", vocab_size=40)
    with pytest.raises(TypeError, match="str"):
        tokenizer.encode(["a", "list"])
