"""The model's shape, kept free of torch so configs, the CLI and data workers load without it."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class GPTConfig:
    vocab_size: int = 0            # 0 = take it from the tokenizer
    context: int = 256             # longest sequence the model attends over
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 4             # fewer than n_head = grouped-query attention
    d_model: int = 256
    mlp: str = "swiglu"            # "swiglu", "relu2" (squared ReLU) or "gelu"
    mlp_hidden: int = 0            # 0 = 8/3 d_model for SwiGLU, 4 d_model otherwise (rounded up to 64)
    rope_theta: float = 10000.0
    qk_norm: bool = False          # RMS-normalise queries and keys per head
    sparse_every: int = 0          # every n-th layer uses banded attention (2 = alternate); 0 = dense only
    window: int = 128              # band width (tokens) of the banded layers
    norm_eps: float = 1e-5
    dropout: float = 0.0
    init_std: float = 0.02
    prompt_tokens: int = 0         # learned soft-prompt vectors placed before every input (prompt tuning)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def hidden(self) -> int:
        if self.mlp_hidden:
            return self.mlp_hidden
        raw = int(8 * self.d_model / 3) if self.mlp == "swiglu" else 4 * self.d_model
        return 64 * math.ceil(raw / 64)

    def is_banded(self, layer: int) -> bool:
        return self.sparse_every > 0 and layer % self.sparse_every == self.sparse_every - 1

    def to_dict(self) -> dict:
        return asdict(self)
