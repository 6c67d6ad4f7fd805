"""Runs every task on one model and returns its scores.

Tasks are objects registered in ``eval/tasks`` (data, a prompting mode, a scoring rule, and a
``reward`` where the answer is checkable); the harness runs each, and the results name the task
and mode: ``world_facts/zero-shot``, ``world_facts/3-shot``, ``world_facts/context``,
``world_math/zero-shot``, ``world_math/cot``. Chat models (SFT and later) get generative prompts
as a user turn; multiple choice uses the same plain prompt for every stage, so columns compare.
"""
from __future__ import annotations

import time
from pathlib import Path

from fidan.config import Config
from fidan.errors import FidanError
from fidan.eval import bias, redteam
from fidan.eval.tasks import EvalInputs, all_tasks, code, mc
from fidan.eval.tasks import math as math_task
from fidan.eval.tasks.world_code import code_completions
from fidan.model.gpt import GPT
from fidan.progress import Progress
from fidan.tokenizer.bpe import FidanTokenizer


def external(model, tok, spec: str, limit: int, chat: bool) -> dict:
    """The real benchmarks of ``eval.suites``, each under ``suite/mode``: ``gsm8k/cot``
    (3-shot, strict and flexible exact match), ``truthfulqa/mc1`` (acc), ``truthfulqa/mc2``
    (the MC2 score only), ``mmlu/<subject>`` (acc, acc_norm), ``humaneval`` (pass@1), ``crows_pairs``
    (share preferring the more stereotyping sentence), ``stereoset`` (ss, lms, icat), ``harmbench`` and
    ``donotanswer`` (attack success rate and over-refusal, by the independent grader)."""
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
            mc1 = mc.score(model, tok, cut(mc.load_truthfulqa(path, "mc1")))
            out["truthfulqa/mc1"] = {k: v for k, v in mc1.items() if k != "acc_norm"}
            mc2 = mc.score(model, tok, cut(mc.load_truthfulqa(path, "mc2")))
            out["truthfulqa/mc2"] = {k: v for k, v in mc2.items() if k not in ("acc", "acc_norm")}
        elif name == "mmlu":
            out[f"mmlu/{mc.mmlu_subject(path)}"] = mc.score(model, tok, cut(mc.load_mmlu(path)))
        elif name == "humaneval":
            problems = cut(code.load_humaneval(path))
            out["humaneval"] = code_completions(model, tok, problems)
        elif name in ("harmbench", "donotanswer"):
            out[name] = redteam.suite(model, tok, cut(redteam.load_suite(name, path)), chat)
        elif name == "crows_pairs":
            out["crows_pairs"] = bias.crows_pairs(model, tok, cut(bias.load_crows_pairs(path)))
        elif name == "stereoset":
            out["stereoset"] = bias.stereoset(model, tok, cut(bias.load_stereoset(path)))
        else:
            raise FidanError(f"eval.suites: unknown suite '{name}' "
                             "(gsm8k, truthfulqa, mmlu, humaneval, crows_pairs, stereoset, harmbench, donotanswer)")
    return out


def evaluate_model(model: GPT, tok: FidanTokenizer, info: dict, cfg: Config, run_path: Path,
                   val_bpb: dict | None = None) -> dict:
    """Every registered task (``eval/tasks``), then the real suites of ``eval.suites``."""
    e = cfg.eval
    chat = bool(info.get("chat"))
    inputs = EvalInputs(model, tok, chat, run_path / "data" / "eval", e)
    t0 = time.perf_counter()
    scores: dict = {"stage": info.get("stage"), "chat": chat, "params": model.num_params()}
    if val_bpb:
        scores["val_bpb"] = val_bpb
    code.allow_unsafe(e.unsafe_code)   # generated code runs only in the OS sandbox unless the user says otherwise
    tasks = all_tasks()
    with Progress(total=len(tasks) + bool(e.suites), desc=f"eval {info.get('stage', 'model')}", unit="tasks") as bar:
        for task in tasks:
            scores.update(task.evaluate(inputs))
            bar.set_postfix(done=task.name)
            bar.update()
        if e.suites:
            scores.update(external(model, tok, e.suites, e.suite_limit, chat))
            bar.set_postfix(done="suites")
            bar.update()
    scores["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return scores
