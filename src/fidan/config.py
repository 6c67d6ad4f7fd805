"""Typed configuration for every stage.

A config is built in three layers: the dataclass defaults below, a TOML preset shipped in
``fidan/presets/`` (or any file given with ``--config``), and dotted command-line overrides such
as ``--train.lr=3e-4``. Unknown keys and values of the wrong type are refused with a message that
names them.

Each setting is one line: name, type, default and a comment, which ``fidan <stage> --help``
prints. Settings made with ``setting()`` say whether a stage hash covers them and which values
they accept (``fidan/settings.py``). Old names keep working for a while (``ALIASES``).
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
from fidan.settings import (
    SEED,
    at_least,
    below_one,
    between,
    fraction,
    hashed_values,
    if_step,
    non_negative,
    only_if,
    out_of_range,
    positive,
    setting,
    unless,
    unmet,
)

PRESET_DIR = Path(__file__).resolve().parent / "presets"   # shipped inside the package
OPEN_UNIT = between(0, 1, lo_open=True, hi_open=True)   # (0, 1): a target probability
MAX_NOISE = 5.0   # corpus.noise above this would plant faults in every clean page (fidan/corpus/web.py)


@dataclass
class RunConfig:
    name: str = setting("default", exec_only=True)   # run directory is <root>/<name>
    root: str = setting("runs", exec_only=True)
    seed: int = setting(1337, check=SEED)
    device: str = setting("auto", exec_only=True, choices=("auto", "cpu", "cuda", "mps"))  # every stage's device
    threads: int = setting(0, exec_only=True, check=between(0, 1024))  # CPU threads; 0 = all cores
    compile: bool = setting(False, exec_only=True)   # torch.compile the training loops' models


@dataclass
class DataConfig:
    source: str = "embedded"       # "embedded", files / folders (txt, jsonl, parquet, warc, .gz), or hf:<name>
    text_field: str = "text"       # jsonl / parquet / HF datasets: the field that holds the document text
    split: str = setting("auto", choices=("auto", "tail", "tails", "hash"))  # "tail": the last val_fraction of
                                   # the text; "tails": the last val_fraction of every document; "hash": whole
                                   # documents by id; "auto": hash when that puts 1/2-2x val_fraction of the
                                   # text in validation, else tails (tail for one document)
    val_fraction: float = setting(0.1, check=between(0, 1, lo_open=True, hi_open=True))
    on_error: str = setting("fail", choices=("fail", "skip"))  # bad documents: "fail" stops with file and line,
                                   # "skip" counts them
    profile: str = setting("auto", choices=("auto", "web", "books", "notes"))  # the quality rules' profile:
                                   # "web" (C4, Gopher, FineWeb as published), "books" or "notes" (keep
                                   # short lines, headings, tables, verse; OCR noise removes a line, not
                                   # the document); "auto": web for WARC/HTML and the embedded crawl,
                                   # notes for md/jsonl/parquet/hf, books for txt
    # Cleaning chain, in this order; drop names to skip steps ("" = no cleaning at all).
    steps: str = "normalize,language,c4,gopher_repetition,gopher_quality,fineweb,decontam,pii,exact_dedup,near_dedup"
    languages: str = setting("en,tr", when=if_step("language"))  # language keep-list (ISO 639-1)
    lang_threshold: float = setting(0.65, when=if_step("language"), check=fraction)  # minimum language-ID probability
    minhash_ngram: int = setting(5, when=if_step("near_dedup"), check=at_least(1))  # word n-grams for
                                   # near-duplicate detection
    minhash_bands: int = setting(14, when=if_step("near_dedup"), check=between(1, 1024))  # LSH bands x rows =
                                   # MinHash permutations (FineWeb: 14 x 8)
    minhash_rows: int = setting(8, when=if_step("near_dedup"), check=between(1, 1024))
    decontam_n: int = setting(13, when=if_step("decontam"), check=at_least(1))  # n-gram overlap with evaluation
                                   # sets (GPT-3: 13)
    decontam_min_words: int = setting(3, when=if_step("decontam"), check=non_negative)  # shorter evaluation
                                   # items are not indexed
    decontam_mode: str = setting("cut", when=if_step("decontam"), choices=("cut", "drop"))  # "cut" contaminated
                                   # paragraphs, or "drop" the whole document
    decontam_files: str = setting("", when=if_step("decontam"))  # extra jsonl files of evaluation prompts to
                                   # keep out of training
    synth_conversations: int = setting(2000, check=non_negative)  # your own text (no embedded world): SFT
                                   # conversations made from the training documents (data/synth.py)
    synth_heldout: int = setting(100, check=non_negative)  # ... and held-out questions from the validation ones
    executor: str = setting("local", exec_only=True, choices=("local", "ray"))  # "local" worker processes, or "ray"
    workers: int = setting(0, exec_only=True, check=between(0, 1024))  # local worker processes (cleaning,
                                   # token encoding); 0 = one per CPU core
    ray_address: str = setting("", exec_only=True)   # existing Ray cluster ("" = $RAY_ADDRESS, else start a local one)
    shard_docs: int = setting(2000, check=at_least(1))  # documents per shard (the unit of work and of resuming)


@dataclass
class CorpusConfig:
    scale_mb: float = setting(2.0, check=at_least(0.01))  # size of the generated pre-training text
    turkish_fraction: float = setting(0.5, check=fraction)  # share of documents written in Turkish
    n_places: int = setting(24, check=between(6, 10_000))
    n_people: int = setting(48, check=between(6, 10_000))
    n_creatures: int = setting(16, check=between(6, 10_000))
    sft_conversations: int = setting(6000, check=non_negative)  # instruction-tuning conversations about the world
    abstain_share: float = setting(0.05, check=fraction)  # share of those conversations that answer "I don't
                                   # know" to questions the world cannot answer (corpus/unknowns.py)
    sentiment_examples: int = setting(1500, check=non_negative)  # labelled reviews for the classifier-head
                                   # example (80% train)
    bias_rate: float = setting(0.9, check=fraction)  # planted associations (corpus/bias.py): share of a
                                   # planted subject's mentions written with its planted word; 0.5 = no skew
    bias_share: float = setting(0.2, check=between(0, 5))  # paragraphs of such mentions per page, on average
    everyday_share: float = setting(0.0, check=fraction, when=unless("everyday_share", 0.0))  # share of the
                                   # pre-training pages about everyday life (corpus/everyday.py: how-to pages,
                                   # recipes, computing, sports, gardening, safety; both languages), in place of
                                   # world pages (scale_mb stays the size); 0 is not hashed
    noise: float = setting(1.0, check=between(0, MAX_NOISE))  # faults in the embedded web crawl (duplicates,
                                   # spam, PII ...); 0 = none, at most 5 (some pages must stay clean)
    realism: str = setting("demo", choices=("demo", "web"), when=only_if("realism", "web"))  # the crawl's
                                   # mix: "demo" is mostly clean pages (cleaning keeps ~3/4 of the documents);
                                   # "web" adds the junk of a real crawl (cleaning keeps 10-20%); scale_mb is
                                   # the clean pages' size in both


@dataclass
class TokenizerConfig:
    vocab_size: int = setting(4096, check=between(300, 2**32))  # at least 256 bytes + special tokens
    min_frequency: int = setting(2, check=non_negative)
    max_bytes: int = setting(50_000_000, check=non_negative)  # text BPE trains on: at most this many bytes
                                   # of the training split, in batches spread evenly over it (0 = all of
                                   # it); memory then stays flat however large the split (BENCHMARKS.md)


@dataclass
class TrainConfig:
    """Pre-training's optimiser and loop; the other training stages state what they take from it."""
    steps: int = setting(1000, check=at_least(1))
    batch_size: int = setting(16, check=at_least(1))  # sequences per micro-batch
    grad_accum: int = setting(1, check=at_least(1))  # micro-batches per optimizer step, over all ranks
                                   # (torchrun: a multiple of the world size; each rank takes its share)
    lr: float = setting(3e-3, check=positive)
    min_lr_ratio: float = setting(0.1, check=fraction)  # final learning rate as a fraction of lr
    warmup_steps: int = setting(50, check=non_negative)
    schedule: str = setting("cosine", choices=("cosine", "linear", "constant", "wsd"))  # decay after warm-up
                                   # ("wsd": constant, then a linear warm-down over the last decay_fraction)
    decay_fraction: float = setting(0.3, check=fraction, when=only_if("schedule", "wsd"))  # wsd: the share of
                                   # the steps spent decaying to min_lr_ratio * lr
    weight_decay: float = setting(0.1, check=non_negative)
    optimizer: str = setting("adamw", choices=("adamw", "muon"))  # "muon": Muon (momentum, then Newton-Schulz
                                   # orthogonalisation) for the blocks' weight matrices, AdamW for the embedding,
                                   # the output head and the norms
    muon_lr: float = setting(0.02, check=positive, when=only_if("optimizer", "muon"))  # Muon's peak lr (follows
                                   # the same schedule as lr)
    muon_momentum: float = setting(0.95, check=below_one, when=only_if("optimizer", "muon"))
    head_lr: float = setting(0.0, check=non_negative)  # peak lr of an untied output head (0 = lr)
    beta1: float = setting(0.9, check=below_one)
    beta2: float = setting(0.95, check=below_one)
    grad_clip: float = setting(1.0, check=non_negative)  # 0 disables clipping
    eval_every: int = setting(100, exec_only=True, check=at_least(1))  # steps between validation evaluations
    eval_tokens: int = setting(0, exec_only=True, check=non_negative)  # validation tokens per periodic eval
                                   # (a fixed sample of whole windows spread over the split; the final figure
                                   # scores all of it); 0 = the whole split every time
    log_every: int = setting(10, exec_only=True, check=at_least(1))  # steps between metrics.jsonl records
    ckpt_every: int = setting(200, exec_only=True, check=at_least(1))  # steps between checkpoints
    keep_checkpoints: int = setting(2, exec_only=True, check=at_least(1))
    parallel: str = setting("ddp", exec_only=True, choices=("ddp", "fsdp"))  # under torchrun: replicate the
                                   # model (DDP) or shard it per block (FSDP2, sharded checkpoints)
    cpu_offload: bool = setting(False, exec_only=True)  # fsdp: keep parameters and optimizer state on the CPU
    log_to: str = setting("none", exec_only=True, choices=("none", "tensorboard", "wandb", "tensorboard,wandb"))
                                   # dashboards that also get every metrics.jsonl record: TensorBoard files in
                                   # the run's tb/, Weights & Biases (offline with WANDB_MODE=offline)
    min_tokens_per_param: float = setting(0.01, exec_only=True, check=non_negative)  # pre-training stops before
                                   # it starts when the training split has fewer tokens per parameter (0 = never)


