"""The GPT decoder and its key/value cache."""
from fidan.model.gpt import GPT, GPTConfig
from fidan.model.kv_cache import KVCache

__all__ = ["GPT", "GPTConfig", "KVCache"]
