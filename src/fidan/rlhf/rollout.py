"""What every alignment algorithm here needs: prompts rendered for chat, answers sampled in
batches, and per-token log-probabilities of answers under a model.

A sequence is ``prompt + answer``; an answer that ended by itself keeps its closing ``<|end|>``
(choosing to stop is an action the policy is trained on too). Sequences are right-padded, so
with causal attention no mask is needed: padding comes after every real token.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fidan.context import StageContext
from fidan.infer.engine import BatchDecoder, SamplingParams
from fidan.model.gpt import GPT
from fidan.tokenizer.bpe import FidanTokenizer
from fidan.tokenizer.chat import render
from fidan.train.loop import inherit


def prompt_ids(tok: FidanTokenizer, prompt: str | list[dict], room: int) -> list[int]:
    """The chat-template tokens that ask for an answer, cut from the left to leave ``room``."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    ids, _ = render(tok, messages, add_generation_prompt=True)
    return ids[-room:]


def answer_tokens(context: int, wanted: int) -> int:
    """The answer length to sample: ``wanted``, but never more than half the context, so the
    prompt keeps room (a small test model's context can be shorter than the configured answers)."""
    return max(1, min(wanted, context // 2))


@dataclass
class Answer:
    ids: list[int]      # the answer's tokens, with <|end|> when it ended by itself
    ended: bool         # False: cut off at the token limit


@torch.no_grad()
def sample(model: GPT, tok: FidanTokenizer, prompts: list[list[int]], max_tokens: int, temperature: float,
           seed: int, batch: int = 64, progress=None) -> list[Answer]:
    """One sampled answer per prompt (``temperature`` 0 = greedy), decoded ``batch`` at a time;
    ``progress`` (a :class:`fidan.progress.Progress`) counts the answers as they are done."""
    return sample_seeds(model, tok, prompts, max_tokens, temperature, [seed], batch, progress)[0]


@torch.no_grad()
def sample_seeds(model: GPT, tok: FidanTokenizer, prompts: list[list[int]], max_tokens: int, temperature: float,
                 seeds: list[int], batch: int = 64, progress=None) -> list[list[Answer]]:
    """``[sample(..., seed) for seed in seeds]`` (the same answers: each row keeps the generator
    ``sample`` gives it), with each prompt prefilled once for all seeds (``BatchDecoder.repeat``)."""
    end = tok.end_of_turn
    stops = set(tok.stop_ids)
    answers: list[list[Answer]] = [[] for _ in seeds]
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        params = [SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed * 100_003 + start + i,
                                 stop_ids=stops) for seed in seeds for i in range(len(chunk))]
        decoder = BatchDecoder(model, chunk, params[:len(chunk)], tok.pad)
        if len(seeds) > 1:
            decoder.repeat(params)
        out: list[list[int]] = [[] for _ in params]
        while not decoder.done:
            for row, token in decoder.step().items():
                if token is not None:
                    out[row].append(token)
        for row, ids in enumerate(out):
            ended = decoder.produced[row] < decoder.limits[row]
            answers[row // len(chunk)].append(Answer(ids + [end] if ended else ids, ended))
        if progress is not None:
            progress.update(len(params))
    return answers


@dataclass
class Sequences:
    ids: torch.Tensor        # [B, T] prompt + answer, right-padded
    mask: torch.Tensor       # [B, T-1] True where the target ids[:, 1:] is an answer token
    last: torch.Tensor       # [B] index of each sequence's last real token

    def to(self, device) -> Sequences:
        return Sequences(self.ids.to(device), self.mask.to(device), self.last.to(device))

    def select(self, rows: torch.Tensor) -> Sequences:
        return Sequences(self.ids[rows], self.mask[rows], self.last[rows])


LENGTH_CHUNK = 16   # rows per forward pass in ``by_length``


def by_length(fn, seqs: Sequences, chunk: int = LENGTH_CHUNK):
    """``fn(seqs)`` computed ``chunk`` rows at a time, the rows sorted by length and each chunk cut
    to its own longest sequence, then put back together in the rows' order: the same tensors
    (each row's numbers depend only on its own tokens, and with right padding nothing after a
    row's last token reaches it), without computing the padding a batch of mixed lengths carries.
    ``fn`` returns a tensor or a tuple of tensors shaped ``[rows]`` or ``[rows, T - 1, ...]``; the
    positions past a chunk's width come back as zeros."""
    rows = len(seqs.last)
    if rows <= chunk:
        width = int(seqs.last.max()) + 1
        if width == seqs.ids.shape[1]:
            return fn(seqs)
    order = torch.argsort(seqs.last.cpu(), stable=True)
    parts = []
    for start in range(0, rows, chunk):
        idx = order[start:start + chunk].to(seqs.ids.device)
        sub = seqs.select(idx)
        width = int(sub.last.max()) + 1
        parts.append((idx, fn(Sequences(sub.ids[:, :width], sub.mask[:, :width - 1], sub.last))))
    single = not isinstance(parts[0][1], tuple)
    outs = []
    for k in range(1 if single else len(parts[0][1])):
        pieces = [(idx, out if single else out[k]) for idx, out in parts]
        first = pieces[0][1]
        full = first.new_zeros((rows, *((seqs.ids.shape[1] - 1,) if first.dim() > 1 else ()), *first.shape[2:]))
        for idx, piece in pieces:
            if piece.dim() > 1:
                full = full.index_put((idx,), torch.nn.functional.pad(
                    piece, (0, 0) * (piece.dim() - 2) + (0, full.shape[1] - piece.shape[1])))
            else:
                full = full.index_put((idx,), piece)
        outs.append(full)
    return outs[0] if single else tuple(outs)


def pack(prompts: list[list[int]], answers: list[list[int]], pad_id: int) -> Sequences:
    lengths = [len(p) + len(a) for p, a in zip(prompts, answers)]
    ids = torch.full((len(prompts), max(lengths)), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), max(lengths) - 1), dtype=torch.bool)
    for row, (p, a) in enumerate(zip(prompts, answers)):
        ids[row, :len(p) + len(a)] = torch.tensor(p + a)
        mask[row, len(p) - 1:len(p) + len(a) - 1] = True
    return Sequences(ids, mask, torch.tensor(lengths) - 1)


