"""The model's shape, kept free of torch so configs, the CLI and data workers load without it."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from fidan.settings import at_least, below_one, between, non_negative, only_if, positive, setting


@dataclass
class GPTConfig:
    vocab_size: int = setting(0, check=between(0, 2**32))  # 0 = take it from the tokenizer
    context: int = setting(256, check=at_least(1))  # longest sequence the model attends over
    n_layer: int = setting(4, check=at_least(1))
    n_head: int = setting(4, check=at_least(1))
    n_kv_head: int = setting(4, check=at_least(1))  # fewer than n_head = grouped-query attention
    d_model: int = setting(256, check=at_least(2))
    mlp: str = "swiglu"            # "swiglu", "relu2" (squared ReLU) or "gelu"
    mlp_hidden: int = setting(0, check=non_negative)  # 0 = 8/3 d_model for SwiGLU, 4 d_model otherwise
                                   # (rounded up to 64)
    head_size: int = setting(0, check=non_negative)  # width of one attention head; 0 = d_model / n_head
    rope_theta: float = setting(10000.0, check=positive)
    rope_scaling: str = setting("default", choices=("default", "linear", "llama3", "yarn"))  # how RoPE
                                   # frequencies are stretched for a longer context (as Hugging Face names them)
    rope_factor: float = setting(1.0, check=at_least(1), when=only_if("rope_scaling", "linear", "llama3", "yarn"))
                                   # the stretch: context / original context
    rope_original_context: int = setting(0, check=non_negative, when=only_if("rope_scaling", "llama3", "yarn"))
                                   # the context the model was trained with before stretching
    rope_low_freq: float = setting(1.0, check=positive, when=only_if("rope_scaling", "llama3"))  # Llama 3's
                                   # low_freq_factor
    rope_high_freq: float = setting(4.0, check=positive, when=only_if("rope_scaling", "llama3"))  # Llama 3's
                                   # high_freq_factor
    rope_beta_fast: float = setting(32.0, check=positive, when=only_if("rope_scaling", "yarn"))  # YaRN's ramp ends
    rope_beta_slow: float = setting(1.0, check=positive, when=only_if("rope_scaling", "yarn"))
    rope_attention_factor: float = setting(0.0, check=non_negative, when=only_if("rope_scaling", "yarn"))  # YaRN's
                                   # cos/sin scale; 0 = 0.1 ln(factor) + 1
    attn_bias: str = setting("none", choices=("none", "qkv", "all"))  # bias terms on the attention projections:
                                   # Qwen2 has them on q, k and v; "all" adds o
    tie_embeddings: bool = False   # the output head shares the input embedding's weights
    qk_norm: bool = False          # RMS-normalise queries and keys per head
    logit_softcap: float = setting(0.0, check=non_negative)  # cap * tanh(logits / cap) on the output logits
                                   # (Gemma 2's final soft-capping); 0 = off
    sparse_every: int = setting(0, check=non_negative)  # every n-th layer uses banded attention (2 = alternate);
                                   # 0 = dense only
    window: int = setting(128, check=at_least(1))  # band width (tokens) of the banded layers
    band_start: int = setting(0, check=non_negative)  # layers below this one are always dense (Qwen2's
                                   # max_window_layers)
    norm_eps: float = setting(1e-5, check=positive)
    dropout: float = setting(0.0, check=below_one)
    init_std: float = setting(0.02, check=positive)
    prompt_tokens: int = setting(0, check=non_negative)  # learned soft-prompt vectors placed before every input
                                   # (prompt tuning)

    @property
    def head_dim(self) -> int:
        return self.head_size or self.d_model // self.n_head

    @property
    def hidden(self) -> int:
        if self.mlp_hidden:
            return self.mlp_hidden
        raw = int(8 * self.d_model / 3) if self.mlp == "swiglu" else 4 * self.d_model
        return 64 * math.ceil(raw / 64)

    def is_banded(self, layer: int) -> bool:
        return (self.sparse_every > 0 and layer >= self.band_start
                and layer % self.sparse_every == self.sparse_every - 1)

    def to_dict(self) -> dict:
        return asdict(self)