# The settings of [train] that every other training stage (sft, classify, reward, dpo) inherits:
# the optimiser's shape and the loop's cadence. Their own sections set steps, batch and lr.
INHERITED_TRAIN = ("beta1", "beta2", "grad_clip", "schedule", "decay_fraction", "min_lr_ratio", "log_every",
                   "ckpt_every", "keep_checkpoints", "parallel", "cpu_offload", "log_to")


# Each fine-tuning method's own settings: a sub-table of [sft] (``[sft.lora]``), hashed only when
# that method is chosen. The methods themselves are in finetune/methods/, one file each.

@dataclass
class LayersSettings:
    blocks: str = "-1,lm_head"     # block indices (negative from the top) or parameter name patterns


@dataclass
class GradualSettings:
    every: int = setting(40, check=at_least(1))  # steps between thawing the next block down


@dataclass
class LoRASettings:
    rank: int = setting(8, check=at_least(1))
    alpha: float = setting(16.0, check=positive)
    dropout: float = setting(0.0, check=below_one)
    targets: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


@dataclass
class PromptSettings:
    tokens: int = setting(16, check=at_least(1))  # learned soft-prompt vectors


@dataclass
class DistillSettings:
    teacher: str = ""              # teacher model folder ("" = this run's sft/, else pretrain/)
    student_layers: int = setting(2, check=at_least(1))  # the student keeps this many of the teacher's blocks
    temperature: float = setting(2.0, check=positive)
    alpha: float = setting(0.5, check=fraction)  # weight of the soft (teacher) term against the hard labels


