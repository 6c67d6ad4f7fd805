"""The stages in pipeline order, what each reads, and the hash that says whether a stage's outputs
are still valid: its own config sections plus the hashes of the stages it reads from, so that
changing the sampling temperature re-runs sampling and nothing else."""
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
    after: tuple[str, ...] = ()   # stages whose outputs it reads

    def run(self, cfg: Config, run, **kwargs) -> dict:
        return importlib.import_module(self.module).run(cfg, run, **kwargs)


STAGES = [
    Stage("data", ("data", "corpus"), "fidan.data.prepare", "data/clean/train.parquet",
          "collect documents, clean them (dedup, quality, language, PII, decontamination), split train/val"),
    Stage("tokenizer", ("tokenizer",), "fidan.tokenizer.stage", "tokenizer/tokenizer.json",
          "train the byte-level BPE tokenizer on the training split", ("data",)),
    Stage("tokens", (), "fidan.data.shards", "data/tokens/meta.json",
          "encode the documents into token shards", ("data", "tokenizer")),
    Stage("pretrain", ("model", "train"), "fidan.train.pretrain", "pretrain/model.safetensors",
          "pre-train the GPT by next-token prediction", ("tokens",)),
    Stage("sample", ("sample",), "fidan.serve.sample", "sample/samples.txt",
          "write a few continuations from the pre-trained model", ("pretrain",)),
    Stage("sft", ("sft",), "fidan.finetune.sft", "sft/model.safetensors",
          "supervised instruction tuning into a chat model", ("pretrain",)),
    Stage("reward", ("reward",), "fidan.rlhf.reward", "reward/model.safetensors",
          "preference pairs (rule judge, labelled files) and a reward model trained on them", ("sft",)),
    Stage("rlhf", ("rlhf",), "fidan.rlhf.stage", "rlhf/summary.json",
          "align the chat model with the reward model: PPO (or --rlhf.algo=dpo|grpo)", ("reward",)),
    Stage("eval", ("eval",), "fidan.eval.stage", "eval/pretrain.json",
          "score every stage's model: bpb, benchmarks, prompting modes, red team, bias", ("pretrain", "sft", "rlhf")),
    Stage("report", (), "fidan.eval.report", "report.md",
          "write the report card (report.md, report.html, plots/)", ("eval",)),
]
# Stages that run on request, not in the default pipeline.
EXTRA_STAGES = [
    Stage("classify", ("classify",), "fidan.finetune.classify", "classify/model.safetensors",
          "transfer learning: the pre-trained trunk with a sentiment classifier head", ("pretrain",)),
]
BY_NAME = {s.name: s for s in STAGES + EXTRA_STAGES}


def stage_hash(cfg: Config, name: str) -> str:
    stage = BY_NAME[name]
    h = hashlib.sha256(f"{cfg.run.seed}:{name}".encode())
    if stage.sections:
        h.update(cfg.section_hash(*stage.sections).encode())
    for upstream in stage.after:  # upstream stages' hashes already cover their own upstream
        h.update(stage_hash(cfg, upstream).encode())
    return h.hexdigest()[:16]
