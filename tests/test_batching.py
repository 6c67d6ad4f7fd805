"""The batching worker: one row's failure is that row's alone, and the worker survives everything."""
import threading

import pytest
import torch

from fidan.infer.engine import BatchDecoder, SamplingParams, generate
from fidan.model.gpt import GPT, GPTConfig
from fidan.serve.batching import QueueFull, Scheduler, Unavailable


def _model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, context=48, n_layer=1, n_head=2, n_kv_head=2, d_model=16)).eval()


class Collector:
    def __init__(self):
        self.tokens, self.end, self.error, self.done = [], None, None, threading.Event()

    def __call__(self, kind, value):
        if kind == "token":
            self.tokens.append(value)
        elif kind == "end":
            self.end = value
            self.done.set()
        else:
            self.error = value
            self.done.set()


def run_batch(scheduler: Scheduler, rows) -> list[Collector]:
    """Submit all rows while the worker is held, so they start together (static: one batch after
    the blocker's; continuous: they join the blocker's batch at its next step)."""
    hold, entered = threading.Event(), threading.Event()
    blocker = Collector()
    name = "_run" if scheduler.batching == "static" else "_admit"
    real = getattr(scheduler, name)

    def gated(*args):
        if any(job.on_event is blocker for job in args[-1]):
            entered.set()
            hold.wait(10)
        return real(*args)
    setattr(scheduler, name, gated)
    scheduler.submit([1], SamplingParams(temperature=0, max_tokens=1), blocker)
    assert entered.wait(10)
    out = [Collector() for _ in rows]
    for (prompt, params), c in zip(rows, out):
        scheduler.submit(prompt, params, c)
    hold.set()
    for c in out:
        assert c.done.wait(30)
    setattr(scheduler, name, real)
    return out


ROWS = [([1, 2, 3], SamplingParams(temperature=0, max_tokens=9)), ([4], SamplingParams(temperature=0, max_tokens=5)),
        ([5, 6], SamplingParams(temperature=1.0, seed=3, max_tokens=7)),
        ([7, 8, 9, 10], SamplingParams(temperature=0, max_tokens=12))]


def alone(model, rows):
    return [list(generate(model, p, s)) for p, s in rows]


BOTH = pytest.mark.parametrize("batching", ["continuous", "static"])


@BOTH
def test_a_row_with_a_seed_torch_refuses_fails_alone(batching):
    model = _model()
    s = Scheduler(model, max_batch=8, batching=batching)
    rows = ROWS + [([3, 3], SamplingParams(temperature=1.0, seed=2**70, max_tokens=4))]
    out = run_batch(s, rows)
    assert [c.tokens for c in out[:4]] == alone(model, ROWS) and all(c.error is None for c in out[:4])
    assert out[4].error is not None and out[4].tokens == []
    if batching == "static":
        assert s.largest == 5 and s.batches == 2 and s.alive
    else:  # the five joined the blocker's running batch
        assert s.largest == 6 and s.batches == 1 and s.joined == 5 and s.alive


@BOTH
def test_a_row_whose_sampling_fails_mid_way_fails_alone(monkeypatch, batching):
    from fidan.infer import engine
    model = _model()
    real, calls = engine.sample_rows, {"ok": 0}

    def sample_rows(logits, params, generators, seen=None):
        if any(p.seed == 99 for p in params):
            if calls["ok"] == 2:  # after two tokens were delivered (and from then on)
                raise RuntimeError("probability tensor contains nan")
            calls["ok"] += 1
        return real(logits, params, generators, seen)
    monkeypatch.setattr(engine, "sample_rows", sample_rows)
    s = Scheduler(model, max_batch=8, batching=batching)
    out = run_batch(s, ROWS + [([2], SamplingParams(temperature=1.0, seed=99, max_tokens=10))])
    assert [c.tokens for c in out[:4]] == alone(model, ROWS)
    assert "nan" in str(out[4].error) and len(out[4].tokens) == 2


@BOTH
@pytest.mark.parametrize("when", ["prefill", "decode"])
def test_a_failing_shared_step_continues_each_row_alone(monkeypatch, when, batching):
    """The forward pass of the whole batch fails once (at prefill, or at a later decoding step):
    each request then runs alone and gives exactly what it gives alone, random rows included."""
    model = _model()
    expected = alone(model, ROWS)
    real, state = GPT.forward, {"calls": 0, "failed": False}

    def forward(self, ids, cache=None, **kw):
        state["calls"] += 1
        batched = ids.shape[0] > 1
        if batched and not state["failed"] and (when == "prefill" or ids.shape[1] == 1 and state["calls"] > 3):
            state["failed"] = True
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(self, ids, cache, **kw)
    monkeypatch.setattr(GPT, "forward", forward)
    s = Scheduler(model, max_batch=8, batching=batching)
    out = run_batch(s, ROWS)
    assert state["failed"]
    assert [c.tokens for c in out] == expected and all(c.error is None for c in out)
    assert [c.end for c in out] == ["length" if len(t) == p.max_tokens else "stop" for t, (_, p) in zip(expected, ROWS)]


