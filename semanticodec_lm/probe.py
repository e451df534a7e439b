"""Semantic probing: how much do a codec's tokens say about a clip's domain, class, instrument, language?

From Python: ``run_probe(ProbeSettings(output="probe/", manifest="data/corpus/manifest.jsonl"))``;
from the command line:

    semanticodec probe --manifest data/corpus/manifest.jsonl --model runs/small-50 -o probe/ --seed 0
    semanticodec probe --tokens data/tokens/default/manifest.jsonl --model default -o probe/ --seed 0

With ``--manifest`` every clip is encoded by the codec. With ``--tokens`` (instead of
``--manifest``) the clips, splits and labels are the rows of a token manifest written by
``recipes/tokenize/tokenize_corpus.py`` and their tokens are read from its token files, which must
have been made by the codec ``--model`` names (its codebooks give the embeddings below); each
row's ``audio`` (relative to the token manifest's folder) is still read for the mel baseline.
Both give the same features for the same tokens.

Each clip becomes clip-level vectors pooled over time. Tokens come P to an AudioMAE time step, one
per frequency position (P = 8, 4, 4 at 100, 50, 25 tokens/s), so token embeddings are pooled per
position (mean and standard deviation over time, :func:`pool_by_position`): a token's meaning
depends on the band it covers, and one mean over all positions would blur the bands together.

- ``semantic``: the k-means centroids of the semantic tokens (float32 [T, F] -> [2PF]);
- ``acoustic``: the VQ code vectors of the acoustic tokens ([T, F] -> [2PF]);
- ``both``: the two concatenated ([4PF]);
- ``continuous`` (upper bound): the AudioMAE features the semantic tokens quantise ([2PF]);
- ``mel-kmeans`` (baseline): 64-bin log-mel frames (each frame covers every band) quantised by a
  seeded k-means with as many centroids as the semantic vocabulary (fitted on frames of the
  training split), mean and standard deviation over time ([128]).

``--semantic-codebook`` probes the semantic tokens of another codebook (a ``train_kmeans.py`` run
folder or weights file, possibly of another token rate) over the model's AudioMAE: only
``semantic``, ``continuous`` and ``mel-kmeans`` are made then, since the model's acoustic tokens
belong to its own codebook.

For every task whose labels the manifest provides (see :func:`task_label`), a linear probe
(logistic regression, full-batch L-BFGS) and a small MLP (one hidden layer, full-batch Adam) are
fitted on the ``train`` split, with standardised features and fixed seeds, and scored on ``valid``
and ``test``: accuracy and macro-F1, next to the majority-class accuracy. Outputs in ``-o``:
``probe.json`` and ``probe.md``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm import tqdm

if TYPE_CHECKING:
    from codec.tokenfile import TokenFile

TASKS = ("domain", "class", "instrument", "language")
FEATURE_SETS = ("semantic", "acoustic", "both", "continuous", "mel-kmeans")
PROBES = ("linear", "mlp")


def task_label(row: dict[str, Any], task: str) -> str | None:
    """The label of one manifest row for ``task``, or None when the row has none.

    ``domain``: the row's domain. ``class``: a ``class`` field, else the first entry of ``labels``.
    ``instrument``: an ``instrument`` field, else ``params.instrument``, else the second label of
    rows labelled ``["instrument", <name>, ...]``. ``language``: the row's language.
    """
    labels = row.get("labels") if isinstance(row.get("labels"), list) else []
    params = row.get("params") if isinstance(row.get("params"), dict) else {}
    if task == "domain":
        value = row.get("domain")
    elif task == "class":
        value = row.get("class") or (labels[0] if labels else None)
    elif task == "instrument":
        value = row.get("instrument") or params.get("instrument")
        if not value and len(labels) >= 2 and labels[0] == "instrument":
            value = labels[1]
    elif task == "language":
        value = row.get("language")
    else:
        raise ValueError(f"unknown probe task {task!r}; known: {TASKS}")
    return value if isinstance(value, str) and value else None


def pool(frames: torch.Tensor) -> torch.Tensor:
    """Frame embeddings float [T, D] (T >= 1) -> float32 [2D]: mean then (population) std over time."""
    if frames.dim() != 2 or frames.shape[0] == 0:
        raise ValueError(f"expected frame embeddings [T, D] with T >= 1, got {list(frames.shape)}")
    frames = frames.float()
    return torch.cat([frames.mean(0), frames.std(0, correction=0)])


def pool_by_position(frames: torch.Tensor, positions: int) -> torch.Tensor:
    """Token embeddings float [T, D] laid out ``positions`` per time step (token n at position
    n % positions) -> float32 [positions * 2D]: :func:`pool` of each position's tokens, in position order.

    A clip with fewer than ``positions`` tokens repeats them cyclically so that every position has one.
    """
    if frames.dim() != 2 or frames.shape[0] == 0:
        raise ValueError(f"expected token embeddings [T, D] with T >= 1, got {list(frames.shape)}")
    if positions < 1:
        raise ValueError(f"positions must be >= 1, got {positions}")
    if frames.shape[0] < positions:
        frames = frames.repeat(-(-positions // frames.shape[0]), 1)[:positions]
    return torch.cat([pool(frames[position::positions]) for position in range(positions)])


def _standardiser(train: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    mean, std = train.mean(0), train.std(0, correction=0).clamp(min=1e-6)
    return lambda x: (x - mean) / std


def train_linear_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, seed: int = 0,
                       weight_decay: float = 1e-3, iterations: int = 200) -> nn.Module:
    """Multinomial logistic regression on standardised features x float [N, D], labels y int64 [N].

    Full-batch L-BFGS on cross-entropy + ``weight_decay`` * ||W||^2; returns a module mapping
    [M, D] (raw features) to logits [M, num_classes].
    """
    _check_training_data(x, y, num_classes)
    standardise = _standardiser(x)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        linear = nn.Linear(x.shape[1], num_classes)
    inputs = standardise(x.float())
    optimiser = torch.optim.LBFGS(linear.parameters(), max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(linear(inputs), y) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return _Probe(linear, standardise)


def train_mlp_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, seed: int = 0, hidden: int = 256,
                    steps: int = 300, learning_rate: float = 1e-3, weight_decay: float = 1e-4) -> nn.Module:
    """A one-hidden-layer ReLU MLP on standardised features (full-batch Adam, ``steps`` updates, seeded init).

    x float [N, D], y int64 [N]; returns a module mapping [M, D] to logits [M, num_classes].
    """
    _check_training_data(x, y, num_classes)
    standardise = _standardiser(x)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
    inputs = standardise(x.float())
    optimiser = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=weight_decay)
    for _ in range(steps):
        optimiser.zero_grad()
        nn.functional.cross_entropy(network(inputs), y).backward()
        optimiser.step()
    return _Probe(network, standardise)


class _Probe(nn.Module):
    def __init__(self, head: nn.Module, standardise: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.head, self.standardise = head, standardise

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.standardise(x.float()))


def _check_training_data(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
    if x.dim() != 2 or y.dim() != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"expected features [N, D] and labels [N], got {list(x.shape)} and {list(y.shape)}")
    if y.dtype != torch.long or int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"labels must be int64 in [0, {num_classes}), "
                         f"got {y.dtype} in [{int(y.min())}, {int(y.max())}]")


def accuracy_and_macro_f1(predicted: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Accuracy and macro-F1 of int64 [N] predictions; F1 is averaged over classes seen in either tensor."""
    if predicted.shape != target.shape or target.numel() == 0:
        raise ValueError(f"need equal, non-empty prediction and target shapes, got {list(predicted.shape)} "
                         f"and {list(target.shape)}")
    scores = []
    for label in torch.unique(torch.cat([predicted, target])):
        hit = int(((predicted == label) & (target == label)).sum())
        scores.append(2 * hit / (int((predicted == label).sum()) + int((target == label).sum())))
    return float((predicted == target).float().mean()), sum(scores) / len(scores)