def token_logprobs(model: GPT, seqs: Sequences, with_hidden: bool = False):
    """Log-probability of each next token ``[B, T-1]`` (and the entropy of each prediction and
    the hidden states that made it, when ``with_hidden``), on the model's device."""
    seqs = seqs.to(model.lm_head.weight.device)
    hidden = model(seqs.ids[:, :-1], return_hidden=True)
    logits = model.lm_head(hidden).float()
    logp = F.log_softmax(logits, -1)
    picked = logp.gather(-1, seqs.ids[:, 1:, None]).squeeze(-1)
    if not with_hidden:
        return picked
    entropy = -(logp.exp() * logp).sum(-1)
    return picked, entropy, hidden


def answer_logprob(model: GPT, seqs: Sequences) -> torch.Tensor:
    """Summed log-probability of each sequence's answer ``[B]``, on the model's device."""
    seqs = seqs.to(model.lm_head.weight.device)
    return (token_logprobs(model, seqs) * seqs.mask).sum(-1)


@torch.no_grad()
def answer_logprobs(model: GPT, prompts: list[list[int]], answers: list[list[int]], pad_id: int,
                    batch: int = 64) -> torch.Tensor:
    """``answer_logprob`` of many (prompt, answer) pairs for evaluation, ``[N]`` on the CPU:
    ``batch`` sequences at a time, similar lengths together (each batch right-padded only to its
    own longest), in the given order."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(answers[i]))
    out = torch.zeros(len(prompts))
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        seqs = pack([prompts[i] for i in rows], [answers[i] for i in rows], pad_id)
        out[torch.tensor(rows)] = answer_logprob(model, seqs).float().cpu()
    return out


def rl_settings(ctx: StageContext):
    """Loop settings for PPO and GRPO: one loop step is one rollout batch."""
    c = ctx.cfg.rlhf
    return inherit(ctx, steps=c.steps, batch_size=c.prompts_per_step, lr=c.lr, warmup_steps=0, schedule="constant",
                   weight_decay=0.0, eval_every=c.steps + 1, ckpt_every=c.ckpt_every, log_every=5)
