"""Evaluation: bits per byte, task harness, code sandbox."""