@dataclass
class ProbeClip:
    """One clip's features (name -> float32 vector) and mel frames [frames, 64], with its split and row."""

    id: str
    split: str
    row: dict[str, Any]
    features: dict[str, torch.Tensor]
    mel_frames: torch.Tensor


@torch.inference_mode()
def token_features(codec, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pooled embeddings of one clip's codec tokens int64 [T, 2] (T >= 1; semantic, acoustic id):
    ``semantic`` [2PF] (k-means centroids), ``acoustic`` [2PF] (VQ code vectors), ``both`` [4PF]."""
    from codec.semantic import tokens_per_time_step

    ids = ids.to(codec.device)
    positions = tokens_per_time_step(codec.config.concat_factor)
    semantic = pool_by_position(codec.encoder.semantic_codebook.lookup(ids[:, 0]).cpu(), positions)
    acoustic = pool_by_position(codec.encoder.quantizer.lookup(ids[:, 1]).cpu(), positions)
    return {"semantic": semantic, "acoustic": acoustic, "both": torch.cat([semantic, acoustic])}


@torch.inference_mode()
def audiomae_features(audiomae: nn.Module, wave: torch.Tensor, concat_factor: int,
                      codebook: nn.Module | None = None) -> torch.Tensor:
    """The AudioMAE features the codec's semantic tokens quantise, for one 16-kHz waveform [N]:
    float32 [T, E * K] with T the clip's token count at concatenation factor K (``concat_factor``),
    centred by ``codebook`` (a :class:`codec.semantic.SemanticCodebook`) where it has a position mean."""
    from codec.frontend import iter_fbank_segments, pad_to_segments, token_budget
    from codec.semantic import concat_patches

    device = next(audiomae.parameters()).device
    center = codebook.center if codebook is not None else (lambda features: features)
    rows = [center(concat_patches(audiomae(chunk.to(device)), concat_factor)).flatten(0, 1).float().cpu()
            for chunk in iter_fbank_segments(pad_to_segments(wave))]
    return torch.cat(rows)[: token_budget(wave.numel(), concat_factor)[1]]


def position_variance_shares(features: torch.Tensor, per_time_step: int) -> dict[str, float]:
    """How much of the variance of semantic features is where a token sits rather than what it holds.

    ``features`` float [N, T, F]: N clips' features over the same T token positions (token order:
    ``per_time_step`` frequency positions per time step, :func:`codec.semantic.tokens_per_time_step`).
    Returns the share of the total variance explained by the mean at each frequency position
    (``frequency``), the further share explained by the mean at each (time, frequency) position
    (``time``), and the rest (``content``); they sum to 1.
    """
    if features.dim() != 3 or features.shape[0] < 2 or features.shape[1] % per_time_step:
        raise ValueError(f"expected features [clips >= 2, T (a multiple of {per_time_step}), F], "
                         f"got {list(features.shape)}")
    grid = features.double().reshape(features.shape[0], -1, per_time_step, features.shape[-1])
    overall = grid.mean(dim=(0, 1, 2))
    total = (grid - overall).pow(2).mean(dim=(0, 1, 2)).sum()
    by_frequency = grid.mean(dim=(0, 1))  # [P, F]
    by_position = grid.mean(dim=0)  # [T/P, P, F]
    frequency = (by_frequency - overall).pow(2).mean(dim=0).sum() / total
    time = (by_position - by_frequency).pow(2).mean(dim=(0, 1)).sum() / total
    return {"frequency": float(frequency), "time": float(time), "content": float(1.0 - frequency - time)}


@dataclass
class SemanticTokenizer:
    """The semantic half of an encoder: an AudioMAE and a k-means codebook of one token rate.

    ``codebook`` holds the centroids float32 [V, E * K]; ``concat_factor`` is K (1, 2, 4 for 100,
    50, 25 tokens/s); ``source`` names where the codebook came from.
    """

    audiomae: nn.Module
    codebook: nn.Module
    concat_factor: int
    source: str

    @torch.inference_mode()
    def features(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        """``semantic`` and ``continuous`` pooled features [2PF] of one 16-kHz waveform [N]."""
        from codec.semantic import tokens_per_time_step

        continuous = audiomae_features(self.audiomae, wave, self.concat_factor, self.codebook)
        centroids = self.codebook.lookup(self.codebook.nearest(continuous[None]))[0]
        positions = tokens_per_time_step(self.concat_factor)
        return {"semantic": pool_by_position(centroids, positions),
                "continuous": pool_by_position(continuous, positions)}


def load_semantic_tokenizer(codec, path: str | Path, audiomae: str | Path | None = None) -> SemanticTokenizer:
    """``codec``'s AudioMAE (or, with ``audiomae``, the one of a ``recipes/codec/train_audiomae.py`` run
    of the same size) with the k-means codebook of a ``recipes/codec/train_kmeans.py`` run (folders or
    their ``weights.safetensors``); the codebook's token rate comes from the codec config it was fitted
    for. Raises ValueError if a file is missing or holds something else, or if the sizes do not fit."""
    import copy

    from safetensors import SafetensorError, safe_open

    from codec.checkpoints import CheckpointError, load_state
    from codec.config import PATCHES_PER_SEGMENT, get_config
    from codec.semantic import SemanticCodebook

    model = codec.encoder.audiomae
    if audiomae is not None:
        file = Path(audiomae) / "weights.safetensors" if Path(audiomae).is_dir() else Path(audiomae)
        prefix = "encoder.audiomae."
        try:
            with safe_open(str(file), "pt") as handle:
                state = {key[len(prefix):]: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefix)}
        except (OSError, SafetensorError) as error:
            raise ValueError(f"--audiomae {file}: cannot read it ({error})") from None
        if not state:
            raise ValueError(f"--audiomae {file}: no {prefix}* weights (not an AudioMAE run)")
        model = copy.deepcopy(model)
        try:
            load_state(model, state, f"--audiomae {file}")
        except (CheckpointError, RuntimeError) as error:
            raise ValueError(f"--audiomae {file}: does not fit {codec.config.name}'s AudioMAE ({error})") from None

    path = Path(path)
    file = path / "weights.safetensors" if path.is_dir() else path
    key = "encoder.semantic_codebook.centroids"
    try:
        with safe_open(str(file), "pt") as handle:
            metadata = handle.metadata() or {}
            if key not in handle.keys():
                raise ValueError(f"--semantic-codebook {file}: no {key} (not a k-means codebook)")
            centroids = handle.get_tensor(key).float()
            centring = key.replace("centroids", "position_mean")
            position_mean = handle.get_tensor(centring).float() if centring in handle.keys() else None
    except (OSError, SafetensorError) as error:
        raise ValueError(f"--semantic-codebook {file}: cannot read it ({error})") from None
    try:
        concat_factor = get_config(metadata.get("codec_config", "")).concat_factor
    except KeyError:
        raise ValueError(f"--semantic-codebook {file}: no known codec config in its metadata "
                         f"({metadata.get('codec_config')!r})") from None
    width = codec.config.audiomae.embed_dim * concat_factor
    if centroids.dim() != 2 or centroids.shape[1] != width:
        raise ValueError(f"--semantic-codebook {file}: centroids {list(centroids.shape)} do not fit "
                         f"{codec.config.name}'s AudioMAE at {100 // concat_factor} tokens/s (width {width})")
    codebook = SemanticCodebook(centroids.shape[0], width)
    codebook.load_centroids(centroids)
    if position_mean is not None:
        if tuple(position_mean.shape) != (PATCHES_PER_SEGMENT // concat_factor, width):
            raise ValueError(f"--semantic-codebook {file}: position_mean {list(position_mean.shape)} does not fit "
                             f"{PATCHES_PER_SEGMENT // concat_factor} tokens of width {width} per segment")
        codebook.set_position_mean(position_mean)
    return SemanticTokenizer(model, codebook.to(codec.device), concat_factor, str(file))


@torch.inference_mode()
def codec_features(codec, wave: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`token_features` of the tokens the codec gives for one 16-kHz waveform [N], plus
    ``continuous`` (the pooled AudioMAE features those semantic tokens quantise)."""
    from codec.semantic import tokens_per_time_step

    tokens, lengths = codec.encode_waveforms([wave.to(codec.device)])
    features = token_features(codec, tokens[0, : int(lengths[0])])
    continuous = audiomae_features(codec.encoder.audiomae, wave, codec.config.concat_factor, codec.encoder.semantic_codebook)
    features["continuous"] = pool_by_position(continuous, tokens_per_time_step(codec.config.concat_factor))
    return features


