"""Byte-level BPE tokenizer and the chat template."""
from fidan.tokenizer.bpe import SPECIAL_TOKENS, FidanTokenizer, train_tokenizer

__all__ = ["SPECIAL_TOKENS", "FidanTokenizer", "train_tokenizer"]
