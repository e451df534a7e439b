"""The evaluator: manifest reading, model specs, aggregation, and `semanticodec eval` end to end."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from codec import evaluate

RATE = 16000


@pytest.fixture(autouse=True)
def single_thread():
    """The tiny codec decodes several times faster on one thread than on two busy, shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def eval_args(*argv: str) -> evaluate.EvalSettings:
    """The settings ``semanticodec eval`` makes of these options (the CLI adapter is the only parser)."""
    from semanticodec_lm.cli import add_eval_arguments, eval_settings

    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    return eval_settings(parser.parse_args(list(argv)))


def test_parse_model_specs_expands_rates_and_labels():
    specs = evaluate.parse_model_specs(["ours-{rate}=runs/small-{rate}", "official-50-16384", "runs/a=b/final"],
                                       [100, 25], "ckpt/{rate}")
    assert [(s.label, s.source, s.checkpoint_path) for s in specs] == [
        ("ours-100", "runs/small-100", "ckpt/100"),
        ("ours-25", "runs/small-25", "ckpt/25"),
        ("official-50-16384", "official-50-16384", "ckpt/{rate}"),
        ("final", "runs/a=b/final", "ckpt/{rate}"),
    ]
    with pytest.raises(ValueError, match="share the label"):
        evaluate.parse_model_specs(["x/codec", "y/codec"], None)


@pytest.mark.parametrize("text", ["100,33", "fast", ""])
def test_parse_token_rates_rejects_bad_rates(text):
    with pytest.raises(ValueError, match="--token-rates"):
        evaluate.parse_token_rates(text)


