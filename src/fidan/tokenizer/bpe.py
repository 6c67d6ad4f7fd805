"""Byte-level BPE, trained with Hugging Face ``tokenizers``.

Byte-level means the base alphabet is the 256 byte values, so any UTF-8 text (Turkish, emoji,
control characters) encodes and decodes back exactly; merges learned on the corpus make common
words single tokens. Special tokens mark document and chat structure; in ordinary text their
spelling is encoded as plain characters, so a document cannot forge them.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from fidan import atomic
from fidan.errors import FidanError

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, SYSTEM, USER, ASSISTANT, END]


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> FidanTokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return FidanTokenizer(tok)


class FidanTokenizer:
    def __init__(self, tok: Tokenizer):
        self.tok = tok
        self.tok.encode_special_tokens = True  # "<|eos|>" inside a document is just text
        missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
        if missing:
            raise FidanError(f"tokenizer lacks special tokens {missing}; retrain it with `fidan tokenizer`")
        self.bos, self.eos, self.pad = (self.tok.token_to_id(t) for t in (BOS, EOS, PAD))
        self.special_ids = {self.tok.token_to_id(t) for t in SPECIAL_TOKENS}

    # -- persistence ----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> FidanTokenizer:
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.exists():
            raise FidanError(f"{path}: tokenizer not found; train one with `fidan tokenizer`")
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as e:  # tokenizers raises plain Exception on a damaged file
            raise FidanError(f"{path}: cannot read tokenizer ({str(e).splitlines()[0]}); retrain it") from None

    def save(self, path: str | Path) -> None:
        atomic.write_text(path, self.tok.to_str(pretty=False))

    # -- encoding -------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def id_of(self, token: str) -> int:
        i = self.tok.token_to_id(token)
        if i is None:
            raise KeyError(token)
        return i

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special)

    def pieces(self, ids: Iterable[int]) -> list[str]:
        """Each token as readable text (bytes that are not whole characters shown as hex)."""
        out = []
        for i in ids:
            if i in self.special_ids:
                out.append(self.tok.id_to_token(i))
                continue
            raw = self.token_bytes_of(i)
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                out.append("".join(f"<{b:02x}>" for b in raw))
        return out

    def token_bytes_of(self, i: int) -> bytes:
        if i in self.special_ids:
            return b""
        return bytes(_UNICODE_TO_BYTE[ch] for ch in self.tok.id_to_token(i))

    def token_byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes each token stands for (0 for special tokens): the denominator of bits per byte."""
        return np.array([len(self.token_bytes_of(i)) for i in range(self.vocab_size)], dtype=np.int32)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, which ByteLevel tokens are spelled in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


_UNICODE_TO_BYTE = {ch: b for b, ch in _bytes_to_unicode().items()}
