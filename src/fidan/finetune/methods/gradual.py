"""Gradual unfreezing (ULMFiT): the head and top block first, then one more block down every
``[sft.gradual] every`` steps. The optimizer holds every parameter from the start; a frozen one
gets no gradient, so AdamW leaves it untouched until it thaws."""
from fidan.finetune import freeze
from fidan.finetune.methods import Prepared, method


@method("gradual")
def prepare(ctx, base):
    on_step = freeze.GradualUnfreezing(base, ctx.cfg.sft.gradual.every)
    on_step(0)
    return Prepared(base, list(base.parameters()), on_step=on_step)
