"""GRPO (Shao et al. 2024, DeepSeekMath) with a verifiable reward: the right final answer.

For each arithmetic word problem the policy samples a group of ``[rlhf.grpo] group`` answers; an
answer earns 1 when its final number (after ``####``, else the last number) is the true answer,
else 0: the ``reward`` of the evaluation's ``world_math`` task, so GRPO optimises what is scored.
Each answer's advantage is its reward minus the group's mean, divided by the group's standard
deviation, shared by all its tokens: no value model and no learned reward, so nothing to hack
but the checker. The loss is PPO's clipped surrogate per token plus ``[rlhf.grpo] kl`` times the k3
estimate of KL to the SFT model, ``exp(ref - logp) - (ref - logp) - 1``, averaged over every
kept token of the step (token-level, as DAPO's: a long answer is not divided by its length). A
group whose answers all score the same carries no signal and is left out of the update.

The field's remedies for groups without signal and a collapsing sampler, each an ``[rlhf.grpo]``
setting, off by default: ``dynamic_sampling`` (DAPO, Yu et al. 2025) draws further rounds of
problems and keeps only groups with signal until the step holds ``prompts_per_step / group`` of
them (``with_signal``); ``clip_high`` clips the ratio asymmetrically, ``[1 - clip, 1 + clip_high]``
(DAPO's clip-higher: an unlikely right answer may grow further than a likely one may shrink);
``scale_rewards = false`` leaves out the division by the group's std (Dr. GRPO, Liu et al. 2025);
``kl = 0`` drops the KL term.

Under torchrun each rank samples its share of the groups, so a rank may hold no group with
signal. The loss is therefore the mean over every rank's kept tokens (``token_mean_over_ranks``):
a rank without signal adds zero gradients and the others' count for the whole step, so the update
equals one process's on the same groups (a per-rank mean, averaged, would halve it).

Which problems the groups get is the curriculum's (``rlhf/curriculum.py``, ``[rlhf.grpo]
curriculum``): one-step problems with small numbers first, which the SFT model sometimes solves,
then the word problems, then two-step ones, moving on when the success rate passes
``advance_at``; each stage is scored by its evaluation task's ``reward``. Training problems are
generated from the world like the evaluation sets, minus their problems. At the end the SFT and
the GRPO model answer each stage's held-out problems greedily (``eval_items`` per stage), with
95% Wilson intervals and Newcombe's interval for the difference; ``eval_every`` also scores the
GRPO model every that many steps (``held_out_<stage>`` in metrics.jsonl: the curve, whose time
counts in the step's). GRPO runs on the shared loop
as an outer step, so it checkpoints and resumes like PPO (the curriculum's stage with it).
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fidan import dist
from fidan.context import StageContext
from fidan.errors import FidanError
from fidan.eval import tasks as eval_tasks
from fidan.model.gpt import GPT
from fidan.records import read_jsonl
from fidan.rlhf import curriculum, judge
from fidan.rlhf.ppo import clipped_surrogate, masked_mean
from fidan.rlhf.rollout import answer_tokens, pack, prompt_ids, rl_settings, sample, token_logprobs
from fidan.stats import wilson, wilson_difference
from fidan.tokenizer.bpe import FidanTokenizer
from fidan.train.loop import Task, train

MATH_TOKENS = 48   # worked solutions are longer than the chat answers PPO samples (at most half the context)


ROUND_SEED = 1_000_003   # dynamic sampling: each further round's sampler seed is this apart


def group_advantages(rewards: torch.Tensor, group: int, scale: bool = True) -> torch.Tensor:
    """``[n_prompts * group]`` rewards -> advantages: minus the group's mean, and with ``scale``
    divided by the group's standard deviation (Dr. GRPO leaves that out: ``scale_rewards``)."""
    r = rewards.view(-1, group)
    centred = r - r.mean(1, keepdim=True)
    return (centred / (r.std(1, keepdim=True) + 1e-4) if scale else centred).view(-1)


