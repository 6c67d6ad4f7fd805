"""The server under bad input: every error is JSON in OpenAI's shape with the right status, and a
request that fails (at validation or while decoding) fails alone while its batch mates finish."""
import asyncio
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fidan.infer import engine
from fidan.serve.server import ServerLimits, create_app
from fidan.tokenizer.bpe import train_tokenizer
from test_server import serving, tiny_model

pytest.importorskip("uvicorn")
KEY = "k"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
HI = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(["Merhaba dünya! Hello world, how are you today?"] * 30, vocab_size=320)


@pytest.fixture(scope="module")
def app(tok, tmp_path_factory):
    prefs = tmp_path_factory.mktemp("prefs") / "preferences.jsonl"
    limits = ServerLimits(max_messages=4, max_tokens=12, max_body_bytes=200_000, max_answer_chars=1000)
    return create_app(tiny_model(), tok, "m", api_key=KEY, limits=limits, preference_file=prefs, max_batch=16)


@pytest.fixture(scope="module")
def server(app):
    with serving(app) as url:
        yield url


def chat(**kw) -> dict:
    return {"messages": HI, "max_tokens": 6, "temperature": 0, **kw}


def raw(text: str) -> str:  # a body that json.dumps would not write (NaN, lone surrogates, ...)
    return text


