"""Semantic-token probing over the corpus labels, for every codec token rate, as one Markdown table."""
