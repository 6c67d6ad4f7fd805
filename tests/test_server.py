"""The HTTP API on loopback, driven by the official openai client."""
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from fidan.model.gpt import GPT, GPTConfig
from fidan.serve.server import ServerLimits, create_app
from fidan.tokenizer.bpe import train_tokenizer

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")
KEY = "test-key"


@pytest.fixture(scope="module")
def server():
    tok = train_tokenizer(["Merhaba dünya! Hello world, how are you today?"] * 30, vocab_size=320)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=320, context=64, n_layer=1, n_head=2, n_kv_head=2, d_model=32)).eval()
    app = create_app(model, tok, "fidan-test", api_key=KEY, limits=ServerLimits(max_messages=4, max_tokens=16))
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


def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=30)


def test_chat_completion_and_stream_agree(server):
    c = client(server)
    messages = [{"role": "user", "content": "Hello"}]
    full = c.chat.completions.create(model="fidan-test", messages=messages, max_tokens=8, temperature=0)
    assert full.object == "chat.completion" and full.choices[0].message.role == "assistant"
    assert full.usage.completion_tokens <= 8 and full.choices[0].finish_reason in ("stop", "length")
    pieces = [ch.choices[0].delta.content or "" for ch in
              c.chat.completions.create(model="fidan-test", messages=messages, max_tokens=8, temperature=0, stream=True)]
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


def test_32_concurrent_streaming_clients_all_complete(server):
    def one(i):
        c = client(server)
        chunks = list(c.chat.completions.create(model="fidan-test", messages=[{"role": "user", "content": f"hi {i}"}],
                                                max_tokens=6, temperature=0, stream=True))
        return chunks[-1].choices[0].finish_reason, "".join(ch.choices[0].delta.content or "" for ch in chunks)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    assert len(results) == 32 and all(reason in ("stop", "length") for reason, _ in results)
    solo = one(7)
    assert results[7] == solo  # greedy and served one at a time: no cross-talk between streams
    assert httpx.get(f"{server}/health").status_code == 200
