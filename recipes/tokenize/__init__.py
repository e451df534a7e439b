"""Corpus tokenization: a clip manifest -> sharded codec token files + a token manifest (CPU, GPUs, nodes)."""
