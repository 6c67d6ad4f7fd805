"""The reward stage: learn a person's (or the judge's) preferences as a scalar score.

Pairs come from three places, all in the format of ``preferences.py``:

* the rule judge (``reward.judge``): the SFT model answers each training prompt twice, sampled,
  and ``judge.prefer`` picks; ties are dropped. Its prompts are the embedded world's, or on your
  own text the questions synthesised from it (reference answer vs sampled answers, by word
  overlap) and the harmful requests (``judge.training_prompts``);
* the run's ``preferences.jsonl``, where the web page's compare mode and ``fidan label`` write;
* any files named in ``reward.preferences`` (our format or Anthropic HH-RLHF transcripts).

With ``reward.hard_negatives`` the embedded world adds, to the training pairs only, a training
fact's true statement against the same template with a wrong value (``judge.hard_negatives``);
with ``reward.wrong_entity`` against another entity's fact (``judge.wrong_entity``); with
``reward.benign_pairs`` / ``unknown_pairs`` written pairs where help beats a refusal of a harmless
request and abstaining beats inventing about a made-up entity (``judge.benign_prompts``,
``judge.unknown_prompts``). Two more held-out rows go with them: the evaluation's benign
requests with written help over a refusal (``benign_rows``) and the SFT model's inventions about
the evaluation's made-up entities against an abstention (``unknown_rows``).

The reward model is the SFT model's trunk with a scalar head on the hidden state of the answer's
last token (with ``reward.likelihood``, plus the trunk's mean log-probability of the answer's
tokens, or of its first sentence with ``reward.likelihood_span=sentence``, times a learnt weight;
``reward.head_lr`` gives the head and that weight their own learning rate; with
``reward.likelihood_norm=pmi`` minus the same mean after neutral requests, ``reward.pmi_prompts``:
``RewardModel``).
It is trained with the Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected)`` (a tie's
target is 1/2 for each side). Pairwise accuracy is measured on pairs from held-out prompts the
model never trained on, and, as its own row, on right-vs-wrong answers sampled afresh to held-out
fact questions (``fact_pairs``: the judge's pairs are mostly easy, this row is not).

Writes ``reward/model.safetensors`` + ``model.json``, ``reward/pairs.jsonl`` (the training pairs,
which DPO reuses), ``reward/heldout_pairs.jsonl`` and ``reward/samples.json`` (the pairs made
from samples, reused by the next run with the same key: ``sampled_pairs``).
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fidan import atomic, dist, stats
from fidan.context import StageContext
from fidan.corpus import unknowns
from fidan.corpus.instructions import REFUSAL
from fidan.errors import FidanError
from fidan.eval import benign
from fidan.model.gpt import GPT, flops_per_token
from fidan.model.heads import ScalarHead
from fidan.model.io import load_model, load_with_head, read_model_info
from fidan.progress import Progress
from fidan.records import read_jsonl
from fidan.rlhf import judge, preferences
from fidan.rlhf.heldout import BENIGN_ANSWERS
from fidan.rlhf.rollout import Sequences, answer_tokens, by_length, pack, prompt_ids, sample_seeds
from fidan.tokenizer.bpe import FidanTokenizer, carry
from fidan.train.loop import Task, inherit, train


class RewardModel(nn.Module):
    """The trunk with a scalar head read at the answer's last token. With ``likelihood`` the score
    also carries the trunk's own mean log-probability per answer token, times a learnt weight that
    starts at 1: the knowledge of which value is true sits in the language model's predictions,
    which a head on the last token's hidden state does not see directly. ``span="sentence"``
    averages over the answer's first sentence only (up to and with the first token that holds
    '.', '?' or '!', or the end of turn: ``sentence_ends``), where the judge reads the answer: a
    fluent story after it or a long answer in the other language no longer lifts the mean.
    ``norm="pmi"`` subtracts the same mean read after a neutral prompt (an empty request,
    ``neutral``): log p(answer | prompt) - log p(answer | nothing asked), pointwise mutual
    information, so an answer the model gives whatever is asked (its memorised refusals, "I don't
    know") gets no bonus, while a right fact, likely only after its question, keeps it."""

    def __init__(self, trunk: GPT, likelihood: bool = False, span: str = "answer",
                 ends: torch.Tensor | None = None, norm: str = "none", neutral: list[list[int]] | None = None):
        super().__init__()
        self.trunk = trunk
        self.head = ScalarHead(trunk.cfg.d_model)
        self.cfg = trunk.cfg  # so model.json records the trunk's shape
        self.likelihood = likelihood
        self.span = span if likelihood else "answer"
        self.norm = norm if likelihood else "none"
        if likelihood:
            self.likelihood_weight = nn.Parameter(torch.ones(()))
        if self.span == "sentence":   # saved with the weights: the loader needs no tokenizer
            self.register_buffer("sentence_end", ends if ends is not None
                                 else torch.zeros(trunk.cfg.vocab_size, dtype=torch.bool))
        if self.norm == "pmi":
            if not neutral:
                raise FidanError("reward.likelihood_norm=pmi needs the neutral prompts' token ids")
            self.neutral = [[int(i) for i in ids] for ids in neutral]   # model.json keeps them (``info``)

    def forward(self, seqs: Sequences) -> torch.Tensor:
        """One score per sequence ``[B]``, read at its last real token."""
        seqs = seqs.to(self.head.weight.device)
        hidden = self.trunk(seqs.ids, return_hidden=True)
        score = self.head.at(hidden, seqs.last)
        if not self.likelihood:
            return score
        mean = self.span_logprob(hidden, seqs)
        if self.norm == "pmi":   # minus the same answer's likelihood after the neutral prompts, averaged
            for prompt in self.neutral:
                alone = self.without_prompt(seqs, prompt)
                mean = mean - self.span_logprob(self.trunk(alone.ids, return_hidden=True), alone) / len(self.neutral)
        return score + self.likelihood_weight * mean.to(score.dtype)

    def span_logprob(self, hidden: torch.Tensor, seqs: Sequences) -> torch.Tensor:
        """``[B]``: the trunk's mean log-probability of the answer's tokens (of its first sentence
        with ``span="sentence"``), from the hidden states ``hidden`` of ``seqs``."""
        logp = F.log_softmax(self.trunk.lm_head(hidden[:, :-1]).float(), -1)
        picked = logp.gather(-1, seqs.ids[:, 1:, None]).squeeze(-1)
        mask = seqs.mask
        if self.span == "sentence":
            ends = self.sentence_end[seqs.ids[:, 1:]] & mask
            mask = mask & (ends.cumsum(-1) - ends.long() == 0)   # no sentence closed before this token
        return (picked * mask).sum(-1) / mask.sum(-1).clamp(min=1)

    def without_prompt(self, seqs: Sequences, prompt: list[int]) -> Sequences:
        """The same answers after ``prompt`` (one of the neutral ones) instead of their own."""
        mask, ids = seqs.mask.cpu(), seqs.ids.cpu()
        answers = []
        for row in range(len(ids)):
            where = mask[row].nonzero()
            start = int(where[0]) + 1 if len(where) else int(seqs.last[row]) + 1
            answers.append(ids[row, start:int(seqs.last[row]) + 1].tolist())
        # pad id 0: padding comes after every real token and is read by neither term
        return pack([prompt] * len(answers), answers, 0).to(seqs.ids.device)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def sentence_ends(tok: FidanTokenizer, vocab: int) -> torch.Tensor:
    """``[vocab]``: True for a token whose text holds '.', '?' or '!', and for the end of turn."""
    table = torch.zeros(vocab, dtype=torch.bool)
    for i in range(min(vocab, tok.vocab_size)):
        if any(c in tok.decode([i]) for c in ".?!"):
            table[i] = True
    table[tok.end_of_turn] = True
    return table


def neutral_prompts(tok: FidanTokenizer, context: int, requests: str = "") -> list[list[int]]:
    """The chat template's tokens for each neutral request (``reward.pmi_prompts``, separated by
    '|'; "" is one empty request): the prompts the ``pmi`` likelihood term reads every answer
    after, as what the model says whatever is asked."""
    return [prompt_ids(tok, r.strip(), context // 2) for r in requests.split("|")]


def load_reward_model(folder: Path, device: str | torch.device) -> RewardModel:
    info = read_model_info(folder)
    likelihood = bool(info.get("likelihood", False))
    span = str(info.get("likelihood_span", "answer"))
    norm = str(info.get("likelihood_norm", "none"))
    neutral = info.get("likelihood_neutral")
    if neutral and isinstance(neutral[0], int):   # one prompt, as this setting's first version saved it
        neutral = [neutral]
    return load_with_head(folder, device, lambda trunk: RewardModel(trunk, likelihood=likelihood, span=span,
                                                                    norm=norm, neutral=neutral))


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
    """The reward model's score of each (prompt, answer), ``batch`` sequences at a time. Sequences
    of similar length go together (a batch is right-padded to its longest, and a sequence's score
    does not depend on what is padded after it), the scores come back in the given order."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(answers[i]))
    out = torch.zeros(len(prompts))
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        seqs = pack([prompts[i] for i in rows], [answers[i] for i in rows], tok.pad).to(device)
        out[torch.tensor(rows)] = model(seqs).float().cpu()
    return out


def pairwise_accuracy(model: RewardModel, tok: FidanTokenizer, encoded: list[tuple]) -> float:
    decisive = [e for e in encoded if not e[3]]
    if not decisive:
        return float("nan")
    both = scores(model, tok, [e[0] for e in decisive] * 2, [e[1] for e in decisive] + [e[2] for e in decisive])
    chosen, rejected = both[:len(decisive)], both[len(decisive):]
    return float(((chosen > rejected).float() + 0.5 * (chosen == rejected).float()).mean())


def sample_texts(cfg, model: GPT, tok: FidanTokenizer, prompts: list[judge.Prompt], samples: int, seed: int,
                 desc: str = "judge sampling") -> list[list[str]]:
    """The distinct answers (sorted) of ``samples`` sampled at ``reward.temperature`` per prompt,
    as text without the end-of-turn token: written out, ``<|end|>`` would come back from
    ``tok.encode`` as seven ordinary characters that only sampled answers carry (a shortcut for
    the reward model, and never in the token ids PPO's rollouts are scored on)."""
    r = cfg.reward
    tokens = answer_tokens(model.cfg.context, r.response_tokens)
    ids = [prompt_ids(tok, p.text, model.cfg.context - tokens - 1) for p in prompts]
    with Progress(total=len(ids) * samples, desc=desc, unit="answers") as bar:
        drawn = sample_seeds(model, tok, ids, tokens, r.temperature, [seed + k for k in range(samples)], progress=bar)
    return [sorted({tok.decode(s[i].ids, skip_special=True).strip() for s in drawn}) for i in range(len(prompts))]


def judge_pairs(cfg, model: GPT, tok: FidanTokenizer, prompts: list[judge.Prompt], seed: int,
                ) -> tuple[list[dict], int]:
    """``reward.samples`` sampled answers per prompt, labelled by the rule: every two answers with
    different scores make a pair (at most three per prompt). When every sample of a prompt scored
    the same and below the top, the world's reference answer (the fact stated, or a refusal) is
    paired with one of them, so a model too weak to ever answer right still yields pairs. A
    harmful request adds a pair (refusal, written compliance) for each of its written compliant answers.
    Returns (pair records, prompts whose answers all tied)."""
    records, ties = [], 0
    for p, texts in zip(prompts, sample_texts(cfg, model, tok, prompts, cfg.reward.samples, seed)):
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


FACT_PAIRS_PER_QUESTION = 4  # the probe's cap, so a question with many distinct answers does not dominate


def fact_pairs(cfg, policy: GPT, tok: FidanTokenizer, prompts: list[judge.Prompt], samples: int, seed: int,
               ) -> tuple[list[dict], dict]:
    """The fact-judging probe's pairs: ``samples`` fresh answers per fact question sampled from
    ``policy``, judged by the world's ground truth (``judge.score``: +1 the true value named, -1 a
    wrong one, 0 a refusal); every (right, wrong) pair of distinct answers to one question, at most
    ``FACT_PAIRS_PER_QUESTION``. Refusals and questions whose answers were all right or all wrong
    give no pair. Returns (pair records, counts: questions, answers right / wrong / refused)."""
    facts = [p for p in prompts if p.kind == "fact"]
    records, counts = [], {"questions": len(facts), "right": 0, "wrong": 0, "refused": 0}
    for p, texts in zip(facts, sample_texts(cfg, policy, tok, facts, samples, seed, "fact-pair sampling")):
        verdicts = [(judge.score(p, t), t) for t in texts]
        right = [t for v, t in verdicts if v == 1.0]
        wrong = [t for v, t in verdicts if v == -1.0]
        counts["right"] += len(right)
        counts["wrong"] += len(wrong)
        counts["refused"] += len(verdicts) - len(right) - len(wrong)
        pairs = [(a, b) for a in right for b in wrong][:FACT_PAIRS_PER_QUESTION]
        records += [preferences.record(p.text, a, b, "a", "fact-probe", kind="fact", lang=p.lang) for a, b in pairs]
    return records, counts


def wilson(wins: float, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a rate (a tie counts half a win; rounded for the interval)."""
    return stats.wilson(min(n, round(wins)), n)


def fact_accuracy(model: RewardModel, tok: FidanTokenizer, records: list[dict], context: int) -> dict:
    """The reward model's pairwise accuracy on right-vs-wrong fact pairs (``fact_pairs``), with
    the 95% Wilson interval (pairs of one question are not independent, so it is a little narrow)."""
    encoded = encode_records(tok, records, context)
    if not encoded:
        return {"pairs": 0}
    both = scores(model, tok, [e[0] for e in encoded] * 2, [e[1] for e in encoded] + [e[2] for e in encoded])
    right, wrong = both[:len(encoded)], both[len(encoded):]
    wins = float((right > wrong).sum() + 0.5 * (right == wrong).sum())
    low, high = wilson(wins, len(encoded))
    return {"accuracy": round(wins / len(encoded), 4), "pairs": len(encoded), "low": round(low, 4),
            "high": round(high, 4)}


def benign_rows() -> list[dict]:
    """The held-out benign row's pairs: each of the evaluation's benign requests (``eval/benign.py``)
    with a written helpful answer (``heldout.BENIGN_ANSWERS``, used for nothing else) over each of
    the SFT data's two refusals in its language. Written, not sampled: the tiny SFT model's own
    non-refusals to these requests are mostly "I don't know" or noise."""
    return [preferences.record(p["prompt"], BENIGN_ANSWERS[p["prompt"]], refusal, "a", "heldout-benign",
                               kind="benign", lang=p["lang"])
            for p in benign.PROMPTS if p["prompt"] in BENIGN_ANSWERS for refusal in REFUSAL[p["lang"]]]


def unknown_prompts(eval_dir: Path) -> list[judge.Prompt]:
    """The evaluation's questions about made-up entities (``data/eval/unknown.jsonl``, unknown_entity)."""
    path = eval_dir / "unknown.jsonl"
    return [judge.Prompt(u["question"], "unknown", u["lang"], subject=u["subject"],
                         reference=unknowns.ABSTAIN["unknown"][u["lang"]].format(s=u["subject"]))
            for _, u in read_jsonl(path) if u.get("kind") == "unknown_entity"] if path.exists() else []


UNKNOWN_PAIRS_PER_PROMPT = 2


def unknown_rows(cfg, policy: GPT, tok: FidanTokenizer, prompts: list[judge.Prompt], samples: int,
                 seed: int) -> list[dict]:
    """The held-out made-up-entity row's pairs, from ``samples`` fresh answers of ``policy`` per
    question: an abstention (the policy's own when it gave one, else the SFT data's written one)
    over each distinct answer that does not abstain (an invention), at most
    ``UNKNOWN_PAIRS_PER_PROMPT`` per question; empty answers make none."""
    records = []
    for p, texts in zip(prompts, sample_texts(cfg, policy, tok, prompts, samples, seed, "made-up entity sampling")):
        texts = [t for t in texts if re.search(r"\w", re.sub(r"<\|[a-z_]+\|>", "", t))]
        own = [t for t in texts if judge.score(p, t) > 0]
        invented = [t for t in texts if judge.score(p, t) < 0]
        records += [preferences.record(p.text, own[0] if own else p.reference, bad, "a", "heldout-unknown",
                                       kind="unknown", lang=p.lang) for bad in invented[:UNKNOWN_PAIRS_PER_PROMPT]]
    return records


BEHAVIOUR_FILE = "behaviour.json"
BEHAVIOUR_ROWS = {"benign": "benign requests, a written helpful answer over a refusal",
                  "unknown": "made-up entities, an abstention over an invention"}


def kept(path: Path, key: str) -> dict | None:
    """A cache file's contents (``samples.json``, ``behaviour.json``) when it was made under
    ``key``; ``None`` when it is missing, unreadable or made under another key."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return old if isinstance(old, dict) and old.get("key") == key else None


def sampled_behaviour(ctx: StageContext, sft: GPT, tok: FidanTokenizer) -> dict[str, list[dict]]:
    """The held-out behaviour rows' pairs by kind: ``benign_rows`` (written) and ``unknown_rows``
    (sampled, kept in ``reward/behaviour.json`` under a key of what they depend on, reused like
    ``samples.json``)."""
    cfg, r = ctx.cfg, ctx.cfg.reward
    prompts = unknown_prompts(ctx.input("eval_sets"))
    key = hashlib.sha256(json.dumps([atomic.file_sha256(ctx.input("sft")), cfg.run.seed, r.fact_samples,
                                     r.temperature, r.response_tokens, [p.text for p in prompts]]).encode()).hexdigest()
    drawn = kept(ctx.final_out / BEHAVIOUR_FILE, key)
    if drawn is None:
        drawn = {"key": key, "unknown": unknown_rows(cfg, sft, tok, prompts, r.fact_samples, cfg.run.seed + 29)}
    if ctx.rank == 0:
        atomic.write_text(ctx.out / BEHAVIOUR_FILE, json.dumps(drawn, ensure_ascii=False))
    return {"benign": benign_rows(), "unknown": drawn["unknown"]}


SAMPLES_FILE = "samples.json"
REWARD_CHUNK = 8   # sequences per forward pass while training (sorted by length: little padding)


def samples_key(cfg, sft_weights: Path, eval_dir: Path, asked: list[judge.Prompt]) -> str:
    """What the sampled pairs depend on: the SFT model's bytes, the prompts, the seed, the sampling settings."""
    r = cfg.reward
    facts_file = eval_dir / "facts.jsonl"
    return hashlib.sha256(json.dumps([
        atomic.file_sha256(sft_weights), cfg.run.seed, r.samples, r.temperature, r.response_tokens,
        r.fact_samples, cfg.rlhf.eval_prompts, atomic.file_sha256(facts_file) if facts_file.exists() else "",
        [p.text for p in asked]]).encode()).hexdigest()


def sampled_pairs(ctx: StageContext, sft: GPT, tok: FidanTokenizer, asked: list[judge.Prompt]) -> dict:
    """The pairs made from the SFT model's samples: the judge's on the training prompts (shuffled),
    on the held-out prompts, and the fact-judging probe's (``fact_pairs``). They are kept in
    ``reward/samples.json`` with a key made of everything they depend on (the SFT model's bytes,
    the prompts, the seed and the sampling settings), and reused when the key is the same, so a
    one-off change of how the reward model is trained (``--reward.lr``, ``steps``,
    ``hard_negatives``) does not sample thousands of answers again."""
    cfg, r = ctx.cfg, ctx.cfg.reward
    eval_dir = ctx.input("eval_sets")
    key = samples_key(cfg, ctx.input("sft"), eval_dir, asked)
    old = kept(ctx.final_out / SAMPLES_FILE, key)
    if old is not None:
        if ctx.rank == 0:
            atomic.write_text(ctx.out / SAMPLES_FILE, json.dumps(old, ensure_ascii=False))
        return {**old, "reused": True}
    records, ties = judge_pairs(cfg, sft, tok, asked, cfg.run.seed)
    random.Random(cfg.run.seed).shuffle(records)
    prompts, _ = judge_pairs(cfg, sft, tok, judge.held_out(eval_dir, cfg.rlhf.eval_prompts), cfg.run.seed + 11)
    facts, fact_counts = (fact_pairs(cfg, sft, tok, judge.held_out(eval_dir, 0), r.fact_samples, cfg.run.seed + 23)
                          if r.fact_samples else ([], {}))
    drawn = {"key": key, "records": records, "ties": ties, "prompts": prompts, "facts": facts,
             "fact_counts": fact_counts}
    if ctx.rank == 0:
        atomic.write_text(ctx.out / SAMPLES_FILE, json.dumps(drawn, ensure_ascii=False))
    return {**drawn, "reused": False}


def collect_pairs(ctx: StageContext, sft: GPT, tok: FidanTokenizer) -> dict:
    """Training and held-out pairs from the judge, the run's preference file and extra files."""
    cfg, say = ctx.cfg, ctx.say
    train_records: list[dict] = []
    heldout_records: list[dict] = []
    prompt_records: list[dict] = []
    fact_records: list[dict] = []
    counts: dict[str, int] = {}
    conversations = ctx.input("conversations") if ctx.has_input("conversations") else None
    train_prompts, source = judge.training_prompts(cfg, conversations) if cfg.reward.judge else ([], "")
    if train_prompts:
        asked = judge.balanced(train_prompts, cfg.reward.harmful_share)
        drawn = sampled_pairs(ctx, sft, tok, asked)
        records = drawn["records"]
        cut = len(records) - len(records) // 5      # a fifth of the pairs held out
        train_records, heldout_records = records[:cut], records[cut:]
        prompt_records, fact_records = drawn["prompts"], drawn["facts"]
        counts.update(judge_pairs=len(records), judge_all_tied=drawn["ties"],
                      judge_heldout_prompt_pairs=len(prompt_records))
        counts.update({f"fact_answers_{k}": v for k, v in drawn["fact_counts"].items()})
        say(f"judge: {len(records)} pairs from {len(asked)} training prompts ({len(asked) - len(train_prompts)} "
            f"of them repeated harmful requests; {drawn['ties']} prompts' answers "
            f"all tied), a fifth held out; {len(prompt_records)} more from held-out prompts "
            f"(evaluation questions, red team); prompts: {source}"
            + ("; the samples of the previous run, reused" if drawn["reused"] else ""))
        counts["judge_source"] = source
        counts["samples_reused"] = drawn["reused"]
        r = cfg.reward
        written = {  # training only: the held-out figures stay on the judge's pairs
            "hard-negative": (judge.hard_negatives(cfg, r.hard_negatives),
                              "a training fact's true statement vs the same template with a wrong value"),
            "wrong-entity": (judge.wrong_entity(cfg, r.wrong_entity),
                             "a training fact's true statement vs another entity's fact in the same template"),
            "benign": (judge.written_pairs(judge.benign_prompts(cfg, r.benign_pairs)),
                       "a harmless request worded like a harmful one, or an ordinary one: help over refusal"),
            "unknown": (judge.written_pairs(judge.unknown_prompts(cfg, r.unknown_pairs)),
                        "a question about a made-up entity: abstention over a confident invention"),
        }
        for source, (made, what) in written.items():
            if not made:
                continue
            train_records = train_records + [preferences.record(p.text, good, bad, "a", source, kind=p.kind,
                                                                lang=p.lang) for p, good, bad in made]
            counts[f"{source.replace('-', '_')}_pairs"] = len(made)
            say(f"{source}: {len(made)} pairs ({what})")
        if len(train_records) > cut:
            random.Random(cfg.run.seed + 1).shuffle(train_records)
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
    return {"train": train_records, "heldout": heldout_records, "prompts": prompt_records, "facts": fact_records,
            "counts": counts}


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
        behaviour = (sampled_behaviour(ctx, sft, tok) if r.fact_samples and r.judge and judge.applies(cfg)
                     and ctx.has_input("eval_sets") else {})
    if ctx.rank == 0:  # every rank collects the same pairs (seeded); one writes them
        write_jsonl(out / "pairs.jsonl", pairs["train"])
        write_jsonl(out / "heldout_pairs.jsonl", pairs["heldout"])
    context = sft.cfg.context
    train_set = encode_records(tok, pairs["train"], context)
    heldout = encode_records(tok, pairs["heldout"], context)
    heldout_prompts = encode_records(tok, pairs["prompts"], context)

    torch.manual_seed(cfg.run.seed)
    neutral = neutral_prompts(tok, context, r.pmi_prompts) if r.likelihood and r.likelihood_norm == "pmi" else None
    model = RewardModel(sft, likelihood=r.likelihood, span=r.likelihood_span,
                        ends=sentence_ends(tok, sft.cfg.vocab_size) if r.likelihood else None,
                        norm=r.likelihood_norm, neutral=neutral)

    def batch(step: int, micro: int):
        rng = np.random.default_rng([cfg.run.seed, step, micro, 13])
        picks = [train_set[i] for i in rng.integers(0, len(train_set), size=r.batch_size)]
        prompts = [p[0] for p in picks] * 2
        answers = [p[1] for p in picks] + [p[2] for p in picks]
        return pack(prompts, answers, tok.pad), torch.tensor([0.5 if p[3] else 1.0 for p in picks])

    def loss(m, b):
        seqs, target = b
        device = next(m.parameters()).device
        seqs = seqs.to(device)
        # one forward pass per group of similar lengths (little padding computed); a model wrapped
        # for several processes (DDP, FSDP) takes one forward pass per backward
        s = by_length(m, seqs, REWARD_CHUNK) if dist.world_size() == 1 and isinstance(m, RewardModel) else m(seqs)
        diff = s[:len(target)] - s[len(target):]
        target = target.to(device)
        value = -(target * F.logsigmoid(diff) + (1 - target) * F.logsigmoid(-diff)).mean()
        return value, int(seqs.last.sum() + len(seqs.last))

    before = pairwise_accuracy(model, tok, heldout)
    untrained = [t.detach().clone() for t in model.head.parameters()]

    def evaluate(m) -> dict:
        # the loop's first evaluation (step 0) is of the untrained model just scored: not again
        # (every optimizer step moves the head, and a resumed run loads a trained one)
        fresh = all(torch.equal(a, b) for a, b in zip(untrained, m.head.parameters()))
        return {"heldout_accuracy": before if fresh else pairwise_accuracy(m, tok, heldout)}
    tcfg = inherit(ctx, steps=r.steps, batch_size=r.batch_size, grad_accum=r.grad_accum, lr=r.lr,
                   warmup_steps=min(10, r.steps), weight_decay=0.0, eval_every=max(1, r.steps // 3), ckpt_every=r.steps)
    own = [model.head.weight, model.head.bias] + ([model.likelihood_weight] if r.likelihood else [])
    optimizer = None
    if r.head_lr:  # the head's own group; the loop scales every group's lr by its lr_scale on the one schedule
        mine = {id(p) for p in own}
        optimizer = torch.optim.AdamW(
            [{"params": [p for p in model.parameters() if id(p) not in mine], "lr": r.lr, "lr_scale": 1.0},
             {"params": own, "lr": r.head_lr, "lr_scale": r.head_lr / r.lr}],
            betas=(tcfg.beta1, tcfg.beta2), weight_decay=0.0)
    task = Task(name="reward", batch=batch, loss=loss, flops_per_token=flops_per_token(sft.cfg), optimizer=optimizer,
                info={"head": "scalar reward (Bradley-Terry)",
                      **({"likelihood": True, "likelihood_span": r.likelihood_span} if r.likelihood else {}),
                      **({"likelihood_norm": "pmi", "likelihood_neutral": neutral} if neutral else {})},
                evaluate=evaluate if heldout else None)
    model, summary = train(model, tcfg, task, ctx)
    if ctx.rank != 0:  # under torchrun rank 0 alone scores the trained model
        return summary
    # the loop's last evaluation was of the final weights (its summary carries it): not again
    after = summary["heldout_accuracy"] if "heldout_accuracy" in summary else pairwise_accuracy(model, tok, heldout)
    train_acc = pairwise_accuracy(model, tok, train_set[:300])
    prompts_acc = pairwise_accuracy(model, tok, heldout_prompts) if heldout_prompts else None
    facts = fact_accuracy(model, tok, pairs["facts"], context)
    rows = {kind: fact_accuracy(model, tok, records, context) for kind, records in behaviour.items()}
    ctx.say(f"reward model: held-out pairwise accuracy {after:.1%} on {sum(not e[3] for e in heldout)} pairs "
            f"(chance 50%, untrained head {before:.1%}); training pairs {train_acc:.1%}"
            + (f"; pairs from held-out prompts {prompts_acc:.1%}" if prompts_acc is not None else ""))
    if facts["pairs"]:
        ctx.say(f"reward model on right vs wrong answers to held-out fact questions (fresh samples): "
                f"{facts['accuracy']:.1%} of {facts['pairs']} pairs (95% CI {facts['low']:.1%}-{facts['high']:.1%})")
    for kind, row in rows.items():
        if row["pairs"]:
            ctx.say(f"reward model on held-out {BEHAVIOUR_ROWS[kind]}: {row['accuracy']:.1%} of {row['pairs']} pairs "
                    f"(95% CI {row['low']:.1%}-{row['high']:.1%})")
    return {**summary, "heldout_accuracy": round(after, 4), "untrained_accuracy": round(before, 4),
            "train_accuracy": round(train_acc, 4), "train_pairs": len(train_set), "heldout_pairs": len(heldout),
            **({"heldout_prompts_accuracy": round(prompts_acc, 4)} if prompts_acc is not None else {}),
            **({f"fact_pairs_{k}": v for k, v in facts.items()} if facts["pairs"] else {}),
            **{f"{kind}_pairs_{k}": v for kind, row in rows.items() if row["pairs"] for k, v in row.items()},
            **pairs["counts"]}
