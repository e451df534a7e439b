"""How much of a codec's semantic features is token position rather than content.

    python -m recipes.codec.feature_positions --manifest data/corpus/manifest.jsonl --codec default
    python -m recipes.codec.feature_positions --manifest data/corpus/manifest.jsonl --codec default \
        --semantic-codebook runs/codec-small/kmeans-100-centred

Takes ``--clips`` clips of at least ``--seconds`` from ``--split`` (evenly spaced through the
manifest), computes the AudioMAE features the semantic tokens quantise over their first
``--seconds`` (centred by the codebook of ``--semantic-codebook`` when it has a position mean), and
prints the share of their variance explained by each token's frequency position, by its time
position beyond that, and the rest (:func:`semanticodec_lm.probe.position_variance_shares`). A
k-means codebook spends its codes on whatever varies most: position, for a small AudioMAE.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from codec.audio import load_audio
from codec.config import PATCHES_PER_SEGMENT
from codec.model import SemantiCodec
from codec.semantic import tokens_per_time_step
from semanticodec_lm.corpus.manifest import evenly_spaced, read_manifest
from semanticodec_lm.probe import audiomae_features, load_semantic_tokenizer, position_variance_shares


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Print and return the shares (``frequency``, ``time``, ``content``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True, help="corpus manifest (JSON Lines)")
    parser.add_argument("--codec", default="default", help="shipped name or save_pretrained folder")
    parser.add_argument("--semantic-codebook", default=None, help="a recipes/codec/train_kmeans.py run")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--seconds", type=float, default=8.8, help="clip length used (at most 10.24)")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 10.24:
        raise SystemExit(f"--seconds must be in (0, 10.24], got {args.seconds}")
    manifest = Path(args.manifest)
    if not manifest.is_file():
        raise SystemExit(f"--manifest {manifest}: no such file")
    rows = [row for row in read_manifest(manifest)
            if row.get("split") == args.split and float(row.get("duration", 0)) >= args.seconds]
    if len(rows) < 2:
        raise SystemExit(f"{manifest}: fewer than 2 {args.split} clips of at least {args.seconds} s")
    codec = SemantiCodec.from_pretrained(args.codec).eval()
    if args.semantic_codebook:
        try:
            tokenizer = load_semantic_tokenizer(codec, args.semantic_codebook)
        except ValueError as error:
            raise SystemExit(str(error)) from None
        audiomae, codebook, factor = tokenizer.audiomae, tokenizer.codebook, tokenizer.concat_factor
    else:
        audiomae, codebook, factor = codec.encoder.audiomae, codec.encoder.semantic_codebook, codec.config.concat_factor
    per_time_step = tokens_per_time_step(factor)
    tokens = int(args.seconds / 10.24 * PATCHES_PER_SEGMENT / factor) // per_time_step * per_time_step
    with torch.inference_mode():
        features = torch.stack([audiomae_features(audiomae, load_audio(manifest.parent / row["path"]), factor, codebook)[:tokens]
                                for row in evenly_spaced(rows, args.clips)])
    shares = position_variance_shares(features, per_time_step)
    print(f"{len(features)} {args.split} clips, {tokens} tokens each ({args.seconds:g} s), features {features.shape[-1]} wide")
    print("| frequency position | time position | content |\n|---|---|---|")
    print(f"| {shares['frequency']:.3f} | {shares['time']:.3f} | {shares['content']:.3f} |")
    return shares


if __name__ == "__main__":
    main()