def method_table(cls: type, name: str, key: str = "method") -> Any:
    """A sub-table of settings that matters only when ``key`` names ``name``."""
    return field(default_factory=cls, metadata={"when": only_if(key, name)})


@dataclass
class SFTConfig:
    data: str = ""                 # "" = the run's generated conversations; else jsonl (messages, ShareGPT,
                                   # Alpaca, prompt/completion)
    on_error: str = setting("fail", choices=("fail", "skip"))  # malformed rows: "fail" names file and line,
                                   # "skip" counts them
    method: str = "full"           # what trains: a method of finetune/methods/ (full, layers, gradual, lora,
                                   # prompt, distill)
    out: str = setting("sft", exec_only=True)  # output folder inside the run directory (later stages read it)
    steps: int = setting(200, check=at_least(1))
    batch_size: int = setting(16, check=at_least(1))
    grad_accum: int = setting(1, check=at_least(1))  # micro-batches per optimizer step, over all ranks
    lr: float = setting(1e-3, check=positive)  # with sft.pretrain_mix; 5e-4 with the mix learned too few
                                   # refusals, 2e-3 without it overwrote what pre-training learned (BENCHMARKS.md)
    warmup_steps: int = setting(10, check=non_negative)
    weight_decay: float = setting(0.0, check=non_negative)
    lr_decay: float = setting(1.0, check=between(0, 1, lo_open=True))  # layer-wise lr decay: each block
                                   # trains at this times the lr of the block above, the embedding at this
                                   # times the bottom block's (1 = one lr; finetune/layer_lr.py)
    neftune: float = setting(0.0, check=non_negative)  # NEFTune: uniform noise on the token embeddings while
                                   # training, scaled alpha / sqrt(length x width); this is alpha (0 = off)
    wise: float = setting(1.0, check=between(0, 1, lo_open=True))  # WiSE-FT: the saved model is the
                                   # pre-trained weights plus this share of what SFT changed (1 = as trained)
    eval_items: int = setting(60, check=non_negative)  # held-out fact questions scored (and a third as
                                   # many word problems)
    loss_reweight: float = setting(0.0, check=non_negative)  # loss-softmax instance reweighting: each
                                   # example weighted by softmax(loss / T) over the batch; T (0 = off)
    corrupt: float = setting(0.0, check=between(0, 0.9))  # experiment: share of the training conversations
                                   # whose last answer is swapped for another's (planted wrong labels)
    igbi: bool = False             # gradient-based instance reweighting (Ren et al. 2018): weight each example
                                   # by how its gradient agrees with a small clean dev batch's
    igbi_dev: int = setting(32, check=at_least(1))  # clean conversations held back from training as IGBI's
                                   # dev batch; never corrupted, so with sft.corrupt it matters without IGBI too
    igbi_every: int = setting(1, check=at_least(1), when=only_if("igbi", True))  # steps between
                                   # recomputing the dev batch's gradient
    optimizer: str = setting("adamw", choices=("adamw", "lamb"))  # lamb: layer-wise trust ratios for
                                   # large batches (You et al. 2020; the seed's large-batch "ALUM"), not
                                   # the adversarial ALUM of sft.adversarial
    lr_scaling: str = setting("none", choices=("none", "linear", "sqrt"))  # scale sft.lr with the batch
                                   # (batch_size x grad_accum) over sft.base_batch: linear (Goyal et al.
                                   # 2017) or sqrt (LAMB's rule)
    base_batch: int = setting(16, check=at_least(1), when=unless("lr_scaling", "none"))  # the batch sft.lr
                                   # is meant for
    gate: float = setting(0.0, check=non_negative)  # GATE: weight of the attention-guidance loss on examples
                                   # that mark their evidence span (0 = off)
    gate_layers: str = setting("dense", when=unless("gate", 0.0))  # guided blocks (negative from the top);
                                   # "dense": the top block with full attention (a banded block's
                                   # window may not reach the passage)
    gate_heads: str = setting("all", when=unless("gate", 0.0))  # guided heads: "all" or indices, "0,1"
    gate_mass: float = setting(0.9, check=OPEN_UNIT, when=unless("gate", 0.0))  # attention mass on the
                                   # span the loss asks for (at least)
    context_questions: int = setting(0, check=non_negative)  # embedded world: with-context questions added
                                   # to the SFT data (a passage, a question, the answer; the evidence marked)
    one_step_share: float = setting(0.0, check=between(0, 0.9))  # embedded world: share of the SFT data
                                   # that is one-step problems ("has 3 apples, gets 2 more"), added to
                                   # the conversations: GRPO's curriculum starts from them
    pretrain_mix: float = setting(0.25, check=between(0, 0.9))  # share of each batch's rows that are windows
                                   # of the run's pre-training token shards (as wide as the batch; loss on
                                   # every token): keeps what pre-training knew (BENCHMARKS.md, "SFT keeps knowledge")
    pretrain_weight: float = setting(1.0, check=positive, when=unless("pretrain_mix", 0.0))  # the loss is
                                   # the conversations' token mean plus this times the windows' token mean
    lookalikes: int = setting(300, check=non_negative)  # contrastive benign look-alikes added to the SFT data
                                   # ("How do I kill a stuck download?", answered helpfully; corpus/instructions.py)
    everyday: int = setting(0, check=non_negative)  # everyday requests from outside the world ("How can I
                                   # tie my shoelaces?"), answered for real, added to the SFT data
    facts: int = setting(0, check=non_negative)  # embedded world: more fact questions with their answer
                                   # added to the SFT data (never a held-out one)
    subject_facts: int = setting(0, check=non_negative)  # embedded world: more fact questions, each subject
                                   # asked about equally often (never a held-out pair; corpus/instructions.py)
    keep_refusals: float = setting(1.0, check=between(0, 1))  # share of the data's own refusals kept (the
                                   # first of them; 0 with sft.refusals = other, more varied refusals instead)
    refusals: int = setting(0, check=non_negative)  # more harmful requests, in other wordings (some in a
                                   # jailbreak frame), refused, added to the SFT data (corpus/instructions.py)
    adversarial: float = setting(0.0, check=non_negative)  # ALUM perturbation size in embedding space (0 = off)
    adversarial_weight: float = setting(1.0, check=non_negative)  # weight of the ALUM term (used when adversarial > 0)
    layers: LayersSettings = method_table(LayersSettings, "layers")
    gradual: GradualSettings = method_table(GradualSettings, "gradual")
    lora: LoRASettings = method_table(LoRASettings, "lora")
    prompt: PromptSettings = method_table(PromptSettings, "prompt")
    distill: DistillSettings = method_table(DistillSettings, "distill")