@dataclass
class Group:
    """One problem's sampled answers (``group`` of them) and their rewards."""
    stage: str
    prompts: list[list[int]]
    answers: list[list[int]]
    rewards: torch.Tensor

    @property
    def signal(self) -> bool:
        """Some but not all answers right: only then do the advantages differ from zero."""
        return bool(self.rewards.max() > self.rewards.min())


def with_signal(draw: Callable[[int], list[Group]], more_rounds: int) -> tuple[list[Group], list[Group], int]:
    """DAPO's dynamic sampling: the first round's groups, the groups of the update, and the rounds drawn.

    Without ``more_rounds`` the update gets the first round as it is (its uniform groups are left
    out later). With them, groups whose rewards are all equal are dropped and further rounds
    (``draw(1)``, ``draw(2)`` ...) are drawn until the groups with signal fill the first round's
    size, at most ``more_rounds`` more; the update gets the first that many groups with signal."""
    first = draw(0)
    if not more_rounds:
        return first, first, 1
    kept = [x for x in first if x.signal]
    rounds = 1
    while len(kept) < len(first) and rounds <= more_rounds:
        kept += [x for x in draw(rounds) if x.signal]
        rounds += 1
    return first, kept[:len(first)], rounds


def token_mean_over_ranks(x: torch.Tensor, mask: torch.Tensor, total: float) -> torch.Tensor:
    """This rank's part of the mean of ``x`` over all ranks' ``mask``-ed tokens (``total`` of them).

    Scaled by the world size, because ``dist.average_gradients`` divides the summed gradients by
    it: after the reduction the gradient is the one of the mean over every token of the step."""
    return (x * mask).sum() * dist.world_size() / max(total, 1.0)


