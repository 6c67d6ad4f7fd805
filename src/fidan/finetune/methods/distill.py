"""Distillation: a shallower student, cut from the teacher's blocks (DistilBERT-style), learns
the teacher's softened predictions (``[sft.distill] temperature``, ``alpha``). The teacher is
``[sft.distill] teacher``, else this run's SFT model, else the pre-trained one."""
from dataclasses import replace
from pathlib import Path

from fidan.errors import FidanError
from fidan.finetune.methods import Prepared, method, trainable
from fidan.model.gpt import GPT
from fidan.model.io import load_model


def student_from(teacher: GPT, n_layers: int) -> GPT:
    """A shallower copy of the teacher: embeddings, head and ``n_layers`` evenly spaced blocks,
    so distillation starts from useful weights."""
    n = teacher.cfg.n_layer
    if not 1 <= n_layers <= n:
        raise FidanError(f"sft.distill.student_layers must be between 1 and the teacher's {n} layers")
    keep = [round(i * (n - 1) / max(1, n_layers - 1)) for i in range(n_layers)] if n_layers > 1 else [n - 1]
    student = GPT(replace(teacher.cfg, n_layer=n_layers))
    state = {k: v for k, v in teacher.state_dict().items() if not k.startswith("blocks.")}
    for new, old in enumerate(keep):
        prefix = f"blocks.{old}."
        state.update({f"blocks.{new}." + k[len(prefix):]: v for k, v in teacher.state_dict().items()
                      if k.startswith(prefix)})
    student.load_state_dict(state)
    return student.to(next(teacher.parameters()).device)


@method("distill")
def prepare(ctx, base):
    s = ctx.cfg.sft.distill
    own = ctx.has_input("teacher") and ctx.input("teacher").parent.resolve() == ctx.final_out.resolve()
    folder = Path(s.teacher) if s.teacher else (ctx.input("teacher").parent if ctx.has_input("teacher") and not own
                                                 else ctx.input("base").parent)
    teacher, _ = load_model(folder, ctx.device)
    teacher.eval().requires_grad_(False)
    student = student_from(teacher, s.student_layers)
    return Prepared(student, trainable(student), teacher=teacher)