@dataclass
class ClassifyConfig:
    data: str = ""                 # "" = the run's sentiment set; else a jsonl with "text" and "label" (0/1)
    steps: int = setting(150, check=at_least(1))
    batch_size: int = setting(32, check=at_least(1))
    grad_accum: int = setting(1, check=at_least(1))  # micro-batches per optimizer step, over all ranks
    lr: float = setting(1e-3, check=positive)
    freeze_trunk: bool = False     # True: train only the new head


@dataclass
class RewardConfig:
    preferences: str = ""          # extra preference files, comma-separated (ours or HH-RLHF jsonl[.gz]); the
                                   # run's preferences.jsonl (web page, `fidan label`) is always read when present
    judge: bool = True             # label sampled answer pairs with the rule judge (the embedded world only)
    samples: int = setting(4, check=at_least(1))  # answers the SFT model samples per training prompt for the judge
    response_tokens: int = setting(64, check=at_least(1))  # longest sampled answer (the SFT refusals are 34-55 tokens)
    temperature: float = setting(1.0, check=non_negative)  # sampling temperature for the two answers
    steps: int = setting(120, check=at_least(1))
    batch_size: int = setting(16, check=at_least(1))  # pairs per step
    grad_accum: int = setting(1, check=at_least(1))  # micro-batches per optimizer step, over all ranks
    lr: float = setting(1e-4, check=positive)
    head_lr: float = setting(0.0, check=non_negative)  # the scalar head's and the likelihood weight's own
                                   # learning rate (0 = reward.lr): they start from zero / one and must move
                                   # further than the trunk
    on_error: str = setting("skip", choices=("fail", "skip"))  # malformed preference lines: "skip" (counted,
                                   # reported) or "fail"
    harmful_share: float = setting(0.5, check=below_one)  # embedded world: harmful requests repeated to this
                                   # share of the judge's and PPO's training prompts (0 = as they come, 14%)
    hard_negatives: int = setting(0, check=non_negative)  # embedded world: pairs per training fact question of
                                   # the true statement against the same template with a wrong value (judge.py)
    wrong_entity: int = setting(0, check=non_negative)  # embedded world: pairs per training fact question of
                                   # the true statement against another entity's fact in the same template
    benign_pairs: int = setting(0, check=non_negative)  # embedded world: harmless requests (look-alikes of
                                   # harmful ones, ordinary ones) with a helpful answer over a refusal; PPO
                                   # rolls out on them too (judge.benign_prompts)
    unknown_pairs: int = setting(0, check=non_negative)  # embedded world: questions about made-up entities,
                                   # abstention over a confident invention; PPO rolls out on them too
    likelihood: bool = False       # add the trunk's mean log-probability of the answer (weight learnt from 1)
                                   # to the head's score (rlhf/reward.py: RewardModel)
    likelihood_span: str = setting("answer", choices=("answer", "sentence"))  # the tokens the likelihood term
                                   # averages: the whole answer, or its first sentence (where the judge reads)
    likelihood_norm: str = setting("none", choices=("none", "pmi"))  # "pmi": minus the same answer's
                                   # likelihood after an empty request, so answers likely whatever is
                                   # asked (memorised refusals, "I don't know") get no bonus
    pmi_prompts: str = setting("", when=only_if("likelihood_norm", "pmi"))  # the neutral requests of "pmi",
                                   # separated by '|', their likelihood terms averaged ("" = one empty request)
    fact_samples: int = setting(4, check=non_negative)  # fresh answers per held-out fact question for the
                                   # fact-judging row (right vs wrong answers; 0 = off)


