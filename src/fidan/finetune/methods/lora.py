"""LoRA: low-rank adapters beside the chosen linear layers, the base frozen. After training the
adapters are saved alone (``adapter.safetensors``) and merged into the weights, so the saved model
is a plain GPT."""
from fidan.finetune import lora
from fidan.finetune.methods import Prepared, method, trainable


@method("lora")
def prepare(ctx, base):
    s = ctx.cfg.sft.lora
    targets = [t.strip() for t in s.targets.split(",") if t.strip()]
    lora.apply_lora(base, s.rank, s.alpha, s.dropout, targets)

    def finish(model, out):
        lora.save_adapters(model, out, {"rank": s.rank, "alpha": s.alpha, "targets": targets})
        lora.strip(model)
        return model

    return Prepared(base, trainable(base), finish=finish)
