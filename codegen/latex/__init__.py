"""The LaTeX emitter: index and matrix forms in the article's notation, the steps of each derivation."""
