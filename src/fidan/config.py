"""Typed configuration for every stage.

A config is built in three layers: the dataclass defaults below, a TOML preset from
``configs/`` (or any file given with ``--config``), and dotted command-line overrides such as
``--train.lr=3e-4``. Unknown keys and values of the wrong type are refused with a message that
names them. Each stage hashes the sections it depends on, so the pipeline can tell whether a
stage's outputs are still valid.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from fidan.errors import FidanError
from fidan.model.config import GPTConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class RunConfig:
    name: str = "default"          # run directory is <root>/<name>
    root: str = "runs"
    seed: int = 1337


@dataclass
class DataConfig:
    source: str = "embedded"       # "embedded", files / folders (txt, jsonl, parquet, warc, .gz), or hf:<name>
    text_field: str = "text"       # jsonl / parquet / HF datasets: the field that holds the document text
    split: str = "auto"            # "tail": last val_fraction of the text; "hash": whole documents; "auto"
    val_fraction: float = 0.1
    on_error: str = "fail"         # bad documents: "fail" stops with file and line, "skip" counts them
    # Cleaning chain, in this order; drop names to skip steps ("" = no cleaning at all).
    steps: str = "normalize,language,c4,gopher_repetition,gopher_quality,fineweb,decontam,pii,exact_dedup,near_dedup"
    languages: str = "en,tr"       # language keep-list (ISO 639-1)
    lang_threshold: float = 0.65   # minimum language-ID probability
    minhash_ngram: int = 5         # word n-grams for near-duplicate detection
    minhash_bands: int = 14        # LSH bands x rows = MinHash permutations (FineWeb: 14 x 8)
    minhash_rows: int = 8
    decontam_n: int = 13           # n-gram overlap with evaluation sets (GPT-3: 13)
    decontam_min_words: int = 3    # shorter evaluation items are not indexed
    decontam_mode: str = "cut"     # "cut" contaminated paragraphs, or "drop" the whole document
    decontam_files: str = ""       # extra jsonl files of evaluation prompts to keep out of training
    executor: str = "local"        # "local" worker processes, or "ray"
    workers: int = 0               # local worker processes; 0 = one per CPU core
    ray_address: str = ""          # existing Ray cluster ("" = $RAY_ADDRESS, else start a local one)
    shard_docs: int = 2000         # documents per shard (the unit of work and of resuming)


@dataclass
class CorpusConfig:
    scale_mb: float = 2.0          # size of the generated pre-training text
    turkish_fraction: float = 0.5  # share of documents written in Turkish
    n_places: int = 24
    n_people: int = 48
    n_creatures: int = 16
    sft_conversations: int = 6000  # instruction-tuning conversations about the world
    sentiment_examples: int = 1500 # labelled reviews for the classifier-head example (80% train)
    noise: float = 1.0             # faults in the embedded web crawl (duplicates, spam, PII ...); 0 = none


@dataclass
class TokenizerConfig:
    vocab_size: int = 4096
    min_frequency: int = 2


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16           # sequences per micro-batch
    grad_accum: int = 1            # micro-batches per optimizer step
    lr: float = 3e-3
    min_lr_ratio: float = 0.1      # final learning rate as a fraction of lr
    warmup_steps: int = 50
    schedule: str = "cosine"       # "cosine", "linear" or "constant" after warm-up
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0         # 0 disables clipping
    eval_every: int = 100
    eval_tokens: int = 0           # validation tokens per periodic eval; 0 = the whole split
    log_every: int = 10
    ckpt_every: int = 200
    keep_checkpoints: int = 2
    device: str = "auto"           # "auto", "cpu", "cuda", "mps"
    threads: int = 0               # CPU threads; 0 = all cores
    compile: bool = False


@dataclass
class SFTConfig:
    data: str = ""                 # "" = the run's generated conversations; else jsonl (messages, ShareGPT, Alpaca, prompt/completion)
    on_error: str = "fail"         # malformed rows: "fail" names file and line, "skip" counts them
    method: str = "full"           # full, layers, gradual, lora, prompt, distill
    out: str = "sft"               # output folder inside the run directory
    steps: int = 200
    batch_size: int = 16
    lr: float = 5e-4               # gentle: 2e-3 overwrote what pre-training learned (BENCHMARKS.md)
    warmup_steps: int = 10
    weight_decay: float = 0.0
    eval_items: int = 60           # held-out fact questions scored (and a third as many word problems)
    layers: str = "-1,lm_head"     # method=layers: block indices (negative from the top) or name patterns
    unfreeze_every: int = 40       # method=gradual: steps between thawing the next block down
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    prompt_tokens: int = 16        # method=prompt: learned soft-prompt vectors
    teacher: str = ""              # method=distill: teacher model folder ("" = this run's sft/, else pretrain/)
    student_layers: int = 2        # method=distill: student keeps this many of the teacher's blocks
    distill_temperature: float = 2.0
    distill_alpha: float = 0.5
    reweight: float = 0.0          # instance reweighting temperature (0 = off)
    adversarial: float = 0.0       # ALUM perturbation size in embedding space (0 = off)
    adversarial_weight: float = 1.0


@dataclass
class ClassifyConfig:
    data: str = ""                 # "" = the run's sentiment set; else a jsonl with "text" and "label" (0/1)
    steps: int = 150
    batch_size: int = 32
    lr: float = 1e-3
    freeze_trunk: bool = False     # True: train only the new head


@dataclass
class RewardConfig:
    preferences: str = ""          # extra preference files, comma-separated (ours or HH-RLHF jsonl[.gz]); the
                                   # run's preferences.jsonl (web page, `fidan label`) is always read when present
    judge: bool = True             # label sampled answer pairs with the rule judge (the embedded world only)
    samples: int = 4               # answers the SFT model samples per training prompt for the judge
    response_tokens: int = 64      # longest sampled answer (the SFT refusals are 34-55 tokens)
    temperature: float = 1.0       # sampling temperature for the two answers
    steps: int = 120
    batch_size: int = 16           # pairs per step
    lr: float = 1e-4
    on_error: str = "skip"         # malformed preference lines: "skip" (counted, reported) or "fail"
    harmful_share: float = 0.5     # embedded world: harmful requests repeated to this share of the
                                   # judge's and PPO's training prompts (0 = as they come, 14%)


@dataclass
class RLHFConfig:
    algo: str = "ppo"              # ppo, dpo or grpo
    out: str = ""                  # output folder ("" = rlhf/, whatever the algo)
    steps: int = 30                # PPO/GRPO: rollout batches; DPO: optimizer steps
    prompts_per_step: int = 64     # prompts per rollout batch (GRPO: answers per batch, group x prompts)
    response_tokens: int = 64      # an answer cut off here is penalised (no_eos_penalty): keep refusals whole
    temperature: float = 1.0       # rollouts sample the policy as it is
    lr: float = 3e-5
    epochs: int = 4                # optimisation passes over each rollout batch
    minibatch: int = 32
    kl_coef: float = 0.2           # per-token KL penalty against the SFT model (0 = off: see reward hacking)
    target_kl: float = 0.0         # > 0: adapt kl_coef towards this KL per response (Ziegler et al.)
    clip: float = 0.2              # PPO ratio clipping
    value_clip: float = 0.2
    vf_coef: float = 0.5
    value_lr: float = 1e-3         # the value head's learning rate (it starts from zero and must catch up fast)
    gamma: float = 1.0
    lam: float = 0.95              # GAE
    no_eos_penalty: float = 1.0    # subtracted from the reward of an answer cut off at response_tokens
    dpo_beta: float = 0.1
    dpo_batch: int = 16
    group: int = 8                 # GRPO: answers per prompt
    grpo_kl: float = 0.04          # GRPO: KL weight in the loss
    eval_prompts: int = 120        # held-out fact questions for the win rate and reward scores (0 = all), plus
                                   # every red-team request
    eval_samples: int = 4          # sampled answers per held-out prompt and model for the sampled win rate


@dataclass
class EvalConfig:
    limit: int = 120               # items per built-in multiple-choice task (0 = all)
    math_limit: int = 20           # word problems generated per mode (generation is the slow part)
    k_shot: int = 3
    suites: str = ""               # extra real benchmarks: "gsm8k=PATH,truthfulqa=PATH,mmlu=CSV,humaneval=PATH"
    suite_limit: int = 50          # items per extra benchmark (0 = all)
    redteam: bool = True
    bias: bool = True
    unsafe_code: bool = False      # run generated code without OS isolation when bubblewrap is unavailable


@dataclass
class SampleConfig:
    prompt: str = ""
    max_tokens: int = 160
    temperature: float = 0.8
    top_k: int = 0                 # 0 = off
    top_p: float = 1.0             # 1.0 = off
    seed: int = 0
    num_samples: int = 3
    repetition_penalty: float = 1.0  # > 1 makes tokens already present less likely


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: GPTConfig = field(default_factory=GPTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    rlhf: RLHFConfig = field(default_factory=RLHFConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def section_hash(self, *names: str) -> str:
        """A short, stable hash of the named sections (order-insensitive), leaving out settings
        that change how a stage runs but not what it produces (threads, logging cadence ...)."""
        payload = {n: {k: v for k, v in dataclasses.asdict(getattr(self, n)).items()
                       if (n, k) not in NOT_HASHED} for n in sorted(names)}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


NOT_HASHED = {("train", k) for k in ("device", "threads", "compile", "log_every", "eval_every", "eval_tokens",
                                     "ckpt_every", "keep_checkpoints")}


# ---------------------------------------------------------------------------------------------
# Building a config

def preset_path(name: str) -> Path:
    path = CONFIG_DIR / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))) or "none"
        raise FidanError(f"unknown preset '{name}' (known presets: {known})")
    return path


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise FidanError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise FidanError(f"{path}: not valid TOML ({e})") from None


def build_config(preset: str | None = None, config_file: str | None = None,
                 overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then a preset, then a config file, then ``key.sub=value`` overrides."""
    cfg = Config()
    if preset:
        path = preset_path(preset)
        apply_dict(cfg, load_toml(path), origin=str(path))
    if config_file:
        apply_dict(cfg, load_toml(config_file), origin=str(config_file))
    for item in overrides:
        apply_override(cfg, item)
    validate(cfg)
    return cfg


