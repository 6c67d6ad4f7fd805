"""Byte-level BPE, trained with Hugging Face ``tokenizers``; or a model's own tokenizer.

Byte-level means the base alphabet is the 256 byte values, so any UTF-8 text (Turkish, emoji,
control characters) encodes and decodes back exactly; merges learned on the corpus make common
words single tokens. Special tokens mark document and chat structure; in ordinary text their
spelling is encoded as plain characters, so a document cannot forge them.

A model imported from Hugging Face keeps its own tokenizer: its ``tokenizer.json`` and, beside
it, ``tokenizer_config.json`` (special tokens, and the chat template, which ``tokenizer/template.py``
renders). Such a tokenizer has no fidan special tokens; ``bos``, ``eos``, ``pad``,
``end_of_turn`` and ``stop_ids`` come from its config and template instead, and every stage
uses them the same way.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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


CONFIG = "tokenizer_config.json"          # beside tokenizer.json: a model's own special tokens and chat template
MODEL_FILES = ("tokenizer.json", CONFIG)   # what travels with a model that has its own tokenizer


def _token_text(value: Any) -> str | None:
    """A special token as ``tokenizer_config.json`` writes it: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


class FidanTokenizer:
    """``config`` (a model's ``tokenizer_config.json``) makes it the model's own tokenizer; without
    one, it is fidan's, with fidan's special tokens and chat template."""

    def __init__(self, tok: Tokenizer, config: dict[str, Any] | None = None, where: str = "tokenizer"):
        self.tok = tok
        self.tok.encode_special_tokens = True  # "<|eos|>" inside a document is just text
        self.config = config
        added = tok.get_added_tokens_decoder()
        self.special_ids = {i for i, t in added.items() if t.special}
        self.template: str | None = None
        if config is None:
            missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
            if missing:
                raise FidanError(f"tokenizer lacks special tokens {missing}; retrain it with `fidan tokenizer`")
            self.bos, self.eos, self.pad = (self.tok.token_to_id(t) for t in (BOS, EOS, PAD))
            self.special_ids |= {self.tok.token_to_id(t) for t in SPECIAL_TOKENS}
            self.end_of_turn = self.tok.token_to_id(END)
        else:
            self._from_config(config, where)
        self.stop_ids = frozenset({self.end_of_turn, self.eos})
        self._byte_level = "ByteLevel" in json.dumps(json.loads(tok.to_str()).get("decoder"))

    def _from_config(self, config: dict[str, Any], where: str) -> None:
        names = {k: _token_text(config.get(f"{k}_token")) for k in ("bos", "eos", "pad", "unk")}
        ids = {}
        for key, text in names.items():
            if text is not None:
                if self.tok.token_to_id(text) is None:
                    raise FidanError(f"{where}: {key}_token {text!r} is not in tokenizer.json")
                ids[key] = self.tok.token_to_id(text)
        if "eos" not in ids:
            raise FidanError(f"{where}: tokenizer_config.json names no eos_token (the end of a text)")
        self.token_names = names
        self.eos = ids["eos"]
        self.bos = ids.get("bos", self.eos)  # no BOS (Qwen2): documents start after an end-of-text
        self.pad = ids.get("pad", self.eos)  # padding is masked out; any id will do
        self.special_ids |= set(ids.values())
        self.template = config.get("chat_template") or None
        if isinstance(self.template, list):  # several named templates: the default one
            self.template = next((t["template"] for t in self.template if t.get("name") == "default"), None)
        from fidan.tokenizer.template import DEFAULT_TEMPLATE, end_of_turn
        if not self.template:  # a base model without one: plain role names, turns closed by EOS
            self.template = DEFAULT_TEMPLATE
            self.config = {**config, "chat_template": DEFAULT_TEMPLATE}
        self.end_of_turn = self.eos
        self.end_of_turn = end_of_turn(self) or self.eos

    @property
    def native(self) -> bool:
        """fidan's own tokenizer (special tokens and chat format of ``tokenizer/chat.py``)."""
        return self.config is None

    # -- persistence ----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> FidanTokenizer:
        """``tokenizer.json`` (or a folder holding it); a ``tokenizer_config.json`` with a chat
        template or special tokens beside it makes it a model's own tokenizer."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.exists():
            raise FidanError(f"{path}: tokenizer not found; train one with `fidan tokenizer`")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises plain Exception on a damaged file
            raise FidanError(f"{path}: cannot read tokenizer ({str(e).splitlines()[0]}); retrain it") from None
        return cls(tok, read_config(path.parent), where=str(path.parent))

    def save(self, path: str | Path) -> None:
        atomic.write_text(path, self.tok.to_str(pretty=False))

    def save_folder(self, folder: str | Path) -> None:
        """``tokenizer.json``, and for a model's own tokenizer its ``tokenizer_config.json``."""
        folder = Path(folder)
        self.save(folder / "tokenizer.json")
        if self.config is not None:
            atomic.write_json(folder / CONFIG, self.config)

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
        piece = self.tok.id_to_token(i)
        if self._byte_level:
            return bytes(_UNICODE_TO_BYTE[ch] for ch in piece)
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):  # SentencePiece byte fallback
            return bytes([int(piece[3:5], 16)])
        return piece.replace("\u2581", " ").encode("utf-8")  # SentencePiece marks spaces with U+2581

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


def read_config(folder: Path) -> dict[str, Any] | None:
    """A model's ``tokenizer_config.json`` in ``folder``, with the chat template folded in (newer
    ``transformers`` write it to ``chat_template.jinja`` or ``chat_template.json``); None when the
    folder has none, or when it is fidan's own tokenizer exported (fidan's template, fidan's tokens)."""
    path = folder / CONFIG
    if not path.exists():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FidanError(f"{path}: cannot read ({e})") from None
    if not isinstance(config, dict):
        raise FidanError(f"{path}: not a JSON object")
    if not config.get("chat_template"):
        if (folder / "chat_template.jinja").exists():
            config["chat_template"] = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        elif (folder / "chat_template.json").exists():
            try:
                config["chat_template"] = json.loads((folder / "chat_template.json").read_text())["chat_template"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise FidanError(f"{folder / 'chat_template.json'}: cannot read ({e})") from None
    from fidan.tokenizer.chat import CHAT_TEMPLATE
    if config.get("chat_template") == CHAT_TEMPLATE and _token_text(config.get("eos_token")) == EOS:
        return None  # fidan's own format, exported: read it as fidan's tokenizer
    return config


def carry(model_folder: Path, out: Path) -> None:
    """A model's own tokenizer travels with every model trained from it (a fidan-trained base
    uses the run's ``tokenizer/`` and has nothing to carry)."""
    for name in MODEL_FILES:
        src = Path(model_folder) / name
        if src.exists() and src.resolve() != (Path(out) / name).resolve():
            with atomic.atomic_path(Path(out) / name) as tmp:
                shutil.copyfile(src, tmp)
