"""The fixed evaluation clips: per domain, long enough, evenly spaced, transcribed English speech first."""

from __future__ import annotations

import pytest

from semanticodec_lm.corpus.manifest import evaluation_subset, rebase_paths


def row(index: int, domain: str, split: str = "test", duration: float = 5.0, language: str | None = None,
        transcript: str | None = None) -> dict:
    return {"id": f"{domain}-{index}", "path": f"audio/{split}/{domain}/{index}.flac", "domain": domain,
            "split": split, "duration": duration, "language": language, "transcript": transcript}


def corpus() -> list[dict]:
    rows = [row(i, "music") for i in range(20)] + [row(i, "sfx", duration=1.5 + (i % 2)) for i in range(10)]
    rows += [row(i, "speech", language="en", transcript="hello") for i in range(10)]
    rows += [row(100 + i, "speech", language="es") for i in range(10)]
    rows += [row(200 + i, "music", split="valid") for i in range(5)]
    return rows


def test_takes_per_domain_clips_of_the_split_evenly_spaced_in_domain_order() -> None:
    chosen = evaluation_subset(corpus(), "test", 4)
    assert [r["domain"] for r in chosen] == ["speech"] * 4 + ["music"] * 4 + ["sfx"] * 4
    assert [r["id"] for r in chosen if r["domain"] == "music"] == ["music-0", "music-5", "music-10", "music-15"]
    assert all(r["split"] == "test" and r["duration"] >= 2.0 for r in chosen)


def test_short_clips_are_left_out_and_a_small_domain_gives_what_it_has() -> None:
    chosen = evaluation_subset(corpus(), "test", 8, min_seconds=2.0)
    assert [r["id"] for r in chosen if r["domain"] == "sfx"] == ["sfx-1", "sfx-3", "sfx-5", "sfx-7", "sfx-9"]
    assert len(evaluation_subset(corpus(), "valid", 8)) == 5


def test_transcribed_english_speech_is_split_off() -> None:
    speech = [r for r in evaluation_subset(corpus(), "test", 8, transcribed_english=5) if r["domain"] == "speech"]
    assert [r["language"] for r in speech] == ["en"] * 5 + ["es"] * 3
    assert all(r["transcript"] for r in speech[:5])
    plain = [r for r in evaluation_subset(corpus(), "test", 8) if r["domain"] == "speech"]
    assert [r["language"] for r in plain].count("es") == 4


@pytest.mark.parametrize(("split", "per_domain", "english", "message"), [
    ("dev", 4, 0, "unknown split"), ("test", 0, 0, "per_domain"), ("test", 4, 5, "transcribed_english")])
def test_bad_arguments_are_named(split: str, per_domain: int, english: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluation_subset(corpus(), split, per_domain, transcribed_english=english)


def test_rebased_paths_point_at_the_same_file(tmp_path) -> None:
    corpus_dir, elsewhere = tmp_path / "corpus", tmp_path / "evals" / "sub"
    rows = rebase_paths([row(1, "music")], corpus_dir, elsewhere)
    assert (elsewhere / rows[0]["path"]).resolve() == (corpus_dir / "audio/test/music/1.flac").resolve()
