"""The embedded default corpus: a small bilingual invented world, generated from a seed."""
