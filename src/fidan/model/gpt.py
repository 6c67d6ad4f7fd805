"""A GPT decoder with modern defaults.

Pre-norm transformer blocks with RMSNorm, rotary position embeddings (RoPE, "rotate half"
layout as in Llama, optionally stretched for long contexts: linear, Llama 3 or YaRN scaling), no
bias terms by default (Qwen2's query/key/value biases on request), a separate input embedding
and output head unless ``tie_embeddings``, and PyTorch's fused ``scaled_dot_product_attention``.
Every ``sparse_every``-th layer (from ``band_start`` on) can use locally banded (sliding-window)
attention, the dense/sparse alternation GPT-3 used; in training and prefill it runs chunked
(``banded_attention``), so it skips the blocks its band masks out. The layout
maps one-to-one onto Hugging Face's Llama, Qwen2 and Mistral architectures, which keeps export
and import simple.
"""
from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fidan.model.config import GPTConfig
from fidan.model.kv_cache import KVCache


def rope_frequencies(cfg: GPTConfig) -> tuple[torch.Tensor, float]:
    """The rotation frequency of each pair of dimensions, and the factor on cos/sin (YaRN's).

    ``rope_scaling`` stretches them for a context longer than the one trained on, by the rules
    Hugging Face's ``rope_type`` names: ``linear`` divides every frequency by the factor;
    ``llama3`` divides only the low ones (wavelengths beyond ``original / low_freq``), keeps the
    high ones (below ``original / high_freq``) and blends between; ``yarn`` ramps between the
    divided and the original frequencies over the dimensions whose rotation count over the
    original context lies between ``beta_slow`` and ``beta_fast``, and scales cos/sin.
    """
    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    kind, factor = cfg.rope_scaling, cfg.rope_factor
    if kind == "linear":
        return inv_freq / factor, 1.0
    original = cfg.rope_original_context or cfg.context
    if kind == "llama3":
        low_wavelen, high_wavelen = original / cfg.rope_low_freq, original / cfg.rope_high_freq
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (original / wavelen - cfg.rope_low_freq) / (cfg.rope_high_freq - cfg.rope_low_freq)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        middle = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(middle, blended, scaled), 1.0
    if kind == "yarn":
        def pair_index(rotations: float) -> float:  # the dimension that turns ``rotations`` times
            return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(cfg.rope_theta))
        low = max(math.floor(pair_index(cfg.rope_beta_fast)), 0)
        high = min(math.ceil(pair_index(cfg.rope_beta_slow)), dim - 1)
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / max(high - low, 1e-3)).clamp(0, 1)
        keep = 1 - ramp                       # 1: the original frequency, 0: the divided one
        freq = inv_freq / factor * (1 - keep) + inv_freq * keep
        scale = cfg.rope_attention_factor or (0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0)
        return freq, scale
    return inv_freq, 1.0