def apply_dict(cfg: Config, data: dict[str, Any], origin: str) -> None:
    for section, values in data.items():
        target = _section(cfg, section, origin)
        if not isinstance(values, dict):
            raise FidanError(f"{origin}: [{section}] must be a table of settings")
        for key, value in values.items():
            _set(target, section, key, value, origin, from_text=False)


def apply_override(cfg: Config, item: str) -> None:
    origin = "command line"
    if "=" not in item:
        raise FidanError(f"{origin}: override '{item}' must look like section.key=value")
    dotted, raw = item.split("=", 1)
    dotted = dotted.lstrip("-")
    if dotted.count(".") != 1:
        raise FidanError(f"{origin}: override '{item}' must look like section.key=value")
    section, key = dotted.split(".")
    _set(_section(cfg, section, origin), section, key, raw, origin, from_text=True)


def _section(cfg: Config, section: str, origin: str) -> Any:
    names = [f.name for f in dataclasses.fields(cfg)]
    if section not in names:
        raise FidanError(f"{origin}: unknown config section '{section}' (known: {', '.join(names)})")
    return getattr(cfg, section)


def _set(target: Any, section: str, key: str, value: Any, origin: str, from_text: bool) -> None:
    hints = typing.get_type_hints(type(target))
    if key not in hints:
        known = ", ".join(f.name for f in dataclasses.fields(target))
        raise FidanError(f"{origin}: unknown config key '{section}.{key}' (known in [{section}]: {known})")
    try:
        coerced = _coerce(value, hints[key], from_text)
    except ValueError as e:
        raise FidanError(f"{origin}: bad value for '{section}.{key}': {e}") from None
    setattr(target, key, coerced)


