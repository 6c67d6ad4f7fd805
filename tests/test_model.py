import pytest
import torch
import torch.nn.functional as F

from fidan.model import gpt
from fidan.model.gpt import GPT, GPTConfig, band_span, banded_attention, flops_per_token


def make(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(**{"vocab_size": 97, "context": 32, "n_layer": 2, "n_head": 4, "n_kv_head": 4,
                       "d_model": 32, **kw})
    return GPT(cfg).eval()


@pytest.mark.parametrize("kw", [{}, {"sparse_every": 2, "window": 4}, {"n_kv_head": 2, "qk_norm": True},
                                {"mlp": "relu2"}, {"mlp": "gelu"}])
def test_kv_cache_matches_full_forward(kw):
    model = make(**kw)
    x = torch.randint(0, 97, (2, 24))
    with torch.no_grad():
        full = model(x)
        cache = model.new_cache(2)
        parts = [model(x[:, :10], cache)] + [model(x[:, i:i + 1], cache) for i in range(10, 24)]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)


def test_causal_future_tokens_do_not_leak():
    model = make()
    x = torch.randint(0, 97, (1, 20))
    y = x.clone()
    y[0, 15:] = (y[0, 15:] + 1) % 97
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[:, :15], b[:, :15], atol=1e-6)
    assert not torch.allclose(a[:, 15:], b[:, 15:])


def test_banded_layer_sees_only_its_window():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=97, context=32, n_layer=1, n_head=2, n_kv_head=2, d_model=16,
                    sparse_every=1, window=4)
    model = GPT(cfg).eval()
    assert cfg.is_banded(0)
    x = torch.randint(0, 97, (1, 16))
    y = x.clone()
    y[0, 0] = (y[0, 0] + 1) % 97
    with torch.no_grad():
        a, b = model(x), model(y)
    assert not torch.allclose(a[:, 3], b[:, 3])          # position 3 still sees position 0
    assert torch.allclose(a[:, 4:], b[:, 4:], atol=1e-6)  # positions >= window do not


def dense_band(q, k, v, window, valid=None, dropout_p=0.0):
    """The band as dense attention with a [t, t] mask: what banded layers ran before the chunked path."""
    pos = torch.arange(q.shape[2])
    mask = (pos[None, :] <= pos[:, None]) & (pos[:, None] - pos[None, :] < window)
    if valid is not None:
        mask = (mask & valid[:, None, None, :]) | (pos[None, :] == pos[:, None])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("t, window", [(64, 16), (70, 16), (33, 4), (12, 16), (17, 16)])
@pytest.mark.parametrize("padded", [False, True])
def test_banded_attention_equals_dense_masked_forward_and_backward(t, window, padded):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, t, 8, requires_grad=True) for _ in range(3))
    valid = None
    if padded:  # row 1 left-padded by 5 positions, as batched prompts are
        valid = torch.ones(2, t, dtype=torch.bool)
        valid[1, :5] = False
    grad = torch.randn(2, 3, t, 8)
    want = dense_band(q, k, v, window, valid)
    want_grads = torch.autograd.grad(want, (q, k, v), grad)
    got = banded_attention(q, k, v, window, valid)
    got_grads = torch.autograd.grad(got, (q, k, v), grad)
    assert torch.allclose(got, want, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        assert torch.allclose(g, w, atol=1e-5)


@pytest.mark.parametrize("t, window", [(33, 4), (40, 16)])
def test_explicit_attention_of_a_banded_layer_keeps_its_window(t, window):
    """GATE's explicit path (probabilities kept) computes what the chunked band computes."""
    from fidan.model.gpt import explicit_attention
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 3, t, 8) for _ in range(3))
    y, probs = explicit_attention(q, k, v, None, 0.0, window)
    assert torch.allclose(y, banded_attention(q, k, v, window), atol=1e-5)
    far = torch.ones(t, t, dtype=torch.bool).tril(-window)   # keys at least ``window`` behind
    assert float(probs[..., far].abs().max()) == 0.0


