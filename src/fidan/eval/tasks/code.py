"""Code generation scored by unit tests in the sandbox (the HumanEval format).

A problem is ``{"task_id", "prompt", "canonical_solution", "test", "entry_point"}``; a completion
is the function body a model writes after the prompt. In the sandbox (eval/sandbox.py) one
process runs prompt + completion, another runs the problem's tests with the entry point standing
for calls into the first; it passes when ``check(entry_point)`` returns there in time, as
reported on a channel the completion cannot write (never by an exit status).
Without OS isolation the task is skipped with the reason in its scores, unless
``--eval.unsafe_code=true`` allows the plain-subprocess fallback.
pass@k uses the unbiased estimator of Chen et al. (2021): with n samples of which c pass,
pass@k = 1 - C(n - c, k) / C(n, k), averaged over problems.
"""
from __future__ import annotations

import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fidan.errors import FidanError
from fidan.eval import sandbox
from fidan.eval.sandbox import Limits, Outcome, run_tests

REQUIRED = ("task_id", "prompt", "test", "entry_point")
unsafe_code = False  # the run's --eval.unsafe_code, set by the harness (see allow_unsafe)


def allow_unsafe(flag: bool) -> None:
    """Whether code may run without OS isolation when the sandbox is unavailable."""
    global unsafe_code
    unsafe_code = bool(flag)


def load_humaneval(path: str | Path) -> list[dict]:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise FidanError(f"{path}: cannot read ({e})") from None
    problems = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            missing = [k for k in REQUIRED if k not in row]
            if missing:
                raise ValueError(f"missing {missing}")
        except ValueError as e:
            raise FidanError(f"{path}:{number}: not a HumanEval problem ({e})") from None
        problems.append(row)
    return problems


def check(problem: dict, completion: str, limits: Limits = Limits(timeout_s=10),
          unsafe: bool | None = None) -> Outcome:
    return run_tests(problem["prompt"], completion, problem["test"], problem["entry_point"], limits,
                     unsafe_code if unsafe is None else unsafe)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c correct) passes."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def evaluate(problems: list[dict], completions: list[list[str]], ks: tuple[int, ...] = (1,),
             workers: int = 2, unsafe: bool | None = None) -> dict:
    """pass@k over problems, each with its list of sampled completions. Without OS isolation
    (and without ``unsafe``), nothing runs: ``{"skipped": reason, "problems": []}``."""
    unsafe = unsafe_code if unsafe is None else unsafe
    reason = sandbox.unavailable()
    if reason is not None and not unsafe:
        message = f"code evaluation skipped: {reason}; {sandbox.UNSAFE_HINT}"
        print(f"  {message}")
        return {"skipped": message, "problems": []}
    if reason is not None:
        print(f"  code evaluation WITHOUT OS isolation (--eval.unsafe_code=true): {reason}")
    jobs = [(p, c) for p, cs in zip(problems, completions) for c in cs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(lambda job: check(*job, unsafe=unsafe), jobs))
    results, i = [], 0
    for p, cs in zip(problems, completions):
        passed = sum(o.passed for o in outcomes[i:i + len(cs)])
        results.append({"task_id": p["task_id"], "n": len(cs), "passed": passed})
        i += len(cs)
    scores = {f"pass@{k}": float(np.mean([pass_at_k(r["n"], r["passed"], k) for r in results]))
              for k in ks if all(r["n"] >= k for r in results)}
    return {**scores, "sandbox": "bubblewrap" if reason is None else "unsafe subprocess", "problems": results}
