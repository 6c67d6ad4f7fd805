"""Key/value cache for incremental decoding.

During generation each new token only needs its own query against the keys and values of all
earlier tokens. Keeping those keys and values turns the cost of a step from re-running the whole
prefix (quadratic overall) into one token's work.

A batch of sequences shares one write position (``pos``): every row's tokens sit in contiguous
slots that end at ``pos``. With ``offsets`` set, row ``b``'s first token sits at slot
``offsets[b]``; the slots before it are pads (hidden from attention through ``valid``), and the
model rotates each row's queries and keys by the row's own positions (slot - offset), so a row's
numbers do not depend on where its batch mates put it. ``shift``, ``join`` and ``keep_rows`` move
rows between and within caches (continuous batching: rows join and leave a running batch).
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
        # [batch] slot of each row's first token (None = 0 for every row); see the module note
        self.offsets: torch.Tensor | None = None

    @property
    def batch(self) -> int:
        return self.k.shape[1]

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
        self.offsets = None

    def set_offsets(self, offsets: torch.Tensor) -> None:
        """Row ``b`` starts at slot ``offsets[b]``: earlier slots are its pads."""
        self.offsets = offsets.to(device=self.k.device, dtype=torch.long)
        if not bool(self.offsets.any()):   # no pads: plain positions, and no mask (the fused path)
            self.offsets = self.valid = None
            return
        slots = torch.arange(self.max_len, device=self.k.device)
        self.valid = slots[None, :] >= self.offsets[:, None]

    def row_offsets(self) -> torch.Tensor:
        """``offsets``, with zeros when it is None."""
        if self.offsets is None:
            return torch.zeros(self.batch, dtype=torch.long, device=self.k.device)
        return self.offsets

    def _moved(self, src: slice, dst: int, length: int) -> None:
        """Reallocate to ``length`` slots, copying stored slots ``src`` to start at ``dst``."""
        k, v = self.k, self.v
        shape = (*k.shape[:3], length, k.shape[4])
        # slots past the stored ones are written before attention reads them; new pads are zeroed
        self.k, self.v = k.new_empty(shape), v.new_empty(shape)
        n = src.stop - src.start
        for new, old in ((self.k, k), (self.v, v)):
            new[:, :, :, :dst] = 0
            new[:, :, :, dst:dst + n] = old[:, :, :, src]
        self.max_len = length

    def grow(self, length: int) -> None:
        """Make room for ``length`` slots in all (what is stored stays where it is)."""
        if length <= self.max_len:
            return
        offsets = self.row_offsets()
        self._moved(slice(0, self.pos), 0, length)
        self.set_offsets(offsets)

    def shift(self, d: int, length: int | None = None) -> None:
        """Move every row ``d`` slots later (``d > 0``: new pads at the front) or earlier (``d < 0``:
        the first ``-d`` slots, which must be pads of every row, are dropped); ``length`` is the
        new room (at least the stored positions)."""
        offsets = self.row_offsets() + d
        if int(offsets.min()) < 0:
            raise ValueError(f"cannot shift by {d}: a row starts at slot {int(offsets.min()) - d}")
        pos = self.pos + d
        self._moved(slice(max(-d, 0), self.pos), max(d, 0), max(length or self.max_len, pos))
        self.pos = pos
        self.set_offsets(offsets)

    def join(self, other: KVCache, length: int | None = None) -> None:
        """Append ``other``'s rows to this batch; both must hold the same number of positions."""
        if other.pos != self.pos:
            raise ValueError(f"caches at positions {self.pos} and {other.pos} cannot be joined")
        length = max(length or 0, self.max_len, other.max_len)
        pos = self.pos
        offsets = torch.cat([self.row_offsets(), other.row_offsets()])
        shape = (self.k.shape[0], self.batch + other.batch, *self.k.shape[2:3], length, self.k.shape[4])
        k, v = self.k.new_empty(shape), self.v.new_empty(shape)
        for dst, src in ((k, self.k), (v, self.v)):
            dst[:, :self.batch, :, :pos] = src[:, :, :, :pos]
        for dst, src in ((k, other.k), (v, other.v)):
            dst[:, self.batch:, :, :pos] = src[:, :, :, :pos]
        self.k, self.v, self.max_len = k, v, length
        self.set_offsets(offsets)

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Drop finished sequences from a batch: keep only ``rows`` (indices into the batch)."""
        order = rows.tolist()
        if order == sorted(order):   # in place: each kept row moves down over a dropped one
            for i, r in enumerate(order):
                if i != r:
                    self.k[:, i, :, :self.pos] = self.k[:, r, :, :self.pos]
                    self.v[:, i, :, :self.pos] = self.v[:, r, :, :self.pos]
            self.k, self.v = self.k[:, :len(order)], self.v[:, :len(order)]
        else:
            self.k, self.v = self.k[:, rows], self.v[:, rows]
        if self.valid is not None:
            self.valid = self.valid[rows]
        if self.offsets is not None:
            self.offsets = self.offsets[rows]
