"""Evaluation tasks: data loaders plus a scoring rule each."""