def rope_tables(cfg: GPTConfig, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq, scale = rope_frequencies(cfg)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos() * scale, angles.sin() * scale


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def band_span(window: int, t: int) -> float:
    """Keys per query that ``banded_attention`` computes scores for over ``t`` tokens (masked
    ones included, as the dense count includes the causal mask's half): two blocks of ``window``
    (the tail padded to a whole block), or ``t`` when the sequence fits in one window."""
    if t <= window:
        return float(t)
    blocks = -(-t // window)
    return 2.0 * window * blocks * window / t


def _band_positions(nb: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query and key positions of the chunked layout (``[nb, w, 1]``, ``[nb, 1, 2w]``) and the
    band between them (key block ``i`` holds positions ``(i-1) w .. (i+1) w - 1``)."""
    q_pos = torch.arange(nb * w, device=device).view(nb, w, 1)
    k_pos = (torch.arange(nb, device=device).view(nb, 1, 1) - 1) * w + torch.arange(2 * w, device=device)
    return q_pos, k_pos, (k_pos >= 0) & (k_pos <= q_pos) & (q_pos - k_pos < w)


@functools.lru_cache(maxsize=8)
def _band_bias(nb: int, w: int, device, dtype) -> torch.Tensor:
    """The band as an additive mask ``[1, nb, w, 2w]`` (0 or -inf), made once per shape: SDPA
    would otherwise turn a boolean mask into this on every call, forward and backward."""
    with torch.inference_mode(False):  # a cached inference tensor could not be saved for backward later
        band = _band_positions(nb, w, device)[2]
        return torch.zeros(band.shape, device=device, dtype=dtype).masked_fill(~band, float("-inf"))[None]


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                     valid: torch.Tensor | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """Causal sliding-window attention (query ``i`` sees keys ``i - window + 1 .. i``) that skips
    the masked blocks: queries go in blocks of ``window``, each attending to its own key block and
    the one before, through ``scaled_dot_product_attention`` with a ``[block, 2 block]`` mask.

    ``q``, ``k``, ``v``: ``[batch, heads, t, dim]`` (positions ``0 .. t-1``; keys and values with
    as many heads as the queries). ``valid`` (``[batch, t]``, False at left-padding) hides pad
    keys; every position still sees itself, as the dense masks do. Costs ``t x 2 window`` scores
    per head instead of ``t x t``; equal to the dense-masked version up to float rounding.
    """
    b, h, t, d = q.shape
    if t <= window:  # the band covers the whole sequence: plain causal attention
        if valid is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
        pos = torch.arange(t, device=q.device)
        mask = (pos[None, :] <= pos[:, None]) & valid[:, None, None, :] | (pos[None, :] == pos[:, None])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    w = window
    nb = -(-t // w)
    tail = nb * w - t
    def blocks(x: torch.Tensor) -> torch.Tensor:  # [b h nb w d], merged as [b*h, nb, w, d]
        return (F.pad(x, (0, 0, 0, tail)) if tail else x).reshape(b * h, nb, w, d)

    def with_previous(x: torch.Tensor) -> torch.Tensor:  # key block i = blocks i-1 (zeros for 0) and i
        x = blocks(x)
        return torch.cat([F.pad(x[:, :-1], (0, 0, 0, 0, 1, 0)), x], dim=2)

    qb, kb, vb = blocks(q), with_previous(k), with_previous(v)
    if valid is None:
        mask = _band_bias(nb, w, q.device, q.dtype)
    else:
        q_pos, k_pos, band = _band_positions(nb, w, q.device)
        keys_ok = F.pad(valid, (w, tail)).unfold(1, 2 * w, w)          # [b, nb, 2w]
        mask = (band & keys_ok[:, :, None, :]) | (k_pos == q_pos)
        mask = mask[:, None].expand(b, h, nb, w, 2 * w).reshape(b * h, nb, w, 2 * w)
    y = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, dropout_p=dropout_p)
    return y.reshape(b, h, nb * w, d)[:, :, :t]


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        hd = cfg.head_dim
        qkv_bias = cfg.attn_bias in ("qkv", "all")
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_head * hd, bias=qkv_bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_head * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_head * hd, bias=qkv_bias)
        self.o_proj = nn.Linear(cfg.n_head * hd, cfg.d_model, bias=cfg.attn_bias == "all")
        self.q_norm = nn.RMSNorm(hd, eps=cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = nn.RMSNorm(hd, eps=cfg.norm_eps) if cfg.qk_norm else None
        self.window = cfg.window if cfg.is_banded(layer) else 0
        self.record: dict[int, torch.Tensor] | None = None   # set by ``recorded_attention``

    def forward(self, x, cos, sin, mask, cache: KVCache | None):
        b, t, _ = x.shape
        cfg = self.cfg
        q = self.q_proj(x).view(b, t, cfg.n_head, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        if cfg.n_kv_head != cfg.n_head:
            rep = cfg.n_head // cfg.n_kv_head
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        drop = cfg.dropout if self.training else 0.0
        if self.record is not None:  # opt-in: this layer's attention probabilities, computed explicitly
            y, self.record[self.layer] = explicit_attention(q, k, v, mask, drop, self.window)
        elif self.window and mask is None:  # training or prefill from position 0: the chunked band
            valid = cache.valid[:, :t] if cache is not None and cache.valid is not None else None
            y = banded_attention(q, k, v, self.window, valid, drop)
        elif mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None, dropout_p=drop)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


def explicit_attention(q, k, v, mask: torch.Tensor | None, dropout: float, window: int = 0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention as SDPA computes it, with the probabilities ``[batch, head, query, key]`` kept.
    ``mask``: True where a query may see a key (None: causal, queries and keys aligned, and for a
    banded layer (``window``) only the last ``window`` keys, as ``banded_attention`` computes)."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is None:
        t, s = q.shape[-2], k.shape[-2]
        mask = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
        if window:
            mask = mask & ~torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t - window)
    probs = torch.softmax(scores.float().masked_fill(~mask, float("-inf")), dim=-1).to(q.dtype)
    return F.dropout(probs, dropout, training=dropout > 0) @ v, probs


@contextlib.contextmanager
def recorded_attention(model: GPT, layers: Iterable[int]):
    """Within the block, forward passes of ``model`` compute the attention of the given blocks
    explicitly and leave their probabilities in the yielded dict (block index -> ``[batch, head,
    query, key]``, differentiable); every other block keeps the fused SDPA path. With no layers
    nothing changes."""
    found: dict[int, torch.Tensor] = {}
    chosen = [model.blocks[i].attn for i in layers]
    for attn in chosen:
        attn.record = found
    try:
        yield found
    finally:
        for attn in chosen:
            attn.record = None


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.kind = cfg.mlp
        if cfg.mlp == "swiglu":
            self.gate_proj = nn.Linear(cfg.d_model, cfg.hidden, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.hidden, bias=False)
        self.down_proj = nn.Linear(cfg.hidden, cfg.d_model, bias=False)

    def forward(self, x):
        if self.kind == "swiglu":
            h = F.silu(self.gate_proj(x)) * self.up_proj(x)
        elif self.kind == "relu2":
            h = F.relu(self.up_proj(x)).square()
        else:
            h = F.gelu(self.up_proj(x))
        return self.down_proj(h)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.mlp_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, mask, cache))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class Head(nn.Linear):
    """The output head; with ``softcap`` > 0 it bounds the logits to ``(-cap, cap)`` smoothly
    (``cap * tanh(z / cap)``), so every caller of ``model.lm_head`` gets the same logits."""

    def __init__(self, d_model: int, vocab_size: int, softcap: float = 0.0):
        super().__init__(d_model, vocab_size, bias=False)
        self.softcap = softcap

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = super().forward(h)
        return self.softcap * torch.tanh(z / self.softcap) if self.softcap else z


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("GPTConfig.vocab_size must be set (it is taken from the tokenizer)")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.lm_head = Head(cfg.d_model, cfg.vocab_size, cfg.logit_softcap)
        if cfg.tie_embeddings:  # one parameter; saved once, as embed.weight
            self.lm_head.weight = self.embed.weight
            self.register_state_dict_post_hook(_drop_tied_head)
            self.register_load_state_dict_pre_hook(_fill_tied_head)
        self.soft_prompt = nn.Parameter(torch.zeros(cfg.prompt_tokens, cfg.d_model)) if cfg.prompt_tokens else None
        cos, sin = rope_tables(cfg, cfg.context)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if name == "soft_prompt":
                nn.init.normal_(p, std=std)
                continue
            if name.endswith(".bias"):
                nn.init.zeros_(p)
                continue
            if p.dim() < 2:
                continue  # norm weights keep their ones
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=std / math.sqrt(2 * self.cfg.n_layer))
            else:
                nn.init.normal_(p, std=std)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor | None = None, cache: KVCache | None = None, *,
                embeds: torch.Tensor | None = None, return_hidden: bool = False) -> torch.Tensor:
        """Logits ``[batch, time, vocab]`` for token ids ``[batch, time]`` (or for input
        embeddings ``embeds``; ``return_hidden`` gives the final normalised hidden states instead).

        With a cache, the input holds only the new tokens; they are placed after the cached ones.
        A soft prompt, if the model has one, is put before the first input and its positions are
        left out of the output. A cache with per-row ``offsets`` (continuous batching) rotates each
        row by its own positions, slot minus offset.
        """
        x = self.embed(idx) if embeds is None else embeds
        b, t = x.shape[:2]
        start = cache.pos if cache is not None else 0
        n_soft = self.cfg.prompt_tokens if start == 0 else 0
        if n_soft:
            x = torch.cat([self.soft_prompt.to(x.dtype).expand(b, -1, -1), x], dim=1)
            t += n_soft
        if start + t > self.cfg.context:
            raise ValueError(f"sequence of {start + t} tokens exceeds the context of {self.cfg.context}")
        if cache is not None and cache.offsets is not None:  # each row rotated by its own positions
            pos = (torch.arange(start, start + t, device=x.device)[None] - cache.offsets[:, None]).clamp(min=0)
            cos, sin = self.rope_cos[pos][:, None].to(x.dtype), self.rope_sin[pos][:, None].to(x.dtype)
        else:
            cos = self.rope_cos[start:start + t].to(x.dtype)
            sin = self.rope_sin[start:start + t].to(x.dtype)
        masks = self._masks(start, t, x.device, cache)
        for block in self.blocks:
            x = block(x, cos, sin, masks[block.attn.window], cache)
        if cache is not None:
            cache.advance(t)
        h = self.norm(x[:, n_soft:])
        return h if return_hidden else self.lm_head(h)

    def _masks(self, start: int, t: int, device, cache: KVCache | None) -> dict[int, torch.Tensor | None]:
        """Boolean attention masks (True = may attend), keyed by window (0 = dense).

        ``None`` lets SDPA use its fused causal path: dense layers without a cache, and single-
        token decoding, where every cached position is visible; for banded layers it means the
        chunked path (``banded_attention``, which reads the pads from the cache itself): training
        and any multi-token input from position 0. A cache holding left-padded
        prompts (``cache.valid``) gives per-row masks ``[batch, 1, t, keys]`` that hide the pads;
        every position may see itself, so a pad's own row of scores is never empty.
        """
        out: dict[int, torch.Tensor | None] = {}
        padded = cache is not None and cache.valid is not None
        q_pos = torch.arange(start, start + t, device=device)[:, None]
        k_pos = torch.arange(start + t, device=device)[None, :]
        for window in {blk.attn.window for blk in self.blocks}:
            if window == 0 and not padded and (cache is None or t == 1):
                out[window] = None
                continue
            if window and start == 0 and t > 1:
                out[window] = None
                continue
            allowed = k_pos <= q_pos
            if window:
                allowed = allowed & (q_pos - k_pos < window)
            if padded:
                allowed = (allowed & cache.valid[:, None, None, :start + t]) | (k_pos == q_pos)
            out[window] = allowed
        return out

    # -- helpers --------------------------------------------------------------------------------
    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        cfg = self.cfg
        return KVCache(cfg.n_layer, batch, cfg.n_kv_head, max_len or cfg.context, cfg.head_dim,
                       dtype=self.embed.weight.dtype, device=self.embed.weight.device)

    def num_params(self, embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n if embeddings else n - self.embed.weight.numel()


def _drop_tied_head(module, state_dict, prefix, local_metadata) -> None:
    state_dict.pop(prefix + "lm_head.weight", None)


def _fill_tied_head(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors) -> None:
    if prefix + "embed.weight" in state_dict:
        state_dict.setdefault(prefix + "lm_head.weight", state_dict[prefix + "embed.weight"])


def flops_per_token(cfg: GPTConfig, training: bool = True) -> float:
    """Matmul FLOPs per token: 2 per multiply-accumulate forward, 3x that with the backward pass.

    Counts every weight matmul (the embedding lookup is free, the output head is not) plus the
    attention score and value products, 2 * 2 * (n_head * head_dim) * span per layer. The span
    is what the attention kernels are handed: the whole context for dense layers (PaLM's
    accounting, the causal mask's half included), and for banded layers the two key blocks of
    the chunked path (``band_span``: 2 windows, or the context when it fits in one window).
    """
    hd = cfg.head_dim
    attn_w = cfg.d_model * hd * (2 * cfg.n_head + 2 * cfg.n_kv_head)
    mlp_w = cfg.d_model * cfg.hidden * (3 if cfg.mlp == "swiglu" else 2)
    matmul_params = cfg.n_layer * (attn_w + mlp_w) + cfg.d_model * cfg.vocab_size
    attn = sum(4 * cfg.n_head * hd * (band_span(cfg.window, cfg.context) if cfg.is_banded(i) else cfg.context)
               for i in range(cfg.n_layer))
    forward = 2 * matmul_params + attn
    return 3 * forward if training else forward
