"""Semantic probing: separable data is learnt, shuffled labels stay at chance, features are deterministic."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from semanticodec_lm import probe

CLASSES = 4


def gaussian_clusters(per_class: int, dim: int = 16, spread: float = 0.5, seed: int = 0):
    """Four well-separated Gaussian clusters: features float32 [4 * per_class, dim], labels int64."""
    generator = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(CLASSES, dim, generator=torch.Generator().manual_seed(123))
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=generator), labels


@pytest.mark.parametrize("train", [probe.train_linear_probe, probe.train_mlp_probe])
def test_probe_learns_separable_clusters(train):
    x_train, y_train = gaussian_clusters(40, seed=0)
    x_test, y_test = gaussian_clusters(40, seed=1)
    model = train(x_train, y_train, CLASSES, seed=0)
    accuracy, macro_f1 = probe.accuracy_and_macro_f1(model(x_test).argmax(1), y_test)
    assert accuracy >= 0.95 and macro_f1 >= 0.95


@pytest.mark.parametrize("train", [probe.train_linear_probe, probe.train_mlp_probe])
def test_probe_stays_at_chance_on_shuffled_labels(train):
    x_train, y_train = gaussian_clusters(75, seed=0)
    x_test, y_test = gaussian_clusters(150, seed=1)
    shuffle = torch.Generator().manual_seed(7)
    y_train = y_train[torch.randperm(len(y_train), generator=shuffle)]
    y_test = y_test[torch.randperm(len(y_test), generator=shuffle)]
    accuracy, _ = probe.accuracy_and_macro_f1(train(x_train, y_train, CLASSES, seed=0)(x_test).argmax(1), y_test)
    assert abs(accuracy - 1 / CLASSES) < 0.1, accuracy


def test_probes_are_reproducible_with_a_seed():
    x, y = gaussian_clusters(20)
    first = probe.train_mlp_probe(x, y, CLASSES, seed=3, steps=20)(x)
    second = probe.train_mlp_probe(x, y, CLASSES, seed=3, steps=20)(x)
    assert torch.equal(first, second)


def test_probe_rejects_bad_labels():
    x, y = gaussian_clusters(5)
    with pytest.raises(ValueError, match="labels must be int64"):
        probe.train_linear_probe(x, y, num_classes=2)
    with pytest.raises(ValueError, match="features"):
        probe.train_mlp_probe(x[:3], y, CLASSES)


def test_accuracy_and_macro_f1_hand_computed():
    predicted, target = torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 0])
    accuracy, macro_f1 = probe.accuracy_and_macro_f1(predicted, target)
    # F1 per class: 0 -> 2*1/(2+2) = 0.5, 1 -> 2*2/(2+3) = 0.8, 2 -> 0 (predicted once, never true)
    assert accuracy == pytest.approx(3 / 5)
    assert macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_pool_is_mean_and_std():
    frames = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    assert probe.pool(frames).tolist() == [2.0, 2.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="frame embeddings"):
        probe.pool(torch.zeros(0, 3))


def test_task_labels_from_manifest_rows():
    row = {"domain": "music", "labels": ["instrument", "flute"], "language": None, "params": {}}
    assert [probe.task_label(row, task) for task in probe.TASKS] == ["music", "instrument", "flute", None]
    midi = {"domain": "music", "labels": ["melody", "cello"], "params": {"instrument": "cello"}}
    assert probe.task_label(midi, "instrument") == "cello"
    speech = {"domain": "speech", "labels": ["speech"], "language": "en"}
    assert probe.task_label(speech, "language") == "en" and probe.task_label(speech, "instrument") is None
    with pytest.raises(ValueError, match="unknown probe task"):
        probe.task_label(row, "mood")


def _write_manifest(folder, rng):
    """Tones (music, 'tone') and noise (sfx, 'noise'): 4 train, 1 valid, 1 test of each."""
    rows = []
    for index in range(12):
        kind = "tone" if index % 2 == 0 else "noise"
        split = "train" if index < 8 else ("valid" if index < 10 else "test")
        time = np.arange(8000) / 16000
        if kind == "tone":
            wave = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * time)
        else:
            wave = 0.1 * rng.standard_normal(len(time))
        name = f"clip{index:02d}.flac"
        sf.write(folder / name, wave.astype(np.float32), 16000)
        rows.append({"id": f"c{index}", "path": name, "domain": "music" if kind == "tone" else "sfx",
                     "labels": [kind], "split": split, "language": None})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows) + "not json\n")


def test_run_probe_end_to_end_with_a_tiny_codec(tmp_path):
    pytest.importorskip("codec.decoder", reason="the codec's decoder module is not in this tree yet")
    from codec.config import get_config
    from codec.model import SemantiCodec

    torch.manual_seed(0)
    SemantiCodec(get_config("tiny-50")).save_pretrained(tmp_path / "codec")
    _write_manifest(tmp_path, np.random.default_rng(0))
    settings = probe.ProbeSettings(output=str(tmp_path / "out"), manifest=str(tmp_path / "manifest.jsonl"),
                                   model=str(tmp_path / "codec"), tasks=("domain", "class", "language"))
    assert probe.run_probe(settings) == 1  # the malformed manifest line is reported
    report = json.loads((tmp_path / "out" / "probe.json").read_text())
    results = report["results"]
    assert {(r["task"], r["features"], r["split"]) for r in results} == {
        (task, features, split) for task in ("domain", "class") for features in probe.FEATURE_SETS
        for split in ("valid", "test")
    }
    baseline = [r for r in results if r["features"] == "mel-kmeans"]
    assert all(r["linear_accuracy"] == 1.0 for r in baseline)  # tones and noise differ plainly in mel
    assert all(0.0 <= r["mlp_macro_f1"] <= 1.0 for r in results)
    assert "| domain | semantic | test |" in (tmp_path / "out" / "probe.md").read_text()


@pytest.mark.parametrize("change, message", [
    ({"tasks": ("domain", "mood")}, "mood"), ({"limit": 0}, "--limit"), ({"kmeans_frames": -1}, "--kmeans-frames"),
    ({"eval_splits": ()}, "--eval-splits"), ({"manifest": None}, "exactly one of --manifest"),
    ({"tokens": "t.jsonl"}, "exactly one of --manifest"), ({"manifest": None, "tokens": "t.jsonl",
                                                            "semantic_codebook": "km"}, "--semantic-codebook needs"),
])
def test_run_probe_rejects_bad_settings_before_any_work(tmp_path, change, message):
    from dataclasses import replace

    settings = replace(probe.ProbeSettings(output=str(tmp_path), manifest="m.jsonl"), **change)
    with pytest.raises(ValueError, match=message):
        probe.run_probe(settings)


def test_pool_by_position_keeps_each_frequency_position_apart():
    # Two positions per time step: position 0 always 1.0, position 1 alternates 2.0 / 4.0.
    frames = torch.tensor([[1.0], [2.0], [1.0], [4.0], [1.0]])
    assert probe.pool_by_position(frames, 2).tolist() == [1.0, 0.0, 3.0, 1.0]
    assert probe.pool_by_position(frames, 1).tolist() == probe.pool(frames).tolist()
    # Fewer tokens than positions: they repeat, so every position is filled.
    assert probe.pool_by_position(torch.tensor([[1.0], [2.0]]), 4).tolist() == [1, 0, 2, 0, 1, 0, 2, 0]
    with pytest.raises(ValueError, match="positions"):
        probe.pool_by_position(frames, 0)
    with pytest.raises(ValueError, match="token embeddings"):
        probe.pool_by_position(torch.zeros(0, 2), 2)


def _tiny_codec_and_kmeans(tmp_path, kmeans_config: str, vocab: int = 8):
    """A saved tiny-100 codec and a k-means weights file written as train_kmeans.py writes it."""
    from safetensors.torch import save_file

    from codec.config import get_config
    from codec.model import SemantiCodec

    torch.manual_seed(0)
    folder = SemantiCodec(get_config("tiny-100")).save_pretrained(tmp_path / "codec")
    width = get_config(kmeans_config).feature_dim
    run = tmp_path / f"kmeans-{kmeans_config}"
    run.mkdir()
    save_file({"encoder.semantic_codebook.centroids": torch.randn(vocab, width)}, str(run / "weights.safetensors"),
              metadata={"codec_config": kmeans_config, "stage": "kmeans"})
    return folder, run


def test_codec_features_continuous_rows_are_what_the_semantic_tokens_quantise(tmp_path):
    from codec.model import SemantiCodec
    from codec.semantic import tokens_per_time_step

    folder, _ = _tiny_codec_and_kmeans(tmp_path, "tiny-100")
    codec = SemantiCodec.from_pretrained(folder)
    wave = 0.2 * torch.randn(24000, generator=torch.Generator().manual_seed(1))
    continuous = probe.audiomae_features(codec.encoder.audiomae, wave, 1)
    tokens, lengths = codec.encode_waveforms([wave])
    assert continuous.shape[0] == int(lengths[0])
    assert torch.equal(codec.encoder.semantic_codebook.nearest(continuous[None])[0], tokens[0, : int(lengths[0]), 0])
    features = probe.codec_features(codec, wave)
    assert torch.allclose(features["continuous"], probe.pool_by_position(continuous, tokens_per_time_step(1)))


def test_run_probe_with_a_semantic_codebook_of_another_rate(tmp_path):
    folder, kmeans_run = _tiny_codec_and_kmeans(tmp_path, "tiny-50")
    _write_manifest(tmp_path, np.random.default_rng(0))
    from dataclasses import replace

    from safetensors.torch import save_file

    save_file({"decoder.x": torch.zeros(1)}, str(tmp_path / "vae.safetensors"), metadata={"codec_config": "tiny-100"})
    settings = probe.ProbeSettings(output=str(tmp_path / "out"), manifest=str(tmp_path / "manifest.jsonl"),
                                   model=str(folder), tasks=("domain",), semantic_codebook=str(kmeans_run))
    probe.run_probe(settings)
    report = json.loads((tmp_path / "out" / "probe.json").read_text())
    assert report["token_rate"] == 50 and report["semantic_codebook"].endswith("weights.safetensors")
    assert {r["features"] for r in report["results"]} == {"semantic", "continuous", "mel-kmeans"}
    assert report["mel_kmeans_centroids"] == 8  # the codebook's vocabulary, not the codec's

    # Another AudioMAE of the same size (a training run's weights) gives other continuous features.
    from codec.config import get_config
    from codec.semantic import AudioMAE

    torch.manual_seed(5)
    other = AudioMAE(get_config("tiny-100").audiomae)
    save_file({f"encoder.audiomae.{key}": value for key, value in other.state_dict().items()},
              str(tmp_path / "audiomae.safetensors"))
    probe.run_probe(replace(settings, output=str(tmp_path / "out2"), audiomae=str(tmp_path / "audiomae.safetensors")))
    swapped = json.loads((tmp_path / "out2" / "probe.json").read_text())
    assert swapped["audiomae"].endswith("audiomae.safetensors")
    with pytest.raises(ValueError, match="--audiomae needs --semantic-codebook"):
        probe.run_probe(replace(settings, semantic_codebook=None, audiomae=str(tmp_path / "audiomae.safetensors")))
    with pytest.raises(ValueError, match="not an AudioMAE run"):
        probe.run_probe(replace(settings, output=str(tmp_path / "bad"), audiomae=str(tmp_path / "vae.safetensors")))
    save_file({"encoder.audiomae.model.cls_token": torch.zeros(1, 1, 3)}, str(tmp_path / "small.safetensors"))
    with pytest.raises(ValueError, match="does not fit"):
        probe.run_probe(replace(settings, output=str(tmp_path / "bad"), audiomae=str(tmp_path / "small.safetensors")))

    (tmp_path / "other").mkdir()
    _, wide = _tiny_codec_and_kmeans(tmp_path / "other", "small-50")
    for source, message in ((wide, "do not fit"), (tmp_path / "missing", "cannot read"),
                            (tmp_path / "vae.safetensors", "not a k-means codebook")):
        with pytest.raises(ValueError, match=message):
            probe.run_probe(replace(settings, output=str(tmp_path / "bad"), semantic_codebook=str(source)))


def test_a_centred_codebook_run_centres_the_features_it_quantises(tmp_path):
    from safetensors.torch import save_file

    from codec.config import get_config
    from codec.model import SemantiCodec

    folder, run = _tiny_codec_and_kmeans(tmp_path, "tiny-100")
    codec = SemantiCodec.from_pretrained(folder)
    config = get_config("tiny-100")
    centroids = torch.randn(8, config.feature_dim)
    mean = torch.randn(config.tokens_per_segment, config.feature_dim)
    save_file({"encoder.semantic_codebook.centroids": centroids, "encoder.semantic_codebook.position_mean": mean},
              str(run / "weights.safetensors"), metadata={"codec_config": "tiny-100", "stage": "kmeans"})
    tokenizer = probe.load_semantic_tokenizer(codec, run)
    wave = 0.2 * torch.randn(24000, generator=torch.Generator().manual_seed(1))
    raw = probe.audiomae_features(codec.encoder.audiomae, wave, 1)
    centred = probe.audiomae_features(codec.encoder.audiomae, wave, 1, tokenizer.codebook)
    torch.testing.assert_close(centred, raw - mean[: raw.shape[0]])

    save_file({"encoder.semantic_codebook.centroids": centroids, "encoder.semantic_codebook.position_mean": mean[:5]},
              str(run / "weights.safetensors"), metadata={"codec_config": "tiny-100", "stage": "kmeans"})
    with pytest.raises(ValueError, match="position_mean .* does not fit"):
        probe.load_semantic_tokenizer(codec, run)


def test_position_variance_shares_separate_frequency_time_and_content():
    generator = torch.Generator().manual_seed(0)
    clips, steps, per_step, width = 64, 6, 4, 5
    frequency = torch.randn(1, 1, per_step, width, generator=generator).expand(clips, steps, per_step, width)
    time = torch.randn(1, steps, per_step, width, generator=generator).expand(clips, steps, per_step, width)
    content = torch.randn(clips, steps, per_step, width, generator=generator)
    flat = lambda grid: grid.reshape(clips, steps * per_step, width)  # noqa: E731
    only_frequency = probe.position_variance_shares(flat(frequency), per_step)
    assert only_frequency["frequency"] == pytest.approx(1.0) and abs(only_frequency["time"]) < 1e-9
    only_time = probe.position_variance_shares(flat(time - time.mean(dim=1, keepdim=True)), per_step)
    assert only_time["time"] == pytest.approx(1.0) and abs(only_time["frequency"]) < 1e-9
    mixed = probe.position_variance_shares(flat(3 * time + content), per_step)
    assert sum(mixed.values()) == pytest.approx(1.0)
    assert mixed["time"] + mixed["frequency"] > 0.8 and 0.03 < mixed["content"] < 0.2  # 1 part in 10, less sampling
    with pytest.raises(ValueError, match="a multiple of 4"):
        probe.position_variance_shares(torch.zeros(3, 7, 2), 4)
