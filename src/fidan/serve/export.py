"""Hugging Face format: export a fidan model as a ``transformers`` Llama, Qwen2 or Mistral folder.

fidan's decoder is Llama's shape (pre-norm RMSNorm, RoPE in the rotate-half layout, SwiGLU), so
export is a renaming of tensors plus ``config.json`` and the tokenizer: fidan's own, with a chat
template matching ``tokenizer/chat.py``, or the model's own (an imported model's tokenizer and
chat template, kept as they came). The architecture follows the model: Llama by default (tied
embeddings, RoPE scaling and all-four attention biases included); Qwen2 for query/key/value
biases or banded attention layers, whose config marks each layer "sliding_attention" or
"full_attention" with the same window rule (a query sees keys less than ``window`` positions
back; absent biases are written as zeros, which changes nothing); Mistral when every layer is
banded and there are no biases. The exported folder loads with
``AutoModelForCausalLM.from_pretrained(folder)`` offline and gives the same logits. Models using
features none of them has (QK-norm, a soft prompt, a non-SwiGLU MLP) are refused with a message
saying which. ``fidan import`` (``serve/hf_import.py``) reads such folders back.

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
from safetensors.torch import save_file

from fidan import __version__, atomic
from fidan.errors import FidanError
from fidan.model.gpt import GPT, GPTConfig
from fidan.progress import Progress
from fidan.tokenizer.bpe import BOS, CONFIG, EOS, PAD, FidanTokenizer
from fidan.tokenizer.chat import CHAT_TEMPLATE

RENAMES = [  # fidan name pattern -> Hugging Face Llama name
    (r"embed\.weight", "model.embed_tokens.weight"),
    (r"blocks\.(\d+)\.attn_norm\.weight", r"model.layers.\1.input_layernorm.weight"),
    (r"blocks\.(\d+)\.attn\.(q|k|v|o)_proj\.(weight|bias)", r"model.layers.\1.self_attn.\2_proj.\3"),
    (r"blocks\.(\d+)\.mlp_norm\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
    (r"blocks\.(\d+)\.mlp\.(gate|up|down)_proj\.weight", r"model.layers.\1.mlp.\2_proj.weight"),
    (r"norm\.weight", "model.norm.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
]


def rename(name: str, table: list[tuple[str, str]]) -> str:
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
    if cfg.logit_softcap:
        problems.append(f"logit soft-capping (model.logit_softcap={cfg.logit_softcap:g})")
    if problems:
        raise FidanError("cannot export to Hugging Face format: the model uses " + ", ".join(problems))


def _rope(cfg: GPTConfig) -> dict:
    params = {"rope_type": cfg.rope_scaling, "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling != "default":
        params["factor"] = cfg.rope_factor
    if cfg.rope_scaling in ("llama3", "yarn"):
        params["original_max_position_embeddings"] = cfg.rope_original_context or cfg.context
    if cfg.rope_scaling == "llama3":
        params.update(low_freq_factor=cfg.rope_low_freq, high_freq_factor=cfg.rope_high_freq)
    if cfg.rope_scaling == "yarn":
        params.update(beta_fast=cfg.rope_beta_fast, beta_slow=cfg.rope_beta_slow)
        if cfg.rope_attention_factor:
            params["attention_factor"] = cfg.rope_attention_factor
    out = {"rope_theta": cfg.rope_theta, "rope_parameters": params}
    if cfg.rope_scaling != "default":
        out["rope_scaling"] = dict(params)  # what transformers 4.x reads
    return out


def llama_config(cfg: GPTConfig, tok: FidanTokenizer) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model, "intermediate_size": cfg.hidden, "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_kv_head, "head_dim": cfg.head_dim,
            "max_position_embeddings": cfg.context, "rms_norm_eps": cfg.norm_eps, "hidden_act": "silu",
            **_rope(cfg), "tie_word_embeddings": cfg.tie_embeddings,
            "attention_bias": cfg.attn_bias == "all", "mlp_bias": False,
            "bos_token_id": tok.bos, "eos_token_id": sorted({tok.eos, tok.end_of_turn}), "pad_token_id": tok.pad,
            "torch_dtype": "float32"}


def qwen2_config(cfg: GPTConfig, tok: FidanTokenizer) -> dict:
    """Llama's config plus per-layer attention types: Qwen2 marks each layer sliding or full."""
    layer_types = ["sliding_attention" if cfg.is_banded(i) else "full_attention" for i in range(cfg.n_layer)]
    banded = "sliding_attention" in layer_types
    return {**llama_config(cfg, tok), "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "use_sliding_window": banded, "sliding_window": cfg.window if banded else None,
            "layer_types": layer_types, "max_window_layers": cfg.band_start if banded else cfg.n_layer}


