import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import MICRO
from fidan.config import TrainConfig
from fidan.errors import FidanError
from fidan.model.gpt import GPT, GPTConfig
from fidan.model.io import load_model
from fidan.pipeline import run_stage
from fidan.train import checkpoint
from fidan.train.loop import Optimizers, make_optimizer, set_lr
from fidan.train.pretrain import bits_per_byte, next_token_loss
from fidan.train.schedule import lr_at
from fidan.train.xent import head_cross_entropy


def test_schedule_warmup_then_decay():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1, schedule="cosine")
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.55)
    assert lr_at(100, cfg) == pytest.approx(0.1)
    lin = TrainConfig(steps=110, lr=1.0, warmup_steps=10, min_lr_ratio=0.0, schedule="linear")
    assert lr_at(60, lin) == pytest.approx(0.5)
    assert lr_at(500, TrainConfig(steps=100, lr=2.0, warmup_steps=1, schedule="constant")) == 2.0


def test_wsd_schedule_holds_then_warms_down():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1, schedule="wsd", decay_fraction=0.2)
    assert lr_at(5, cfg) == pytest.approx(0.6)
    assert lr_at(10, cfg) == lr_at(79, cfg) == lr_at(80, cfg) == 1.0   # stable until the last 20 steps
    assert lr_at(90, cfg) == pytest.approx(0.55)                       # halfway down the linear warm-down
    assert lr_at(100, cfg) == pytest.approx(0.1)


def _one_step(model, cfg):
    torch.manual_seed(1)
    opt = make_optimizer(model, cfg)
    set_lr(opt, cfg.lr)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randint(0, 97, (4, 17))
    torch.nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
    opt.step()
    return opt, {n: p.detach() - before[n] for n, p in model.named_parameters()}


def _small_gpt(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, context=16, n_layer=2, n_head=2, n_kv_head=2, d_model=32, **kw))


def test_muon_orthogonalises_the_block_matrices_and_leaves_the_rest_to_adamw():
    cfg = TrainConfig(lr=1e-3, optimizer="muon", muon_lr=0.02, weight_decay=0.0)
    opt, delta = _one_step(_small_gpt(), cfg)
    assert isinstance(opt, Optimizers)
    for name in ("blocks.0.attn.q_proj.weight", "blocks.1.mlp.down_proj.weight"):
        rows, cols = delta[name].shape
        step = delta[name] / (0.02 * max(1, rows / cols) ** 0.5)   # Keller's shape factor
        s = torch.linalg.svdvals(step)[:int(0.9 * min(rows, cols))]  # all but the gradient's weakest directions
        assert s.min() > 0.5 and s.max() < 1.3, (name, s)  # Newton-Schulz: singular values near 1
    # AdamW's first step is lr * sign(gradient) per entry: far from orthogonal, and much smaller here
    s = torch.linalg.svdvals(delta["embed.weight"][:32])
    assert s.max() / s.min() > 3
    assert delta["lm_head.weight"].abs().max() == pytest.approx(1e-3, rel=0.01)
    assert delta["blocks.0.attn_norm.weight"].abs().max() == pytest.approx(1e-3, rel=0.01)
    # the default AdamW step of the same matrix is not orthogonal
    _, plain = _one_step(_small_gpt(), TrainConfig(lr=1e-3, weight_decay=0.0))
    s = torch.linalg.svdvals(plain["blocks.0.attn.q_proj.weight"])
    assert s.max() / s.min() > 3


def test_cpu_muon_takes_torch_muons_step_in_float32():
    from fidan.train.muon import Muon
    torch.manual_seed(0)
    mine, theirs = torch.nn.Parameter(torch.randn(48, 16)), torch.nn.Parameter(torch.randn(48, 16))
    with torch.no_grad():
        theirs.copy_(mine)
    a = Muon([mine], lr=0.02, weight_decay=0.1, momentum=0.9)
    b = torch.optim.Muon([theirs], lr=0.02, weight_decay=0.1, momentum=0.9, adjust_lr_fn="original")
    start = mine.detach().clone()
    for _ in range(3):
        g = torch.randn(48, 16)
        mine.grad, theirs.grad = g.clone(), g.clone()
        a.step()
        b.step()
    # the same update, up to torch's bfloat16 rounding in the Newton-Schulz iteration
    moved = (theirs - start).norm()
    assert (mine - theirs).norm() < 0.03 * moved