def add_mel_kmeans_features(clips: list[ProbeClip], vocab_size: int, train_split: str, *, seed: int,
                            max_frames: int, frames_per_code: int = 1, name: str = "mel-kmeans") -> int:
    """Fit the baseline k-means on (at most ``max_frames``, seeded sample of) training mel frames and add
    ``name`` features to every clip; returns the number of centroids used. ``frames_per_code`` > 1
    averages that many consecutive frames first (a baseline at a lower frame rate)."""
    import torch.nn.functional as F

    from codec.semantic import nearest_codeword
    from codec.training.kmeans import lloyd_kmeans

    per_clip = [clip.mel_frames if frames_per_code == 1 else
                F.avg_pool1d(clip.mel_frames.T[None], frames_per_code, ceil_mode=True)[0].T for clip in clips]
    frames = torch.cat([rows for rows, clip in zip(per_clip, clips) if clip.split == train_split])
    if frames.shape[0] > max_frames:
        frames = frames[torch.randperm(frames.shape[0], generator=torch.Generator().manual_seed(seed))[:max_frames]]
    centroids = lloyd_kmeans(frames, vocab_size, seed=seed)
    for clip, rows in zip(clips, per_clip):
        clip.features[name] = pool(centroids[nearest_codeword(rows, centroids)])
    return centroids.shape[0]