def run(ctx: StageContext, policy: GPT, ref: GPT, tok: FidanTokenizer, *, info: dict, response_tokens: int = 0) -> dict:
    """GRPO on the shared loop: one outer step = a batch of groups and ``epochs`` passes over it."""
    cfg = ctx.cfg
    if not judge.applies(cfg):
        raise FidanError("GRPO's verifiable reward needs the embedded world's word problems (no --data.source)")
    c = cfg.rlhf
    g = c.grpo
    per_step = max(1, c.prompts_per_step // g.group)
    plan, pools, world = curriculum.make(g, cfg)
    math_tokens = answer_tokens(policy.cfg.context, MATH_TOKENS)
    room = policy.cfg.context - math_tokens - 1
    tcfg = rl_settings(ctx)
    # each stage's evaluation task gives its reward: the final number of the reply is the answer
    checkers = {stage: eval_tasks.get(curriculum.TASKS[stage]) for stage in plan.stages}
    optimizer = torch.optim.AdamW(policy.parameters(), lr=c.lr, betas=(tcfg.beta1, tcfg.beta2), weight_decay=0.0)
    device = ctx.device
    # the curve: held-out greedy accuracy every ``eval_every`` steps (rank 0; in metrics.jsonl)
    curve_sets = curriculum.held_out(world, cfg.run.seed, one_step=g.eval_items) if g.eval_every else {}

    def draw(i: int, rng: random.Random, rnd: int) -> list[Group]:
        """One round of this rank's groups for step ``i``: problems, sampled answers, rewards."""
        stages = [plan.stages[s] for s in plan.pick(rng, per_step)]
        picked = [(st, pools[st][rng.randrange(len(pools[st]))]) for st in stages]
        picked = list(dist.share(picked))  # under torchrun: this rank's share of the step's groups
        prompts = [prompt_ids(tok, p.question, room) for _, p in picked for _ in range(g.group)]
        policy.eval()
        with ctx.autocast():
            answers = sample(policy, tok, prompts, math_tokens, c.temperature,
                             cfg.run.seed * 1000 + i + 7 * dist.rank() + ROUND_SEED * rnd)
        out = []
        for n, (st, p) in enumerate(picked):
            part = slice(n * g.group, (n + 1) * g.group)
            rewards = torch.tensor([checkers[st].reward({"answer": p.answer}, tok.decode(a.ids))
                                    for a in answers[part]])
            out.append(Group(st, prompts[part], [a.ids for a in answers[part]], rewards))
        return out

    def step(i: int) -> dict:
        rng = random.Random(cfg.run.seed * 7907 + i)
        current = plan.name
        first, groups, rounds = with_signal(lambda rnd: draw(i, rng, rnd), g.dynamic_sampling)
        rewards = torch.cat([x.rewards for x in first])
        informative = torch.tensor([x.signal for x in first])
        at_stage = torch.tensor([x.stage == current for x in first])
        group_right = torch.stack([x.rewards.mean() for x in first])
        record = {k: round(v, 5) for k, v in dist.all_mean(
            {"reward": float(rewards.mean()), "groups_with_signal": float(informative.float().mean())}).items()}
        right, n_groups = dist.all_sum([float(group_right[at_stage].sum()), float(at_stage.sum())])
        record.update(stage=current, stage_reward=round(right / max(n_groups, 1.0), 5))   # the sampler's success rate
        record["advanced"] = plan.update(record["stage_reward"])
        if g.dynamic_sampling:   # the update's groups with signal, as a share of the step's batch, and the rounds
            kept, drawn, most = dist.all_sum([sum(x.signal for x in groups), len(first), rounds])
            record.update(update_signal=round(kept / max(drawn, 1.0), 5), rounds=round(most / dist.world_size(), 3))
        prompts = [ids for x in groups for ids in x.prompts]
        answers = [ids for x in groups for ids in x.answers]
        adv = torch.cat([group_advantages(x.rewards, g.group, g.scale_rewards) for x in groups]) if groups \
            else torch.zeros(0)
        keep = torch.tensor([x.signal for x in groups], dtype=torch.bool).repeat_interleave(g.group)
        keep = keep.nonzero().squeeze(-1)
        if dist.all_sum([len(keep)])[0] and not len(keep):
            # no signal here but on another rank: take part in every reduction with zero gradients
            dist.all_sum([0.0])      # this rank's kept tokens, for the others' token count
            policy.train()
            for _ in range(g.epochs):
                optimizer.zero_grad(set_to_none=True)
                dist.average_gradients(policy.parameters())
                torch.nn.utils.clip_grad_norm_(policy.parameters(), tcfg.grad_clip or float("inf"))
                optimizer.step()
        elif len(keep):
            seqs = pack([prompts[j] for j in keep], [answers[j] for j in keep], tok.pad).to(device)
            adv_k = adv[keep][:, None].to(device)
            with torch.no_grad(), ctx.autocast():
                old = token_logprobs(policy, seqs)
                ref_lp = token_logprobs(ref, seqs)
            policy.train()
            mask = seqs.mask.float()
            total = dist.all_sum([float(mask.sum())])[0]   # kept tokens over all ranks
            for _ in range(g.epochs):
                with ctx.autocast():
                    logp = token_logprobs(policy, seqs)
                pg, _ = clipped_surrogate(logp, old, adv_k, g.clip, g.clip_high or g.clip)
                k3 = torch.exp(ref_lp - logp) - (ref_lp - logp) - 1
                loss = token_mean_over_ranks(pg + g.kl * k3, mask, total)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                dist.average_gradients(policy.parameters())
                torch.nn.utils.clip_grad_norm_(policy.parameters(), tcfg.grad_clip or float("inf"))
                optimizer.step()
            record.update(loss=round(float(loss.detach()), 5),
                          kl=round(float(masked_mean(logp.detach() - ref_lp, mask) * mask.sum(-1).mean()), 5),
                          length=round(float(mask.sum(-1).mean()), 5), tokens=int(mask.sum()))
        if g.eval_every and (i + 1) % g.eval_every == 0 and ctx.rank == 0:
            for stage in plan.stages:
                right, n = greedy_right(ctx, policy, tok, curve_sets[stage][:g.eval_items], checkers[stage].reward)
                record[f"held_out_{stage}"] = round(right / max(n, 1), 4)
        return record

    def describe(record: dict) -> str:
        more = f" (update {record['update_signal']:.0%}, {record['rounds']:g} rounds)" if "rounds" in record else ""
        return (f"{record['stage']}: correct {record['reward']:.1%}  "
                f"groups with signal {record['groups_with_signal']:.0%}{more}")

    task = Task(name="grpo", step=step, optimizer=optimizer, describe=describe, info=info,
                state=plan.state, load_state=plan.load_state)
    dist.need_multiple(per_step, "rlhf.prompts_per_step / rlhf.grpo.group")
    _, summary = train(policy, tcfg, task, ctx)
    rows = [r for _, r in read_jsonl(ctx.out / "metrics.jsonl")]
    out = {"steps": c.steps, "train_seconds": summary["train_seconds"],
           "train_correct_first": rows[0]["reward"], "train_correct_last": rows[-1]["reward"],
           "groups_with_signal_first": rows[0]["groups_with_signal"],
           "groups_with_signal_mean": round(sum(r["groups_with_signal"] for r in rows) / len(rows), 4),
           **({"update_signal_mean": round(sum(r["update_signal"] for r in rows) / len(rows), 4),
               "rounds_mean": round(sum(r["rounds"] for r in rows) / len(rows), 3)} if g.dynamic_sampling else {}),
           "curriculum": stage_steps(rows)}
    if g.eval_items and ctx.rank == 0:
        out["held_out"] = held_out_scores(ctx, policy, ref, tok, world, plan.stages, checkers, g.eval_items)
    return out


def stage_steps(rows: list[dict]) -> list[dict]:
    """The curriculum as it ran: each stage's first step, steps, mean success and groups with signal."""
    out: list[dict] = []
    for n, r in enumerate(rows):
        if not out or out[-1]["stage"] != r.get("stage"):
            out.append({"stage": r.get("stage"), "first_step": n, "rows": []})
        out[-1]["rows"].append(r)
    for s in out:
        rows_ = s.pop("rows")
        s.update(steps=len(rows_), success=round(sum(r["stage_reward"] for r in rows_) / len(rows_), 4),
                 groups_with_signal=round(sum(r["groups_with_signal"] for r in rows_) / len(rows_), 4))
    return out


def greedy_right(ctx: StageContext, model: GPT, tok: FidanTokenizer, items: list[dict], reward) -> tuple[int, int]:
    """Right greedy replies of ``model`` among ``items`` (each a problem with its answer), and how many."""
    math_tokens = answer_tokens(model.cfg.context, MATH_TOKENS)
    room = model.cfg.context - math_tokens - 1
    was_training = model.training
    model.eval()

    def answer(questions):
        with torch.no_grad(), ctx.autocast():
            got = sample(model, tok, [prompt_ids(tok, q, room) for q in questions], math_tokens, 0.0,
                         ctx.cfg.run.seed)
        return [tok.decode(a.ids) for a in got]
    out = curriculum.greedy_accuracy(answer, reward, items)
    model.train(was_training)
    return out


@torch.no_grad()
def held_out_scores(ctx: StageContext, policy: GPT, ref: GPT, tok: FidanTokenizer, world, stages, checkers,
                    limit: int) -> dict:
    """Greedy accuracy of the SFT model and the GRPO model on each stage's held-out problems."""
    sets = curriculum.held_out(world, ctx.cfg.run.seed, one_step=limit)
    out = {}
    for stage in stages:
        items = sets[stage][:limit]
        (a, n), (b, _) = (greedy_right(ctx, model, tok, items, checkers[stage].reward) for model in (ref, policy))
        out[stage] = {"n": n, "sft": round(a / max(n, 1), 4), "sft_ci": list(wilson(a, n)),
                      "grpo": round(b / max(n, 1), 4), "grpo_ci": list(wilson(b, n)),
                      "gain": round((b - a) / max(n, 1), 4), "gain_ci": list(wilson_difference(a, b, n))}
    return out
