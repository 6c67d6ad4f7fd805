import pytest
import torch

from fidan.infer.engine import (
    BatchDecoder,
    SamplingParams,
    TextStream,
    filter_logits,
    generate,
    greedy_many,
    sample_next,
    sample_rows,
    stream_text,
)
from fidan.model.gpt import GPT, GPTConfig
from fidan.tokenizer.bpe import train_tokenizer


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.85)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.01)).tolist() == [[True, False, False, False]]
    for tiny in (1e-300, 5e-324):  # round to 0 in float32: the top token must still stay
        assert torch.isfinite(filter_logits(logits, top_p=tiny)).tolist() == [[True, False, False, False]]


def test_tiny_temperatures_decode_greedily():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9]])
    for t in (1e-300, 5e-324, 1e-5):
        assert sample_next(logits, SamplingParams(temperature=t), None).tolist() == [1]
    with pytest.raises(ValueError, match="finite"):
        sample_next(logits, SamplingParams(temperature=float("nan")), None)


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
    repl(chat_model, tok, SamplingParams(temperature=0, max_tokens=3), "sft", inp=io.StringIO("/probs\nhi\n"),
         out=buffer)
    text = buffer.getvalue()
    assert "(next-token probabilities on)" in text and text.count("  [") == 3 and text.count(" | ") == 6


def test_repetition_penalty_makes_seen_tokens_less_likely():
    from fidan.infer.engine import penalize_repeats
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    out = penalize_repeats(logits, [0, 1, 1], 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]
    assert torch.equal(penalize_repeats(logits, [0], 1.0), logits)
    model = _model()
    plain = list(generate(model, [1, 2], SamplingParams(temperature=0, max_tokens=20)))
    varied = list(generate(model, [1, 2], SamplingParams(temperature=0, max_tokens=20, repetition_penalty=3.0)))
    assert len(set(varied)) > len(set(plain))


def _batch_model(window: int):
    torch.manual_seed(1)
    cfg = GPTConfig(vocab_size=64, context=48, n_layer=2, n_head=4, n_kv_head=2, d_model=32,
                    sparse_every=2 if window else 0, window=window or 16)
    return GPT(cfg).eval()


def _drain(decoder: BatchDecoder, rows: int) -> list[list[int]]:
    out = [[] for _ in range(rows)]
    while not decoder.done:
        for row, token in decoder.step().items():
            if token is not None:
                out[row].append(token)
    return out


@pytest.mark.parametrize("window", [0, 4])
def test_batched_decoding_matches_one_at_a_time(window):
    """Prompts of different lengths, left-padded into one batch, give the tokens each gives alone,
    including rows that finish early (smaller max_tokens) and leave the batch."""
    model = _batch_model(window)
    prompts = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [10], [11, 12, 13, 14], [5, 5]]
    params = [SamplingParams(temperature=0, max_tokens=n) for n in (12, 3, 20, 7)]
    batched = _drain(BatchDecoder(model, prompts, params), len(prompts))
    alone = [list(generate(model, p, s)) for p, s in zip(prompts, params)]
    assert batched == alone
    assert [len(x) for x in batched] == [12, 3, 20, 7]


def test_batched_rows_keep_their_own_seed_and_stop_tokens():
    model = _batch_model(0)
    sampled = SamplingParams(temperature=1.0, max_tokens=10, seed=5)
    alone = list(generate(model, [3, 4], sampled))
    stop = SamplingParams(temperature=0, max_tokens=10)
    greedy = list(generate(model, [7], stop))
    stopped = SamplingParams(temperature=0, max_tokens=10, stop_ids={greedy[4]})
    out = _drain(BatchDecoder(model, [[3, 4], [7, 8, 9], [7]], [sampled, stop, stopped]), 3)
    assert out[0] == alone
    assert out[2] == greedy[:greedy.index(greedy[4])]


def test_cancelled_row_ends_and_the_others_continue():
    model = _batch_model(0)
    decoder = BatchDecoder(model, [[1, 2], [3]], [SamplingParams(temperature=0, max_tokens=8)] * 2)
    decoder.step()
    decoder.cancel(0)
    ended = decoder.step()
    assert ended[0] is None and ended[1] is not None
    assert decoder.rows == [1]


def test_stop_strings_are_caught_across_token_boundaries():
    tok = train_tokenizer(["Merhaba dünya. Hello world. " * 20], vocab_size=300)
    ids = tok.encode("Hello world. Merhaba dünya. The end")
    stream = TextStream(tok, ["dünya"])
    pieces = [stream.push(i) for i in ids]
    assert "".join(pieces) + stream.flush() == "Hello world. Merhaba "
    assert stream.stopped
    plain = TextStream(tok)
    assert "".join(plain.push(i) for i in ids) + plain.flush() == "Hello world. Merhaba dünya. The end"


def test_stream_text_applies_stop_strings():
    tok = train_tokenizer(["abc def ghi " * 30], vocab_size=280)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context=32, n_layer=1, n_head=2, n_kv_head=2, d_model=16))
    full = "".join(stream_text(model, tok, [tok.bos], SamplingParams(temperature=0, max_tokens=12)))
    assert len(full) > 3
    stop = full[2:4]
    cut = "".join(stream_text(model, tok, [tok.bos], SamplingParams(temperature=0, max_tokens=12, stop=[stop])))
    assert cut == full[:full.index(stop)]


MIXED = [SamplingParams(temperature=0, max_tokens=14),
         SamplingParams(temperature=1.0, top_k=5, seed=11, max_tokens=9),
         SamplingParams(temperature=0.7, top_p=0.8, seed=12, max_tokens=16, repetition_penalty=1.5),
         SamplingParams(temperature=1.3, top_k=20, top_p=0.9, seed=13, max_tokens=6),
         SamplingParams(temperature=0, repetition_penalty=2.0, max_tokens=11),
         SamplingParams(temperature=0.9, seed=14, max_tokens=12)]


