"""Code completion on the world's small functions, run against their tests in the sandbox."""
from __future__ import annotations

from fidan.eval.tasks import EvalInputs, Task, register
from fidan.eval.tasks import code as code_task
from fidan.eval.tasks.world import code_problems
from fidan.infer.scoring import complete

CODE_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "<|")


def code_completions(model, tok, problems: list[dict]) -> dict:
    """One greedy completion per problem (as plain text, also for chat models: code continues
    a prompt), pass@1 in the sandbox."""
    completions = [[complete(model, tok, p["prompt"], 48, stop=CODE_STOPS, chat=False)] for p in problems]
    result = code_task.evaluate(problems, completions)
    return {**{k: v for k, v in result.items() if k != "problems"}, "n": len(problems)}


class WorldCode(Task):
    name = "world_code"

    def evaluate(self, inputs: EvalInputs) -> dict[str, dict]:
        return {"world_code": code_completions(inputs.model, inputs.tok, code_problems())}


register(WorldCode())
