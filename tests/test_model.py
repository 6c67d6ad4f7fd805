import pytest
import torch

from fidan.model.gpt import GPT, GPTConfig, flops_per_token


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