C, P, X = "/v1/chat/completions", "/v1/completions", "/v1/preferences"
BAD = [  # (method, route, body, status, param or words in the message)
    ("POST", C, chat(seed=2**70), 400, "seed"),
    ("POST", C, chat(seed=-1), 400, "seed"),
    ("POST", C, raw('{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}'), 400, "temperature"),
    ("POST", C, raw('{"messages": [{"role": "user", "content": "x"}], "temperature": Infinity}'), 400, "temperature"),
    ("POST", C, raw('{"messages": [{"role": "user", "content": "x"}], "temperature": 1e400}'), 400, "temperature"),
    ("POST", C, chat(temperature=-0.1), 400, "temperature"),
    ("POST", C, chat(temperature=2.5), 400, "temperature"),
    ("POST", C, chat(temperature="hot"), 422, "temperature"),
    ("POST", C, chat(top_p=0), 400, "top_p"),
    ("POST", C, chat(top_p=1.5), 400, "top_p"),
    ("POST", C, raw('{"messages": [{"role": "user", "content": "x"}], "top_p": NaN}'), 400, "top_p"),
    ("POST", C, chat(top_k=-1), 400, "top_k"),
    ("POST", C, chat(top_k=2**80), 400, "top_k"),
    ("POST", C, chat(max_tokens=0), 400, "max_tokens"),
    ("POST", C, chat(max_tokens=2**70), 400, "max_tokens"),
    ("POST", C, chat(max_completion_tokens=-3), 400, "max_completion_tokens"),
    ("POST", C, chat(n=0), 400, "n"),
    ("POST", C, chat(n=9), 400, "n"),
    ("POST", C, chat(n=10**30), 400, "n"),
    ("POST", C, chat(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    ("POST", C, chat(stop="x" * 65), 400, "stop"),
    ("POST", C, chat(stop=[1, 2]), 422, "stop.0"),
    ("POST", C, raw('{"messages": [{"role": "user", "content": "x"}], "stop": "\\ud800"}'), 400, "stop.0"),
    ("POST", C, chat(repetition_penalty=0.5), 400, "repetition_penalty"),
    ("POST", C, chat(frequency_penalty=3), 400, "frequency_penalty"),
    ("POST", C, raw('{"messages": [{"role": "user", "content": "\\ud800"}]}'), 400, "messages.0.content"),
    ("POST", C, raw('{"messages": [{"role": "user", "content": "ok \\udfff ok"}]}'), 400, "messages.0.content"),
    ("POST", C, raw('{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud83d"}]}]}'), 400,
     "messages.0.content"),
    ("POST", C, chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
     400, "messages.0.content"),
    ("POST", C, chat(messages=[{"role": "user", "content": ["text"]}]), 400, "messages.0.content"),
    ("POST", C, chat(messages=[{"role": "user", "content": [{"type": "text"}]}]), 400, "messages.0.content"),
    ("POST", C, chat(messages=[{"role": "user", "content": 5}]), 422, "messages.0.content"),
    ("POST", C, chat(messages=[{"role": "user"}]), 422, "messages.0.content"),
    ("POST", C, chat(messages=[{"role": "robot", "content": "x"}]), 400, "messages.0.role"),
    ("POST", C, chat(messages=[]), 400, "messages"),
    ("POST", C, chat(messages="hi"), 422, "messages"),
    ("POST", C, {"max_tokens": 3}, 422, "messages"),
    ("POST", C, chat(messages=HI * 5), 400, "too many messages"),
    ("POST", C, chat(messages=[{"role": "user", "content": "word " * 200}]), 400, "context"),
    ("POST", C, chat(model="gpt-4"), 404, "model"),
    ("POST", C, raw('{"model": "\\ud800", "messages": [{"role": "user", "content": "x"}]}'), 400, "model"),
    ("POST", C, raw("[1, 2]"), 422, "body"),
    ("POST", C, raw("not json"), 400, "not valid JSON"),
    ("POST", C, raw('{"messages": [{"role": "user", "content": "x"}'), 400, "not valid JSON"),
    ("POST", C, raw(""), 422, "body"),
    ("POST", C, raw("[" * 50_000), 400, "JSON"),
    ("POST", P, {"prompt": 5}, 422, "prompt"),
    ("POST", P, {}, 422, "prompt"),
    ("POST", P, raw('{"prompt": "a\\ud800b"}'), 400, "prompt"),
    ("POST", P, {"prompt": "x" * 40_000}, 400, "prompt longer"),
    ("POST", P, {"prompt": "Hello", "seed": 2**64}, 400, "seed"),
    ("GET", "/v1/nothing", None, 404, "no route"),
    ("POST", "/v1/chat", chat(), 404, "no route"),
    ("GET", C, None, 405, "not allowed"),
    ("PUT", "/v1/models", None, 405, "not allowed"),
    ("POST", X, {"prompt": "x", "a": "1", "b": "2", "choice": "maybe"}, 400, "choice"),
    ("POST", X, {"prompt": "x", "a": "1" * 1001, "b": "2", "choice": "a"}, 400, "a"),
    ("POST", X, {"prompt": [], "a": "1", "b": "2", "choice": "a"}, 400, "prompt"),
    ("POST", X, {"prompt": "x", "a": "1", "b": "2", "choice": "a", "models": ["m"] * 9}, 400, "models"),
    ("POST", X, {"prompt": "x", "a": "1", "b": "2", "choice": "a", "models": ["m" * 201]}, 400, "models.0"),
    ("POST", X, raw('{"prompt": "x", "a": "\\ud800", "b": "2", "choice": "a"}'), 400, "a"),
    ("POST", X, {"a": "1", "b": "2", "choice": "a"}, 422, "prompt"),
    ("POST", X, {"prompt": "x", "a": "1", "b": "2", "choice": "a"}, 403, "consent"),
    ("POST", X, {"prompt": "x", "a": "1", "b": "2", "choice": "a", "user": "../x", "consent": True}, 400, "user"),
]


def check_error(r: httpx.Response, status: int, where: str | None, secret_paths=()) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "\"detail\"" not in r.text and "Traceback" not in r.text
    assert body["error"]["type"] in ("invalid_request_error", "rate_limit_error", "server_error")
    if where:
        assert where == body["error"]["param"] or where in body["error"]["message"], body
    for path in secret_paths:
        assert str(path) not in r.text
    return body["error"]


def send(url: str, method: str, route: str, body, headers=AUTH) -> httpx.Response:
    content = None if body is None else (body if isinstance(body, str) else json.dumps(body)).encode("utf-8",
                                                                                                      "surrogatepass")
    return httpx.request(method, url + route, content=content, headers=headers, timeout=60)


@pytest.mark.parametrize("method, route, body, status, where", BAD)
def test_each_bad_request_gets_an_openai_shaped_error(server, method, route, body, status, where):
    check_error(send(server, method, route, body), status, where)


def asgi_post(app, route: str, content) -> httpx.Response:
    """Through the ASGI app in this process (so the test sees how much of a body was read)."""
    async def go():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post(route, content=content, headers=AUTH)
    return asyncio.run(go())


def test_errors_that_come_before_the_route(server, tmp_path):
    r = httpx.get(f"{server}/v1/models")
    assert check_error(r, 401, None)["code"] == "invalid_api_key"
    r = httpx.post(f"{server}{C}", json=chat(), headers={"Authorization": "Bearer wrong"})
    assert check_error(r, 401, None)["code"] == "invalid_api_key"
    r = httpx.get(f"{server}/health")  # no key needed
    assert r.json()["status"] == "ok"


def _raw_http(url: str, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(head + body)
        data = b""
        while chunk := s.recv(65536):  # the server closes the connection after a 413
            data += chunk
    return int(data.split(b" ", 2)[1]), data.split(b"\r\n\r\n", 1)[1]


def test_a_100_mb_body_is_refused_from_its_header_without_being_sent(server):
    head = (f"POST {C} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {100 * 2**20}\r\n\r\n").encode()
    status, body = _raw_http(server, head, b'{"messages": ')  # the other 100 MB never leave the client
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"


def test_a_streamed_body_is_cut_off_once_it_passes_the_limit(app):
    """Chunked upload (no Content-Length): the server stops reading just past the limit."""
    sent = []

    async def body():
        for i in range(100):  # would be 100 MB
            sent.append(i)
            yield b" " * 2**20

    r = asgi_post(app, C, body())
    assert check_error(r, 413, "larger than 200000 bytes")["code"] == "request_too_large"
    assert len(sent) <= 2
    r = asgi_post(app, C, b"x" * 300_000)  # with a Content-Length: refused before reading
    assert check_error(r, 413, None)["code"] == "request_too_large"


def app_prefs(app):
    return app.state.preference_file


def test_preferences_reveal_no_path_and_are_bounded(server, app, tmp_path):
    r = send(server, "POST", X, {"prompt": "Hello", "a": "one", "b": "two", "choice": "a", "user": "u-1",
                                 "consent": True})
    assert r.status_code == 200 and r.json() == {"saved": True, "choice": "a", "user": "u-1"}
    assert "/" not in r.text
    r = asgi_post(app, X, json.dumps({"prompt": "Hello", "a": "x" * 5_000_000, "b": "two", "choice": "a"}))
    check_error(r, 413, None)
    r = send(server, "POST", X, {"prompt": "Hello", "a": "x" * 1001, "b": "two", "choice": "a"})
    check_error(r, 400, "a")
    lines = (app_prefs(app)).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["chosen"] == "one"  # nothing else was appended


def test_n_choices_each_with_its_index(server):
    r = send(server, "POST", C, chat(n=3, temperature=1.0, seed=11, max_tokens=8))
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    for i, c in enumerate(choices):  # choice i is what seed 11 + i gives alone
        alone = send(server, "POST", C, chat(temperature=1.0, seed=11 + i, max_tokens=8)).json()
        assert alone["choices"][0]["message"]["content"] == c["message"]["content"]
    assert len({c["message"]["content"] for c in choices}) > 1
    usage = r.json()["usage"]
    assert usage["completion_tokens"] <= 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # streamed, the chunks of each index add up to that index's answer
    texts = ["", "", ""]
    with httpx.stream("POST", f"{server}{C}", json=chat(n=3, temperature=1.0, seed=11, max_tokens=8, stream=True),
                      headers=AUTH, timeout=30) as s:
        for line in s.iter_lines():
            if line.startswith("data: {"):
                ch = json.loads(line[6:])["choices"][0]
                texts[ch["index"]] += ch["delta"].get("content", "")
    assert texts == [c["message"]["content"] for c in choices]
    text = send(server, "POST", P, {"prompt": "Hello", "n": 2, "seed": 3, "temperature": 1, "max_tokens": 5}).json()
    assert [c["index"] for c in text["choices"]] == [0, 1]


def test_list_of_parts_content_is_the_joined_text(server):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]}]
    a = send(server, "POST", C, chat(messages=parts)).json()
    b = send(server, "POST", C, chat()).json()
    assert a["choices"][0]["message"] == b["choices"][0]["message"]
    assert a["usage"] == b["usage"]


