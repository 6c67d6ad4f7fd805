"""Questions about the user's own text, asked in chat form (``data/eval/text.jsonl``, made by the
data stage from validation documents: ``data/synth.py``). Each prompt carries the passage it asks
about; a reply is right when it overlaps the reference sentence by half (word F1)."""
from __future__ import annotations

from fidan.eval.tasks import EvalInputs, Task, register


class OwnText(Task):
    name = "text"

    def evaluate(self, inputs: EvalInputs) -> dict[str, dict]:
        from fidan.infer.answers import chat_scores
        if not (inputs.eval_dir / "text.jsonl").exists():
            return {}
        scores = chat_scores(inputs.model, inputs.tok, inputs.eval_dir, inputs.settings.limit)
        if "text_n" not in scores:
            return {}
        return {"text/chat": {"acc": scores["text_acc"], "f1": scores["text_f1"], "n": scores["text_n"]}}

    def reward(self, item: dict, reply: str) -> float:
        from fidan.infer.answers import TEXT_RIGHT
        from fidan.text import overlap
        return float(overlap(reply, item["answer"]) >= TEXT_RIGHT)


register(OwnText())