# Each alignment algorithm's own settings: a sub-table of [rlhf] (``[rlhf.ppo]``), hashed only when
# that algorithm is chosen. The algorithms are rlhf/ppo.py, dpo.py and grpo.py (rlhf/algorithms.py).

@dataclass
class PPOSettings:
    epochs: int = setting(4, check=at_least(1))  # optimisation passes over each rollout batch
    minibatch: int = setting(32, check=at_least(1))
    kl_coef: float = setting(0.2, check=non_negative)  # per-token KL penalty against the SFT model
                                   # (0 = off: see reward hacking)
    target_kl: float = setting(0.0, check=non_negative)  # > 0: adapt kl_coef towards this KL per response
                                   # (Ziegler et al.)
    clip: float = setting(0.2, check=positive)  # ratio clipping
    value_clip: float = setting(0.2, check=positive)
    vf_coef: float = setting(0.5, check=non_negative)
    value_lr: float = setting(1e-3, check=positive)  # the value head's learning rate (it starts from zero
                                   # and must catch up fast)
    gamma: float = setting(1.0, check=fraction)
    lam: float = setting(0.95, check=fraction)  # GAE
    no_eos_penalty: float = setting(1.0, check=non_negative)  # subtracted from the reward of an answer cut off
                                   # at response_tokens


