"""Runs every task on one model and returns its scores.

Tasks are data plus a scoring rule (eval/tasks/); the harness picks the prompting mode, and the
results name it: ``world_facts/zero-shot``, ``world_facts/3-shot``, ``world_facts/context``,
``world_math/zero-shot``, ``world_math/cot``. Chat models (SFT and later) get generative prompts
as a user turn; multiple choice uses the same plain prompt for every stage, so columns compare.
"""
from __future__ import annotations

import time
from pathlib import Path

from fidan.config import Config
from fidan.errors import FidanError
from fidan.eval import bias, redteam
from fidan.eval.scoring import complete
from fidan.eval.tasks import code, math as math_task, mc, world
from fidan.model.gpt import GPT
from fidan.tokenizer.bpe import FidanTokenizer

CODE_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "<|")


def code_completions(model, tok, problems: list[dict], chat: bool) -> dict:
    completions = [[complete(model, tok, p["prompt"], 48, stop=CODE_STOPS, chat=False)] for p in problems]
    result = code.evaluate(problems, completions)
    return {**{k: v for k, v in result.items() if k != "problems"}, "n": len(problems)}  # pass@1, or skipped


def external(model, tok, spec: str, limit: int, chat: bool) -> dict:
    out = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if "=" not in part:
            raise FidanError(f"eval.suites: '{part}' should look like name=path")
        name, path = part.split("=", 1)
        cut = (lambda xs: xs[:limit] if limit else xs)
        if name == "gsm8k":
            items = math_task.load_gsm8k(path)
            out["gsm8k/cot"] = math_task.score(model, tok, cut(items[3:]), items[:3], "cot", chat)
        elif name == "truthfulqa":
            out["truthfulqa/mc1"] = mc.score(model, tok, cut(mc.load_truthfulqa(path, "mc1")))
            out["truthfulqa/mc2"] = mc.score(model, tok, cut(mc.load_truthfulqa(path, "mc2")))
        elif name == "mmlu":
            out[f"mmlu/{Path(path).stem}"] = mc.score(model, tok, cut(mc.load_mmlu(path)))
        elif name == "humaneval":
            problems = cut(code.load_humaneval(path))
            out["humaneval"] = code_completions(model, tok, problems, chat)
        else:
            raise FidanError(f"eval.suites: unknown suite '{name}' (gsm8k, truthfulqa, mmlu, humaneval)")
    return out


def evaluate_model(model: GPT, tok: FidanTokenizer, info: dict, cfg: Config, run_path: Path,
                   val_bpb: dict | None = None) -> dict:
    e = cfg.eval
    chat = bool(info.get("chat"))
    eval_dir = run_path / "data" / "eval"
    t0 = time.perf_counter()
    scores: dict = {"stage": info.get("stage"), "chat": chat, "params": model.num_params()}
    if val_bpb:
        scores["val_bpb"] = val_bpb
    if (eval_dir / "facts.jsonl").exists():
        scores["world_facts/zero-shot"] = mc.score(model, tok, world.facts_items(eval_dir, "zero-shot", limit=e.limit))
        scores["world_facts/k-shot"] = {"k": e.k_shot, **mc.score(
            model, tok, world.facts_items(eval_dir, "k-shot", e.k_shot, limit=e.limit))}
        scores["world_facts/context"] = mc.score(model, tok, world.facts_items(eval_dir, "context", limit=e.limit))
        scores["world_truthful"] = mc.score(model, tok, world.truthful_items(eval_dir, limit=e.limit))
        from fidan.finetune.evaluate import chat_scores
        scores["world_facts/chat"] = {"acc": chat_scores(model, tok, eval_dir, 60)["facts_acc"], "n": 60}
    if (eval_dir / "arithmetic.jsonl").exists():
        dev, test = world.math_items(eval_dir, e.math_limit)
        scores["world_math/zero-shot"] = math_task.score(model, tok, test, [], "zero-shot", chat, max_tokens=64)
        scores["world_math/cot"] = math_task.score(model, tok, test, [], "cot", chat, max_tokens=64)
    code.allow_unsafe(e.unsafe_code)
    scores["world_code"] = code_completions(model, tok, world.code_problems(), chat)
    if e.suites:
        scores.update(external(model, tok, e.suites, e.suite_limit, chat))
    if e.redteam:
        scores["redteam"] = redteam.run(model, tok, chat)
    if e.bias:
        scores["bias"] = bias.run(model, tok)
    scores["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return scores
