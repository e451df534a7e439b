"""Metrics on known cases: identical signals score best, more noise scores monotonically worse."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from codec import metrics

RATE = 16000
NOISE_LEVELS = (0.003, 0.03, 0.3)


def speech_like(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Voiced syllables (a 110-150 Hz pulse train through two formant resonators) with pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    time = np.arange(n) / RATE
    pitch = 130 + 20 * np.sin(2 * np.pi * 0.7 * time)
    phase = np.cumsum(pitch / RATE)
    source = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(np.float64)
    wave = np.zeros(n)
    for formant, bandwidth in ((700 + 200 * rng.random(), 90), (1200 + 600 * rng.random(), 120)):
        radius = np.exp(-np.pi * bandwidth / RATE)
        a1, a2 = 2 * radius * np.cos(2 * np.pi * formant / RATE), -radius**2
        out = np.zeros(n)
        for i in range(n):  # a two-pole resonator; small n keeps this fast enough
            out[i] = source[i] + a1 * (out[i - 1] if i else 0) + a2 * (out[i - 2] if i > 1 else 0)
        wave += out
    envelope = np.clip(np.sin(2 * np.pi * 2.5 * time), 0, None) ** 0.5
    wave = wave * envelope
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return speech_like()


def noisy(clean: np.ndarray, level: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (clean + level * rng.standard_normal(clean.shape)).astype(np.float32)


def assert_monotonic(scores: list[float], higher_is_better: bool) -> None:
    ordered = scores if not higher_is_better else [-s for s in scores]
    assert all(a < b for a, b in zip(ordered, ordered[1:], strict=False)), scores


@pytest.mark.parametrize(
    "metric, higher_is_better",
    [(metrics.mel_distance, False), (metrics.multi_resolution_stft_distance, False), (metrics.si_sdr, True)],
)
def test_core_metrics_best_on_identity_and_monotonic_in_noise(speech, metric, higher_is_better):
    scores = [metric(speech, speech)] + [metric(speech, noisy(speech, level)) for level in NOISE_LEVELS]
    assert_monotonic(scores, higher_is_better)
    if not higher_is_better:
        assert scores[0] == 0.0


def test_si_sdr_is_scale_invariant_and_hand_checked():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(4000).astype(np.float32)
    ref -= ref.mean()
    residual = rng.standard_normal(4000).astype(np.float32)
    residual -= residual.mean()
    residual -= (residual @ ref) / (ref @ ref) * ref  # orthogonal to the reference
    residual *= np.sqrt((ref @ ref) / (residual @ residual)) / np.sqrt(10.0)  # 10 dB below
    assert metrics.si_sdr(ref, ref + residual) == pytest.approx(10.0, abs=1e-3)
    assert metrics.si_sdr(ref, 3.0 * (ref + residual)) == pytest.approx(10.0, abs=1e-3)


def test_metrics_accept_torch_and_numpy_alike(speech):
    estimate = noisy(speech, 0.03)
    assert metrics.mel_distance(torch.from_numpy(speech), torch.from_numpy(estimate)) == pytest.approx(
        metrics.mel_distance(speech, estimate)
    )


@pytest.mark.parametrize(
    "reference, estimate, message",
    [
        (np.zeros(4000, np.float32), np.zeros(3000, np.float32), "differ in length"),
        (np.zeros((2, 4000), np.float32), np.zeros((2, 4000), np.float32), "mono waveform"),
        (np.full(4000, np.nan, np.float32), np.zeros(4000, np.float32), "NaN"),
        (np.zeros(4000, np.int16), np.zeros(4000, np.int16), "floating-point"),
        (np.zeros(100, np.float32), np.zeros(100, np.float32), "too short"),
    ],
)
def test_bad_input_is_named(reference, estimate, message):
    with pytest.raises(ValueError, match=message):
        metrics.mel_distance(reference, estimate)


def test_si_sdr_rejects_silent_reference():
    with pytest.raises(metrics.MetricError, match="silent"):
        metrics.si_sdr(np.zeros(1000, np.float32), np.ones(1000, np.float32))


def test_match_length_cuts_and_pads():
    wave = torch.arange(1, 6, dtype=torch.float32)
    assert metrics.match_length(wave, 3).tolist() == [1, 2, 3]
    assert metrics.match_length(wave, 7).tolist() == [1, 2, 3, 4, 5, 0, 0]


def test_pesq_and_stoi(speech):
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    degraded = [noisy(speech, level) for level in NOISE_LEVELS]
    pesq_scores = [metrics.pesq_wb(speech, speech)] + [metrics.pesq_wb(speech, other) for other in degraded]
    stoi_scores = [metrics.stoi(speech, speech)] + [metrics.stoi(speech, other) for other in degraded]
    assert_monotonic(pesq_scores, higher_is_better=True)
    assert_monotonic(stoi_scores, higher_is_better=True)
    assert pesq_scores[0] > 4.5 and stoi_scores[0] == pytest.approx(1.0)
    with pytest.raises(metrics.MetricError, match="silent"):
        metrics.pesq_wb(np.zeros_like(speech), speech)


def test_visqol_speech_and_audio_modes(speech):
    pytest.importorskip("visqol")
    pytest.importorskip("ai_edge_litert")
    clip = speech
    # The lattice mapper bottoms out at 1.0 quickly on this synthetic voice: use gentle noise.
    speech_scores = [metrics.visqol(clip, clip, "speech")] + [
        metrics.visqol(clip, noisy(clip, level), "speech") for level in (0.0003, 0.001)
    ]
    assert_monotonic(speech_scores, higher_is_better=True)
    audio_clean, audio_noisy = metrics.visqol(clip, clip, "audio"), metrics.visqol(clip, noisy(clip, 0.1), "audio")
    assert audio_clean > audio_noisy and audio_clean > 4.5
    with pytest.raises(ValueError, match="mode"):
        metrics.visqol(clip, clip, "music")
    with pytest.raises(metrics.MetricError, match="silent"):
        metrics.visqol(np.zeros_like(clip), clip, "speech")


def test_normalise_text():
    assert metrics.normalise_text("  Hello, World!  It's   'quoted'. ") == "hello world it's quoted"


def test_word_error_rate_identity_and_hand_computed_case():
    pytest.importorskip("jiwer")
    assert metrics.word_error_rate("The cat, sat!", "the CAT sat") == 0.0
    # one substitution (sat -> sit) and one deletion (the) over six reference words
    assert metrics.word_error_rate("the cat sat on the mat", "the cat sit on mat") == pytest.approx(2 / 6)
    # corpus WER pools the errors: (2 + 1) / (6 + 2)
    assert metrics.word_error_rate(
        ["the cat sat on the mat", "good morning"], ["the cat sit on mat", "good evening"]
    ) == pytest.approx(3 / 8)
    with pytest.raises(ValueError, match="empty"):
        metrics.word_error_rate("...", "hello")


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "jiwer", None)
    with pytest.raises(metrics.MissingEvalDependency, match=r"pip install -e '\.\[eval\]'"):
        metrics.word_error_rate("a", "a")


@pytest.mark.skipif(shutil.which("text2wave") is None, reason="Festival (text2wave) is not installed")
def test_recognizer_transcribes_festival_speech(tmp_path):
    pytest.importorskip("pocketsphinx")
    pytest.importorskip("jiwer")
    sentence = "Please call Stella and ask her to bring these things with her from the store."
    out = tmp_path / "sentence.wav"
    made = subprocess.run(["text2wave", "-eval", "(voice_kal_diphone)", "-o", str(out)],
                          input=sentence.encode(), capture_output=True, timeout=60)
    if made.returncode != 0 or not out.is_file():
        pytest.skip(f"Festival's kal voice could not synthesise: {made.stderr.decode(errors='replace')[-200:]}")
    wave, rate = sf.read(out, dtype="float32")
    assert rate == RATE
    hypothesis = metrics.SpeechRecognizer().transcribe(wave)
    assert metrics.word_error_rate(sentence, hypothesis) <= 0.25, hypothesis


def test_pitch_hz_reads_harmonic_tones_within_a_few_cents_and_refuses_noise():
    from codec.metrics import pitch_hz

    t = np.arange(32000) / 16000
    for hz in (110.0, 261.63, 880.0):
        tone = sum(0.3 / k * np.sin(2 * np.pi * hz * k * t) for k in range(1, 6)).astype(np.float32)
        measured = pitch_hz(tone)
        assert measured is not None and abs(1200 * np.log2(measured / hz)) < 25
    noise = np.random.default_rng(0).standard_normal(32000).astype(np.float32)
    assert pitch_hz(noise) is None
    assert pitch_hz(np.zeros(32000, dtype=np.float32)) is None
    assert pitch_hz(np.zeros(100, dtype=np.float32)) is None  # shorter than 0.1 s


def test_comb_share_finds_power_on_the_frame_rate_comb_and_not_on_a_tone_off_it() -> None:
    t = torch.arange(2 * RATE) / RATE
    tone = sum(torch.sin(2 * math.pi * 130.81 * k * t) / k for k in range(1, 6))  # harmonics off the 100-Hz comb
    buzz = sum(torch.sin(2 * math.pi * 100.0 * k * t) for k in range(1, 6))
    comb_share = metrics.comb_share
    assert comb_share(tone) < 1e-3
    assert comb_share(buzz) > 0.99
    mixed = comb_share(tone + buzz)
    power_tone, power_buzz = sum(1 / k**2 for k in range(1, 6)), 5.0
    assert mixed == pytest.approx(power_buzz / (power_tone + power_buzz), abs=0.01)
    assert comb_share(tone, comb_hz=130.81) > 0.99  # any comb: the tone's own harmonics
    with pytest.raises(ValueError, match="at least 1 s"):
        comb_share(tone[:8000])
