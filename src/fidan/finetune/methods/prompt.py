"""Prompt tuning: ``[sft.prompt] tokens`` learned vectors placed before every input; the model
itself stays frozen. The vectors start from real token embeddings."""
from dataclasses import replace

import torch

from fidan.finetune import freeze
from fidan.finetune.methods import Prepared, method
from fidan.model.gpt import GPT


@method("prompt")
def prepare(ctx, base):
    n = ctx.cfg.sft.prompt.tokens
    model = GPT(replace(base.cfg, prompt_tokens=n)).to(ctx.device)
    model.load_state_dict({**base.state_dict(), "soft_prompt": model.soft_prompt.data}, strict=True)
    with torch.no_grad():
        picks = torch.randint(0, base.cfg.vocab_size, (n,), generator=torch.Generator().manual_seed(0))
        model.soft_prompt.copy_(base.embed.weight[picks.to(base.embed.weight.device)])
    freeze.freeze_all(model)
    model.soft_prompt.requires_grad_(True)
    return Prepared(model, [model.soft_prompt])