def test_read_manifest_clips_is_defensive(tmp_path):
    rows = [
        {"id": "a", "path": "a.flac", "split": "test", "domain": "speech", "language": "en", "transcript": "hi"},
        {"id": "b", "path": "/abs/b.flac", "split": "train", "domain": "music"},
        {"id": "a", "path": "c.flac", "split": "test"},
        {"path": 3, "split": "test"},
        {"id": "d", "path": "d.flac", "split": "test", "transcript": "  "},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n\n")
    clips, problems = evaluate.read_manifest_clips(manifest, "test")
    assert [c.id for c in clips] == ["a", "d"]
    assert clips[0].path == tmp_path / "a.flac" and clips[0].transcript == "hi" and clips[0].language == "en"
    assert clips[1].domain == "unknown" and clips[1].transcript is None
    assert len(problems) == 3
    assert any("duplicate" in p for p in problems) and any("not valid JSON" in p for p in problems)
    everything, _ = evaluate.read_manifest_clips(manifest, "all", limit=2)
    assert [c.id for c in everything] == ["a", "b"] and str(everything[1].path) == "/abs/b.flac"
    with pytest.raises(ValueError, match="cannot read manifest"):
        evaluate.read_manifest_clips(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("language, english", [("en", True), ("en-US", True), ("English", True), ("es", False),
                                               (None, False)])
def test_is_english(language, english):
    clip = evaluate.ManifestClip("x", evaluate.Path("x"), "speech", language, "text", {})
    assert evaluate.is_english(clip) is english


def test_score_clip_picks_metrics_by_domain():
    rng = np.random.default_rng(0)
    reference = torch.from_numpy((0.1 * rng.standard_normal(RATE)).astype(np.float32))
    scores, notes = evaluate.score_clip(reference, reference.clone(), "music", ["mel", "stft", "sisdr", "pesq"])
    assert scores["mel_distance"] == 0.0 and scores["stft_distance"] == 0.0 and scores["si_sdr"] > 80
    assert "pesq" not in scores and notes == []
    silent = torch.zeros(RATE)
    scores, notes = evaluate.score_clip(silent, reference, "speech", ["sisdr"])
    assert math.isnan(scores["si_sdr"]) and "silent" in notes[0]


def test_aggregate_pools_wer_and_bits():
    pytest.importorskip("jiwer")
    base = {"model": "m", "token_rate": 100, "nominal_bitrate": 1000.0, "encode_seconds": 1.0, "decode_seconds": 2.0}
    rows = [
        {**base, "domain": "speech", "seconds": 2.0, "frames": 100, "measured_bitrate": 1100.0, "mel_distance": 1.0,
         "transcript": "the cat sat on the mat", "hypothesis_original": "the cat sat on the mat",
         "hypothesis_reconstruction": "the cat sit on mat"},
        {**base, "domain": "speech", "seconds": 1.0, "frames": 50, "measured_bitrate": 1000.0, "mel_distance": math.nan,
         "transcript": "good morning", "hypothesis_original": "good morning",
         "hypothesis_reconstruction": "good evening"},
        {**base, "domain": "music", "seconds": 1.0, "frames": 50, "measured_bitrate": 1000.0, "mel_distance": 3.0},
    ]
    summary = {(a["model"], a["domain"]): a for a in evaluate.aggregate(rows)}
    total = summary[("m", "all")]
    assert total["clips"] == 3 and total["mel_distance"] == pytest.approx(2.0) and total["mel_distance_count"] == 2
    assert total["wer_original"] == 0.0 and total["wer_reconstruction"] == pytest.approx(3 / 8)
    assert total["measured_bitrate"] == pytest.approx((2200 + 1000 + 1000) / 4)
    assert total["measured_token_rate"] == pytest.approx(2 * 200 / 4)
    assert total["decode_rtf"] == pytest.approx(6 / 4)
    assert math.isnan(summary[("m", "music")]["wer_reconstruction"])
    table = evaluate.markdown_table(evaluate.aggregate(rows))
    assert table.splitlines()[2].startswith("| m | 1.050 | 100.0 | 0.0 | 37.5 |")


def test_pick_plot_clips_covers_domains():
    clips = [evaluate.ManifestClip(f"{d}{i}", evaluate.Path("x"), d, None, None, {})
             for d in ("speech", "music", "sfx") for i in range(3)]
    assert evaluate.pick_plot_clips(clips, 3) == {"speech0", "music0", "sfx0"}
    assert len(evaluate.pick_plot_clips(clips, 20)) == 9


def _write_clips(folder):
    """A tone (music), noise (sfx) and a voiced, syllabic synthetic 'speech' clip, 2 s each, plus a broken file."""
    time = np.arange(2 * RATE) / RATE
    rng = np.random.default_rng(0)
    syllables = np.clip(np.sin(2 * np.pi * 3 * time), 0, None)
    voice = sum(np.sin(2 * np.pi * 140 * h * time) / h for h in range(1, 12)) * syllables
    waves = {"tone": 0.3 * np.sin(2 * np.pi * 440 * time), "noise": 0.1 * rng.standard_normal(len(time)),
             "speech": 0.3 * voice / np.abs(voice).max()}
    rows = []
    for name, domain in (("tone", "music"), ("noise", "sfx"), ("speech", "speech")):
        sf.write(folder / f"{name}.flac", waves[name].astype(np.float32), RATE)
        rows.append({"id": f"gen/{name}", "path": f"{name}.flac", "domain": domain, "split": "test",
                     "language": "en" if domain == "speech" else None,
                     "transcript": "hello world" if domain == "speech" else None, "labels": [name]})
    (folder / "broken.flac").write_bytes(b"not audio")
    rows.append({"id": "gen/broken", "path": "broken.flac", "domain": "sfx", "split": "test"})
    rows.append({"id": "gen/train", "path": "tone.flac", "domain": "music", "split": "train"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def tiny_codec_folder(tmp_path_factory):
    from codec.config import get_config
    from codec.model import SemantiCodec

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("codec") / "tiny-100"
    SemantiCodec(get_config("tiny-100")).save_pretrained(folder)
    return folder


# ViSQOL costs about 4 s per 2-s clip on a shared CPU, so the default run leaves it to test_metrics.py.
@pytest.mark.parametrize("with_visqol", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_eval_end_to_end_with_a_tiny_codec(tmp_path, tiny_codec_folder, with_visqol):
    optional = {"pesq": ("pesq",), "stoi": ("pystoi",), "wer": ("pocketsphinx", "jiwer")}
    if with_visqol:
        optional["visqol"] = ("visqol", "ai_edge_litert", "scipy")
    metric_names = ["mel", "stft", "sisdr"] + [
        name for name, modules in optional.items() if all(importlib.util.find_spec(m) for m in modules)
    ]
    _write_clips(tmp_path)
    out = tmp_path / "out"
    args = eval_args("--manifest", str(tmp_path / "manifest.jsonl"), "-o", str(out), "--model",
                     f"tiny={tiny_codec_folder}", "--token-rates", "100", "--steps", "2", "--metrics",
                     ",".join(metric_names), "--spectrograms", "2", "--save-audio")
    assert evaluate.run_eval(args) == 1  # the broken clip is reported and skipped

    with open(out / "clips.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["clip"] for row in rows] == ["gen/tone", "gen/noise", "gen/speech"]
    for row in rows:
        for column in ("mel_distance", "stft_distance", "si_sdr", "measured_bitrate", "decode_seconds"):
            assert math.isfinite(float(row[column])), (row["clip"], column)
        assert float(row["measured_token_rate"]) >= 100
    speech_columns = {"pesq": ["pesq"], "stoi": ["stoi"], "wer": ["wer_original", "wer_reconstruction"]}
    for name, columns in speech_columns.items():
        for column in columns if name in metric_names else []:
            assert math.isfinite(float(rows[2][column])), column
    if "visqol" in metric_names:
        assert [row["visqol_mode"] for row in rows] == ["audio", "audio", "speech"]

    report = json.loads((out / "results.json").read_text())
    assert [s["clip"] for s in report["skipped"]] == ["gen/broken"]
    domains = {a["domain"] for a in report["aggregates"]}
    assert domains == {"all", "music", "sfx", "speech"}
    assert report["models"][0]["token_rate"] == 100
    table = (out / "results.md").read_text()
    assert "| Model | kbps |" in table and "| tiny |" in table
    assert len(list((out / "spectrograms" / "tiny").glob("*.png"))) == 2
    assert len(list((out / "audio" / "tiny").glob("*.wav"))) == 3


def test_eval_is_reproducible_with_a_seed(tmp_path, tiny_codec_folder):
    _write_clips(tmp_path)
    outputs = []
    for run in ("a", "b"):
        args = eval_args("--manifest", str(tmp_path / "manifest.jsonl"), "-o", str(tmp_path / run), "--model",
                         str(tiny_codec_folder), "--steps", "2", "--metrics", "mel,sisdr", "--limit", "1",
                         "--spectrograms", "0", "--seed", "5")
        assert evaluate.run_eval(args) == 0
        outputs.append(json.loads((tmp_path / run / "results.json").read_text())["clips"][0])
    assert outputs[0]["mel_distance"] == outputs[1]["mel_distance"]
    assert outputs[0]["si_sdr"] == outputs[1]["si_sdr"]


@pytest.mark.parametrize("argv, message", [
    (["--metrics", "mel,loudness"], "loudness"),
    (["--limit", "0"], "--limit"),
    (["--token-rates", "75"], "--token-rates"),
    (["--split", "nothing", "--metrics", "mel"], "no usable clips"),
])
def test_eval_configuration_errors(tmp_path, argv, message, tiny_codec_folder):
    _write_clips(tmp_path)
    with pytest.raises(ValueError, match=message):
        evaluate.run_eval(eval_args("--manifest", str(tmp_path / "manifest.jsonl"), "-o", str(tmp_path / "out"),
                                    "--model", str(tiny_codec_folder), *argv))