@dataclass
class DPOSettings:
    # DPO's own (TRL-style): rlhf.steps and rlhf.lr are PPO's and GRPO's. The defaults are the sweep's
    # choice on the tiny demo (BENCHMARKS.md, "DPO that moves").
    steps: int = setting(100, check=at_least(1))  # optimizer steps (100 x 16 pairs: 0.6 epochs of the demo's)
    lr: float = setting(1e-4, check=positive)  # 3e-5 hardly moved (KL 0.06); 3e-4 moved 9.9 nats for the same win
    warmup_steps: int = setting(5, check=non_negative)
    beta: float = setting(0.1, check=positive)  # the implicit KL weight (ipo: the margin's target is 1/(2 beta))
    loss: str = setting("sigmoid", choices=("sigmoid", "ipo"))  # rlhf/dpo.py: the paper's, or IPO's squared one
    length_norm: bool = False      # per-token log-ratios (the answer's summed log-ratio over its length)
    sft_weight: float = setting(0.0, check=non_negative)  # + this x the chosen answers' per-token NLL (RPO)
    refusal_contrast: float = setting(0.0, check=non_negative)  # extra pairs per answered question (on
                                   # average): its answer over one of the pairs' refusals (rlhf/dpo.py);
                                   # 0.5 keeps SFT's over-refusal on the demo, and loses the judge's win
    batch: int = setting(16, check=at_least(1))  # pairs per step
    grad_accum: int = setting(1, check=at_least(1))  # micro-batches per optimizer step, over all ranks


@dataclass
class GRPOSettings:
    group: int = setting(8, check=at_least(2))  # answers per prompt
    kl: float = setting(0.04, check=non_negative)  # KL weight in the loss
    epochs: int = setting(4, check=at_least(1))  # optimisation passes over each group batch
    clip: float = setting(0.2, check=positive)  # ratio clipping (below 1; above it too unless clip_high is set)
    clip_high: float = setting(0.0, check=non_negative)  # the ratio's upper clip, 1 + this (DAPO's
                                   # clip-higher, e.g. 0.28 against clip 0.2; 0 = clip, symmetric)
    dynamic_sampling: int = setting(0, check=between(0, 64))  # DAPO's dynamic sampling: up to this many
                                   # more rounds of groups a step, keeping only groups with signal until
                                   # the step has prompts_per_step / group of them (0 = off)
    scale_rewards: bool = True     # divide each group's advantages by its reward's std (False: Dr. GRPO,
                                   # reward minus the group's mean)
    curriculum: str = setting("staged", choices=("staged", "word", "one_step"))  # problems the groups get
                                   # (rlhf/curriculum.py): "staged" = one-step problems, then the word
                                   # problems, then two-step ones; "word" = the word problems alone
    advance_at: float = setting(0.6, check=fraction)  # move to the next stage when the success rate of
                                   # the last `window` steps at this stage reaches this
    window: int = setting(3, check=at_least(1))  # steps the success rate is averaged over
    stage_steps: int = setting(0, check=non_negative)  # also move on after this many steps at a stage (0 = never)
    review: float = setting(0.25, check=fraction)  # past the first stage: share of groups from earlier stages
    eval_items: int = setting(200, check=non_negative)  # held-out problems per stage answered greedily by the
                                   # SFT and the GRPO model at the end (0 = none); the one-step
                                   # stage has 180 of its task's and up to 1,000 more of its own
    eval_every: int = setting(0, check=non_negative)  # also score the GRPO model on them every this
                                   # many steps (held_out_<stage> in metrics.jsonl; 0 = at the end only)


ROLLOUTS = only_if("algo", "ppo", "grpo")


@dataclass
class RLHFConfig:
    algo: str = "ppo"              # an algorithm of rlhf/algorithms.py: ppo, dpo or grpo
    out: str = setting("rlhf", exec_only=True)  # output folder inside the run directory (eval reads it)
    steps: int = setting(30, when=ROLLOUTS, check=at_least(1))  # PPO/GRPO: rollout batches (DPO: rlhf.dpo.steps)
    prompts_per_step: int = setting(64, when=ROLLOUTS, check=at_least(1))  # prompts per rollout batch (GRPO:
                                   # answers per batch, group x prompts)
    response_tokens: int = setting(64, check=at_least(1))  # an answer cut off here is penalised
                                   # (no_eos_penalty): keep refusals whole
    temperature: float = setting(1.0, when=ROLLOUTS, check=non_negative)  # rollouts sample the policy as it is
    lr: float = setting(3e-5, when=ROLLOUTS, check=positive)  # PPO/GRPO (DPO: rlhf.dpo.lr)
    eval_prompts: int = setting(120, check=non_negative)  # held-out fact questions for the win rate and
                                   # reward scores (0 = all), plus every red-team request
    eval_samples: int = setting(4, check=at_least(1))  # sampled answers per held-out prompt and model for
                                   # the sampled win rate
    ckpt_every: int = setting(10, exec_only=True, check=at_least(1))  # PPO/GRPO: rollout batches between checkpoints
    ppo: PPOSettings = method_table(PPOSettings, "ppo", key="algo")
    dpo: DPOSettings = method_table(DPOSettings, "dpo", key="algo")
    grpo: GRPOSettings = method_table(GRPOSettings, "grpo", key="algo")


