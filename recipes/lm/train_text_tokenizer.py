"""Train the caption tokenizer (sentencepiece) on a token manifest's training captions.

    python recipes/lm/train_text_tokenizer.py --manifest data/tokens/manifest.jsonl \
        --out-prefix runs/text/captions --vocab-size 1024

Writes ``<out-prefix>.model`` and ``.vocab``; pass the .model as ``data.text_tokenizer`` to
``recipes/lm/train.py``. Only ``split: train`` captions are read, so valid/test text stays unseen.
"""

from __future__ import annotations

import argparse

from lm.data import training_captions
from lm.text import train_text_tokenizer


def main(argv: list[str] | None = None) -> int:
    """Train and save; returns the tokenizer's vocabulary size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--out-prefix", required=True)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--model-type", default="unigram", choices=["unigram", "bpe"])
    args = parser.parse_args(argv)
    captions = training_captions(args.manifest)
    if not captions:
        raise SystemExit(f"{args.manifest}: no training captions")
    tokenizer = train_text_tokenizer(captions, args.out_prefix, args.vocab_size, args.model_type)
    print(f"{tokenizer.path}: {tokenizer.vocab_size} pieces from {len(captions)} captions")
    return tokenizer.vocab_size


if __name__ == "__main__":
    main()
