"""Whole documents (Markdown and LaTeX) in the article's structure, with their pictures."""
