"""Chosen layers only: ``[sft.layers] blocks`` names block indices (negative from the top) or
parameter name patterns; everything else stays frozen."""
from fidan.finetune import freeze
from fidan.finetune.methods import Prepared, method, trainable


@method("layers")
def prepare(ctx, base):
    freeze.train_only(base, freeze.select(base, ctx.cfg.sft.layers.blocks))
    return Prepared(base, trainable(base))
