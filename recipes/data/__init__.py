"""The offline corpus: real recordings from Debian packages plus a seeded synthetic sound world.

Build it with ``python -m recipes.data.build`` (see ``recipes/data/README.md``); read it with
:mod:`recipes.data.manifest` (rows, schema check) and :mod:`recipes.data.datasets` (PyTorch and
Lightning datasets). Splits follow the fixed rule in :mod:`recipes.data.splits`.
"""
