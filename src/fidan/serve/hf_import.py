"""Bring a Hugging Face model folder into fidan: Llama, Qwen2 or Mistral, as ``transformers`` saves them.

What maps onto fidan's GPT (``model/gpt.py``):

* the shape: layers, width, heads, grouped-query heads (``num_key_value_heads``), an explicit
  ``head_dim``, the SwiGLU width, the RMSNorm epsilon, the context (``max_position_embeddings``);
* tied or untied embeddings (``tie_word_embeddings``, or no ``lm_head.weight`` in the file);
* RoPE: ``rope_theta`` and its scaling (``rope_parameters`` of ``transformers`` 5, or the older
  ``rope_scaling``): ``default``, ``linear``, ``llama3`` and ``yarn``;
* attention biases: Qwen2's on q, k and v (dropped when they are all zero, as in a fidan
  export), Llama's ``attention_bias`` on all four;
* sliding-window layers: Mistral's ``sliding_window`` (every layer), Qwen2's ``layer_types`` (or
  ``use_sliding_window`` + ``max_window_layers``) when they follow a period from some layer on.

The weights may be one ``model.safetensors`` or shards (``model-00001-of-00002.safetensors`` ...).
The model keeps its own tokenizer: ``tokenizer.json`` and ``tokenizer_config.json`` (with the chat
template folded in from ``chat_template.jinja`` where newer ``transformers`` put it) are written
beside the weights, and every stage that trains from the model uses them and carries them on
(``tokenizer.bpe.carry``). A folder that fidan exported comes back with fidan's own tokenizer.
Anything else (another architecture, MLP biases, partial rotary embeddings, a RoPE scaling
fidan does not compute) is refused with a one-line reason naming the folder.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from fidan import atomic
from fidan.errors import FidanError
from fidan.model.gpt import GPT, GPTConfig
from fidan.model.io import save_model
from fidan.serve.export import RENAMES, exported_chat, rename
from fidan.tokenizer.bpe import CONFIG, FidanTokenizer, read_config

ARCHITECTURES = ("llama", "qwen2", "mistral")
ROPE_KINDS = ("default", "linear", "llama3", "yarn")


def read_hf_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise FidanError(f"{folder}: no readable config.json ({e})") from None
    if not isinstance(config, dict) or config.get("model_type") not in ARCHITECTURES:
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise FidanError(f"{folder}: model_type {kind!r} is not supported ({', '.join(ARCHITECTURES)})")
    return config


def _rope(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """fidan's RoPE settings from either generation of ``transformers`` config."""
    params = {**(config.get("rope_scaling") or {}), **(config.get("rope_parameters") or {})}
    kind = params.get("rope_type") or params.get("type") or "default"
    if kind not in ROPE_KINDS:
        raise FidanError(f"{folder}: RoPE scaling {kind!r} is not supported ({', '.join(ROPE_KINDS)})")
    if float(params.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))) != 1.0:
        raise FidanError(f"{folder}: partial rotary embeddings are not supported")
    out: dict[str, Any] = {"rope_theta": float(params.get("rope_theta") or config.get("rope_theta") or 10000.0),
                           "rope_scaling": kind}
    if kind != "default":
        out["rope_factor"] = float(params.get("factor") or 1.0)
        original = params.get("original_max_position_embeddings") or config.get("original_max_position_embeddings")
        out["rope_original_context"] = int(original or config.get("max_position_embeddings", 0))
    if kind == "llama3":
        out["rope_low_freq"] = float(params.get("low_freq_factor", 1.0))
        out["rope_high_freq"] = float(params.get("high_freq_factor", 4.0))
    if kind == "yarn":
        out["rope_beta_fast"] = float(params.get("beta_fast") or 32.0)
        out["rope_beta_slow"] = float(params.get("beta_slow") or 1.0)
        out["rope_attention_factor"] = float(params.get("attention_factor") or 0.0)
        if params.get("mscale") or params.get("mscale_all_dim") or params.get("truncate") is False:
            raise FidanError(f"{folder}: YaRN with mscale or truncate=false is not supported")
    return out


def _bands(config: dict[str, Any], n_layer: int, folder: Path) -> dict[str, Any]:
    """Which layers use sliding-window attention, as fidan's ``sparse_every``/``band_start``/``window``."""
    kind = config["model_type"]
    window = config.get("sliding_window")
    if kind == "mistral":
        banded = [window is not None] * n_layer
    elif kind == "qwen2":
        types = config.get("layer_types")
        if types is None:
            on = config.get("use_sliding_window", False) and window is not None
            types = ["sliding_attention" if on and i >= config.get("max_window_layers", 0) else "full_attention"
                     for i in range(n_layer)]
        if len(types) != n_layer or not set(types) <= {"sliding_attention", "full_attention"}:
            raise FidanError(f"{folder}: layer_types {types} do not describe {n_layer} layers")
        banded = [t == "sliding_attention" for t in types]
    else:
        banded = [False] * n_layer
    if not any(banded):
        return {}
    if not window or window < 1:
        raise FidanError(f"{folder}: sliding-window layers without a sliding_window size")
    for start in dict.fromkeys((0, banded.index(True))):  # a plain period first (fidan's own layout)
        for period in range(1, n_layer + 1):
            candidate = GPTConfig(vocab_size=1, n_layer=n_layer, sparse_every=period, band_start=start)
            if [candidate.is_banded(i) for i in range(n_layer)] == banded:
                return {"sparse_every": period, "band_start": start, "window": int(window)}
    raise FidanError(f"{folder}: this pattern of sliding-window layers has no fidan equivalent")


