"""The offline corpus: real recordings from Debian packages plus a seeded synthetic sound world.

Build it with ``python -m recipes.data.build`` (see ``recipes/data/README.md``); read it with
:mod:`semanticodec_lm.corpus.manifest` (rows, schema check) and :mod:`semanticodec_lm.corpus.datasets` (PyTorch and
Lightning datasets). Splits follow the fixed rule in :mod:`semanticodec_lm.corpus.splits`.
"""
