"""Which semantic codebook keeps what a task needs? k-means variants over one AudioMAE, each probed.

    python -m recipes.probe.codebook_sweep --manifest data/corpus/manifest.jsonl --codec default \
        --task language --rate 25 --codes 512 --domain speech --transforms raw,diag,white,pca128 \
        --blocks 3,4,5 --blocks 1 -o probe/sweep-language-25

For one task and token rate, the AudioMAE features of the task's labelled clips (``--domain``: of
one domain only) are extracted once per block set (``--blocks``: the AudioMAE blocks whose
final-LayerNorm outputs are averaged, as ``AudioMAEConfig.averaged_blocks``) and cached under
``<out>/``. For every (block set, transform) a seeded Lloyd k-means of ``--codes`` centroids is fitted
on a sample of the training rows after the transform (``raw``; ``diag``: each dimension standardised;
``white``: PCA-whitened; ``pcaN`` / ``whiteN``: the top N principal components, plain or whitened);
rows are assigned in the transformed space, and a clip's features pool the clusters' means in the
original space, which is what the codec's centroid lookup gives. Beside them: the continuous
features of each block set, the mel k-means baseline of ``--baseline-codes`` (100 frames a second,
as ``semanticodec probe`` has it) and, below 100 tokens/s, the same baseline on mel frames averaged
to the token rate, so that it counts as many frames a second as the tokens. ``--center-with`` (a
``train_kmeans.py`` run fitted with ``model.center_positions=true`` at the same rate) subtracts that
codebook's mean feature at each token position before anything else, as the codec does. Linear and
MLP probes as in ``semanticodec probe``; ``<out>/sweep.md`` and ``sweep.json`` hold the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from codec.audio import load_audio
from codec.evaluate import read_manifest_clips
from codec.files import atomic_path, write_text_atomic
from codec.frontend import log_mel_64
from codec.model import SemantiCodec
from codec.semantic import AudioMAE, nearest_codeword, tokens_per_time_step
from codec.training.kmeans import lloyd_kmeans
from semanticodec_lm.probe import (
    TASKS,
    ProbeClip,
    SemanticTokenizer,
    add_mel_kmeans_features,
    audiomae_features,
    load_semantic_tokenizer,
    pool_by_position,
    probe_task,
    task_label,
)

CONCAT_FACTORS = {100: 1, 50: 2, 25: 4}
FIT_ROWS = 100_000  # training rows the k-means sees (seeded sample)
WHITENING_FLOOR = 1e-3  # eigenvalues below this share of the largest are floored: whitening noise is pointless


def parse_transform(name: str) -> tuple[str, int | None]:
    """``raw`` | ``diag`` | ``white`` | ``pcaN`` | ``whiteN`` -> (kind, N or None); ValueError otherwise."""
    match = re.fullmatch(r"(raw|diag|white|pca)(\d*)", name)
    components = int(match.group(2)) if match and match.group(2) else None
    if not match or (match.group(1) in ("raw", "diag") and match.group(2)) or (match.group(1) == "pca" and not components):
        raise ValueError(f"--transforms: unknown transform {name!r}; use raw, diag, white, pcaN or whiteN (N > 0)")
    return match.group(1), components


def fit_transform(name: str, rows: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map float [N, F] -> [N, F'] named ``name``, fitted on ``rows`` float32 [M, F]."""
    kind, components = parse_transform(name)
    if kind == "raw":
        return lambda x: x
    mean = rows.mean(0)
    if kind == "diag":
        scale = rows.std(0).clamp(min=1e-6)
        return lambda x: (x - mean) / scale
    if components is not None and components > rows.shape[1]:
        raise ValueError(f"--transforms {name}: the features have only {rows.shape[1]} dimensions")
    eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov((rows - mean).T.double()))
    keep = slice(-components, None) if components else slice(None)
    basis = eigenvectors[:, keep]
    if kind == "white":
        basis = basis / torch.sqrt(eigenvalues[keep].clamp(min=0) + WHITENING_FLOOR * eigenvalues.max())
    basis = basis.float()
    return lambda x: (x - mean) @ basis


def codebook_features(features: list[torch.Tensor], train: torch.Tensor, transform: Callable, codes: int,
                      positions: int, seed: int) -> list[torch.Tensor]:
    """Fit k-means in the transformed space on ``train`` [M, F]; per clip [T, F] -> pooled [2PF] of its
    rows' cluster means (original space)."""
    projected = transform(train)
    centroids = lloyd_kmeans(projected, codes, seed=seed)
    ids = nearest_codeword(projected, centroids)
    counts = torch.bincount(ids, minlength=centroids.shape[0]).clamp(min=1)
    means = torch.zeros(centroids.shape[0], train.shape[1]).index_add_(0, ids, train) / counts[:, None]
    return [pool_by_position(means[nearest_codeword(transform(rows), centroids)], positions) for rows in features]