def probe_task(clips: list[ProbeClip], task: str, train_split: str, eval_splits: list[str], *,
               seed: int, feature_sets: tuple[str, ...] | list[str] = FEATURE_SETS) -> list[dict[str, Any]]:
    """Fit both probes on each of ``feature_sets`` the clips have, for one task; one result dict per
    (features, split)."""
    labelled = [(clip, task_label(clip.row, task)) for clip in clips]
    labelled = [(clip, label) for clip, label in labelled if label is not None]
    train = [(clip, label) for clip, label in labelled if clip.split == train_split]
    classes = sorted({label for _, label in labelled})
    if len({label for _, label in train}) < 2:
        return []
    index = {label: i for i, label in enumerate(classes)}
    majority = index[Counter(label for _, label in train).most_common(1)[0][0]]
    y_train = torch.tensor([index[label] for _, label in train])
    results = []
    for name in [name for name in feature_sets if name in train[0][0].features]:
        x_train = torch.stack([clip.features[name] for clip, _ in train])
        probes = {"linear": train_linear_probe(x_train, y_train, len(classes), seed=seed),
                  "mlp": train_mlp_probe(x_train, y_train, len(classes), seed=seed)}
        for split in eval_splits:
            chosen = [(clip, label) for clip, label in labelled if clip.split == split]
            if not chosen:
                continue
            x = torch.stack([clip.features[name] for clip, _ in chosen])
            y = torch.tensor([index[label] for _, label in chosen])
            result = {"task": task, "features": name, "split": split, "clips": len(chosen), "train_clips": len(train),
                      "classes": len(classes), "majority_accuracy": float((y == majority).float().mean())}
            for kind, probe in probes.items():
                result[f"{kind}_accuracy"], result[f"{kind}_macro_f1"] = accuracy_and_macro_f1(probe(x).argmax(1), y)
            results.append(result)
    return results


