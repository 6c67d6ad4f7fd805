"""The sample stage: a few continuations from the pre-trained model, printed and saved to ``sample/samples.txt``."""
from __future__ import annotations

from fidan import atomic
from fidan.context import StageContext
from fidan.infer.engine import SamplingParams, generate
from fidan.serve.loading import load_for_inference

# Openings that fit the embedded world, one per language; user data starts from <|bos|> alone.
EMBEDDED_PROMPTS = ["Question: Where does", "Problem:", "Bir sabah"]


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    model, tok = load_for_inference(ctx.input("model").parent, ctx.run, ctx.device)
    if cfg.sample.prompt:
        prompts = [cfg.sample.prompt]
    elif cfg.data.source == "embedded":
        prompts = EMBEDDED_PROMPTS
    else:
        prompts = [""]
    texts = []
    for i in range(cfg.sample.num_samples):
        prompt = prompts[i % len(prompts)]
        params = SamplingParams(temperature=cfg.sample.temperature, top_k=cfg.sample.top_k,
                                top_p=cfg.sample.top_p, max_tokens=cfg.sample.max_tokens,
                                seed=cfg.sample.seed + i, stop_ids={tok.bos, tok.eos},
                                repetition_penalty=cfg.sample.repetition_penalty)
        ids = list(generate(model, [tok.bos] + tok.encode(prompt), params))
        texts.append(prompt + tok.decode(ids))
    out = "\n\n".join(f"--- sample {i + 1} ---\n{t}" for i, t in enumerate(texts)) + "\n"
    atomic.write_text(ctx.out / "samples.txt", out)
    ctx.say(out)
    return {"samples": len(texts), "file": str(ctx.out / "samples.txt")}
