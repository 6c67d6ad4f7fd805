"""The stage table: every stage in pipeline order, each declared once (``context.StageSpec``).

A declaration says which settings the stage reads, which upstream outputs and outside files,
and where it writes; the stage's hash is made from exactly that (``context.stage_hash``), and
``ctx.cfg`` refuses anything else. Changing the sampling temperature re-runs sampling and
nothing else; appending a labelled pair to ``preferences.jsonl`` re-runs reward and what reads
it; ``--data.workers`` re-runs nothing.
"""
from __future__ import annotations

from pathlib import Path

from fidan.config import INHERITED_TRAIN, Config
from fidan.context import ConfigView, StageContext, StageSpec, paths_in
from fidan.context import stage_hash as _stage_hash

TRAIN_INHERITED = tuple(f"train.{k}" for k in INHERITED_TRAIN)  # what sft, classify, reward and dpo take from [train]
TOKENIZER = ("tokenizer", "tokenizer", "tokenizer/tokenizer.json")
EVAL_SETS = ("eval_sets", "data", "data/eval")           # held-out questions the data stage wrote
CONVERSATIONS = ("conversations", "data", "data/sft/train.jsonl")  # SFT conversations (the world's, or made
                                                                   # from your text, with reference answers)


def _data_files(cfg, run: Path) -> list[Path]:
    files = paths_in(cfg.data.source)
    if "decontam" in cfg.data.steps:
        files += paths_in(cfg.data.decontam_files)
    return files


def _sft_files(cfg, run: Path) -> list[Path]:
    files = paths_in(cfg.sft.data)
    if cfg.sft.method == "distill":   # the teacher: the given folder, else this run's SFT model (or pretrain)
        files.append(Path(cfg.sft.distill.teacher or run / "sft") / "model.safetensors")
    return files


def _reward_files(cfg, run: Path) -> list[Path]:
    """The run's own preference file (the chat page, ``fidan label``) and any given files."""
    return [run / "preferences.jsonl"] + paths_in(cfg.reward.preferences)