def markdown_table(results: list[dict[str, Any]]) -> str:
    """One row per (task, features, split): clips, classes, linear and MLP accuracy / macro-F1, majority."""
    lines = ["| Task | Features | Split | Clips | Classes | Linear acc | Linear F1 | MLP acc | MLP F1 | Majority acc |",
             "|" + "---|" * 10]
    for r in results:
        lines.append(f"| {r['task']} | {r['features']} | {r['split']} | {r['clips']} | {r['classes']} "
                     f"| {r['linear_accuracy']:.3f} | {r['linear_macro_f1']:.3f} | {r['mlp_accuracy']:.3f} "
                     f"| {r['mlp_macro_f1']:.3f} | {r['majority_accuracy']:.3f} |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ProbeSettings:
    """What ``semanticodec probe`` does: clips from ``manifest`` (encoded) or ``tokens`` (a token
    manifest of ``recipes/tokenize``, made by ``model``), results written to ``output``.

    ``tasks`` and ``eval_splits`` are tuples of names; ``limit`` keeps the first N clips of each
    split; ``kmeans_frames`` caps the training mel frames of the baseline k-means;
    ``semantic_codebook`` probes the tokens of that k-means run over the model's AudioMAE, or over
    the AudioMAE of the ``audiomae`` run when given.
    """

    output: str
    manifest: str | None = None
    tokens: str | None = None
    model: str = "default"
    checkpoint_path: str | None = None
    semantic_codebook: str | None = None
    audiomae: str | None = None
    device: str = "cpu"
    tasks: tuple[str, ...] = TASKS
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("valid", "test")
    limit: int | None = None
    kmeans_frames: int = 100_000
    seed: int = 0

    def check(self) -> None:
        """Raise ValueError naming the setting that is wrong."""
        if (self.manifest is None) == (self.tokens is None):
            raise ValueError("give exactly one of --manifest (clips to encode) and --tokens (a token manifest)")
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown or not self.tasks:
            raise ValueError(f"--tasks: unknown task(s) {unknown or list(self.tasks)}; choose from {','.join(TASKS)}")
        if not self.eval_splits:
            raise ValueError("--eval-splits: name at least one split to score")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"--limit must be a positive number of clips, got {self.limit}")
        if self.kmeans_frames <= 0:
            raise ValueError(f"--kmeans-frames must be a positive number of frames, got {self.kmeans_frames}")
        if self.audiomae and not self.semantic_codebook:
            raise ValueError("--audiomae needs --semantic-codebook (a codebook fitted on that AudioMAE's features)")
        if self.semantic_codebook and self.tokens:
            raise ValueError("--semantic-codebook needs --manifest: token files hold the model's own semantic tokens")


