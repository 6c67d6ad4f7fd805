"""Code completion on the world's small functions, run against their tests in the sandbox."""
from __future__ import annotations

from fidan.eval.tasks import EvalInputs, Task, register
from fidan.eval.tasks import code as code_task
from fidan.eval.tasks.world import code_problems
from fidan.infer.scoring import complete_many, reply_room

CODE_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "<|")


def code_completions(model, tok, problems: list[dict]) -> dict:
    """One greedy completion per problem (as plain text, also for chat models: code continues
    a prompt), pass@1 in the sandbox. The completion has up to 48 tokens (fewer where the context
    is short, at least 16); a problem whose whole prompt leaves less room is skipped and counted
    (``too_long``)."""
    rooms = [(p, n) for p in problems if (n := reply_room(model, tok, p["prompt"], 48))]
    fitting = [p for p, _ in rooms]
    completions = [[c] for c in complete_many(model, tok, [p["prompt"] for p, _ in rooms], [n for _, n in rooms],
                                              stop=CODE_STOPS, chat=False)]
    result = code_task.evaluate(fitting, completions) if fitting else {}
    out = {**{k: v for k, v in result.items() if k != "problems"}, "n": len(fitting)}
    if len(fitting) < len(problems):
        out["too_long"] = len(problems) - len(fitting)
    return out


class WorldCode(Task):
    name = "world_code"

    def evaluate(self, inputs: EvalInputs) -> dict[str, dict]:
        limit = inputs.settings.limit
        problems = code_problems()[:limit] if limit else code_problems()
        return {"world_code": code_completions(inputs.model, inputs.tok, problems)}


register(WorldCode())
