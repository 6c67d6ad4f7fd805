"""GGUF export: the file read back with gguf's own reader has the model's metadata, tokenizer and tensors."""
import pytest
import torch

from conftest import MICRO
from fidan.cli import main
from fidan.errors import FidanError
from fidan.model.gpt import GPT, GPTConfig, apply_rope, rope_tables
from fidan.serve.gguf_export import export_gguf, interleave
from fidan.tokenizer.bpe import train_tokenizer

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(["Merhaba dünya! Hello world, how are you today?"] * 30, vocab_size=320)


def small(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(**{"vocab_size": 330, "context": 64, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "d_model": 32,
                       "rope_theta": 5000.0, **kw})
    return GPT(cfg).eval()


def read(path):
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items()}
    tensors = {t.name: torch.from_numpy(t.data.copy()).float() for t in reader.tensors}
    return fields, tensors


@pytest.mark.parametrize("kw, arch", [({}, "llama"), ({"attn_bias": "qkv", "tie_embeddings": True}, "qwen2"),
                                      ({"rope_scaling": "llama3", "rope_factor": 4.0,
                                        "rope_original_context": 1024}, "llama")])
def test_gguf_metadata_tokenizer_and_tensors(tok, tmp_path, kw, arch):
    model = small(**kw)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.1)
    export_gguf(model, tok, tmp_path / "m.gguf", name="test")
    fields, tensors = read(tmp_path / "m.gguf")
    cfg = model.cfg
    assert fields["general.architecture"] == arch and fields["general.name"] == "test"
    assert (fields[f"{arch}.block_count"], fields[f"{arch}.context_length"], fields[f"{arch}.embedding_length"],
            fields[f"{arch}.feed_forward_length"], fields[f"{arch}.attention.head_count"],
            fields[f"{arch}.attention.head_count_kv"]) == (2, 64, 32, cfg.hidden, 4, 2)
    assert fields[f"{arch}.rope.freq_base"] == 5000.0
    tokens = fields["tokenizer.ggml.tokens"]
    assert tokens == [tok.tok.id_to_token(i) or f"[PAD{i}]" for i in range(330)]
    assert tokens[325] == "[PAD325]"  # the model's rows beyond the tokenizer
    assert fields["tokenizer.ggml.token_type"][325] == gguf.TokenType.UNUSED
    types = fields["tokenizer.ggml.token_type"]
    assert types[tok.bos] == gguf.TokenType.CONTROL and types[100] == gguf.TokenType.NORMAL
    assert len(fields["tokenizer.ggml.merges"]) == len(tok.tok.to_str().split('"merges":[')[1].split("]]")[0]
                                                       .split("],["))
    assert (fields["tokenizer.ggml.bos_token_id"], fields["tokenizer.ggml.eos_token_id"],
            fields["tokenizer.ggml.eot_token_id"]) == (tok.bos, tok.eos, tok.end_of_turn)
    assert "<|assistant|>" in fields["tokenizer.chat_template"]

    state = model.state_dict()
    assert torch.equal(tensors["token_embd.weight"], state["embed.weight"])
    assert ("output.weight" in tensors) == (not cfg.tie_embeddings)
    assert torch.equal(tensors["blk.1.ffn_down.weight"], state["blocks.1.mlp.down_proj.weight"])
    q = tensors["blk.0.attn_q.weight"]
    k = tensors["blk.1.attn_k.weight"]
    if arch == "llama":  # reordered for llama.cpp's adjacent-pair rotation
        q_want, k_want = interleave(state["blocks.0.attn.q_proj.weight"], 4), \
            interleave(state["blocks.1.attn.k_proj.weight"], 2)
    else:
        q_want, k_want = state["blocks.0.attn.q_proj.weight"], state["blocks.1.attn.k_proj.weight"]
        assert torch.equal(tensors["blk.0.attn_q.bias"], state["blocks.0.attn.q_proj.bias"])
    assert torch.equal(q, q_want) and torch.equal(k, k_want)
    assert ("rope_freqs.weight" in tensors) == (cfg.rope_scaling == "llama3")
    if cfg.rope_scaling == "llama3":
        factors = tensors["rope_freqs.weight"]
        assert factors[0] == 1.0 and factors[-1] == 4.0  # high frequencies kept, low ones divided by the factor


def test_interleaved_rotation_of_reordered_rows_equals_fidans_rotate_half():
    """What llama.cpp computes with the reordered projection equals what fidan computes."""
    cfg = GPTConfig(vocab_size=10, n_head=2, d_model=16, context=8)
    torch.manual_seed(1)
    w, x = torch.randn(16, 16), torch.randn(8, 16)
    cos, sin = rope_tables(cfg, 8)
    ours = apply_rope((x @ w.t()).view(8, 2, 8).transpose(0, 1), cos, sin)        # [head, pos, dim]
    theirs = (x @ interleave(w, 2).t()).view(8, 2, 8).transpose(0, 1)
    even, odd = theirs[..., 0::2], theirs[..., 1::2]                               # adjacent pairs
    c, s = cos[:, :4], sin[:, :4]
    rotated = torch.stack([even * c - odd * s, even * s + odd * c], dim=-1).reshape(theirs.shape)
    back = rotated.reshape(2, 8, 4, 2).transpose(-1, -2).reshape(2, 8, 8)           # pairs -> halves
    assert torch.allclose(ours, back, atol=1e-5)


def test_what_llama_cpp_cannot_run_is_refused(tok, tmp_path, pretrained_copy):
    with pytest.raises(FidanError, match="YaRN"):
        export_gguf(small(rope_scaling="yarn", rope_factor=2.0), tok, tmp_path / "y.gguf")
    _, run = pretrained_copy  # the micro model has banded layers of 16 tokens in a 64-token context
    args = [f"--{o}" for o in MICRO] + [f"--run.root={run.path.parent}", "--run.name=micro"]
    assert main(["export", "--format", "gguf", "--out", str(tmp_path / "m.gguf"), *args]) == 2
    assert not (tmp_path / "m.gguf").exists()
    assert main(["export", "--format", "gguf", "--out", str(tmp_path / "m.gguf"), *args,
                 "--model.sparse_every=0"]) == 2  # the saved model is what counts, not the setting


def test_cli_writes_a_gguf_of_a_dense_run(tok, tmp_path):
    from fidan.config import build_config
    from fidan.model.io import save_model
    from fidan.rundir import RunDir
    run = RunDir.for_config(build_config(None, None, [f"run.root={tmp_path / 'runs'}", "run.name=dense"]))
    (run.path / "tokenizer").mkdir(parents=True)
    tok.save(run.path / "tokenizer" / "tokenizer.json")
    save_model(run.path / "pretrain", small(), {"stage": "pretrain"})
    assert main(["export", "--format", "gguf", "--out", str(tmp_path / "d.gguf"),
                 f"--run.root={tmp_path / 'runs'}", "--run.name=dense"]) == 0
    fields, tensors = read(tmp_path / "d.gguf")
    assert fields["general.name"] == "dense-pretrain" and len(tensors) == 2 + 2 * 9 + 1
