"""Export to Hugging Face transformers (Llama) and import back: same logits, offline."""
import json

import pytest
import torch

from fidan.errors import FidanError
from fidan.model.gpt import GPT, GPTConfig
from fidan.model.io import load_model
from fidan.serve.export import export_hf
from fidan.serve.hf_import import import_hf
from fidan.tokenizer.bpe import train_tokenizer
from fidan.tokenizer.chat import render

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(["Merhaba dünya! Hello world, how are you today?"] * 30, vocab_size=320)


def small(tok, **kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(**{"vocab_size": 320, "context": 64, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "d_model": 32,
                       "rope_theta": 5000.0, **kw})
    model = GPT(cfg).eval()
    with torch.no_grad():  # make the norms non-trivial so a mapping mistake shows
        for _, p in model.named_parameters():
            if p.dim() == 1:
                p.mul_(torch.rand_like(p) + 0.5)
    return model


@pytest.mark.parametrize("kw, arch", [({}, "LlamaForCausalLM"), ({"sparse_every": 2, "window": 4}, "Qwen2ForCausalLM")])
def test_transformers_loads_the_export_with_matching_logits(tok, tmp_path, kw, arch):
    model = small(tok, **kw)
    export_hf(model, tok, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    assert type(hf).__name__ == arch
    text = "Merhaba dünya! Hello world, how are you today?"
    ids = torch.tensor([tok.encode(text)])
    assert ids.shape[1] > 8  # longer than the window, so the band matters
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    assert (ours - theirs).abs().max().item() < 1e-4
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids[0].tolist()
    messages = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Merhaba!"}]
    rendered = hf_tok.apply_chat_template(messages, tokenize=False)
    assert hf_tok(rendered, add_special_tokens=False)["input_ids"] == render(tok, messages)[0]


@pytest.mark.parametrize("kw", [{}, {"sparse_every": 2, "window": 4}])
def test_import_round_trip(tok, tmp_path, kw):
    model = small(tok, **kw)
    export_hf(model, tok, tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "back")
    again, info = load_model(tmp_path / "back", "cpu")
    ids = torch.tensor([tok.encode("Hello world, how are you today?")])
    assert again.cfg.sparse_every == model.cfg.sparse_every and again.cfg.window == model.cfg.window
    with torch.no_grad():
        assert torch.allclose(again(ids), model(ids), atol=1e-6)
    assert (tmp_path / "back" / "tokenizer.json").exists() and info["stage"] == "imported"


def test_features_llama_lacks_are_refused(tok, tmp_path):
    with pytest.raises(FidanError, match="QK-norm"):
        export_hf(small(tok, qk_norm=True), tok, tmp_path / "x")
    with pytest.raises(FidanError, match="relu2"):
        export_hf(small(tok, mlp="relu2"), tok, tmp_path / "y")
    with pytest.raises(FidanError, match="logit soft-capping"):
        export_hf(small(tok, logit_softcap=15.0), tok, tmp_path / "s")
    from fidan.serve.gguf_export import gguf_architecture
    with pytest.raises(FidanError, match="logit soft-capping"):
        gguf_architecture(small(tok, logit_softcap=15.0), tok)
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(FidanError, match="gpt2"):
        import_hf(tmp_path / "z", tmp_path / "out")


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _exported_weights(folder):
    from safetensors.torch import load_file
    return load_file(str(folder / "model.safetensors"))["model.embed_tokens.weight"]


def test_re_export_replaces_the_folder_whole(tok, tmp_path):
    out = tmp_path / "hf"
    export_hf(small(tok), tok, out)
    other = small(tok)
    with torch.no_grad():
        other.embed.weight.add_(1.0)
    export_hf(other, tok, out)
    assert torch.equal(_exported_weights(out), other.embed.weight)
    marker = json.loads((out / "fidan-export.json").read_text())
    assert set(marker["files"]) == {p.name for p in out.iterdir()} - {"fidan-export.json"}
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary or old folder left beside it


@pytest.mark.parametrize("fail_in", ["tokenizer", "swap"])
def test_a_failed_export_leaves_the_old_folder_intact(tok, tmp_path, monkeypatch, fail_in):
    """Another run's export is in place; this export dies half way (after its weights are written)."""
    from fidan import atomic
    from fidan.tokenizer.bpe import FidanTokenizer
    out = tmp_path / "hf"
    export_hf(small(tok), tok, out)
    before = _snapshot(out)

    def boom(*a, **kw):
        raise KeyboardInterrupt("killed")
    if fail_in == "tokenizer":
        monkeypatch.setattr(FidanTokenizer, "save", boom)
    else:
        monkeypatch.setattr(atomic, "exchange", boom)
    other = small(tok)
    with torch.no_grad():
        other.embed.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        export_hf(other, tok, out)
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]


def test_sigkill_mid_export_leaves_the_old_folder_intact(tok, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "hf"
    export_hf(small(tok), tok, out)
    tok.save(tmp_path / "tok.json")
    before = _snapshot(out)
    script = f"""
import time, torch
from fidan.model.gpt import GPT, GPTConfig
from fidan.serve import export
from fidan.tokenizer.bpe import FidanTokenizer
tok = FidanTokenizer.load({str(tmp_path / "tok.json")!r})
torch.manual_seed(1)
model = GPT(GPTConfig(vocab_size=320, context=64, n_layer=2, n_head=4, n_kv_head=2, d_model=32))
real = export.atomic.write_json
def slow(path, obj):
    real(path, obj)
    if path.name == "config.json":  # the new weights are on disk; the tokenizer is not yet
        open({str(tmp_path / "ready")!r}, "w").close()
        time.sleep(60)
export.atomic.write_json = slow
export.export_hf(model, tok, {str(out)!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while not (tmp_path / "ready").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert (tmp_path / "ready").exists()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _snapshot(out) == before   # the old export, whole; the new one's weights sit in a hidden temp folder
    assert any(p.name.startswith(".hf.export-") for p in tmp_path.iterdir())
    export_hf(small(tok), tok, out)   # the next export works and clears the dead one's temporary folder
    assert (out / "fidan-export.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "ready", "tok.json"]


def test_a_folder_that_is_not_an_export_needs_force(tok, tmp_path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(FidanError, match="not a fidan export.*--force"):
        export_hf(small(tok), tok, mine)
    assert (mine / "thesis.tex").read_text() == "years of work"
    export_hf(small(tok), tok, mine, force=True)
    assert not (mine / "thesis.tex").exists() and (mine / "config.json").exists()
    (tmp_path / "empty").mkdir()
    export_hf(small(tok), tok, tmp_path / "empty")  # an empty folder is fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(FidanError, match="not a folder"):
        export_hf(small(tok), tok, tmp_path / "file", force=True)


def test_an_export_from_before_the_marker_is_recognised(tok, tmp_path):
    out = tmp_path / "hf"
    export_hf(small(tok), tok, out)
    (out / "fidan-export.json").unlink()
    export_hf(small(tok), tok, out)
    assert (out / "fidan-export.json").exists()


def test_without_an_atomic_exchange_the_folder_is_still_replaced(tok, tmp_path, monkeypatch):
    from fidan import atomic
    monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    out = tmp_path / "hf"
    export_hf(small(tok), tok, out)
    (out / "stale.bin").write_bytes(b"x")
    export_hf(small(tok), tok, out)
    assert not (out / "stale.bin").exists() and [p.name for p in tmp_path.iterdir()] == ["hf"]


def test_the_cli_refuses_a_foreign_folder_unless_forced(tok, tmp_path, capsys):
    from fidan.cli import main
    export_hf(small(tok), tok, tmp_path / "src")
    run = [f"--run.root={tmp_path / 'runs'}", "--run.name=imp"]
    assert main(["import", str(tmp_path / "src"), *run]) == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    assert main(["export", "--out", str(mine), *run]) == 2
    assert "--force" in capsys.readouterr().err and (mine / "keep.txt").exists()
    assert main(["export", "--out", str(mine), "--force", *run]) == 0
    assert not (mine / "keep.txt").exists() and (mine / "fidan-export.json").exists()


def test_an_exported_chat_model_imports_as_a_chat_model(tok, tmp_path):
    from fidan.cli import main
    from fidan.model.io import save_model
    from fidan.rundir import RunDir
    from fidan.serve.loading import model_folder
    # a run whose newest model is a chat model: export it with the CLI, import it into a new run
    src = tmp_path / "runs" / "orig"
    from fidan.config import build_config
    RunDir.for_config(build_config(None, None, [f"run.root={tmp_path / 'runs'}", "run.name=orig"]))
    save_model(src / "sft", small(tok), {"stage": "sft", "chat": True, "tokenizer": "tokenizer.json"})
    tok.save(src / "sft" / "tokenizer.json")
    assert main(["export", "--out", str(tmp_path / "hf"), f"--run.root={tmp_path / 'runs'}", "--run.name=orig"]) == 0
    assert json.loads((tmp_path / "hf" / "fidan-export.json").read_text())["chat"] is True
    assert main(["import", str(tmp_path / "hf"), f"--run.root={tmp_path / 'runs'}", "--run.name=back"]) == 0
    folder = model_folder(RunDir(tmp_path / "runs" / "back"))
    assert folder.name == "sft" and load_model(folder, "cpu")[1]["chat"] is True   # fidan chat uses its template
    # a pre-trained model stays one
    export_hf(small(tok), tok, tmp_path / "plain")
    import_hf(tmp_path / "plain", tmp_path / "plain-back")
    assert load_model(tmp_path / "plain-back", "cpu")[1]["chat"] is False


def test_export_reports_its_progress_in_a_log(tok, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FIDAN_PROGRESS_SECONDS", "0")   # a log line at every update, as a long export would
    model = small(tok)
    export_hf(model, tok, tmp_path / "hf")
    lines = [x.strip() for x in capsys.readouterr().out.splitlines() if x.strip().startswith("export:")]
    total = len(model.state_dict()) + 1
    assert lines and lines[-1].startswith(f"export: {total:,}/{total:,} tensors (100%)")
