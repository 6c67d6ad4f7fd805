"""Full fine-tuning: every parameter trains."""
from fidan.finetune.methods import Prepared, method, trainable


@method("full")
def prepare(ctx, base):
    return Prepared(base, trainable(base))
