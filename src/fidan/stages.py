"""The stages in pipeline order, what config each depends on, and the hash that says whether a
stage's outputs are still valid (its own sections plus every upstream stage's hash)."""
from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass

from fidan.config import Config


@dataclass(frozen=True)
class Stage:
    name: str
    sections: tuple[str, ...]     # config sections the stage reads
    module: str                   # has run(cfg, run_dir) -> summary dict
    output: str                   # a file the stage writes last-but-one (the stamp is last)
    help: str

    def run(self, cfg: Config, run, **kwargs) -> dict:
        return importlib.import_module(self.module).run(cfg, run, **kwargs)


STAGES = [
    Stage("data", ("data", "corpus"), "fidan.data.prepare", "data/clean/train.parquet",
          "collect documents (embedded world or --data.source files) and split train/validation"),
    Stage("tokenizer", ("tokenizer",), "fidan.tokenizer.stage", "tokenizer/tokenizer.json",
          "train the byte-level BPE tokenizer on the training split"),
    Stage("tokens", (), "fidan.data.shards", "data/tokens/meta.json",
          "encode the documents into token shards"),
    Stage("pretrain", ("model", "train"), "fidan.train.pretrain", "pretrain/model.safetensors",
          "pre-train the GPT by next-token prediction"),
    Stage("sample", ("sample",), "fidan.serve.sample", "sample/samples.txt",
          "write a few samples from the newest model"),
]
BY_NAME = {s.name: s for s in STAGES}


def stage_hash(cfg: Config, name: str) -> str:
    h = hashlib.sha256(str(cfg.run.seed).encode())
    for stage in STAGES:
        h.update(stage.name.encode() + cfg.section_hash(*stage.sections).encode() if stage.sections
                 else stage.name.encode())
        if stage.name == name:
            return h.hexdigest()[:16]
    raise KeyError(name)
