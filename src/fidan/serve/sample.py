"""The sample stage: a few continuations from the pre-trained model, printed and saved to ``sample/samples.txt``."""
from __future__ import annotations

from fidan import atomic
from fidan.config import Config
from fidan.rundir import RunDir
from fidan.serve.engine import SamplingParams, generate
from fidan.serve.loading import load_for_inference, model_folder

# Openings that fit the embedded world, one per language; user data starts from <|bos|> alone.
EMBEDDED_PROMPTS = ["Question: Where does", "Problem:", "Bir sabah"]


def run(cfg: Config, run: RunDir, quiet: bool = False) -> dict:
    model, tok = load_for_inference(model_folder(run, "pretrain"), run, cfg.train.device)
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
    atomic.write_text(run.stage("sample") / "samples.txt", out)
    if not quiet:
        print(out)
    return {"samples": len(texts), "file": str(run.path / "sample" / "samples.txt")}
