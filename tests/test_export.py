"""Export to Hugging Face transformers (Llama) and import back: same logits, offline."""
import pytest
import torch

from fidan.errors import FidanError
from fidan.model.gpt import GPT, GPTConfig
from fidan.model.io import load_model
from fidan.serve.export import export_hf, import_hf
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
        for name, p in model.named_parameters():
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
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(FidanError, match="gpt2"):
        import_hf(tmp_path / "z", tmp_path / "out")
