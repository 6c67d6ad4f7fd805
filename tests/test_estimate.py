import json
import math
import subprocess
import sys

import pytest

from fidan import estimate as est
from fidan.config import build_config
from fidan.errors import FidanError
from fidan.model.gpt import flops_per_token
from fidan.train.pretrain import resolve_model_config

GPT3 = dict(params=174.6e9, tokens=300e9)  # GPT-3 paper, Table D.1: 174.6B parameters, 300B tokens


def test_gpt3_training_compute():
    r = est.estimate(est.Plan(**GPT3))
    assert r["flops_6nd"] == pytest.approx(3.14e23, rel=0.005)
    assert r["pf_days"] == pytest.approx(3640, rel=0.01)  # the paper's 3.64e3 PF-days


def test_gpt3_on_v100_reproduces_355_gpu_years_and_4_6_million_dollars():
    # Lambda's estimate: a V100 sustaining 28 TFLOPS, at $1.50 per GPU-hour (its cheapest cloud V100).
    r = est.estimate(est.Plan(**GPT3, gpu="V100", peak_override=28e12, price_per_gpu_hour=1.5))
    assert r["gpu_years"] == pytest.approx(355, rel=0.01)
    assert r["cost_usd"] == pytest.approx(4.6e6, rel=0.02)
    assert any("28 TFLOP/s" in a for a in r["assumptions"])


def test_attention_term_and_wall_time():
    r = est.estimate(est.Plan(**GPT3, n_layer=96, d_model=12288, context=2048, gpu="A100", n_gpus=1000, mfu=0.5))
    assert r["flops_attention"] == pytest.approx(12 * 96 * 12288 * 2048 * 300e9)
    assert r["flops_total"] > r["flops_6nd"]
    seconds = r["flops_total"] / (312e12 * 0.5)
    assert r["gpu_hours"] == pytest.approx(seconds / 3600)
    assert r["wall_days"] == pytest.approx(seconds / 1000 / 86400)
    assert r["energy_mwh"] == pytest.approx(400 * 1.2 * seconds / 3600 / 1e6)
    assert r["co2_tonnes"] == pytest.approx(r["energy_mwh"] * 1000 * 0.4 / 1000)


def test_chinchilla_optimal():
    # Chinchilla itself: 70B parameters, 1.4T tokens, ~5.9e23 FLOPs.
    opt = est.chinchilla_optimal(6 * 70e9 * 1.4e12)
    assert opt["params"] == pytest.approx(70e9, rel=0.01)
    assert opt["tokens"] == pytest.approx(1.4e12, rel=0.01)


def test_plan_from_a_preset_matches_the_model():
    cfg = build_config("tiny")
    plan = est.plan_from_config(cfg)
    model_cfg = resolve_model_config(cfg.model, cfg.tokenizer.vocab_size)
    assert plan.tokens == cfg.train.steps * cfg.train.batch_size * cfg.model.context
    d, L, V = model_cfg.d_model, model_cfg.n_layer, model_cfg.vocab_size
    assert plan.params == 2 * V * d + L * (4 * d * d + 3 * d * model_cfg.hidden + 2 * d) + d
    # 6N counts the input embedding too; flops_per_token does not (a lookup) and uses the band width
    r = est.estimate(plan)
    assert r["flops_total"] / plan.tokens > flops_per_token(model_cfg)


@pytest.mark.parametrize("plan, message", [
    (dict(params=0, tokens=1e9), "params must be a positive"),
    (dict(params=1e9, tokens=float("nan")), "tokens must be a positive"),
    (dict(params=1e9, tokens=1e9, mfu=1.5), "fraction"),
    (dict(params=1e9, tokens=1e9, gpu="TPU9"), "unknown accelerator 'TPU9'"),
])
def test_bad_numbers_are_refused(plan, message):
    with pytest.raises(FidanError, match=message):
        est.estimate(est.Plan(**plan))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fidan", "estimate", *args], capture_output=True, text=True)


def test_cli_table_json_and_errors():
    table = _cli("--params", "174.6e9", "--tokens", "300e9", "--gpu", "V100", "--throughput", "28e12",
                 "--price", "1.5")
    assert table.returncode == 0 and "device-years" in table.stdout and "assumptions:" in table.stdout
    data = json.loads(_cli("--params", "1e9", "--tokens", "2e10", "--json").stdout)
    assert math.isclose(data["flops_6nd"], 1.2e20)
    missing = _cli("--params", "1e9")
    assert missing.returncode == 2 and "--tokens" in missing.stderr and "Traceback" not in missing.stderr
    negative = _cli("--params", "-5", "--tokens", "1e9")
    assert negative.returncode == 2 and "params must be a positive" in negative.stderr
