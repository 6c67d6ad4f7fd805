"""The HTTP API on loopback, driven by the official openai client."""
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
import torch

from fidan.model.gpt import GPT, GPTConfig
from fidan.rlhf import preferences
from fidan.serve.server import ServerLimits, create_app
from fidan.tokenizer.bpe import train_tokenizer

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")
KEY = "test-key"


@contextmanager
def serving(app):
    """Run ``app`` with uvicorn on a free loopback port; yield its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=320, context=64, n_layer=1, n_head=2, n_kv_head=2, d_model=32)).eval()


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(["Merhaba dünya! Hello world, how are you today?"] * 30, vocab_size=320)


@pytest.fixture(scope="module")
def app(tok):
    return create_app(tiny_model(), tok, "fidan-test", api_key=KEY, limits=ServerLimits(max_messages=4, max_tokens=16))


@pytest.fixture(scope="module")
def server(app):
    with serving(app) as url:
        yield url


def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=30)


def test_chat_completion_and_stream_agree(server):
    c = client(server)
    messages = [{"role": "user", "content": "Hello"}]
    full = c.chat.completions.create(model="fidan-test", messages=messages, max_tokens=8, temperature=0)
    assert full.object == "chat.completion" and full.choices[0].message.role == "assistant"
    assert full.usage.completion_tokens <= 8 and full.choices[0].finish_reason in ("stop", "length")
    pieces = [ch.choices[0].delta.content or "" for ch in
              c.chat.completions.create(model="fidan-test", messages=messages, max_tokens=8, temperature=0,
                                        stream=True)]
    assert "".join(pieces) == full.choices[0].message.content


def test_completions_models_and_health(server):
    c = client(server)
    out = c.completions.create(model="fidan-test", prompt="Merhaba", max_tokens=5, temperature=0)
    assert out.object == "text_completion" and out.usage.prompt_tokens > 1
    assert [m.id for m in c.models.list().data] == ["fidan-test"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"  # no key needed


@pytest.mark.parametrize("body, status, words", [
    ({"messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 9}, 400, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}] * 5}, 400, "too many messages"),
    ({"messages": [{"role": "user", "content": "word " * 200}]}, 400, "context"),
])
def test_bad_requests_get_json_errors(server, body, status, words):
    r = httpx.post(f"{server}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == status and words in r.json()["error"]["message"]


def test_api_key_is_checked(server):
    r = httpx.get(f"{server}/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.get(f"{server}/v1/models", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


def test_stop_strings_cut_the_reply(server):
    c = client(server)
    full = c.completions.create(model="fidan-test", prompt="Hello", max_tokens=16, temperature=0).choices[0].text
    if len(full) > 3:
        stop = full[2:4]
        cut = c.completions.create(model="fidan-test", prompt="Hello", max_tokens=16, temperature=0, stop=stop)
        assert cut.choices[0].text == full[:full.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_32_concurrent_streaming_clients_all_complete(server, app):
    def one(i):
        c = client(server)
        chunks = list(c.chat.completions.create(model="fidan-test", messages=[{"role": "user", "content": f"hi {i}"}],
                                                max_tokens=6 + i % 5, temperature=0, stream=True))
        return chunks[-1].choices[0].finish_reason, "".join(ch.choices[0].delta.content or "" for ch in chunks)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    assert len(results) == 32 and all(reason in ("stop", "length") for reason, _ in results)
    assert app.state.schedulers["fidan-test"].largest > 1   # requests were decoded together
    for i in (0, 7, 13, 31):
        assert results[i] == one(i)  # greedy, alone vs batched: no cross-talk between rows
    assert httpx.get(f"{server}/health").status_code == 200


def test_several_models_and_preferences(tok, tmp_path):
    prefs = tmp_path / "preferences.jsonl"
    app = create_app({"run-sft": tiny_model(1), "run-pretrain": tiny_model(2)}, tok, preference_file=prefs)
    with serving(app) as url:
        c = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
        assert [m.id for m in c.models.list().data] == ["run-sft", "run-pretrain"]
        msgs = [{"role": "user", "content": "Hello"}]
        a = c.chat.completions.create(model="run-sft", messages=msgs, max_tokens=8, temperature=0)
        b = c.chat.completions.create(model="run-pretrain", messages=msgs, max_tokens=8, temperature=0)
        assert a.model == "run-sft" and b.model == "run-pretrain"
        assert a.choices[0].message.content != b.choices[0].message.content  # two different models answered
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="gpt-4", messages=msgs, max_tokens=4)
        for choice in ("b", "tie", "skip"):
            r = httpx.post(f"{url}/v1/preferences", json={"prompt": "Hello", "a": "one", "b": "two",
                                                           "choice": choice, "models": ["run-sft", "run-pretrain"],
                                                           "user": "u-web", "consent": True})
            assert r.status_code == 200, r.text
            assert str(tmp_path) not in r.text and "file" not in r.json()  # no server path in a response
        assert httpx.post(f"{url}/v1/preferences", json={"prompt": "x", "a": "1", "b": "2",
                                                          "choice": "maybe"}).status_code == 400
        unconsented = httpx.post(f"{url}/v1/preferences", json={"prompt": "x", "a": "1", "b": "2", "choice": "a",
                                                                "user": "u-web"})
        assert unconsented.status_code == 403 and unconsented.json()["error"]["code"] == "consent_required"
    lines = [json.loads(x) for x in prefs.read_text().splitlines()]
    assert [(x.get("chosen"), x.get("rejected"), x.get("tie", False), x.get("skip", False)) for x in lines] == [
        ("two", "one", False, False), ("one", "two", True, False), (None, None, False, True)]
    report = preferences.load(prefs)
    assert len(report.pairs) == 2 and report.skipped == 1 and report.pairs[1].tie


def test_preferences_are_off_without_a_file(server):
    r = httpx.post(f"{server}/v1/preferences", headers={"Authorization": f"Bearer {KEY}"},
                   json={"prompt": "x", "a": "1", "b": "2", "choice": "a"})
    assert r.status_code == 404 and "preferences" in r.json()["error"]["message"]