def gpt_config(config: dict[str, Any], folder: Path) -> GPTConfig:
    """fidan's model shape for a Hugging Face ``config.json`` (refusing what it cannot represent)."""
    if config.get("hidden_act", "silu") != "silu":
        raise FidanError(f"{folder}: activation {config['hidden_act']!r} is not supported (SwiGLU uses silu)")
    if config.get("mlp_bias"):
        raise FidanError(f"{folder}: MLP bias terms are not supported")
    try:
        n_head, d_model, n_layer = config["num_attention_heads"], config["hidden_size"], config["num_hidden_layers"]
        head = config.get("head_dim") or d_model // n_head
        cfg = GPTConfig(vocab_size=config["vocab_size"], context=config.get("max_position_embeddings", 2048),
                        n_layer=n_layer, n_head=n_head, n_kv_head=config.get("num_key_value_heads") or n_head,
                        d_model=d_model, head_size=0 if head * n_head == d_model else head,
                        mlp="swiglu", mlp_hidden=config["intermediate_size"],
                        norm_eps=config.get("rms_norm_eps", 1e-6),
                        attn_bias="all" if config.get("attention_bias") else "none",
                        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
                        **_rope(config, folder), **_bands(config, n_layer, folder))
    except KeyError as e:
        raise FidanError(f"{folder}/config.json: no {e.args[0]}") from None
    if cfg.n_head % cfg.n_kv_head:
        raise FidanError(f"{folder}: {cfg.n_head} heads do not split into {cfg.n_kv_head} key/value groups")
    return cfg


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's safetensors files (one file or shards)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FidanError(f"{folder}: no .safetensors weights (convert .bin weights first)")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            weights.update(load_file(str(f)))
        except (SafetensorError, OSError, ValueError) as e:
            raise FidanError(f"{f}: cannot read weights ({e})") from None
    return weights


def _state(cfg: GPTConfig, weights: dict[str, torch.Tensor], folder: Path, kind: str) -> tuple[GPTConfig, dict]:
    if "lm_head.weight" not in weights:
        cfg.tie_embeddings = True
    if kind == "qwen2":  # Qwen2 always has q/k/v biases; all zero (a fidan export) means none
        biases = [k for k in weights if k.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias"))]
        cfg.attn_bias = "qkv" if any(weights[k].abs().max() > 0 for k in biases) else "none"
    with torch.device("meta"):
        names = list(GPT(cfg).state_dict())
    wanted = {rename(n, RENAMES): n for n in names}
    missing = [h for h in wanted if h not in weights]
    if missing:
        raise FidanError(f"{folder}: weights lack {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    return cfg, {fidan: weights[hf].float() for hf, fidan in wanted.items()}


def _tokenizer(folder: Path, out: Path, config: dict[str, Any]) -> FidanTokenizer:
    """The model's own tokenizer files into ``out`` (a fidan export: fidan's tokenizer)."""
    if not (folder / "tokenizer.json").exists():
        raise FidanError(f"{folder}: no tokenizer.json (fidan reads tokenizers through the `tokenizers` library; "
                         "save the tokenizer with a fast tokenizer, tokenizer.save_pretrained(folder))")
    atomic.write_bytes(out / "tokenizer.json", (folder / "tokenizer.json").read_bytes())
    tok_config = read_config(folder)
    if tok_config is None and not (folder / CONFIG).exists():
        try:
            tok = FidanTokenizer.load(out / "tokenizer.json")  # fidan's own special tokens?
            return tok
        except FidanError:
            pass
        eos = config.get("eos_token_id")
        eos = eos[0] if isinstance(eos, list) else eos
        from tokenizers import Tokenizer
        text = Tokenizer.from_file(str(out / "tokenizer.json")).id_to_token(eos) if eos is not None else None
        if text is None:
            raise FidanError(f"{folder}: no tokenizer_config.json and no eos_token_id in config.json")
        tok_config = {"eos_token": text}
    if tok_config is not None:
        atomic.write_json(out / CONFIG, tok_config)
    tok = FidanTokenizer.load(out / "tokenizer.json")
    if tok.vocab_size > config["vocab_size"]:
        raise FidanError(f"{folder}: the tokenizer has {tok.vocab_size} tokens, more than the model's "
                         f"vocab_size {config['vocab_size']}")
    if tok.config is not None and tok.config != tok_config:  # a default chat template was added
        atomic.write_json(out / CONFIG, tok.config)
    return tok


def import_hf(folder: str | Path, out: str | Path) -> Path:
    """A Llama, Qwen2 or Mistral folder (config.json, safetensors weights, tokenizer.json) -> a fidan
    model folder holding the model's own tokenizer."""
    folder, out = Path(folder), Path(out)
    config = read_hf_config(folder)
    cfg, state = _state(gpt_config(config, folder), read_weights(folder), folder, config["model_type"])
    model = GPT(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise FidanError(f"{folder}: weights do not fit ({str(e).splitlines()[0]})") from None
    out.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(folder, out, config)
    save_model(out, model, {"stage": "imported", "source": str(folder), "architecture": config["model_type"],
                            "tokenizer": "tokenizer.json", "own_tokenizer": not tok.native,
                            "chat": exported_chat(folder)})
    return out
