"""Key/value cache for incremental decoding.

During generation each new token only needs its own query against the keys and values of all
earlier tokens. Keeping those keys and values turns the cost of a step from re-running the whole
prefix (quadratic overall) into one token's work.
"""
from __future__ import annotations

import torch


class KVCache:
    """Preallocated keys and values for every layer: ``[layer, batch, kv_head, position, dim]``."""

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (n_layer, batch, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.pos = 0  # number of positions already stored
        # [batch, max_len] True where a stored position holds a real token; None = all real.
        # Batched prompts of different lengths are left-padded and their pads marked False.
        self.valid: torch.Tensor | None = None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's keys/values for ``layer``; return all keys/values so far."""
        t = k.shape[2]
        end = self.pos + t
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions > {self.max_len}")
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, t: int) -> None:
        self.pos += t

    def reset(self) -> None:
        self.pos = 0
        self.valid = None

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Drop finished sequences from a batch: keep only ``rows`` (indices into the batch)."""
        self.k, self.v = self.k[:, rows], self.v[:, rows]
        if self.valid is not None:
            self.valid = self.valid[rows]