def mistral_config(cfg: GPTConfig, tok: FidanTokenizer) -> dict:
    """Llama's config with one sliding window for every layer."""
    return {**llama_config(cfg, tok), "architectures": ["MistralForCausalLM"], "model_type": "mistral",
            "sliding_window": cfg.window}


def architecture(cfg: GPTConfig) -> str:
    """The Hugging Face architecture that has every feature this model uses."""
    banded = [cfg.is_banded(i) for i in range(cfg.n_layer)]
    if cfg.attn_bias == "all":
        if any(banded):
            raise FidanError("cannot export to Hugging Face format: banded layers with an output-projection "
                             "bias (model.attn_bias=all) exist in no architecture")
        return "llama"
    if all(banded) and cfg.attn_bias == "none":
        return "mistral"
    return "qwen2" if any(banded) or cfg.attn_bias == "qkv" else "llama"


CONFIGS = {"llama": llama_config, "qwen2": qwen2_config, "mistral": mistral_config}


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


def _write(model: GPT, tok: FidanTokenizer, out: Path, card: str | None = None, chat: bool = False) -> None:
    state = model.state_dict()
    bar = Progress(total=len(state) + 1, desc="export", unit="tensors")  # the last unit: writing the file
    tensors = {}
    for k, v in state.items():
        tensors[rename(k, RENAMES)] = v.detach().contiguous().cpu()
        bar.update(1)
    cfg = model.cfg
    arch = architecture(cfg)
    if arch == "qwen2" and cfg.attn_bias == "none":  # Qwen2 always has q/k/v biases: zeros change nothing
        for i in range(cfg.n_layer):
            for proj, heads in (("q", cfg.n_head), ("k", cfg.n_kv_head), ("v", cfg.n_kv_head)):
                tensors[f"model.layers.{i}.self_attn.{proj}_proj.bias"] = torch.zeros(heads * cfg.head_dim)
    with atomic.atomic_path(out / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    bar.update(1)
    bar.close()
    atomic.write_json(out / "config.json", CONFIGS[arch](cfg, tok))
    atomic.write_json(out / "generation_config.json", {"bos_token_id": tok.bos,
                                                       "eos_token_id": sorted({tok.eos, tok.end_of_turn}),
                                                       "pad_token_id": tok.pad})
    tok.save(out / "tokenizer.json")
    if tok.native:
        atomic.write_json(out / CONFIG, {
            "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
            "add_bos_token": False, "model_max_length": model.cfg.context, "chat_template": CHAT_TEMPLATE})
        atomic.write_json(out / "special_tokens_map.json", {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD})
    else:  # the model's own tokenizer and chat template, as they came
        atomic.write_json(out / CONFIG, {"tokenizer_class": "PreTrainedTokenizerFast", **tok.config})
        atomic.write_json(out / "special_tokens_map.json",
                          {f"{k}_token": v for k, v in tok.token_names.items() if v is not None})
    if card is not None:
        atomic.write_text(out / "README.md", card)
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


def export_hf(model: GPT, tok: FidanTokenizer, out: str | Path, force: bool = False, card: str | None = None,
              chat: bool = False) -> Path:
    """Write the Hugging Face folder ``out`` (with ``card`` as its README.md model card); ``chat``:
    the model was fine-tuned on the chat template (recorded, so an import is a chat model)."""
    check_exportable(model.cfg)
    out = Path(out)
    _check_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-{os.getpid()}-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; an export is an ordinary folder
        _write(model, tok, tmp, card, chat)
        atomic.replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