def _audio(path: Path) -> torch.Tensor:
    """The clip at ``path`` as float32 [N] at 16 kHz; ValueError if unreadable or shorter than a mel frame."""
    from codec.audio import load_audio
    from codec.frontend import MEL_N_FFT

    wave = load_audio(path)
    if wave.numel() <= MEL_N_FFT // 2:
        raise ValueError(f"{path}: clip of {wave.numel()} samples is too short")
    return wave


def _mel_frames(wave: torch.Tensor) -> torch.Tensor:
    """Log-mel frames [frames, 64] of a 16-kHz waveform [N] (the baseline's input)."""
    from codec.frontend import log_mel_64

    return log_mel_64(wave).T.contiguous()


def _load_clips(settings: ProbeSettings, codec, splits: list[str],
                tokenizer: SemanticTokenizer | None = None) -> tuple[list[ProbeClip], list[str]]:
    from codec.evaluate import read_manifest_clips

    clips, problems = [], []
    for split in splits:
        rows, bad_rows = read_manifest_clips(settings.manifest, split, settings.limit)
        problems += bad_rows if split == splits[0] else []
        for clip in tqdm(rows, desc=f"features {split}", unit="clip"):
            try:
                wave = _audio(clip.path)
                features = tokenizer.features(wave) if tokenizer else codec_features(codec, wave)
            except (ValueError, RuntimeError) as error:  # AudioError is a ValueError: report, go on
                problems.append(str(error))
                continue
            clips.append(ProbeClip(clip.id, split, clip.row, features, _mel_frames(wave)))
    return clips, problems


def _token_file(path: Path, codec, tokens_digest: str, manifest: Path) -> TokenFile | str:
    """The token file at ``path`` (a TokenFile), or why it cannot be used (a str).

    Raises ValueError naming ``manifest`` when another codec made the file: its ids would index
    the wrong codebooks, so that is a configuration error, not a bad clip.
    """
    from codec.tokenfile import TokenFileError, check_identity, load_tokens

    try:
        tokens = load_tokens(path)
    except TokenFileError as error:
        return str(error)
    try:
        check_identity(tokens.codec, codec.config, str(path), tokens_digest)
    except TokenFileError as error:
        raise ValueError(f"token manifest {manifest}: {error}; probe it with the codec that made it "
                         "(--model) or tokenize the corpus with this one") from None
    return tokens


