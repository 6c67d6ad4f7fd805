"""GGUF: one file that llama.cpp, Ollama and LM Studio load, written with the ``gguf`` package.

The file holds the model's shape as ``llama`` (or ``qwen2``, for query/key/value biases)
metadata, its tokenizer (``tokenizer.ggml.*``: the byte-level BPE vocabulary, merges, token types,
special token ids, end-of-turn token, chat template) and its tensors in float32 under llama.cpp's
names (``token_embd``, ``blk.N.attn_q`` ...; no ``output`` tensor when the embeddings are tied).
Quantize it afterwards with llama.cpp's ``llama-quantize`` if you want it smaller.

One layout difference: llama.cpp's ``llama`` graph rotates adjacent pairs of query/key dimensions,
where fidan (like Hugging Face) rotates the two halves of each head, so the rows of each head's
query and key projections are reordered to match (``interleave``); ``qwen2`` rotates halves like
fidan and needs no reordering. Llama 3's RoPE scaling travels as the ``rope_freqs`` tensor (the
factor each frequency is divided by), linear scaling as metadata.

What llama.cpp's graphs for these architectures cannot run is refused with the reason: banded
(sliding-window) layers narrower than the context, YaRN scaling, biases on the output projection,
and tokenizers that are not byte-level BPE.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fidan import atomic
from fidan.errors import FidanError
from fidan.model.gpt import GPT, rope_frequencies
from fidan.progress import Progress
from fidan.serve.export import check_exportable
from fidan.tokenizer.bpe import FidanTokenizer
from fidan.tokenizer.chat import CHAT_TEMPLATE

NAMES = {"attn_norm": "attn_norm", "attn.q_proj": "attn_q", "attn.k_proj": "attn_k", "attn.v_proj": "attn_v",
         "attn.o_proj": "attn_output", "mlp_norm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down"}


def interleave(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of each head from rotate-half order (0..d/2-1 | d/2..d-1) to adjacent pairs (0, d/2, 1, d/2+1 ...)."""
    head = w.shape[0] // heads
    return w.reshape(heads, 2, head // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def gguf_architecture(model: GPT, tok: FidanTokenizer) -> str:
    """``llama`` or ``qwen2``, or a FidanError saying what llama.cpp cannot run."""
    cfg = model.cfg
    check_exportable(cfg)
    problems = []
    if any(cfg.is_banded(i) for i in range(cfg.n_layer)) and cfg.window < cfg.context:
        problems.append(f"sliding-window layers narrower than the context (window {cfg.window} < context "
                        f"{cfg.context}; train with --model.sparse_every=0, or export --format hf)")
    if cfg.rope_scaling == "yarn":
        problems.append("YaRN RoPE scaling")
    if cfg.attn_bias == "all":
        problems.append("a bias on the attention output projection")
    if not tok._byte_level:
        problems.append("a tokenizer that is not byte-level BPE")
    if problems:
        raise FidanError("cannot export to GGUF: the model uses " + "; ".join(problems))
    return "qwen2" if cfg.attn_bias == "qkv" else "llama"


def _merges(tok: FidanTokenizer) -> list[str]:
    merges = json.loads(tok.tok.to_str())["model"].get("merges", [])
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def _tokenizer(writer, gguf, model: GPT, tok: FidanTokenizer, arch: str) -> None:
    n = model.cfg.vocab_size
    pieces = [tok.tok.id_to_token(i) if i < tok.vocab_size else None for i in range(n)]
    tokens = [p if p is not None else f"[PAD{i}]" for i, p in enumerate(pieces)]  # rows without a token
    T = gguf.TokenType
    types = [T.UNUSED if p is None else T.CONTROL if i in tok.special_ids else T.NORMAL
             for i, p in enumerate(pieces)]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2" if tok.native else ("qwen2" if arch == "qwen2" else "default"))
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    writer.add_token_merges(_merges(tok))
    writer.add_bos_token_id(tok.bos)
    writer.add_eos_token_id(tok.eos)
    writer.add_pad_token_id(tok.pad)
    writer.add_eot_token_id(tok.end_of_turn)
    writer.add_add_bos_token(False)  # the chat template writes BOS itself
    writer.add_chat_template(tok.template or CHAT_TEMPLATE)


def export_gguf(model: GPT, tok: FidanTokenizer, out: str | Path, name: str = "fidan") -> Path:
    """Write ``out`` (one ``.gguf`` file; replaced in one step, never left half-written)."""
    try:
        import gguf
    except ImportError:
        raise FidanError("GGUF export needs the gguf package: pip install 'fidan[gguf]'") from None
    arch = gguf_architecture(model, tok)
    cfg = model.cfg
    out = Path(out)
    if out.is_dir():
        raise FidanError(f"{out} is a folder; give --out a file name such as model.gguf")
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    with atomic.atomic_path(out) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch)
        w.add_name(name)
        w.add_context_length(cfg.context)
        w.add_embedding_length(cfg.d_model)
        w.add_block_count(cfg.n_layer)
        w.add_feed_forward_length(cfg.hidden)
        w.add_head_count(cfg.n_head)
        w.add_head_count_kv(cfg.n_kv_head)
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
        w.add_rope_dimension_count(cfg.head_dim)
        w.add_rope_freq_base(cfg.rope_theta)
        w.add_layer_norm_rms_eps(cfg.norm_eps)
        w.add_vocab_size(cfg.vocab_size)
        w.add_file_type(gguf.LlamaFileType.ALL_F32)
        if cfg.rope_scaling == "linear":
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(cfg.rope_factor)
        _tokenizer(w, gguf, model, tok, arch)

        def put(name: str, tensor: torch.Tensor) -> None:
            w.add_tensor(name, np.ascontiguousarray(tensor.numpy().astype(np.float32)))

        put("token_embd.weight", state["embed.weight"])
        if cfg.rope_scaling == "llama3":  # what llama.cpp divides each default frequency by
            default = cfg.__class__(**{**cfg.to_dict(), "rope_scaling": "default"})
            put("rope_freqs.weight", rope_frequencies(default)[0] / rope_frequencies(cfg)[0])
        bar = Progress(total=cfg.n_layer + 1, desc="export gguf", unit="layers")  # the last: writing the file
        for i in range(cfg.n_layer):
            bar.update(1)
            for ours, theirs in NAMES.items():
                for kind in ("weight", "bias"):
                    key = f"blocks.{i}.{ours}.{kind}"
                    if key not in state:
                        continue
                    t = state[key]
                    if arch == "llama" and ours in ("attn.q_proj", "attn.k_proj"):
                        t = interleave(t, cfg.n_head if ours == "attn.q_proj" else cfg.n_kv_head)
                    put(f"blk.{i}.{theirs}.{kind}", t)
        put("output_norm.weight", state["norm.weight"])
        if not cfg.tie_embeddings:
            put("output.weight", state["lm_head.weight"])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        bar.update(1)
        bar.close()
    return out
