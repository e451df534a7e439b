"""The corpus format every recipe reads: manifest rows and their schema, the fixed split rule, datasets.

Built by ``python -m recipes.data.build`` (``recipes/data/README.md``).
"""