@BOTH
def test_a_request_that_fails_alone_too_gets_the_error(monkeypatch, batching):
    model = _model()
    real = GPT.forward

    def forward(self, ids, cache=None, **kw):
        if cache is not None and cache.pos == 0 and any(13 in row for row in ids.tolist()):  # a prompt with 13
            raise RuntimeError("bad row")
        return real(self, ids, cache, **kw)
    monkeypatch.setattr(GPT, "forward", forward)
    s = Scheduler(model, max_batch=8, batching=batching)
    out = run_batch(s, ROWS[:2] + [([13], SamplingParams(temperature=0, max_tokens=4))])
    assert [c.tokens for c in out[:2]] == alone(model, ROWS[:2])
    assert "bad row" in str(out[2].error)


@BOTH
def test_a_callback_that_raises_cancels_only_its_request(batching):
    model = _model()
    s = Scheduler(model, max_batch=8, batching=batching)

    def rude(kind, value):
        raise RuntimeError("event loop closed")
    ok = Collector()
    s.submit([1, 2], SamplingParams(temperature=0, max_tokens=6), rude)
    s.submit([1, 2], SamplingParams(temperature=0, max_tokens=6), ok)
    assert ok.done.wait(30) and ok.error is None and len(ok.tokens) == 6
    assert s.alive


@BOTH
def test_the_queue_is_bounded_and_a_closed_scheduler_refuses(batching):
    s = Scheduler(_model(), max_batch=1, max_queue=2, batching=batching)
    params = SamplingParams(temperature=0, max_tokens=2)
    with pytest.raises(QueueFull):
        s.submit_many([([1], params, Collector())] * 3)
    s.close()
    s.thread.join(10)
    assert not s.alive
    with pytest.raises(Unavailable):
        s.submit([1], params, Collector())


def test_training_rollouts_still_see_errors():
    """Without isolate (RLHF rollouts), a failing row raises as before instead of ending quietly."""
    with pytest.raises((RuntimeError, ValueError)):
        BatchDecoder(_model(), [[1], [2]], [SamplingParams(), SamplingParams(seed=2**70)])


class Log:
    """One ordered record of every request's events, across requests."""

    def __init__(self):
        self.events, self.lock = [], threading.Lock()

    def collector(self, name: str, on_token=None) -> Collector:
        log = self

        class Logged(Collector):
            def __call__(self, kind, value):
                with log.lock:
                    log.events.append((name, kind))
                super().__call__(kind, value)
                if kind == "token" and on_token is not None:
                    on_token(len(self.tokens))
        return Logged()

    def first(self, name: str, kind: str) -> int:
        return next(i for i, e in enumerate(self.events) if e == (name, kind))


@BOTH
def test_a_request_arriving_mid_batch_starts_before_the_batch_ends(batching):
    model = _model()
    s = Scheduler(model, max_batch=8, batching=batching)
    log = Log()
    late = log.collector("late")

    def arrive(n):  # the long request's third token: a new request comes in
        if n == 3:
            s.submit([4, 5], SamplingParams(temperature=0, max_tokens=4), late)
    long = log.collector("long", arrive)
    s.submit([1, 2, 3], SamplingParams(temperature=0, max_tokens=30), long)
    assert long.done.wait(30) and late.done.wait(30)
    assert long.tokens == alone(model, [([1, 2, 3], SamplingParams(temperature=0, max_tokens=30))])[0]
    assert late.tokens == alone(model, [([4, 5], SamplingParams(temperature=0, max_tokens=4))])[0]
    if batching == "continuous":   # joined at the next step: its answer is out before the long one ends
        assert log.first("late", "token") < log.first("long", "end")
        assert log.first("late", "end") < log.first("long", "end")
        assert s.joined == 1 and s.batches == 1
    else:                          # waited for the next batch
        assert log.first("late", "token") > log.first("long", "end")


def test_a_finished_row_frees_its_slot_at_once():
    """Two slots: the short request's end lets the waiting one in while the long one still runs."""
    model = _model()
    s = Scheduler(model, max_batch=2)
    log = Log()
    waiting = log.collector("waiting")

    def arrive(n):
        if n == 1:
            s.submit([6], SamplingParams(temperature=0, max_tokens=5), waiting)
    long, short = log.collector("long"), log.collector("short", arrive)
    s.submit_many([([1, 2, 3], SamplingParams(temperature=0, max_tokens=30), long),
                   ([7, 8], SamplingParams(temperature=0, max_tokens=3), short)])
    assert long.done.wait(30) and short.done.wait(30) and waiting.done.wait(30)
    assert log.first("short", "end") < log.first("waiting", "token") < log.first("long", "end")
    assert s.largest == 2 and s.batches == 1
    assert waiting.tokens == alone(model, [([6], SamplingParams(temperature=0, max_tokens=5))])[0]