def add_mel_baseline_at_rate(clips: list[ProbeClip], rate: int, codes: int, seed: int) -> str:
    """Add the mel k-means baseline on log-mel frames averaged ``100 // rate`` at a time to every clip;
    returns the feature name."""
    name = f"mel-kmeans at {rate} frames/s"
    add_mel_kmeans_features(clips, codes, "train", seed=seed, max_frames=FIT_ROWS, frames_per_code=100 // rate,
                            name=name)
    return name


def _audiomae_with_blocks(codec: SemantiCodec, blocks: tuple[int, ...]) -> AudioMAE:
    """The codec's AudioMAE, averaging the outputs of ``blocks`` instead of its configured ones."""
    config = dataclasses.replace(codec.config.audiomae, averaged_blocks=blocks)
    model = AudioMAE(config)
    model.load_state_dict(codec.encoder.audiomae.state_dict())
    return model.eval()


def _load_clips(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    clips, problems = [], []
    for split in ["train", *args.eval_splits]:
        rows, bad = read_manifest_clips(args.manifest, split, None)
        problems += bad
        for clip in rows:
            if task_label(clip.row, args.task) and (args.domain is None or clip.row.get("domain") == args.domain):
                clips.append({"split": split, "row": clip.row, "path": clip.path})
    return clips, problems


def _block_features(codec: SemantiCodec, clips: list[dict[str, Any]], blocks: tuple[int, ...], concat_factor: int,
                    cache: Path, encoder_digest: str, centring: SemanticTokenizer | None) -> list[torch.Tensor]:
    """Per clip AudioMAE features [T, E*K] of ``blocks`` (float16 values, as float32; centred by
    ``centring``'s codebook when given), read from ``cache`` when it holds these clips for the encoder
    ``encoder_digest`` (a codec's ``tokens_digest``) and the same centring, else computed and cached."""
    key = {"encoder": encoder_digest, "ids": [str(clip["path"]) for clip in clips],
           "centred_by": _position_mean_digest(centring)}
    if cache.exists():
        stored = torch.load(cache, weights_only=True)
        if stored.get("key") == key:
            return [rows.float() for rows in stored["features"]]
    model = _audiomae_with_blocks(codec, blocks)
    # float16 halves the cache; a fresh run uses the same rounded values, so reruns agree
    codebook = centring.codebook if centring else None
    features = [audiomae_features(model, clip["wave"], concat_factor, codebook).half()
                for clip in tqdm(clips, desc=f"AudioMAE blocks {blocks}", unit="clip")]
    with atomic_path(cache) as temporary:
        torch.save({"key": key, "features": features}, temporary)
    return [rows.float() for rows in features]


def _position_mean_digest(centring: SemanticTokenizer | None) -> str | None:
    """A digest of the position mean ``centring`` subtracts (None: no centring), so that a k-means run
    fitted again in the same folder does not get the features cached for the old one."""
    if centring is None:
        return None
    return hashlib.sha256(centring.codebook.position_mean.cpu().numpy().tobytes()).hexdigest()[:16]


def _centring(codec: SemantiCodec, run: str | None, concat_factor: int) -> SemanticTokenizer | None:
    """The k-means run ``run`` (None: no centring) as a tokenizer whose codebook centres the features;
    ValueError if it has no position mean or was fitted for another token rate."""
    if run is None:
        return None
    tokenizer = load_semantic_tokenizer(codec, run)
    if tokenizer.codebook.position_mean is None:
        raise ValueError(f"--center-with {run}: its codebook has no position mean (fit it with "
                         "model.center_positions=true)")
    if tokenizer.concat_factor != concat_factor:
        raise ValueError(f"--center-with {run}: fitted for {100 // tokenizer.concat_factor} tokens/s, "
                         f"not {100 // concat_factor}")
    return tokenizer


def run_sweep(codec: SemantiCodec, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Probe every (block set, transform) codebook over ``codec``'s AudioMAE; returns probe_task's result dicts."""
    torch.manual_seed(args.seed)
    concat_factor, positions = CONCAT_FACTORS[args.rate], tokens_per_time_step(CONCAT_FACTORS[args.rate])
    candidates, problems = _load_clips(args)
    clips = []
    for clip in tqdm(candidates, desc="audio", unit="clip"):
        try:
            clip["wave"] = load_audio(clip["path"])
        except ValueError as error:  # an AudioError: report the file, go on
            problems.append(str(error))
            continue
        clips.append(clip)
    for problem in problems:
        print(f"skipped: {problem}")
    probe_clips = [ProbeClip(str(c["path"]), c["split"], c["row"], {}, log_mel_64(c["wave"]).T.contiguous())
                   for c in clips]
    if len({task_label(c.row, args.task) for c in probe_clips if c.split == "train"}) < 2:
        raise SystemExit(f"--task {args.task}: fewer than two labels among the train clips of {args.manifest}")
    generator = torch.Generator().manual_seed(args.seed)
    encoder_digest = codec.tokens_digest()
    centring = _centring(codec, args.center_with, concat_factor)
    names = []
    for blocks in args.blocks:
        tag = "b" + "-".join(map(str, blocks))
        features = _block_features(codec, clips, blocks, concat_factor,
                                   Path(args.out) / f"features-{args.task}-{args.rate}-{tag}.pt", encoder_digest,
                                   centring)
        train = torch.cat([f for f, c in zip(features, clips) if c["split"] == "train"])
        train = train[torch.randperm(train.shape[0], generator=generator)[:FIT_ROWS]]
        for transform in args.transforms:
            pooled = codebook_features(features, train, fit_transform(transform, train), args.codes, positions, args.seed)
            for clip, vector in zip(probe_clips, pooled):
                clip.features[f"{tag} {transform}"] = vector
            names.append(f"{tag} {transform}")
        for clip, rows in zip(probe_clips, features):
            clip.features[f"{tag} continuous"] = pool_by_position(rows, positions)
        names.append(f"{tag} continuous")
    add_mel_kmeans_features(probe_clips, args.baseline_codes, "train", seed=args.seed, max_frames=FIT_ROWS)
    names.append("mel-kmeans")
    if args.rate < 100:
        names.append(add_mel_baseline_at_rate(probe_clips, args.rate, args.baseline_codes, args.seed))
    return probe_task(probe_clips, args.task, "train", list(args.eval_splits), seed=args.seed, feature_sets=names)


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """One row per feature set, a linear / MLP column per evaluation split."""
    splits = list(args.eval_splits)
    head = (f"{args.task} at {args.rate} tokens/s, {args.codes} codes"
            f"{f' ({args.domain} clips)' if args.domain else ''}; mel k-means baseline {args.baseline_codes} codes\n\n")
    lines = ["| features | " + " | ".join(f"{split} linear / MLP" for split in splits) + " |",
             "|---|" + "---|" * len(splits)]
    for name in dict.fromkeys(r["features"] for r in results):
        cells = {r["split"]: f"{r['linear_accuracy']:.3f} / {r['mlp_accuracy']:.3f}" for r in results
                 if r["features"] == name}
        lines.append(f"| {name} | " + " | ".join(cells.get(split, "-") for split in splits) + " |")
    return head + "\n".join(lines) + "\n"


def _blocks(text: str) -> tuple[int, ...]:
    try:
        blocks = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"block set {text!r} must be comma-separated block numbers") from None
    if not blocks or min(blocks) < 0:
        raise argparse.ArgumentTypeError(f"block set {text!r} must name blocks >= 0")
    return blocks


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse the command line, run the sweep, write ``sweep.md`` and ``sweep.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--codec", default="default", help="shipped name or save_pretrained folder")
    parser.add_argument("--task", choices=TASKS, default="language")
    parser.add_argument("--domain", default=None, help="only clips of this domain (e.g. speech)")
    parser.add_argument("--rate", type=int, choices=sorted(CONCAT_FACTORS), default=25)
    parser.add_argument("--codes", type=int, default=512)
    parser.add_argument("--baseline-codes", type=int, default=1024)
    parser.add_argument("--transforms", default="raw,diag,white")
    parser.add_argument("--blocks", type=_blocks, action="append", help="repeatable; default: the codec's own")
    parser.add_argument("--center-with", default=None, metavar="KMEANS_RUN",
                        help="subtract this centred k-means run's mean feature at each token position first")
    parser.add_argument("--eval-splits", default="valid,test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--out", required=True)
    args = parser.parse_args(argv)
    args.eval_splits = tuple(s for s in args.eval_splits.split(",") if s)
    args.transforms = [t for t in args.transforms.split(",") if t]
    try:
        for name in args.transforms:
            parse_transform(name)
    except ValueError as error:
        parser.error(str(error))
    if args.codes < 2 or args.baseline_codes < 2:
        parser.error("--codes and --baseline-codes must be at least 2")
    try:
        codec = SemantiCodec.from_pretrained(args.codec)
    except (OSError, ValueError) as error:
        parser.error(f"--codec {args.codec}: {error}")
    depth = codec.config.audiomae.depth
    args.blocks = args.blocks or [codec.config.audiomae.averaged_blocks]
    if any(max(blocks) >= depth for blocks in args.blocks):
        parser.error(f"--blocks: {args.codec}'s AudioMAE has blocks 0..{depth - 1}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        results = run_sweep(codec, args)
    except ValueError as error:  # a manifest that is missing or unreadable, or a transform that does not fit
        raise SystemExit(f"codebook_sweep: {error}") from None
    write_text_atomic(Path(args.out) / "sweep.md", markdown(results, args))
    write_text_atomic(Path(args.out) / "sweep.json", json.dumps(
        {"settings": vars(args), "seconds": round(time.monotonic() - started),
         "results": results}, indent=1, default=str))
    print(markdown(results, args))
    return results


if __name__ == "__main__":
    main()
