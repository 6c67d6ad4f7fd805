import torch

from fidan.model.gpt import GPT, GPTConfig
from fidan.serve.engine import SamplingParams, TextStream, filter_logits, generate
from fidan.tokenizer.bpe import train_tokenizer


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.85)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.01)).tolist() == [[True, False, False, False]]


def _model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, context=16, n_layer=1, n_head=2, n_kv_head=2, d_model=16))


def test_greedy_matches_argmax_and_seed_reproduces():
    model = _model()
    greedy = list(generate(model, [1, 2, 3], SamplingParams(temperature=0, max_tokens=30)))
    ids = [1, 2, 3]
    with torch.no_grad():
        for _ in range(13):  # without a cache, until the 16-token context is full
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert greedy[:13] == ids[3:]
    a = list(generate(model, [1], SamplingParams(temperature=1.0, max_tokens=20, seed=7)))
    b = list(generate(model, [1], SamplingParams(temperature=1.0, max_tokens=20, seed=7)))
    assert a == b and len(a) == 20  # runs past the 16-token context without failing


def test_stop_ids_end_generation():
    model = _model()
    first = list(generate(model, [1], SamplingParams(temperature=0, max_tokens=5)))
    out = list(generate(model, [1], SamplingParams(temperature=0, max_tokens=5, stop_ids={first[2]})))
    assert out == first[:first.index(first[2])]


def test_text_stream_never_splits_a_character():
    tok = train_tokenizer(["abc"] * 5, vocab_size=300)  # no merges for Turkish: one token per byte
    text = "Günaydın, şöyle böyle 🙂"
    ids = tok.encode(text)
    stream = TextStream(tok)
    pieces = [stream.push(i) for i in ids]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_trace_sees_each_steps_distribution_and_chat_shows_candidates():
    import io

    from fidan.serve.chat import repl
    model = _model()
    seen = []
    out = list(generate(model, [1, 2], SamplingParams(temperature=0, max_tokens=6), trace=seen.append))
    assert len(seen) == len(out) == 6
    assert all(abs(float(p.sum()) - 1) < 1e-4 and int(p.argmax()) == t for p, t in zip(seen, out))
    tok = train_tokenizer(["hello there"] * 5, vocab_size=300)
    torch.manual_seed(0)
    chat_model = GPT(GPTConfig(vocab_size=320, context=64, n_layer=1, n_head=2, n_kv_head=2, d_model=16))
    buffer = io.StringIO()
    repl(chat_model, tok, SamplingParams(temperature=0, max_tokens=3), "sft", inp=io.StringIO("/probs\nhi\n"), out=buffer)
    text = buffer.getvalue()
    assert "(next-token probabilities on)" in text and text.count("  [") == 3 and text.count(" | ") == 6


def test_repetition_penalty_makes_seen_tokens_less_likely():
    from fidan.serve.engine import penalize_repeats
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    out = penalize_repeats(logits, [0, 1, 1], 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]
    assert torch.equal(penalize_repeats(logits, [0], 1.0), logits)
    model = _model()
    plain = list(generate(model, [1, 2], SamplingParams(temperature=0, max_tokens=20)))
    varied = list(generate(model, [1, 2], SamplingParams(temperature=0, max_tokens=20, repetition_penalty=3.0)))
    assert len(set(varied)) > len(set(plain))