def test_muon_state_round_trips_and_a_mismatch_is_refused():
    model = _small_gpt()
    opt, _ = _one_step(model, TrainConfig(lr=1e-3, optimizer="muon"))
    again = make_optimizer(model, TrainConfig(lr=1e-3, optimizer="muon"))
    again.load_state_dict(opt.state_dict())
    key = next(iter(opt.parts[1].state))
    assert torch.equal(again.parts[1].state[key]["momentum_buffer"], opt.parts[1].state[key]["momentum_buffer"])
    with pytest.raises(FidanError, match="optimizer"):
        Optimizers(torch.optim.AdamW(model.parameters())).load_state_dict(opt.state_dict())


def test_fused_head_cross_entropy_gives_the_losses_and_gradients_of_cross_entropy():
    torch.manual_seed(0)
    h, w, y = torch.randn(50, 16), torch.randn(300, 16) * 0.5, torch.randint(0, 300, (50,))
    for chunk in (7, 16, 64):   # chunks that split the rows unevenly, and one that takes them all
        hf, wf = h.clone().requires_grad_(), w.clone().requires_grad_()
        hr, wr = h.clone().requires_grad_(), w.clone().requires_grad_()
        fused = head_cross_entropy(hf, wf, y, chunk)
        ref = torch.nn.functional.cross_entropy(hr @ wr.T, y)
        (3 * fused).backward()
        (3 * ref).backward()
        assert fused.item() == pytest.approx(ref.item(), rel=1e-6)
        torch.testing.assert_close(hf.grad, hr.grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(wf.grad, wr.grad, rtol=1e-5, atol=1e-7)
    frozen = head_cross_entropy(h.clone().requires_grad_(), w, y, 16)   # a frozen head: no gradient for it
    frozen.backward()
    assert frozen.item() == pytest.approx(ref.item(), rel=1e-6)
    # the pre-training loss takes the fused path for a GPT: the same loss and parameter gradients
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=128, context=16, n_layer=2, n_head=2, n_kv_head=2, d_model=32))
    x = torch.randint(0, 128, (4, 17))
    loss, n = next_token_loss(model, (x[:, :-1], x[:, 1:]))
    loss.backward()
    fused_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref = torch.nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
    ref.backward()
    assert n == 64 and loss.item() == pytest.approx(ref.item(), rel=1e-6)
    for got, want in zip(fused_grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_untied_head_takes_its_own_lr():
    cfg = TrainConfig(lr=1e-3, head_lr=4e-3, weight_decay=0.0)
    _, delta = _one_step(_small_gpt(), cfg)
    assert delta["lm_head.weight"].abs().max() == pytest.approx(4e-3, rel=0.01)
    assert delta["embed.weight"].abs().max() == pytest.approx(1e-3, rel=0.01)
    # a tied head is the embedding: it keeps the one lr
    _, tied = _one_step(_small_gpt(tie_embeddings=True), cfg)
    assert tied["embed.weight"].abs().max() == pytest.approx(1e-3, rel=0.01)


def test_periodic_eval_scores_a_fixed_sample_spread_over_the_split():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, context=8, n_layer=1, n_head=2, n_kv_head=2, d_model=16)).eval()
    tokens = torch.randint(0, 16, (801,)).numpy()
    token_bytes = torch.ones(16, dtype=torch.long)
    # 100 whole windows; a 16-token sample is 2 of them, the first and the 51st
    got = bits_per_byte(model, tokens, token_bytes, max_tokens=16)
    with torch.no_grad():
        chunk = torch.from_numpy(tokens).long()
        x = torch.stack([chunk[s:s + 8] for s in (0, 400)])
        y = torch.stack([chunk[s + 1:s + 9] for s in (0, 400)])
        want = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
    assert got["val_loss"] == pytest.approx(want, rel=1e-5)
    assert bits_per_byte(model, tokens, token_bytes)["val_loss"] != pytest.approx(want, rel=1e-3)


def _metrics(run_path):
    return [json.loads(x) for x in (run_path / "pretrain" / "metrics.jsonl").read_text().splitlines()]