def test_vectorised_sampling_matches_each_row_alone_and_keeps_the_filters():
    torch.manual_seed(0)
    logits = torch.randn(len(MIXED), 64) * 3
    seen = torch.rand(len(MIXED), 64) < 0.2
    together = sample_rows(logits, MIXED, [p.generator("cpu") for p in MIXED], seen)
    g = [p.generator("cpu") for p in MIXED]
    alone = [int(sample_rows(logits[i:i + 1], [p], [g[i]], seen[i:i + 1])[0]) for i, p in enumerate(MIXED)]
    assert together.tolist() == alone
    row = logits[3:4] / 1.3
    support = set(torch.isfinite(filter_logits(row, top_k=20, top_p=0.9))[0].nonzero().flatten().tolist())
    g = torch.Generator().manual_seed(0)
    drawn = {int(sample_rows(logits[3:4], [MIXED[3]], [g])[0]) for _ in range(400)}
    assert drawn == support and len(support) > 1


def test_unfiltered_rows_draw_from_the_softmax_without_sorting():
    """Rows with neither top-k nor top-p draw over the vocabulary in id order: the frequencies
    follow the softmax, and a token with no mass is never drawn."""
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    logits = probs.log().expand(8, 4).contiguous()   # log(0) = -inf: no mass
    params = [SamplingParams(temperature=1.0, seed=i) for i in range(8)]
    gens = [p.generator("cpu") for p in params]
    drawn = torch.cat([sample_rows(logits, params, gens) for _ in range(500)])
    freq = torch.bincount(drawn, minlength=4).float() / drawn.numel()
    assert freq[1] == 0 and torch.allclose(freq, probs, atol=0.02)   # 4,000 draws: sd of a share <= 0.008


@pytest.mark.parametrize("window", [0, 4])
def test_rows_joining_and_leaving_a_running_batch_give_what_they_give_alone(window):
    """Rows join between steps (longer and shorter prompts than the batch holds, so both caches get
    pads in front), others end early and leave, the cache drops its dead slots: every row's tokens
    are those it gives alone, sampled rows (own seed, top-k, top-p, penalty) included."""
    model = _batch_model(window)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], [20, 21], [9] * 25, [30], [8, 7]]
    alone = [list(generate(model, p, s)) for p, s in zip(prompts, MIXED)]
    decoder = BatchDecoder(model, prompts[:1], MIXED[:1])
    out: dict[int, list[int]] = {}
    steps, joins, shifts = 0, {2: [1, 2], 5: [3], 9: [4, 5]}, []
    real_shift = decoder.cache.__class__.shift

    def shift(self, d, length=None):
        shifts.append(d)
        return real_shift(self, d, length)
    decoder.cache.__class__.shift = shift
    try:
        while not decoder.done or steps in joins:
            if steps in joins:
                ids = decoder.add([prompts[i] for i in joins[steps]], [MIXED[i] for i in joins[steps]])
                assert ids == joins[steps]
            for row, token in decoder.step().items():
                if token is not None:
                    out.setdefault(row, []).append(token)
            steps += 1
    finally:
        decoder.cache.__class__.shift = real_shift
    assert [out.get(i, []) for i in range(len(prompts))] == alone
    assert any(d > 0 for d in shifts) and any(d < 0 for d in shifts)   # pads added, dead slots dropped


def test_batched_greedy_completion_gives_the_replies_one_at_a_time_gives():
    from fidan.infer.scoring import complete, complete_many
    tok = train_tokenizer(["the baker lives in town. two plus three is five."] * 5, vocab_size=300)
    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context=48, n_layer=2, n_head=2, n_kv_head=2, d_model=32)).eval()
    prompts = ["the baker", "two plus three is", "town.", "the baker lives in town. two plus", "five"]
    limits = [12, 5, 20, 8, 1]
    whole = [complete(model, tok, p, n) for p, n in zip(prompts, limits)]
    stop = (whole[2][4:6],)   # a stop string inside the longest reply
    one = [complete(model, tok, p, n, stop=stop) for p, n in zip(prompts, limits)]
    assert len(set(one)) == len(one) and len(one[2]) < len(whole[2])
    # rows of different lengths and limits, in batches of 2 (a batch ends with rows still running)
    assert complete_many(model, tok, prompts, limits, stop=stop, batch=2) == one
    assert complete_many(model, tok, prompts, limits, stop=stop) == one
    assert complete_many(model, tok, prompts, limits) == whole
def test_greedy_many_gives_each_prompt_what_it_gives_alone_in_its_order():
    """Prompts sorted by length into small batches (so a batch boundary falls between them), each
    with its own reply length and a stop token: the replies are generate's, in the given order."""
    model = _batch_model(4)
    # the last prompt leaves no room for its reply in the context of 48: generate slides for it
    prompts = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [10], [11, 12, 13, 14], [5, 5], [7, 1, 7], list(range(1, 41))]
    limits = [12, 3, 0, 7, 9, 20]
    alone = [list(generate(model, p, SamplingParams(temperature=0, max_tokens=n))) for p, n in zip(prompts, limits)]
    stop = alone[0][4]
    expect = [list(generate(model, p, SamplingParams(temperature=0, max_tokens=n, stop_ids={stop})))
              for p, n in zip(prompts, limits)]
    assert greedy_many(model, prompts, limits, set(), batch=2) == alone
    assert greedy_many(model, prompts, limits, {stop}, batch=2) == expect
    assert expect[0] == alone[0][:4] and expect[2] == []