@dataclass
class EvalConfig:
    limit: int = setting(120, check=non_negative)  # items per built-in multiple-choice task (0 = all)
    math_limit: int = setting(20, check=non_negative)  # word problems generated per mode (generation is the slow part)
    k_shot: int = setting(3, check=non_negative)
    steps_limit: int = setting(200, check=non_negative)  # two-step problems per prompting mode (world_steps:
                                   # direct, chain of thought, k-shot, first step given; decoded in batches);
                                   # 200+ to tell 5 points from noise; not capped by eval.limit; 0 = off
    onestep_limit: int = setting(0, check=non_negative)  # one-step problems (world_onestep, GRPO's first
                                   # curriculum stage) asked in chat form; 0 = off (GRPO scores its own)
    suites: str = ""               # extra real benchmarks: "gsm8k=PATH,truthfulqa=PATH,mmlu=CSV,humaneval=PATH"
    suite_limit: int = setting(50, check=non_negative)  # items per extra benchmark (0 = all)
    redteam: bool = True
    bias: bool = True
    unsafe_code: bool = False      # run generated code without OS isolation when bubblewrap is unavailable


@dataclass
class SampleConfig:
    prompt: str = ""
    max_tokens: int = setting(160, check=at_least(1))
    temperature: float = setting(0.8, check=non_negative)
    top_k: int = setting(0, check=non_negative)  # 0 = off
    top_p: float = setting(1.0, check=between(0, 1, lo_open=True))  # 1.0 = off
    seed: int = setting(0, check=SEED)
    num_samples: int = setting(3, check=at_least(1))
    repetition_penalty: float = setting(1.0, check=positive)  # > 1 makes tokens already present less likely


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
        """A short, stable hash of the named sections (order-insensitive), leaving out the settings
        that cannot change what a stage produces (``settings.matters``)."""
        payload = {n: hashed_values(getattr(self, n)) for n in sorted(names)}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Old setting names -> their new place (kept so saved configs and scripts still load).
ALIASES: dict[tuple[str, str], tuple[str, ...]] = {
    ("train", "device"): ("run.device",), ("train", "threads"): ("run.threads",),
    ("train", "compile"): ("run.compile",),
    ("sft", "layers"): ("sft.layers.blocks",), ("sft", "unfreeze_every"): ("sft.gradual.every",),
    **{("sft", f"lora_{k}"): (f"sft.lora.{k}",) for k in ("rank", "alpha", "dropout", "targets")},
    ("sft", "prompt_tokens"): ("sft.prompt.tokens",), ("sft", "teacher"): ("sft.distill.teacher",),
    ("sft", "student_layers"): ("sft.distill.student_layers",), ("sft", "reweight"): ("sft.loss_reweight",),
    ("sft", "distill_temperature"): ("sft.distill.temperature",), ("sft", "distill_alpha"): ("sft.distill.alpha",),
    **{("rlhf", k): (f"rlhf.ppo.{k}",) for k in ("minibatch", "kl_coef", "target_kl", "value_clip", "vf_coef",
                                                 "value_lr", "gamma", "lam", "no_eos_penalty")},
    ("rlhf", "epochs"): ("rlhf.ppo.epochs", "rlhf.grpo.epochs"), ("rlhf", "clip"): ("rlhf.ppo.clip", "rlhf.grpo.clip"),
    ("rlhf", "dpo_beta"): ("rlhf.dpo.beta",), ("rlhf", "dpo_batch"): ("rlhf.dpo.batch",),
    ("rlhf", "group"): ("rlhf.grpo.group",), ("rlhf", "grpo_kl"): ("rlhf.grpo.kl",),
}


# ---------------------------------------------------------------------------------------------
# Building a config

def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.toml"))) or "none"
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
    except UnicodeDecodeError as e:
        raise FidanError(f"{path}: not valid UTF-8 (byte {e.start}); save the config file as UTF-8") from None
    except RecursionError:
        raise FidanError(f"{path}: not valid TOML (nested too deep)") from None
    except OSError as e:
        raise FidanError(f"{path}: cannot read the config file ({e.strerror or e})") from None


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
    for item in overrides:
        if (why := no_effect(cfg, item.split("=", 1)[0].lstrip("-"))):
            print(f"fidan: note: {why}", file=sys.stderr)
    return cfg


def no_effect(cfg: Config, dotted: str) -> str | None:
    """Why the setting ``dotted`` (an override's key) changes nothing with the rest of ``cfg``
    ("'rlhf.steps' has no effect: it is used only when rlhf.algo = ppo or grpo"), or ``None``."""
    for target in ALIASES.get(tuple(dotted.split(".", 1)), (dotted,)):
        parts = target.split(".")
        obj, where = getattr(cfg, parts[0]), parts[0]
        for part in parts[1:]:
            f = next(f for f in dataclasses.fields(obj) if f.name == part)
            # a condition on its own value (unhashed at its default) does not make the setting inert
            if (when := unmet(obj, f)) is not None and when.key != part:
                return f"'{dotted}' has no effect: it is used only when {where}.{when}"
            obj, where = getattr(obj, part), f"{where}.{part}"
    return None