def test_pretraining_learns(run_copy):
    cfg, run = run_copy
    cfg.train.steps = 200
    summary = run_stage(cfg, run, "pretrain")
    assert summary["val_bpb"] < 0.75 * summary["unigram_bpb"]
    evals = [m["val_bpb"] for m in _metrics(run.path) if "val_bpb" in m]
    assert evals[-1] < evals[0] / 2
    model, info = load_model(run.path / "pretrain", "cpu")
    assert info["step"] == cfg.train.steps


def test_rerunning_a_finished_stage_resumes_at_the_end(run_copy):
    cfg, run = run_copy
    first = run_stage(cfg, run, "pretrain")
    again = run_stage(cfg, run, "pretrain")
    assert again["val_bpb"] == first["val_bpb"] and again["steps"] == cfg.train.steps
    assert sum("val_bpb" in m for m in _metrics(run.path)) == 3  # steps 0, 20, 40 once each


def _tiny_state(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, context=16, n_layer=1, n_head=2, n_kv_head=2, d_model=16))
    return model, make_optimizer(model, TrainConfig())


def test_damaged_checkpoint_is_reported_and_previous_is_used(tmp_path):
    model, opt = _tiny_state(tmp_path)
    root = tmp_path / "ckpt"
    extra = {"tokens": 0, "elapsed": 0.0, "config_hash": "h"}
    checkpoint.save(root, model, opt, 10, extra, {}, keep=3)
    with torch.no_grad():
        model.embed.weight.add_(1.0)
    newest = checkpoint.save(root, model, opt, 20, extra, {}, keep=3)
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncate
    assert "truncated" in checkpoint.verify(newest)
    warnings = []
    resumed = checkpoint.latest(root, warn=warnings.append)
    assert resumed.state["step"] == 10 and "step_0000020" in warnings[0]
    with pytest.raises(FidanError, match="damaged weights"):
        load_model(newest, "cpu")


def test_corrupted_bytes_are_detected(tmp_path):
    model, opt = _tiny_state(tmp_path)
    folder = checkpoint.save(tmp_path / "ckpt", model, opt, 5, {"tokens": 0, "elapsed": 0.0}, {}, keep=2)
    data = bytearray((folder / "state.pt").read_bytes())
    data[-10] ^= 0xFF
    (folder / "state.pt").write_bytes(bytes(data))
    assert "checksum" in checkpoint.verify(folder)


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    model, opt = _tiny_state(tmp_path)
    for step in (1, 2, 3, 4):
        checkpoint.save(tmp_path / "ckpt", model, opt, step, {"tokens": 0, "elapsed": 0.0}, {}, keep=2)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step_0000003", "step_0000004"]


@pytest.mark.slow
def test_sigkill_and_resume_reproduces_the_uninterrupted_run(prepared_run, tmp_path):
    cfg, run = prepared_run
    steps = ["train.steps=200", "train.ckpt_every=25", "train.log_every=1", "train.eval_every=100"]
    paths = {}
    for name in ("straight", "killed"):
        paths[name] = tmp_path / name
        shutil.copytree(run.path, paths[name] / "micro")
    args = lambda name: [sys.executable, "-m", "fidan", "pretrain", *[f"--{o}" for o in MICRO + steps],
                         f"--run.root={paths[name]}", "--run.name=micro"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(args("straight"), check=True, capture_output=True, env=env)

    proc = subprocess.Popen(args("killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ckpt = paths["killed"] / "micro" / ".staging" / "pretrain" / "ckpt"   # a running stage writes here
    deadline = time.time() + 120
    while time.time() < deadline and not (ckpt / "step_0000050").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (paths["killed"] / "micro" / "pretrain" / "model.safetensors").exists(), "finished before the kill"
    out = subprocess.run(args("killed"), check=True, capture_output=True, text=True, env=env)
    assert "resuming pretrain" in out.stderr + out.stdout

    straight = {m["step"]: m for m in _metrics(paths["straight"] / "micro") if "loss" in m}
    resumed = {m["step"]: m for m in _metrics(paths["killed"] / "micro") if "loss" in m}
    assert sorted(resumed) == sorted(straight) == list(range(1, 201))
    assert [resumed[s]["loss"] for s in range(1, 201)] == [straight[s]["loss"] for s in range(1, 201)]
    a, _ = load_model(paths["straight"] / "micro" / "pretrain", "cpu")
    b, _ = load_model(paths["killed"] / "micro" / "pretrain", "cpu")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