def _load_token_clips(settings: ProbeSettings, codec, splits: list[str]) -> tuple[list[ProbeClip], list[str]]:
    from codec.semantic import tokens_per_time_step
    from lm.data import read_manifest

    manifest = Path(settings.tokens)
    rows = read_manifest(manifest)
    clips, problems = [], []
    shard: dict[Path, TokenFile | str] = {}  # the last token file read: rows come shard by shard, in manifest order
    tokens_digest = codec.tokens_digest()
    for split in splits:
        chosen = [row for row in rows if row.split == split][: settings.limit]
        for row in tqdm(chosen, desc=f"features {split} (tokens)", unit="clip"):
            if row.tokens not in shard:
                shard = {row.tokens: _token_file(row.tokens, codec, tokens_digest, manifest)}
            tokens = shard[row.tokens]
            audio = row.record.get("audio")
            try:
                if isinstance(tokens, str):
                    raise ValueError(tokens)
                if row.item >= len(tokens.lengths) or int(tokens.lengths[row.item]) != row.frames:
                    raise ValueError(f"{row.tokens} has no item {row.item} of {row.frames} frames")
                if not isinstance(audio, str) or not audio:
                    raise ValueError("no 'audio' path")
                wave = _audio(manifest.parent / audio)
                features = token_features(codec, tokens.tokens[row.item, : row.frames])
                continuous = audiomae_features(codec.encoder.audiomae, wave, codec.config.concat_factor, codec.encoder.semantic_codebook)
                features["continuous"] = pool_by_position(continuous, tokens_per_time_step(codec.config.concat_factor))
            except (ValueError, RuntimeError) as error:  # bad token file or audio: report, go on
                problems.append(f"{row.where}: {error}")
                continue
            clip_id = str(row.record.get("id") or audio)
            clips.append(ProbeClip(clip_id, split, row.record, features, _mel_frames(wave)))
    return clips, problems


def run_probe(settings: ProbeSettings) -> int:
    """Probe as ``settings`` say; writes ``probe.json`` and ``probe.md`` to ``settings.output``; returns 0,
    or 1 if clips were skipped (each reported on stderr).

    Raises ValueError for a configuration problem (unknown task, no training clips, token files of
    another codec, ...).
    """
    from codec.evaluate import ModelSpec, load_codec
    from codec.files import write_text_atomic

    settings.check()
    tasks, eval_splits = list(settings.tasks), list(settings.eval_splits)
    codec = load_codec(ModelSpec(settings.model, settings.model, settings.checkpoint_path), settings.device)
    splits = [settings.train_split, *eval_splits]
    tokenizer = None
    vocab_size = codec.config.semantic_vocab_size
    if settings.semantic_codebook:
        tokenizer = load_semantic_tokenizer(codec, settings.semantic_codebook, settings.audiomae)
        vocab_size = tokenizer.codebook.vocab_size
        clips, problems = _load_clips(settings, codec, splits, tokenizer)
    elif settings.tokens:
        clips, problems = _load_token_clips(settings, codec, splits)
    else:
        clips, problems = _load_clips(settings, codec, splits)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not any(clip.split == settings.train_split for clip in clips):
        source = f"token manifest {settings.tokens}" if settings.tokens else f"manifest {settings.manifest}"
        raise ValueError(f"{source} has no usable clips in the training split {settings.train_split!r}")
    centroids = add_mel_kmeans_features(clips, vocab_size, settings.train_split,
                                        seed=settings.seed, max_frames=settings.kmeans_frames)
    results = [result for task in tasks
               for result in probe_task(clips, task, settings.train_split, eval_splits, seed=settings.seed)]
    out_dir = Path(settings.output)
    token_rate = 100 // tokenizer.concat_factor if tokenizer else codec.config.token_rate
    report = {"settings": settings_record(settings), "codec": codec.config.name, "token_rate": token_rate,
              "audiomae": settings.audiomae,
              "semantic_codebook": tokenizer.source if tokenizer else None, "mel_kmeans_centroids": centroids,
              "results": results, "problems": problems}
    write_text_atomic(out_dir / "probe.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
    write_text_atomic(out_dir / "probe.md", markdown_table(results) if results else
                      "No task had two or more classes in the training split.\n")
    print(f"probed {len(tasks)} task(s) on {len(clips)} clip(s), {len(results)} result row(s) -> {out_dir}")
    return 1 if problems else 0


def settings_record(settings: ProbeSettings) -> dict[str, Any]:
    """``settings`` as JSON values (tuples as lists), as ``probe.json`` records them."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(settings).items()}


__all__ = ["FEATURE_SETS", "TASKS", "ProbeSettings", "SemanticTokenizer", "accuracy_and_macro_f1", "audiomae_features",
           "load_semantic_tokenizer", "pool", "pool_by_position", "run_probe", "settings_record", "task_label",
           "token_features",
           "train_linear_probe", "train_mlp_probe"]