STAGES = [
    StageSpec("data", "fidan.data.prepare",
              "collect documents, clean them (dedup, quality, language, PII, decontamination), split train/val",
              reads=("data", "corpus"), files=_data_files, out="data", done="clean/train.parquet", resume=("work",)),
    StageSpec("tokenizer", "fidan.tokenizer.stage", "train the byte-level BPE tokenizer on the training split",
              reads=("tokenizer",), after=("data",), inputs=(("train", "data", "data/clean/train.parquet"),),
              out="tokenizer", done="tokenizer.json"),
    StageSpec("tokens", "fidan.data.shards", "encode the documents into token shards",
              reads=("data.workers",), after=("data", "tokenizer"), out="data/tokens", done="meta.json",
              inputs=(TOKENIZER, ("train", "data", "data/clean/train.parquet"),
                      ("val", "data", "data/clean/val.parquet"))),
    StageSpec("pretrain", "fidan.train.pretrain", "pre-train the GPT by next-token prediction",
              reads=("model", "train"), after=("tokens",), out="pretrain", done="model.safetensors",
              inputs=(TOKENIZER, ("tokens", "tokens", "data/tokens/meta.json"))),
    StageSpec("sample", "fidan.serve.sample", "write a few continuations from the pre-trained model",
              reads=("sample", "data.source"), after=("pretrain",), out="sample", done="samples.txt",
              inputs=(TOKENIZER, ("model", "pretrain", "pretrain/model.safetensors"))),
    StageSpec("sft", "fidan.finetune.sft", "supervised instruction tuning into a chat model",
              reads=("sft", *TRAIN_INHERITED, "data.source", "corpus.n_places", "corpus.n_people",
                     "corpus.n_creatures"), after=("pretrain",), files=_sft_files,
              out="{sft.out}", done="model.safetensors",
              inputs=(TOKENIZER, ("base", "pretrain", "pretrain/model.safetensors"),
                      CONVERSATIONS, EVAL_SETS, ("tokens", "tokens", "data/tokens/meta.json"),
                      ("teacher", "sft", "sft/model.safetensors"))),
    StageSpec("reward", "fidan.rlhf.reward",
              "preference pairs (rule judge, labelled files) and a reward model trained on them",
              reads=("reward", *TRAIN_INHERITED, "rlhf.eval_prompts", "data.source", "corpus"),
              after=("sft",), files=_reward_files, out="reward", done="model.safetensors",
              inputs=(TOKENIZER, ("sft", "sft", "{sft.out}/model.safetensors"), EVAL_SETS, CONVERSATIONS)),
    StageSpec("rlhf", "fidan.rlhf.stage",
              "align the chat model with the reward model: PPO (or --rlhf.algo=dpo|grpo)",
              reads=("rlhf", *TRAIN_INHERITED, "reward.harmful_share", "reward.benign_pairs", "reward.unknown_pairs",
                     "sft.eval_items", "data.source", "corpus"),
              after=("reward",), out="{rlhf.out}", done="summary.json",
              inputs=(TOKENIZER, ("sft", "sft", "{sft.out}/model.safetensors"),
                      ("reward_model", "reward", "reward/model.safetensors"),
                      ("pairs", "reward", "reward/pairs.jsonl"), EVAL_SETS, CONVERSATIONS)),
    StageSpec("eval", "fidan.eval.stage",
              "score every stage's model: bpb, benchmarks, prompting modes, red team, bias",
              reads=("eval",), after=("pretrain", "sft", "rlhf"), out="eval", done="pretrain.json",
              files=lambda cfg, run: paths_in(cfg.eval.suites, named=True),
              inputs=(TOKENIZER, ("tokens", "tokens", "data/tokens/meta.json"), EVAL_SETS,
                      ("pretrain", "pretrain", "pretrain/model.safetensors"),
                      ("sft", "sft", "{sft.out}/model.safetensors"),
                      ("rlhf", "rlhf", "{rlhf.out}/model.safetensors"))),
    StageSpec("report", "fidan.eval.report", "write the report card (report.md, report.html, plots/)",
              reads=("sft.out", "rlhf.out"), after=("eval",), done="report.md",
              inputs=(("eval", "eval", "eval"), ("pretrain", "pretrain", "pretrain/model.json"))),
]
# Stages that run on request, not in the default pipeline.
EXTRA_STAGES = [
    StageSpec("classify", "fidan.finetune.classify",
              "transfer learning: the pre-trained trunk with a sentiment classifier head",
              reads=("classify", *TRAIN_INHERITED), after=("pretrain",), out="classify", done="model.safetensors",
              files=lambda cfg, run: paths_in(cfg.classify.data),
              inputs=(TOKENIZER, ("base", "pretrain", "pretrain/model.safetensors"),
                      ("sentiment", "data", "data/sentiment"))),
]
BY_NAME = {s.name: s for s in STAGES + EXTRA_STAGES}
# The stages every rank of a torchrun job runs together (the others run on rank 0 alone).
TRAINING = ("pretrain", "sft", "reward", "rlhf", "classify")


def stage_hash(cfg: Config, name: str, run_path: Path | None = None) -> str:
    return _stage_hash(cfg, BY_NAME[name], BY_NAME, run_path)


def context(cfg: Config, run, name: str, quiet: bool = False, overrides: tuple[str, ...] = (),
            staging: Path | None = None) -> StageContext:
    """What stage ``name`` gets to see of this config and run directory (``staging``: the folder
    it writes into while it runs; see ``fidan/staging.py``)."""
    spec = BY_NAME[name]
    return StageContext(spec=spec, cfg=ConfigView(cfg, spec.allowed(), name), run=run,
                        hash=stage_hash(cfg, name, run.path), quiet=quiet, overrides=tuple(overrides),
                        inputs=spec.input_paths(cfg), staging=staging)
