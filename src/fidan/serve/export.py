"""Hugging Face format: export a fidan model as a ``transformers`` Llama, and import one back.

fidan's decoder is Llama's shape (pre-norm RMSNorm, RoPE in the rotate-half layout, SwiGLU, no
biases, untied output head), so export is a renaming of tensors plus ``config.json``, the
tokenizer and a chat template matching ``tokenizer/chat.py``. A model with banded attention
layers exports as Qwen2 instead, whose config marks each layer "sliding_attention" or
"full_attention" with the same window rule (a query sees keys less than ``window`` positions
back); Qwen2's query/key/value biases are written as zeros, which changes nothing. The exported
folder loads with ``AutoModelForCausalLM.from_pretrained(folder)`` offline and gives the same
logits. Models using features neither has (QK-norm, a soft prompt, a non-SwiGLU MLP) are refused
with a message saying which.

Export writes the whole folder under a temporary name beside ``out`` and then puts it in place in
one step (``atomic.replace_dir``), so a killed export leaves the previous folder as it was, never
one run's weights beside another's tokenizer. ``fidan-export.json`` in the folder marks it as a
fidan export and lists each file's size and SHA-256; an existing folder that is not a fidan export
(and not empty) is replaced only with ``force``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fidan import __version__, atomic
from fidan.errors import FidanError
from fidan.model.gpt import GPT, GPTConfig
from fidan.model.io import save_model
from fidan.tokenizer.bpe import ASSISTANT, BOS, END, EOS, PAD, FidanTokenizer

CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}"
                 "<|end|>{% endfor %}{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}")

RENAMES = [  # fidan name pattern -> Hugging Face Llama name
    (r"embed\.weight", "model.embed_tokens.weight"),
    (r"blocks\.(\d+)\.attn_norm\.weight", r"model.layers.\1.input_layernorm.weight"),
    (r"blocks\.(\d+)\.attn\.(q|k|v|o)_proj\.weight", r"model.layers.\1.self_attn.\2_proj.weight"),
    (r"blocks\.(\d+)\.mlp_norm\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
    (r"blocks\.(\d+)\.mlp\.(gate|up|down)_proj\.weight", r"model.layers.\1.mlp.\2_proj.weight"),
    (r"norm\.weight", "model.norm.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
]


def _rename(name: str, table: list[tuple[str, str]]) -> str:
    for pattern, target in table:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, target, name)
    raise FidanError(f"no Hugging Face name for tensor {name}")


def check_exportable(cfg: GPTConfig) -> None:
    problems = []
    if cfg.qk_norm:
        problems.append("QK-norm (model.qk_norm)")
    if cfg.mlp != "swiglu":
        problems.append(f"the {cfg.mlp} MLP (Llama uses SwiGLU)")
    if cfg.prompt_tokens:
        problems.append("a soft prompt (prompt tuning)")
    if problems:
        raise FidanError("cannot export to Hugging Face format: the model uses " + ", ".join(problems))


def llama_config(cfg: GPTConfig, tok: FidanTokenizer) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model, "intermediate_size": cfg.hidden, "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_kv_head, "head_dim": cfg.head_dim,
            "max_position_embeddings": cfg.context, "rms_norm_eps": cfg.norm_eps, "hidden_act": "silu",
            "rope_theta": cfg.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
            "bos_token_id": tok.bos, "eos_token_id": [tok.eos, tok.id_of(END)], "pad_token_id": tok.pad,
            "torch_dtype": "float32"}


def qwen2_config(cfg: GPTConfig, tok: FidanTokenizer) -> dict:
    """Llama's config plus per-layer attention types: Qwen2 alternates sliding and full attention."""
    layer_types = ["sliding_attention" if cfg.is_banded(i) else "full_attention" for i in range(cfg.n_layer)]
    return {**llama_config(cfg, tok), "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "use_sliding_window": True, "sliding_window": cfg.window, "layer_types": layer_types,
            "max_window_layers": cfg.n_layer}


MARKER = "fidan-export.json"


_sha256 = atomic.file_sha256


def is_fidan_export(folder: Path) -> bool:
    """A folder this function wrote: it has the marker, or (an export from before the marker) a
    tokenizer config with fidan's chat template."""
    if (folder / MARKER).is_file():
        return True
    try:
        return json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template") == CHAT_TEMPLATE
    except (OSError, ValueError, AttributeError):
        return False


def _check_target(out: Path, force: bool) -> None:
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise FidanError(f"{out} exists and is not a folder; choose another --out")
    here = Path.cwd().resolve()
    if out.resolve() in (here, *here.parents, Path.home().resolve()):
        raise FidanError(f"refusing to replace {out}: it holds the current folder or the home folder; "
                         "choose a new --out")
    if force or is_fidan_export(out) or not any(out.iterdir()):
        return
    raise FidanError(f"{out} exists and is not a fidan export (no {MARKER}); choose another --out, or pass "
                     "--force to replace everything in it")


def exported_chat(folder: Path) -> bool:
    """Whether ``folder`` is a fidan export of a chat model (its marker says so)."""
    try:
        return bool(json.loads((Path(folder) / MARKER).read_text()).get("chat"))
    except (OSError, ValueError, AttributeError):
        return False