def test_banded_model_equals_dense_masked_model(monkeypatch):
    """The whole model (GQA, a soft prompt, banded and dense layers), training forward and
    backward and a left-padded cached prefill, against the same model on the dense-masked band."""
    model = make(n_layer=3, n_kv_head=2, sparse_every=2, window=4, prompt_tokens=2).train()
    x = torch.randint(0, 97, (2, 23))

    def run():
        model.zero_grad()
        logits = model(x)
        logits.square().mean().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.eval()
        with torch.no_grad():
            cache = model.new_cache(2)
            cache.valid = torch.ones(2, 32, dtype=torch.bool)
            cache.valid[0, :6] = False
            prefill = model(x[:, :20], cache)
            step = model(x[:, 20:21], cache)
        model.train()
        return logits, grads, prefill, step

    got = run()
    monkeypatch.setattr(gpt, "banded_attention", dense_band)
    want = run()
    assert torch.allclose(got[0], want[0], atol=1e-5)
    assert all(torch.allclose(g, w, atol=1e-5) for g, w in zip(got[1], want[1]))
    assert torch.allclose(got[2], want[2], atol=1e-5)
    assert torch.allclose(got[3], want[3], atol=1e-5)


def test_banded_flops_credit_the_two_key_blocks_the_chunked_path_runs():
    cfg = GPTConfig(vocab_size=64, context=1024, n_layer=2, n_head=4, d_model=64, sparse_every=2, window=128)
    dense = GPTConfig(**{**cfg.to_dict(), "sparse_every": 0})
    # layer 1's attention: 4 * width * 256 keys (blocks of 128 and the one before) instead of 1024
    assert flops_per_token(dense, training=False) - flops_per_token(cfg, training=False) == 4 * 64 * (1024 - 256)
    assert band_span(128, 1024) == 256
    assert band_span(128, 100) == 100               # one window covers it: plain causal attention
    assert band_span(4, 10) == 2 * 4 * 12 / 10      # the tail padded to a whole block


def test_logit_softcap_bounds_the_logits():
    plain = make()
    capped = make(logit_softcap=2.0)
    capped.load_state_dict(plain.state_dict())
    with torch.no_grad():
        plain.lm_head.weight.mul_(200)   # logits far beyond the cap
        capped.lm_head.weight.mul_(200)
        x = torch.randint(0, 97, (2, 12))
        z, c = plain(x), capped(x)
    assert z.abs().max() > 10
    assert c.abs().max() <= 2.0
    assert torch.allclose(c, 2.0 * torch.tanh(z / 2.0), atol=1e-6)


def test_qk_norm_normalises_queries_and_keys():
    model = make(qk_norm=True)
    seen = []
    for name in ("q_norm", "k_norm"):
        getattr(model.blocks[0].attn, name).register_forward_hook(lambda m, i, o: seen.append((i[0], o)))
    with torch.no_grad():
        model.blocks[0].attn.q_proj.weight.mul_(30)
        model.blocks[0].attn.k_proj.weight.mul_(10)
        model(torch.randint(0, 97, (1, 10)))
    for raw, normed in seen:   # per head, over its dimensions: RMS 1 (the norm's weights start at one)
        assert raw.square().mean(-1).sqrt().std() > 0.01
        assert torch.allclose(normed.square().mean(-1).sqrt(), torch.ones(()), atol=5e-3)  # eps


def test_relu2_mlp_is_squared_relu():
    model = make(mlp="relu2")
    mlp = model.blocks[0].mlp
    x = torch.randn(3, 32)
    with torch.no_grad():
        want = mlp.down_proj(torch.relu(mlp.up_proj(x)) ** 2)
        assert torch.allclose(mlp(x), want)


def test_alternating_layers():
    cfg = GPTConfig(vocab_size=10, n_layer=4, sparse_every=2)
    assert [cfg.is_banded(i) for i in range(4)] == [False, True, False, True]
    assert not any(GPTConfig(vocab_size=10, n_layer=4).is_banded(i) for i in range(4))


def test_parameter_and_flop_counts():
    model = make()
    cfg = model.cfg
    d, h, v, L, T = cfg.d_model, cfg.hidden, cfg.vocab_size, cfg.n_layer, cfg.context
    per_layer = 4 * d * d + 3 * d * h + 2 * d
    assert model.num_params() == v * d + L * per_layer + d + d * v
    assert model.num_params(embeddings=False) == model.num_params() - v * d
    matmul = L * (4 * d * d + 3 * d * h) + d * v
    assert flops_per_token(cfg) == 3 * (2 * matmul + L * 4 * d * T)
    assert flops_per_token(cfg, training=False) == 2 * matmul + L * 4 * d * T


def test_context_overflow_is_refused():
    model = make()
    with pytest.raises(ValueError, match="exceeds the context"):
        model(torch.zeros(1, 33, dtype=torch.long))
