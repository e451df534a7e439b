"""The fixed evaluation clips: a few clips per domain of one split, written as a manifest of their own.

    python -m recipes.data.eval_subset --manifest ~/.cache/semanticodec-lm/corpus/manifest.jsonl \\
        --split valid --per-domain 6 --out ~/.cache/semanticodec-lm/valid18_manifest.jsonl
    python -m recipes.data.eval_subset --manifest ~/.cache/semanticodec-lm/corpus/manifest.jsonl \\
        --split test --per-domain 8 --transcribed-english 5 --out ~/.cache/semanticodec-lm/eval24_manifest.jsonl

The codec and LM cards' ``valid`` (18 clips) and ``test`` (24 clips) tables are measured on these two
subsets: clips of at least 2 s, evenly spaced in manifest order, five of the eight ``test`` speech clips
English with a transcript. The corpus build is seeded, so a rebuilt corpus gives the same clips; the
paths are rewritten relative to the output's folder.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from codec.manifest import SPLITS, ManifestError, write_manifest
from semanticodec_lm.corpus.manifest import (
    evaluation_subset,
    read_manifest,
    rebase_paths,
)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, write the subset manifest; returns the number of clips written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True, help="the corpus manifest (manifest.jsonl)")
    parser.add_argument("--split", required=True, choices=SPLITS)
    parser.add_argument("--per-domain", type=int, required=True, help="clips of each domain")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="shortest clip taken (default: 2)")
    parser.add_argument("--transcribed-english", type=int, default=0,
                        help="of the speech clips, how many are English with a transcript (default: 0)")
    parser.add_argument("--out", required=True, help="the subset manifest to write (.jsonl)")
    args = parser.parse_args(argv)
    try:
        rows = evaluation_subset(read_manifest(args.manifest), args.split, args.per_domain,
                                 min_seconds=args.min_seconds, transcribed_english=args.transcribed_english)
    except (ManifestError, ValueError) as error:
        raise SystemExit(f"eval_subset: {error}") from None
    except KeyError as error:
        raise SystemExit(f"eval_subset: {args.manifest}: a row lacks the key {error}; is it a corpus manifest?") from None
    if not rows:
        raise SystemExit(f"eval_subset: no {args.split} clip of at least {args.min_seconds} s in {args.manifest}")
    out = Path(args.out)
    count = write_manifest(out, rebase_paths(rows, Path(args.manifest).parent, out.parent))
    per_domain = Counter(row["domain"] for row in rows)
    print(f"{out}: {count} clips ({', '.join(f'{domain} {n}' for domain, n in per_domain.items())})")
    return count


if __name__ == "__main__":
    main()