def _coerce(value: Any, typ: Any, from_text: bool) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, args[0], from_text)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if from_text and str(value).lower() in ("true", "1", "yes", "on"):
            return True
        if from_text and str(value).lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{value!r} is not true/false")
    if typ is int:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not an integer")
        if isinstance(value, int):
            return value
        if from_text:
            try:
                return int(str(value).replace("_", ""))
            except ValueError:
                pass
        raise ValueError(f"{value!r} is not an integer")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_text:
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{value!r} is not a number")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{value!r} is not a string")
    raise ValueError(f"unsupported setting type {typ}")  # pragma: no cover


_CHOICES = {
    ("data", "split"): ("auto", "tail", "hash"),
    ("data", "on_error"): ("fail", "skip"),
    ("data", "executor"): ("local", "ray"),
    ("data", "decontam_mode"): ("cut", "drop"),
    ("train", "schedule"): ("cosine", "linear", "constant"),
    ("train", "device"): ("auto", "cpu", "cuda", "mps"),
    ("model", "mlp"): ("swiglu", "relu2", "gelu"),
    ("sft", "method"): ("full", "layers", "gradual", "lora", "prompt", "distill"),
    ("sft", "on_error"): ("fail", "skip"),
    ("reward", "on_error"): ("fail", "skip"),
    ("rlhf", "algo"): ("ppo", "dpo", "grpo"),
}


def validate(cfg: Config) -> None:
    for (section, key), allowed in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise FidanError(f"bad value for '{section}.{key}': {value!r} (choose one of: {', '.join(allowed)})")
    m = cfg.model
    if m.d_model % m.n_head:
        raise FidanError(f"model.d_model ({m.d_model}) must be divisible by model.n_head ({m.n_head})")
    if m.n_head % m.n_kv_head:
        raise FidanError(f"model.n_head ({m.n_head}) must be divisible by model.n_kv_head ({m.n_kv_head})")
    if (m.d_model // m.n_head) % 2:
        raise FidanError("model.d_model / model.n_head must be even (RoPE rotates pairs of dimensions)")
    from fidan.data.steps import parse_steps  # noqa: PLC0415 (config must not import data at load time)
    parse_steps(cfg.data.steps)
    if cfg.data.shard_docs < 1 or cfg.data.minhash_bands < 1 or cfg.data.minhash_rows < 1:
        raise FidanError("data.shard_docs, data.minhash_bands and data.minhash_rows must be at least 1")
    if not 0.0 < cfg.data.val_fraction < 1.0:
        raise FidanError(f"bad value for 'data.val_fraction': {cfg.data.val_fraction} (must be between 0 and 1)")
    for key in ("steps", "batch_size", "grad_accum", "eval_every", "log_every", "ckpt_every", "keep_checkpoints"):
        if getattr(cfg.train, key) < 1:
            raise FidanError(f"bad value for 'train.{key}': must be at least 1")
    if cfg.tokenizer.vocab_size < 300:
        raise FidanError("bad value for 'tokenizer.vocab_size': must be at least 300 (256 bytes + special tokens)")


# ---------------------------------------------------------------------------------------------
# Writing a config back as TOML (the resolved config saved in every run directory)

def to_toml(cfg: Config) -> str:
    lines: list[str] = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return '"none"'
    raise TypeError(f"cannot write {value!r} as TOML")  # pragma: no cover