def test_a_tiny_temperature_or_top_p_decodes_greedily(server):
    greedy = send(server, "POST", C, chat(temperature=0)).json()["choices"][0]["message"]["content"]
    for t in (1e-300, 5e-324, 1e-9):
        r = send(server, "POST", C, chat(temperature=t, seed=4))
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == greedy
    for p in (1e-300, 5e-324):  # (5e-324 once dropped every token: NaN probabilities)
        r = send(server, "POST", C, chat(temperature=1.0, top_p=p, seed=4))
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == greedy


TEXTS = ["", "\x00", "<|end|>", "<|assistant|>", "🙂", "مرحبا", "a\u200bb", "\ufffd", "\U0010ffff", "<|pad|><|bos|>"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.fixed_dictionaries(
    {"messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]),
                                                 "content": st.sampled_from(TEXTS) | st.text(max_size=8)}),
                          min_size=1, max_size=3)},
    optional={"temperature": st.sampled_from([0, 5e-324, 1e-300, 1e-4, 2.0]) | st.floats(0, 2),
              "top_p": st.sampled_from([5e-324, 1e-300, 1.0]) | st.floats(0, 1, exclude_min=True),
              "top_k": st.sampled_from([0, 1, 2**31]) | st.integers(0, 400),
              "seed": st.sampled_from([0, 2**63 - 1]) | st.integers(0, 2**63 - 1),
              "repetition_penalty": st.floats(1, 5), "max_tokens": st.sampled_from([1, 2**31]),
              "n": st.integers(1, 8), "stop": st.sampled_from([[""], ["\x00"], ["a" * 64], "", ["<|end|>"]]),
              "stream": st.booleans(), "frequency_penalty": st.floats(-2, 2)}))
