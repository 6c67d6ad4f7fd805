"""`fidan export` writes a Hugging Face model card (README.md) generated from the run's own files."""
import json

import pytest

from conftest import MICRO, micro_config
from fidan.cli import main
from fidan.pipeline import run_stage

yaml = pytest.importorskip("yaml")


def test_the_export_card_tells_what_the_run_files_say(pretrained_copy, tmp_path):
    _, run = pretrained_copy
    extra = ("train.steps=120", "sft.steps=3", "eval.limit=4", "eval.steps_limit=4", "eval.math_limit=1")
    cfg = micro_config(run.path.parent, "micro", *extra)
    run_stage(cfg, run, "sft", overrides=("sft.steps=3", "sft.lr=0.002"))
    run_stage(cfg, run, "eval")
    args = [f"--{o}" for o in MICRO] + [f"--run.root={run.path.parent}", "--run.name=micro",
                                        *(f"--{o}" for o in extra)]
    assert main(["export", "--out", str(tmp_path / "hf"), "--stage", "sft", *args]) == 0
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "README.md" in json.loads((tmp_path / "hf" / "fidan-export.json").read_text())["files"]

    _, front, body = card.split("---", 2)
    meta = yaml.safe_load(front)
    assert meta["language"] == ["en", "tr"] and meta["license"] == "apache-2.0"
    assert {"fidan", "llama", "sft"} <= set(meta["tags"]) or {"fidan", "qwen2", "sft"} <= set(meta["tags"])
    assert "base_model" not in meta and "trained from scratch" in body

    stamps = {s: json.loads((run.path / "stages" / f"{s}.json").read_text())["summary"]
              for s in ("data", "pretrain", "sft")}
    assert f"kept for training: {stamps['data']['train_docs']}" in body
    sft_section = body.split("### sft")[1].split("###")[0]
    assert f"steps {stamps['sft']['steps']:,}, tokens {stamps['sft']['tokens']:,}" in sft_section
    assert "`steps=3`" in sft_section and "`lr=0.002`" in sft_section  # the stage's own overrides win
    pre_section = body.split("### pretrain")[1].split("###")[0]
    assert f"tokens {stamps['pretrain']['tokens']:,}" in pre_section and "`steps=120`" in pre_section

    scores = json.loads((run.path / "eval" / "sft.json").read_text())
    red, bias = scores["redteam"], scores["bias"]
    assert f"{red['asr']:.1%} of {red['n']} harmful requests" in body
    assert f"{red['refusal_rate_harmful']:.1%} were refused" in body
    assert " ".join(red["examples"][0]["reply"].split())[:120] in body  # what the red team found
    assert f"{bias['stereotype_score']:.1%} of pairs" in body
    assert f"{scores['world_truthful']['misconception_preferred']:.1%} of questions" in body
    assert "| metric | pretrain | sft |" in body
    assert f"{scores['world_facts/zero-shot']['acc']:.1%}" in body.split("## Evaluation")[1]
    assert "byte-level BPE, 512 tokens" in body and "2 layers, width 64" in body
