"""A tokenized corpus: the folder ``recipes/tokenize/tokenize_corpus.py`` writes, its config keys and readers.

Layout of the folder (``out`` in the config):

- ``shards/<split>-<n>.tokens.safetensors`` and ``shards/<split>-<n>.json``: codec token files of up
  to ``shard_size`` clips each, and each shard's token-manifest rows (written last: a finished shard);
- ``manifest.jsonl``: the token manifest (``lm.data.read_manifest``);
- ``tokenize_report.json``: counts, bad clips and throughput of the run that made it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from codec.tokenfile import load_tokens
from lm.data import read_manifest as read_token_manifest

CONFIG_KEYS = {"manifest", "out", "codec", "splits", "limit", "domains", "synthetic", "shard_size",
               "encode_batch_size", "num_workers", "channel_policy", "trainer"}
MANIFEST_FILE = "manifest.jsonl"
REPORT_FILE = "tokenize_report.json"


def shard_items(out: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Every clip's tokens int64 [T, 2] in the tokenized folder ``out``, by clip id (for checks and
    comparisons). Raises ``codec.manifest.ManifestError`` or ``codec.tokenfile.TokenFileError``."""
    items = {}
    for row in read_token_manifest(Path(out) / MANIFEST_FILE):
        items[row.record["id"]] = load_tokens(row.tokens).tokens[row.item, : row.frames]
    return items