def test_whatever_passes_validation_decodes(app, body):
    """Any request inside the documented ranges is answered (no 500): validation is complete. The
    one refusal allowed is the documented one for a prompt longer than the model's context
    (generated multi-byte text can tokenise to more than the test model's 64 tokens)."""
    r = asgi_post(app, C, json.dumps(body))
    if r.status_code == 400:
        assert r.json()["error"]["code"] == "context_length_exceeded", (body, r.text[:300])
        return
    assert r.status_code == 200, (body, r.text[:300])
    assert '"error"' not in r.text


def test_a_stream_that_fails_at_once_gets_a_status_not_a_broken_stream(server, monkeypatch):
    real = engine.sample_rows

    def failing(logits, params, generators, seen=None):
        if any(p.seed == 666 for p in params):
            raise RuntimeError("forced failure in /home/secret/fidan/engine.py")
        return real(logits, params, generators, seen)
    monkeypatch.setattr(engine, "sample_rows", failing)
    r = send(server, "POST", C, chat(seed=666, stream=True))
    err = check_error(r, 500, None)
    assert err["code"] == "decoding_failed" and "forced failure" in err["message"] and "/home" not in r.text


def test_one_bad_row_fails_alone_among_concurrent_requests(server, app, monkeypatch):
    """14 concurrent requests: 8 good (one with n=2, one streamed, one at temperature 1e-300), 2 that
    pass validation but fail while decoding (a forced fault in their rows), 4 refused by validation.
    The decoding ones share one batch with the good ones; every good one gets its full answer."""
    real = engine.sample_rows
    gate, entered = threading.Event(), threading.Event()

    def patched(logits, params, generators, seen=None):
        if any(p.seed == 777 for p in params):   # holds the worker so the rest queue up and batch together
            entered.set()
            gate.wait(30)
        if any(p.seed == 666 for p in params):
            raise RuntimeError("forced failure in this row")
        return real(logits, params, generators, seen)

    good = [chat(messages=[{"role": "user", "content": f"Hello {i}"}], max_tokens=4 + i) for i in range(5)]
    good += [chat(n=2, temperature=1.0, seed=5), chat(temperature=1e-300), chat(stop=["o"], max_tokens=10)]
    failing = [chat(seed=666, temperature=1.0), chat(seed=666, temperature=1.0, stream=True)]
    refused = [raw('{"messages": [{"role": "user", "content": "\\ud800"}]}'), chat(seed=2**70),
               raw('{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}'), chat(n=50)]
    alone = [send(server, "POST", C, g).json() for g in good]  # each answered by itself first

    monkeypatch.setattr(engine, "sample_rows", patched)
    scheduler = app.state.schedulers["m"]
    batches = scheduler.batches
    with ThreadPoolExecutor(16) as pool:
        blocker = pool.submit(send, server, "POST", C, chat(seed=777, temperature=1.0, max_tokens=2))
        assert entered.wait(30)
        futures = [pool.submit(send, server, "POST", C, body) for body in good + failing + refused]
        deadline = time.time() + 30
        while scheduler.waiting < len(good) + 1 + len(failing) and time.time() < deadline:
            time.sleep(0.02)
        gate.set()
        results = [f.result() for f in futures]
        assert blocker.result().status_code == 200
    # they all joined the blocker's running batch (continuous batching; static would run a second batch)
    assert scheduler.batches == batches + 1 and scheduler.largest >= len(good) + 1 + len(failing)
    assert scheduler.joined >= len(good) + 1 + len(failing)
    for _, r, solo in zip(good, results, alone):
        assert r.status_code == 200, r.text
        got = r.json()
        assert [c["message"] for c in got["choices"]] == [c["message"] for c in solo["choices"]]
        assert got["usage"] == solo["usage"]
    for r in results[len(good):len(good) + len(failing)]:
        assert check_error(r, 500, None)["code"] == "decoding_failed"
    for r in results[len(good) + len(failing):]:
        check_error(r, 400, None)
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_a_full_queue_gets_429_and_a_stopped_model_503(tok):
    app = create_app(tiny_model(), tok, "m", limits=ServerLimits(max_queue=2, max_tokens=4))
    with serving(app) as url:
        r = send(url, "POST", C, chat(n=3), headers={"Content-Type": "application/json"})
        assert check_error(r, 429, None)["code"] == "queue_full" and r.headers["retry-after"] == "1"
        assert send(url, "POST", C, chat(n=2), headers={"Content-Type": "application/json"}).status_code == 200
        app.state.schedulers["m"].close()
        app.state.schedulers["m"].thread.join(10)
        r = send(url, "POST", C, chat(), headers={"Content-Type": "application/json"})
        assert check_error(r, 503, None)["code"] == "model_unavailable"
        assert check_error(httpx.get(f"{url}/health"), 503, None)["code"] == "model_unavailable"


def test_an_unexpected_crash_is_a_json_500_without_a_path(tok, monkeypatch):
    import fidan.serve.server as server_module

    def broken(*a, **kw):
        raise OSError(2, "No such file", "/srv/secret/tokenizer.json")
    app = create_app(tiny_model(), tok, "m")
    monkeypatch.setattr(server_module, "render", broken)
    with serving(app) as url:
        r = send(url, "POST", C, chat(), headers={"Content-Type": "application/json"})
        assert check_error(r, 500, None)["code"] == "internal_error" and "/srv" not in r.text
        assert send(url, "POST", P, {"prompt": "Hi", "max_tokens": 2},
                    headers={"Content-Type": "application/json"}).status_code == 200
