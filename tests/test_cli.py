import io
import json
import subprocess
import sys

import pytest

from conftest import MICRO
from fidan.cli import main
from fidan.infer.engine import SamplingParams
from fidan.rundir import RunDir
from fidan.serve.chat import repl
from fidan.serve.loading import load_for_inference, model_folder


def _args(root, *extra):
    return [f"--{o}" for o in MICRO] + [f"--run.root={root}", "--run.name=cli", *extra]


@pytest.mark.slow
def test_pipeline_end_to_end_then_skips(tmp_path, capsys):
    assert main(["pipeline", *_args(tmp_path)]) == 0
    out = capsys.readouterr().out
    for stage in ("data", "tokenizer", "tokens", "pretrain", "sample", "sft", "reward", "rlhf", "eval", "report"):
        assert f"✓ {stage}" in out
    run = tmp_path / "cli"
    for artifact in ("config.toml", "fidan.json", "data/clean/train.parquet", "data/stats.json",
                     "data/eval/facts.jsonl", "data/eval/arithmetic.jsonl", "tokenizer/tokenizer.json",
                     "data/tokens/train.bin", "data/tokens/val.idx", "pretrain/model.safetensors",
                     "pretrain/model.json", "pretrain/metrics.jsonl", "sample/samples.txt",
                     "data/sft/train.jsonl", "sft/model.safetensors", "sft/summary.json",
                     "reward/model.safetensors", "reward/pairs.jsonl", "rlhf/model.safetensors", "rlhf/summary.json",
                     "rlhf/reward_vs_kl.png", "eval/pretrain.json", "eval/sft.json", "eval/rlhf.json", "report.md",
                     "report.html", "plots/training.png"):
        assert (run / artifact).exists(), artifact
    assert "config hash" in (run / "config.toml").read_text().splitlines()[0]
    assert "| metric | pretrain | sft |" in out  # the pipeline ends by printing the report card
    pre = json.loads((run / "stages" / "pretrain.json").read_text())["summary"]
    assert pre["val_bpb"] < pre["unigram_bpb"]

    assert main(["pipeline", *_args(tmp_path, "--data.workers=2", "--run.threads=2")]) == 0
    again = capsys.readouterr().out
    assert again.count("up to date, skipped") == 10   # execution settings re-run nothing

    # one new human label: the reward model and everything downstream of it re-run, nothing else
    with open(run / "preferences.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "Merhaba!", "chosen": "Merhaba! Nasılsın?", "rejected": "Git."}) + "\n")
    assert main(["pipeline", *_args(tmp_path)]) == 0
    relabelled = capsys.readouterr().out
    assert {line.split()[1] for line in relabelled.splitlines() if line.startswith("✓")} == \
        {"reward", "rlhf", "eval", "report"}
    assert "preferences.jsonl: 1 pairs" in relabelled

    assert main(["pipeline", *_args(tmp_path, "--sample.temperature=0.3")]) == 0
    third = capsys.readouterr().out
    assert third.count("up to date, skipped") == 9 and "✓ sample" in third

    assert main(["tokenize", "Merhaba dünya", f"--run.root={tmp_path}", "--run.name=cli"]) == 0
    tokenized = capsys.readouterr().out
    assert "ids:" in tokenized and "decodes back exactly: True" in tokenized

    # chat: a scripted conversation through the REPL, streamed to a buffer
    rd = RunDir(run)
    assert model_folder(rd).name == "rlhf"  # chat picks the newest chat model
    model, tok = load_for_inference(model_folder(rd), rd, "cpu")
    buffer = io.StringIO()
    repl(model, tok, SamplingParams(temperature=0, max_tokens=8), "rlhf",
         inp=io.StringIO("Merhaba\n/temp 0.5\n/reset\nHello\n"), out=buffer)
    text = buffer.getvalue()
    assert text.count("fidan> ") == 2 and "(temperature 0.5)" in text and "(conversation cleared)" in text


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fidan", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args, message", [
    (["pipeline", "--preset", "tiny", "--train.lrr=1"], "unknown config key 'train.lrr'"),
    (["pipeline", "--preset", "tiny", "--train.steps=many"], "bad value for 'train.steps'"),
    (["pipeline", "--preset", "nope"], "unknown preset 'nope'"),
    (["pipeline", "--preset", "tiny", "--data.source=/no/such/file.txt", "--run.root=RUNROOT"], "no such file"),
    (["serve", "--max-batch=0", "--run.root=RUNROOT"], "--max-batch=0: requests decoded together must be between 1"),
    (["serve", "--port=70000", "--run.root=RUNROOT"], "--port=70000: a TCP port is between 0 and 65535"),
])
def test_errors_are_one_line_without_traceback(tmp_path, args, message):
    args = [a.replace("RUNROOT", str(tmp_path)) for a in args]
    result = _cli(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_text_input_names_file(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xc3\x28 broken\n")
    result = _cli("data", f"--data.source={bad}", f"--run.root={tmp_path}", "--run.name=x")
    assert result.returncode == 2 and f"{bad}:2: invalid UTF-8" in result.stderr


def test_incompatible_run_directory_is_refused_and_kept(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    (run / "fidan.json").write_text('{"format": 0}')
    (run / "precious.txt").write_text("keep me")
    result = _cli("data", f"--run.root={tmp_path}", "--run.name=old")
    assert result.returncode == 2 and "format 0" in result.stderr and "--run.name" in result.stderr
    assert (run / "precious.txt").read_text() == "keep me"


def test_commands_that_need_a_run_say_so(tmp_path):
    result = _cli("chat", f"--run.root={tmp_path}")
    assert result.returncode == 2 and "no runs under" in result.stderr
