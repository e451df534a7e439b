"""Objective quality metrics for codec reconstructions, and word error rate.

Every signal metric takes a reference and an estimate, each a mono waveform at 16 kHz (float
numpy array or torch tensor of shape [N], same N; see :func:`match_length`), and returns a Python
float. Lower is better for :func:`mel_distance` and :func:`multi_resolution_stft_distance`; higher
is better for :func:`si_sdr`, :func:`pesq_wb`, :func:`stoi` and :func:`visqol`.

The core metrics (mel, multi-resolution STFT, SI-SDR) need only torch. PESQ, STOI, ViSQOL, the
word error rate and the speech recogniser use the optional evaluation packages, imported on first
use; without them a :class:`MissingEvalDependency` says how to install them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from types import ModuleType

import numpy as np
import torch

from codec.config import SAMPLE_RATE
from codec.frontend import MEL_N_FFT, log_mel_64

EVAL_INSTALL_HINT = "pip install -e '.[eval]'"
# (n_fft, hop, window) of the multi-resolution STFT loss of Parallel WaveGAN (Yamamoto et al. 2020).
STFT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
STFT_MAGNITUDE_FLOOR = 1e-7
SI_SDR_EPS = 1e-8  # keeps identical signals finite (about +110 dB for a full-scale clip)
VISQOL_MODES = ("speech", "audio")
VISQOL_AUDIO_RATE = 48000  # ViSQOL's audio mode is calibrated for 48 kHz input


class MissingEvalDependency(ImportError):
    """An optional evaluation package is not installed."""


class MetricError(ValueError):
    """A metric is undefined for this input (e.g. PESQ finds no speech in the reference)."""


def _require(module: str, package: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingEvalDependency(
            f"{purpose} needs the optional package {package!r} ({error}); "
            f"install the evaluation extra: {EVAL_INSTALL_HINT}"
        ) from None


def check_dependencies(metric_names: Iterable[str]) -> None:
    """Import the optional packages that the named metrics (``visqol``, ``pesq``, ``stoi``, ``wer``, ``pitch``) need,
    so that a missing one is reported before any work; other names need nothing. Raises MissingEvalDependency."""
    needs = {"visqol": (("visqol", "visqol-python[lattice]"), ("ai_edge_litert", "visqol-python[lattice]"),
                        ("scipy.signal", "scipy")),
             "pesq": (("pesq", "pesq"),), "stoi": (("pystoi", "pystoi"),),
             "wer": (("jiwer", "jiwer"), ("pocketsphinx", "pocketsphinx")),
             "pitch": (("swift_f0", "swift-f0"),)}
    for name in metric_names:
        for module, package in needs.get(name, ()):
            _require(module, package, name)


def _as_tensor(wave: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(wave, np.ndarray):
        wave = torch.from_numpy(np.ascontiguousarray(wave))
    if not isinstance(wave, torch.Tensor):
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(wave).__name__}")
    if wave.dim() != 1 or wave.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty mono waveform [samples], got shape {list(wave.shape)}")
    if not wave.is_floating_point():
        raise ValueError(f"{name}: expected floating-point samples, got dtype {wave.dtype}")
    if not bool(torch.isfinite(wave).all()):
        raise ValueError(f"{name}: waveform contains NaN or infinite samples")
    return wave.detach().to("cpu", torch.float32)


def _pair(reference, estimate, min_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    ref = _as_tensor(reference, "reference")
    est = _as_tensor(estimate, "estimate")
    if ref.numel() != est.numel():
        raise ValueError(
            f"reference and estimate differ in length ({ref.numel()} vs {est.numel()} samples); "
            "align them first (codec.metrics.match_length)"
        )
    if ref.numel() < min_samples:
        raise ValueError(f"signals of {ref.numel()} samples are too short: this metric needs at least {min_samples}")
    return ref, est


def match_length(estimate: np.ndarray | torch.Tensor, num_samples: int) -> torch.Tensor:
    """Cut or zero-pad ``estimate`` [N'] to float32 [num_samples], so missing audio counts as silence."""
    est = _as_tensor(estimate, "estimate")
    if est.numel() >= num_samples:
        return est[:num_samples].clone()
    return torch.nn.functional.pad(est, (0, num_samples - est.numel()))


# Core metrics (torch only) ----------------------------------------------------------------------
def mel_distance(reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor) -> float:
    """Mean absolute difference of the codec's 64-bin natural-log mel spectrograms (0 = identical).

    Both signals go through :func:`codec.frontend.log_mel_64` (STFT 1024 / hop 160, Slaney mel
    0-8 kHz, ``log(max(mel, 1e-5))``); the result is the mean over all bins and frames of
    ``|log_mel(ref) - log_mel(est)|``, in nepers. Needs more than 512 samples.
    """
    ref, est = _pair(reference, estimate, MEL_N_FFT // 2 + 1)
    return float((log_mel_64(ref) - log_mel_64(est)).abs().mean())


def _magnitude(wave: torch.Tensor, n_fft: int, hop: int, window: int) -> torch.Tensor:
    spectrum = torch.stft(
        wave, n_fft=n_fft, hop_length=hop, win_length=window, window=torch.hann_window(window),
        center=True, pad_mode="reflect", return_complex=True,
    )
    return spectrum.abs().clamp(min=STFT_MAGNITUDE_FLOOR)


def multi_resolution_stft_distance(
    reference: np.ndarray | torch.Tensor,
    estimate: np.ndarray | torch.Tensor,
    resolutions: Sequence[tuple[int, int, int]] = STFT_RESOLUTIONS,
) -> float:
    """Multi-resolution STFT distance (0 = identical), as the Parallel WaveGAN loss.

    For each (n_fft, hop, window) of ``resolutions``, with Hann-windowed centred magnitudes
    floored at 1e-7: spectral convergence ``||S_ref - S_est||_F / ||S_ref||_F`` plus the mean
    absolute log-magnitude difference; the result is the average over resolutions. Needs more
    than max(n_fft) / 2 samples.
    """
    if not resolutions:
        raise ValueError("resolutions must name at least one (n_fft, hop, window) triple")
    ref, est = _pair(reference, estimate, max(n_fft for n_fft, _, _ in resolutions) // 2 + 1)
    total = 0.0
    for n_fft, hop, window in resolutions:
        mag_ref, mag_est = _magnitude(ref, n_fft, hop, window), _magnitude(est, n_fft, hop, window)
        convergence = torch.linalg.norm(mag_ref - mag_est) / torch.linalg.norm(mag_ref)
        log_difference = (mag_ref.log() - mag_est.log()).abs().mean()
        total += float(convergence + log_difference)
    return total / len(resolutions)


def si_sdr(reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019); higher is better.

    Both signals are made zero-mean; the estimate is projected on the reference; the ratio of the
    projection's energy to the residual's is taken with 1e-8 added to both, so identical signals
    give a large finite value. Raises MetricError for a silent reference.
    """
    ref, est = _pair(reference, estimate)
    ref = (ref - ref.mean()).double()
    est = (est - est.mean()).double()
    ref_energy = float(ref @ ref)
    if ref_energy <= SI_SDR_EPS:
        raise MetricError("SI-SDR is undefined for a silent reference")
    target = (float(est @ ref) / ref_energy) * ref
    residual = est - target
    return float(10 * np.log10((float(target @ target) + SI_SDR_EPS) / (float(residual @ residual) + SI_SDR_EPS)))


# Optional packages ------------------------------------------------------------------------------
def _numpy_pair(reference, estimate, min_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
    ref, est = _pair(reference, estimate, min_samples)
    return ref.numpy().astype(np.float64), est.numpy().astype(np.float64)


def pesq_wb(reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor) -> float:
    """Wide-band PESQ (ITU-T P.862.2, package ``pesq``) of 16-kHz speech: MOS-LQO about 1.0-4.64.

    Raises MetricError when PESQ finds no speech in the reference or the clip is too short.
    """
    pesq = _require("pesq", "pesq", "PESQ")
    ref, est = _numpy_pair(reference, estimate)
    if np.abs(ref).max() == 0:
        raise MetricError("PESQ is undefined for a silent reference")
    try:
        return float(pesq.pesq(SAMPLE_RATE, ref, est, "wb"))
    except pesq.PesqError as error:
        raise MetricError(f"PESQ failed: {type(error).__name__}: {error}") from None


def stoi(reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor) -> float:
    """Short-time objective intelligibility (package ``pystoi``, classic STOI) in [0, 1]-ish; 1 = identical.

    Raises MetricError for a silent reference (pystoi then removes every frame).
    """
    pystoi = _require("pystoi", "pystoi", "STOI")
    ref, est = _numpy_pair(reference, estimate)
    if np.abs(ref).max() == 0:
        raise MetricError("STOI is undefined for a silent reference")
    return float(pystoi.stoi(ref, est, SAMPLE_RATE, extended=False))


_VISQOL_APIS: dict[str, object] = {}


def _visqol_api(mode: str):
    if mode not in _VISQOL_APIS:
        visqol = _require("visqol", "visqol-python[lattice]", "ViSQOL")
        if mode == "speech":
            # Without the lattice mapper speech mode falls back to a mapping that over-predicts MOS.
            _require("ai_edge_litert", "visqol-python[lattice]", "ViSQOL's speech lattice model")
        api = visqol.VisqolApi()
        api.create(mode=mode, use_lattice_model=True if mode == "speech" else None)
        _VISQOL_APIS[mode] = api
    return _VISQOL_APIS[mode]


def visqol(reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor, mode: str) -> float:
    """ViSQOL MOS-LQO (package ``visqol-python``): ``mode="speech"`` (16 kHz, lattice mapper; identical
    signals score about 4.5) or ``"audio"`` (signals are upsampled 3x to the 48 kHz the model expects;
    identical signals score about 4.7). Raises MetricError when ViSQOL rejects the signals.
    """
    if mode not in VISQOL_MODES:
        raise ValueError(f"ViSQOL mode must be one of {VISQOL_MODES}, got {mode!r}")
    api = _visqol_api(mode)
    ref, est = _numpy_pair(reference, estimate)
    if np.abs(ref).max() == 0:
        raise MetricError("ViSQOL is undefined for a silent reference")
    rate = SAMPLE_RATE
    if mode == "audio":
        signal = _require("scipy.signal", "scipy", "ViSQOL audio mode")
        factor = VISQOL_AUDIO_RATE // SAMPLE_RATE
        ref, est, rate = signal.resample_poly(ref, factor, 1), signal.resample_poly(est, factor, 1), VISQOL_AUDIO_RATE
    try:
        with np.errstate(all="ignore"):
            score = float(api.measure_from_arrays(ref, est, rate).moslqo)
    except (ValueError, IndexError, ZeroDivisionError, FloatingPointError) as error:
        raise MetricError(f"ViSQOL ({mode} mode) failed: {type(error).__name__}: {error}") from None
    if not np.isfinite(score):
        raise MetricError(f"ViSQOL ({mode} mode) gave no score for these signals")
    return score


# Word error rate --------------------------------------------------------------------------------
_PUNCTUATION = re.compile(r"[^\w\s']|_")


PITCH_MIN_HZ, PITCH_MAX_HZ = 46.875, 2093.75  # swift-f0's range
_PITCH_DETECTOR = None


def pitch_hz(wave: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE, min_voiced: float = 0.25,
             min_confidence: float = 0.2) -> float | None:
    """The dominant fundamental of ``wave`` (float [N]) in Hz, or None when it has no clear pitch.

    Measured by swift-f0, a pretrained pitch network whose weights ship in its pip package (16-ms
    frames, 46.9-2093.75 Hz): the median f0 of the frames with confidence >= ``min_confidence``. None
    when fewer than ``min_voiced`` of the audible frames (within 40 dB of the loudest) reach it.
    The threshold is below swift-f0's calibrated 0.5 because steady synthetic tones (square, sine)
    score 0.3-0.5 with the right f0, while noise and silence score about 0. Known limit: a
    band-limited square wave (odd harmonics only) can be read at one of its harmonics (a 349-Hz
    square measured 1700 Hz).
    """
    global _PITCH_DETECTOR
    if _PITCH_DETECTOR is None:
        _PITCH_DETECTOR = _require("swift_f0", "swift-f0", "pitch").SwiftF0(threads=1)
    audio = _as_tensor(wave, "wave").reshape(-1).double().numpy()
    if audio.size < sample_rate // 10 or not np.isfinite(audio).all():
        return None
    result = _PITCH_DETECTOR.detect(audio.astype(np.float32), sample_rate, fmin=PITCH_MIN_HZ, fmax=PITCH_MAX_HZ)
    audible = result.loudness_db > result.loudness_db.max() - 40.0
    voiced = audible & (result.confidence >= min_confidence)
    if not voiced.any() or voiced.sum() < min_voiced * audible.sum():
        return None
    return float(np.exp(np.median(np.log(result.pitch_hz[voiced]))))


def comb_share(wave: np.ndarray | torch.Tensor, comb_hz: float = 100.0, sample_rate: int = SAMPLE_RATE,
               tolerance_hz: float = 2.0) -> float:
    """Share of ``wave``'s power (float [N]) within ``tolerance_hz`` of the multiples of ``comb_hz``, in [0, 1].

    A decoder stage that runs at 100 frames/s and is not consistent from frame to frame adds lines at
    multiples of its frame rate: the 100-Hz buzz. A steady tone whose harmonics miss the comb gives
    about 0; one whose harmonics fall on it gives their share (a 440-Hz tone's 2200-Hz harmonic).
    Hann-windowed spectrum of the whole signal, so it needs at least 2 / ``tolerance_hz`` seconds.
    """
    audio = _as_tensor(wave, "wave").reshape(-1).double()
    if audio.numel() < 2 * sample_rate / tolerance_hz:
        raise ValueError(f"comb_share needs at least {2 / tolerance_hz:g} s of audio to resolve "
                         f"{tolerance_hz:g} Hz, got {audio.numel() / sample_rate:.2f} s")
    if comb_hz <= 2 * tolerance_hz:
        raise ValueError(f"comb_hz must exceed twice tolerance_hz ({2 * tolerance_hz:g} Hz), got {comb_hz:g}")
    power = torch.fft.rfft(audio * torch.hann_window(audio.numel(), periodic=False, dtype=torch.float64)).abs() ** 2
    hz = torch.fft.rfftfreq(audio.numel(), 1.0 / sample_rate, dtype=torch.float64)
    offset = torch.remainder(hz + tolerance_hz, comb_hz) - tolerance_hz  # distance to the nearest multiple below
    on_comb = (offset.abs() <= tolerance_hz) & (hz >= comb_hz - tolerance_hz)
    total = float(power.sum())
    return float(power[on_comb].sum()) / total if total > 0 else 0.0


def normalise_text(text: str) -> str:
    """Lower-case, punctuation removed (apostrophes inside words kept), whitespace collapsed."""
    if not isinstance(text, str):
        raise TypeError(f"expected a transcript string, got {type(text).__name__}")
    words = _PUNCTUATION.sub(" ", text.lower()).split()
    return " ".join(word.strip("'") for word in words if word.strip("'"))


def word_error_rate(references: str | Sequence[str], hypotheses: str | Sequence[str]) -> float:
    """Word error rate (package ``jiwer``) after :func:`normalise_text`.

    One reference and hypothesis, or two equal-length lists: then the corpus WER, i.e. the total
    substitutions + deletions + insertions over the total reference words. Raises ValueError when
    a reference is empty after normalisation.
    """
    jiwer = _require("jiwer", "jiwer", "the word error rate")
    refs = [references] if isinstance(references, str) else list(references)
    hyps = [hypotheses] if isinstance(hypotheses, str) else list(hypotheses)
    if len(refs) != len(hyps) or not refs:
        raise ValueError(f"need as many hypotheses as references (got {len(refs)} and {len(hyps)}), at least one")
    refs = [normalise_text(text) for text in refs]
    hyps = [normalise_text(text) for text in hyps]
    for index, text in enumerate(refs):
        if not text:
            raise ValueError(f"reference transcript {index} is empty after normalisation")
    return float(jiwer.wer(refs, hyps))


class SpeechRecognizer:
    """Offline English recogniser: the pocketsphinx 5 decoder with the model inside its wheel.

    Deterministic; weak on real speech (use it to compare WER before and after coding).
    """

    def __init__(self) -> None:
        pocketsphinx = _require("pocketsphinx", "pocketsphinx", "speech recognition")
        self._decoder = pocketsphinx.Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")

    def transcribe(self, wave: np.ndarray | torch.Tensor) -> str:
        """Mono 16-kHz waveform [N] (float, nominally in [-1, 1]) -> recognised words (lower case, maybe empty)."""
        samples = _as_tensor(wave, "waveform").clamp(-1.0, 1.0).numpy()
        pcm = np.round(samples * 32767.0).astype(np.int16)
        self._decoder.start_utt()
        self._decoder.process_raw(pcm.tobytes(), full_utt=True)
        self._decoder.end_utt()
        hypothesis = self._decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""