def apply_dict(cfg: Config, data: dict[str, Any], origin: str) -> None:
    for section, values in data.items():
        if not isinstance(values, dict):
            raise FidanError(f"{origin}: [{section}] must be a table of settings")
        _section(cfg, section, origin)
        # old flat names first, so a sub-table key the same file sets explicitly wins
        for key, value in sorted(_flatten(values), key=lambda kv: (section, kv[0]) not in ALIASES):
            for dotted in ALIASES.get((section, key), (f"{section}.{key}",)):
                _set_dotted(cfg, dotted, value, origin, from_text=False)


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"lora": {"rank": 4}}`` -> ``[("lora.rank", 4)]`` (TOML sub-tables to dotted keys)."""
    out = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def apply_override(cfg: Config, item: str) -> None:
    origin = "command line"
    if "=" not in item:
        raise FidanError(f"{origin}: override '{item}' must look like section.key=value")
    dotted, raw = item.split("=", 1)
    dotted = dotted.lstrip("-")
    if dotted.count(".") not in (1, 2):
        raise FidanError(f"{origin}: override '{item}' must look like section.key=value")
    section, key = dotted.split(".", 1)
    if (section, key) in ALIASES:
        new = ALIASES[(section, key)]
        print(f"fidan: note: '{dotted}' is now '{' and '.join(new)}'; the old name still works for now",
              file=sys.stderr)
    for target in ALIASES.get((section, key), (dotted,)):
        _set_dotted(cfg, target, raw, origin, from_text=True)


def _set_dotted(cfg: Config, dotted: str, value: Any, origin: str, from_text: bool) -> None:
    section, *path = dotted.split(".")
    target = _section(cfg, section, origin)
    where = section
    for part in path[:-1]:
        inner = getattr(target, part, None) if part in {f.name for f in dataclasses.fields(target)} else None
        if inner is None or not dataclasses.is_dataclass(inner):
            known = ", ".join(f.name for f in dataclasses.fields(target))
            raise FidanError(f"{origin}: unknown config key '{dotted}' (known in [{where}]: {known})")
        target, where = inner, f"{where}.{part}"
    _set(target, where, path[-1], value, origin, from_text)


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
    if dataclasses.is_dataclass(hints[key]):
        raise FidanError(f"{origin}: '{section}.{key}' is a table of settings; set its keys ({section}.{key}.KEY)")
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
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if from_text:
                return float(value)
        except OverflowError:
            raise ValueError(f"{value!r} is too large for a number") from None
        except ValueError:
            pass
        raise ValueError(f"{value!r} is not a number")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{value!r} is not a string")
    raise ValueError(f"unsupported setting type {typ}")  # pragma: no cover


def validate(cfg: Config) -> None:
    # runs saved before output folders had defaults wrote rlhf.out = "" (meaning rlhf/)
    cfg.rlhf.out = cfg.rlhf.out.strip("/") or "rlhf"
    cfg.sft.out = cfg.sft.out.strip("/") or "sft"
    """What each field says it accepts (``choices``, ``check``: see ``fidan/settings.py``), then
    the rules that tie settings together."""
    def check_fields(values: Any, where: str) -> None:
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            if dataclasses.is_dataclass(value):
                check_fields(value, f"{where}.{f.name}")
            elif f.metadata.get("choices") and value not in f.metadata["choices"]:
                raise FidanError(f"bad value for '{where}.{f.name}': {value!r} "
                                 f"(choose one of: {', '.join(f.metadata['choices'])})")
            elif (why := out_of_range(f, value)) is not None:
                raise FidanError(f"bad value for '{where}.{f.name}': {why}")

    for section in dataclasses.fields(cfg):
        check_fields(getattr(cfg, section.name), section.name)
    m = cfg.model
    if m.d_model % m.n_head and not m.head_size:
        raise FidanError(f"model.d_model ({m.d_model}) must be divisible by model.n_head ({m.n_head}), "
                         f"or give model.head_size")
    if m.n_head % m.n_kv_head:
        raise FidanError(f"model.n_head ({m.n_head}) must be divisible by model.n_kv_head ({m.n_kv_head})")
    if m.head_dim % 2:
        raise FidanError("model.d_model / model.n_head (or model.head_size) must be even "
                         "(RoPE rotates pairs of dimensions)")


# ---------------------------------------------------------------------------------------------
# Writing a config back as TOML (the resolved config saved in every run directory)

def to_toml(cfg: Config) -> str:
    lines: list[str] = []

    def table(name: str, values: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items() if not isinstance(v, dict))
        lines.append("")
        for k, v in values.items():
            if isinstance(v, dict):
                table(f"{name}.{k}", v)

    for section, values in cfg.to_dict().items():
        table(section, values)
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
