"""Data stage: sources, splitting, and token shards."""