def _write(model: GPT, tok: FidanTokenizer, out: Path, chat: bool = False) -> None:
    tensors = {_rename(k, RENAMES): v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    cfg = model.cfg
    if cfg.sparse_every:
        for i in range(cfg.n_layer):
            for proj, heads in (("q", cfg.n_head), ("k", cfg.n_kv_head), ("v", cfg.n_kv_head)):
                tensors[f"model.layers.{i}.self_attn.{proj}_proj.bias"] = torch.zeros(heads * cfg.head_dim)
    with atomic.atomic_path(out / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    atomic.write_json(out / "config.json", qwen2_config(cfg, tok) if cfg.sparse_every else llama_config(cfg, tok))
    atomic.write_json(out / "generation_config.json", {"bos_token_id": tok.bos,
                                                       "eos_token_id": [tok.eos, tok.id_of(END)],
                                                       "pad_token_id": tok.pad})
    tok.save(out / "tokenizer.json")
    atomic.write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
        "add_bos_token": False, "model_max_length": model.cfg.context, "chat_template": CHAT_TEMPLATE})
    atomic.write_json(out / "special_tokens_map.json", {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD})
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(out.iterdir())}
    atomic.write_json(out / MARKER, {"fidan": __version__, "format": "hf", "chat": chat, "files": files})


def _remove_abandoned(out: Path) -> None:
    """Temporary folders of earlier exports to ``out`` whose process is gone (killed mid-export)."""
    for tmp in out.parent.glob(f".{out.name}.export-*"):
        try:
            pid = int(tmp.name[len(out.name) + 9:].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError):
            continue  # not ours to judge


def export_hf(model: GPT, tok: FidanTokenizer, out: str | Path, force: bool = False, chat: bool = False) -> Path:
    """``chat``: the model was fine-tuned on the chat template (recorded, so an import is a chat model)."""
    check_exportable(model.cfg)
    out = Path(out)
    _check_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-{os.getpid()}-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; an export is an ordinary folder
        _write(model, tok, tmp, chat)
        atomic.replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def import_hf(folder: str | Path, out: str | Path) -> Path:
    """A Llama-architecture folder (config.json, safetensors weights, tokenizer.json) -> a fidan model folder."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise FidanError(f"{folder}: no readable config.json ({e})") from None
    if config.get("model_type") not in ("llama", "qwen2"):
        raise FidanError(f"{folder}: model_type {config.get('model_type')!r} is not supported (llama or qwen2)")
    sparse_every, window = 0, 128
    layer_types = config.get("layer_types") if config.get("model_type") == "qwen2" else None
    if layer_types and "sliding_attention" in layer_types and config.get("use_sliding_window", True):
        banded = [t == "sliding_attention" for t in layer_types]
        period = next((k for k in range(1, len(banded) + 1)
                       if banded == [i % k == k - 1 for i in range(len(banded))]), 0)
        if not period:
            raise FidanError(f"{folder}: this pattern of sliding-window layers has no fidan equivalent")
        sparse_every, window = period, config["sliding_window"]
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise FidanError(f"{folder}: bias terms are not supported")
    rope = (config.get("rope_parameters") or {}).get("rope_theta") or config.get("rope_theta", 10000.0)
    if (config.get("rope_scaling") or {}).get("rope_type", "default") not in ("default", None):
        raise FidanError(f"{folder}: scaled RoPE ({config['rope_scaling']}) is not supported")
    n_head = config["num_attention_heads"]
    cfg = GPTConfig(vocab_size=config["vocab_size"], context=config.get("max_position_embeddings", 2048),
                    n_layer=config["num_hidden_layers"], n_head=n_head,
                    n_kv_head=config.get("num_key_value_heads", n_head), d_model=config["hidden_size"],
                    mlp="swiglu", mlp_hidden=config["intermediate_size"], rope_theta=float(rope),
                    norm_eps=config.get("rms_norm_eps", 1e-6), sparse_every=sparse_every, window=window)
    if config.get("head_dim", cfg.head_dim) != cfg.head_dim:
        raise FidanError(f"{folder}: head_dim {config['head_dim']} != hidden_size / heads; not supported")
    weights: dict[str, torch.Tensor] = {}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FidanError(f"{folder}: no .safetensors weights (convert .bin weights first)")
    for f in files:
        weights.update(load_file(str(f)))
    with torch.device("meta"):
        names = list(GPT(cfg).state_dict())
    hf_names = {_rename(n, RENAMES): n for n in names}
    if "lm_head.weight" not in weights and config.get("tie_word_embeddings"):
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    biases = [k for k in weights if k.endswith(".bias")]
    if any(weights[k].abs().max() > 0 for k in biases):
        raise FidanError(f"{folder}: non-zero attention biases have no fidan equivalent")
    missing = [h for h in hf_names if h not in weights]
    if missing:
        raise FidanError(f"{folder}: weights lack {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    state = {fidan: weights[hf].float() for hf, fidan in hf_names.items()}
    model = GPT(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise FidanError(f"{folder}: weights do not fit ({str(e).splitlines()[0]})") from None
    out = Path(out)
    save_model(out, model, {"stage": "imported", "source": str(folder), "tokenizer": "tokenizer.json",
                            "chat": exported_chat(folder)})
    if (folder / "tokenizer.json").exists():
        (out / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes())
    return out
