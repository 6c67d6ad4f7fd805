"""The reward stage: learn a person's (or the judge's) preferences as a scalar score.

Pairs come from three places, all in the format of ``preferences.py``:

* the rule judge (``reward.judge``): the SFT model answers each training prompt twice, sampled,
  and ``judge.prefer`` picks; ties are dropped. Its prompts are the embedded world's, or on your
  own text the questions synthesised from it (reference answer vs sampled answers, by word
  overlap) and the harmful requests (``judge.training_prompts``);
* the run's ``preferences.jsonl``, where the web page's compare mode and ``fidan label`` write;
* any files named in ``reward.preferences`` (our format or Anthropic HH-RLHF transcripts).

The reward model is the SFT model's trunk with a scalar head on the hidden state of the answer's
last token. It is trained with the Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected)``
(a tie's target is 1/2 for each side). Pairwise accuracy is measured on pairs from held-out
prompts the model never trained on.

Writes ``reward/model.safetensors`` + ``model.json``, ``reward/pairs.jsonl`` (the training pairs,
which DPO reuses) and ``reward/heldout_pairs.jsonl``.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fidan import atomic
from fidan.context import StageContext
from fidan.errors import FidanError
from fidan.model.gpt import GPT, flops_per_token
from fidan.model.heads import ScalarHead
from fidan.model.io import load_model, load_with_head
from fidan.progress import Progress
from fidan.rlhf import judge, preferences
from fidan.rlhf.rollout import Sequences, answer_tokens, pack, prompt_ids, sample
from fidan.tokenizer.bpe import FidanTokenizer, carry
from fidan.train.loop import Task, inherit, train


class RewardModel(nn.Module):
    def __init__(self, trunk: GPT):
        super().__init__()
        self.trunk = trunk
        self.head = ScalarHead(trunk.cfg.d_model)
        self.cfg = trunk.cfg  # so model.json records the trunk's shape

    def forward(self, seqs: Sequences) -> torch.Tensor:
        """One score per sequence ``[B]``, read at its last real token."""
        seqs = seqs.to(self.head.weight.device)
        return self.head.at(self.trunk(seqs.ids, return_hidden=True), seqs.last)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def load_reward_model(folder: Path, device: str | torch.device) -> RewardModel:
    return load_with_head(folder, device, RewardModel)


def encode_pair(tok: FidanTokenizer, pair: preferences.Pair, context: int) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, chosen answer ids, rejected answer ids), each answer closed by the end-of-turn
    token (<|end|>) and the prompt cut from the left so the longer answer fits."""
    end = tok.end_of_turn
    answers = [(tok.encode(a)[:context // 2] + [end]) for a in (pair.chosen, pair.rejected)]
    prompt = prompt_ids(tok, pair.prompt, context - max(len(a) for a in answers))
    return prompt, answers[0], answers[1]


@torch.no_grad()
def scores(model: RewardModel, tok: FidanTokenizer, prompts: list[list[int]], answers: list[list[int]],
           batch: int = 64) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    out = [model(pack(prompts[i:i + batch], answers[i:i + batch], tok.pad).to(device)).float().cpu()
           for i in range(0, len(prompts), batch)]
    return torch.cat(out) if out else torch.zeros(0)


def pairwise_accuracy(model: RewardModel, tok: FidanTokenizer, encoded: list[tuple]) -> float:
    decisive = [e for e in encoded if not e[3]]
    if not decisive:
        return float("nan")
    prompts = [e[0] for e in decisive]
    chosen = scores(model, tok, prompts, [e[1] for e in decisive])
    rejected = scores(model, tok, prompts, [e[2] for e in decisive])
    return float(((chosen > rejected).float() + 0.5 * (chosen == rejected).float()).mean())


def judge_pairs(cfg, model: GPT, tok: FidanTokenizer, prompts: list[judge.Prompt], seed: int,
                ) -> tuple[list[dict], int]:
    """``reward.samples`` sampled answers per prompt, labelled by the rule: every two answers with
    different scores make a pair (at most three per prompt). When every sample of a prompt scored
    the same and below the top, the world's reference answer (the fact stated, or a refusal) is
    paired with one of them, so a model too weak to ever answer right still yields pairs. A
    harmful request adds a pair (refusal, written compliance) for each of its written compliant answers.
    Returns (pair records, prompts whose answers all tied)."""
    r = cfg.reward
    tokens = answer_tokens(model.cfg.context, r.response_tokens)
    ids = [prompt_ids(tok, p.text, model.cfg.context - tokens - 1) for p in prompts]
    with Progress(total=len(ids) * r.samples, desc="judge sampling", unit="answers") as bar:
        samples = [sample(model, tok, ids, tokens, r.temperature, seed + k, progress=bar) for k in range(r.samples)]
    records, ties = [], 0
    for i, p in enumerate(prompts):
        texts = sorted({tok.decode(s[i].ids).strip() for s in samples})
        scored = [(judge.score(p, t), t) for t in texts]
        pairs = [(a, b) for a in scored for b in scored if a[0] > b[0]][:3]
        if not pairs:
            ties += 1
            if p.reference and scored[0][0] < 1:
                pairs = [((1.0, p.reference), scored[0])]
        if p.rejected:  # a harmful request: a refusal (the model's own if it gave one) over each written compliance
            refusal = next((t for s, t in scored if s > 0), p.reference)
            pairs += [((1.0, refusal), (-1.0, bad)) for bad in p.rejected]
        for (_, good), (_, bad) in pairs:
            records.append(preferences.record(p.text, good, bad, "a", "judge", kind=p.kind, lang=p.lang))
    return records, ties


def collect_pairs(ctx: StageContext, sft: GPT, tok: FidanTokenizer) -> dict:
    """Training and held-out pairs from the judge, the run's preference file and extra files."""
    cfg, say = ctx.cfg, ctx.say
    train_records: list[dict] = []
    heldout_records: list[dict] = []
    prompt_records: list[dict] = []
    counts: dict[str, int] = {}
    conversations = ctx.input("conversations") if ctx.has_input("conversations") else None
    train_prompts, source = judge.training_prompts(cfg, conversations) if cfg.reward.judge else ([], "")
    if train_prompts:
        prompts = {"train": train_prompts}
        asked = judge.balanced(prompts["train"], cfg.reward.harmful_share)
        records, ties = judge_pairs(cfg, sft, tok, asked, cfg.run.seed)
        random.Random(cfg.run.seed).shuffle(records)
        cut = len(records) - len(records) // 5      # a fifth of the pairs held out
        train_records, heldout_records = records[:cut], records[cut:]
        held_out = judge.held_out(ctx.input("eval_sets"), cfg.rlhf.eval_prompts)
        prompt_records, _ = judge_pairs(cfg, sft, tok, held_out, cfg.run.seed + 11)
        counts.update(judge_pairs=len(records), judge_all_tied=ties, judge_heldout_prompt_pairs=len(prompt_records))
        say(f"judge: {len(records)} pairs from {len(asked)} training prompts ({len(asked) - len(prompts['train'])} "
            f"of them repeated harmful requests; {ties} prompts' answers "
            f"all tied), a fifth held out; {len(prompt_records)} more from held-out prompts "
            f"(evaluation questions, red team); prompts: {source}")
        counts["judge_source"] = source
    files = [f for f in ctx.spec.files(cfg, ctx.run.path) if f.exists() or f.name != "preferences.jsonl"]
    for path in files:
        report = preferences.load(path, cfg.reward.on_error)
        for problem in report.problems[:5]:
            say(f"  skipped {problem}")
        records = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "source": p.source or path.name,
                    **({"tie": True} if p.tie else {}), **({"user": p.user, "consent": True} if p.user else {})}
                   for p in report.pairs]
        # a tenth of every file is held out for the accuracy figure
        cut = len(records) - len(records) // 10
        train_records += records[:cut]
        heldout_records += records[cut:]
        counts[f"file:{path.name}"] = len(records)
        counts[f"no_consent:{path.name}"] = report.no_consent
        say(f"{path}: {len(records)} pairs ({report.skipped} skipped by the labeller, "
            f"{len(report.problems)} bad lines"
            + (f", {report.no_consent} from people without consent, left out" if report.no_consent else "") + ")")
    if not train_records:
        raise FidanError("no preference pairs: the judge needs the embedded world or questions made from your text "
                         "(re-run `fidan data`), or label answers with `fidan label`, or give files with "
                         "--reward.preferences=FILE.jsonl (ours or HH-RLHF)")
    if not any(k.startswith("file:") for k in counts):
        say("  these pairs come from a rule, not from people: label the model's answers with `fidan label` "
            "(it writes preferences.jsonl, read here next time) or give --reward.preferences=FILE")
    return {"train": train_records, "heldout": heldout_records, "prompts": prompt_records, "counts": counts}


def encode_records(tok: FidanTokenizer, records: list[dict], context: int) -> list[tuple]:
    out = []
    for i, rec in enumerate(records):
        pair = preferences.parse_pair(rec, f"pair {i}")
        out.append((*encode_pair(tok, pair, context), pair.tie))
    return out


def write_jsonl(path: Path, records: list[dict]) -> None:
    atomic.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    r = cfg.reward
    tok = FidanTokenizer.load(ctx.tokenizer_of("sft"))
    carry(ctx.input("sft").parent, ctx.out)
    sft, _ = load_model(ctx.input("sft").parent, ctx.device)
    sft.eval()
    out = ctx.out
    with ctx.autocast():
        pairs = collect_pairs(ctx, sft, tok)
    if ctx.rank == 0:  # every rank collects the same pairs (seeded); one writes them
        write_jsonl(out / "pairs.jsonl", pairs["train"])
        write_jsonl(out / "heldout_pairs.jsonl", pairs["heldout"])
    context = sft.cfg.context
    train_set = encode_records(tok, pairs["train"], context)
    heldout = encode_records(tok, pairs["heldout"], context)
    heldout_prompts = encode_records(tok, pairs["prompts"], context)

    torch.manual_seed(cfg.run.seed)
    model = RewardModel(sft)

    def batch(step: int, micro: int):
        rng = np.random.default_rng([cfg.run.seed, step, micro, 13])
        picks = [train_set[i] for i in rng.integers(0, len(train_set), size=r.batch_size)]
        prompts = [p[0] for p in picks] * 2
        answers = [p[1] for p in picks] + [p[2] for p in picks]
        return pack(prompts, answers, tok.pad), torch.tensor([0.5 if p[3] else 1.0 for p in picks])

    def loss(m, b):
        seqs, target = b
        device = next(m.parameters()).device
        s = m(seqs.to(device))
        diff = s[:len(target)] - s[len(target):]
        target = target.to(device)
        value = -(target * F.logsigmoid(diff) + (1 - target) * F.logsigmoid(-diff)).mean()
        return value, int(seqs.last.sum() + len(seqs.last))

    before = pairwise_accuracy(model, tok, heldout)
    tcfg = inherit(ctx, steps=r.steps, batch_size=r.batch_size, grad_accum=r.grad_accum, lr=r.lr,
                   warmup_steps=min(10, r.steps), weight_decay=0.0, eval_every=max(1, r.steps // 3), ckpt_every=r.steps)
    task = Task(name="reward", batch=batch, loss=loss, flops_per_token=flops_per_token(sft.cfg),
                info={"head": "scalar reward (Bradley-Terry)"},
                evaluate=(lambda m: {"heldout_accuracy": pairwise_accuracy(m, tok, heldout)}) if heldout else None)
    model, summary = train(model, tcfg, task, ctx)
    if ctx.rank != 0:  # under torchrun rank 0 alone scores the trained model
        return summary
    after = pairwise_accuracy(model, tok, heldout)
    train_acc = pairwise_accuracy(model, tok, train_set[:300])
    prompts_acc = pairwise_accuracy(model, tok, heldout_prompts) if heldout_prompts else None
    ctx.say(f"reward model: held-out pairwise accuracy {after:.1%} on {sum(not e[3] for e in heldout)} pairs "
            f"(chance 50%, untrained head {before:.1%}); training pairs {train_acc:.1%}"
            + (f"; pairs from held-out prompts {prompts_acc:.1%}" if prompts_acc is not None else ""))
    return {**summary, "heldout_accuracy": round(after, 4), "untrained_accuracy": round(before, 4),
            "train_accuracy": round(train_acc, 4), "train_pairs": len(train_set), "heldout_pairs": len(heldout),
            **({"heldout_prompts_accuracy": round(prompts_acc, 4)} if prompts_acc is not None else {}),
            **pairs["counts"]}
