"""The chat page in a real headless Chromium (Debian's package, driven by Playwright).

`make test` installs the browser when it can; without one this test is skipped with the reason.
"""
import json
import shutil

import pytest

from fidan.serve.server import create_app
from fidan.tokenizer.bpe import train_tokenizer
from test_server import serving, tiny_model

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
if BROWSER is None:
    pytest.skip("no chromium on this machine (apt-get install chromium); the web page test needs one",
                allow_module_level=True)


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    tok = train_tokenizer(["Merhaba dünya! Hello world, how are you today?"] * 30, vocab_size=320)
    prefs = tmp_path_factory.mktemp("web") / "preferences.jsonl"
    app = create_app({"demo-sft": tiny_model(1), "demo-pretrain": tiny_model(2)}, tok, preference_file=prefs)
    with serving(app) as url:
        yield url, prefs


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=BROWSER, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def test_chat_streams_a_reply_with_the_chosen_model_and_temperature(page_url, browser):
    url, _ = page_url
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests = []
    page.on("request", lambda r: requests.append(r.post_data) if r.url.endswith("/chat/completions") else None)
    page.goto(url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length == 2")
    assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == ["demo-sft", "demo-pretrain"]
    page.select_option("#model", "demo-pretrain")
    page.fill("#temperature", "0")
    page.dispatch_event("#temperature", "input")
    assert page.text_content("#temperature-value") == "0"
    page.fill("#prompt", "Merhaba!")
    page.press("#prompt", "Enter")
    page.wait_for_selector(".msg.assistant[data-done='1']", timeout=20_000)
    assert page.text_content(".msg.user .text") == "Merhaba!"
    reply = page.text_content(".msg.assistant .text")
    assert reply and page.text_content(".msg.assistant .who") == "demo-pretrain"
    sent = json.loads(requests[0])
    assert sent["model"] == "demo-pretrain" and sent["temperature"] == 0 and sent["stream"] is True
    # a second turn carries the history; when it no longer fits the 64-token context, the page
    # drops the oldest exchange and asks again
    page.fill("#prompt", "Nasılsın?")
    page.click("#send")
    page.wait_for_function("document.querySelectorAll(\".msg.assistant[data-done='1']\").length == 2", timeout=20_000)
    assert [m["role"] for m in json.loads(requests[1])["messages"]] == ["user", "assistant", "user"]
    if len(requests) > 2:
        assert [m["content"] for m in json.loads(requests[2])["messages"]] == ["Nasılsın?"]
        assert "older turns dropped" in page.text_content(".msg.assistant:last-of-type .who")
    assert errors == []


def test_compare_mode_records_the_preference(page_url, browser):
    url, prefs = page_url
    page = browser.new_page()
    page.goto(url + "/")
    page.wait_for_function("document.querySelectorAll('#model-b option').length == 2")
    page.check("#compare")
    assert page.is_visible("#model-b")
    page.select_option("#model", "demo-sft")
    page.select_option("#model-b", "demo-pretrain")
    page.fill("#temperature", "0")
    page.dispatch_event("#temperature", "input")
    page.fill("#prompt", "Hello world")
    page.click("#send")
    page.wait_for_selector(".judge button[data-choice='b']", timeout=20_000)
    a, b = page.text_content("#answer-a .text"), page.text_content("#answer-b .text")
    before = prefs.read_text() if prefs.exists() else ""
    page.click(".judge button[data-choice='b']")             # no consent yet: nothing is written
    page.wait_for_selector("#saved", timeout=10_000)
    assert "not saved" in page.text_content("#saved") and (prefs.read_text() if prefs.exists() else "") == before
    assert "preferences.jsonl" in page.text_content("#consent-box")   # the page says what is kept and why
    page.check("#consent")
    page.click(".judge button[data-choice='b']")
    page.wait_for_function("document.querySelector('#saved').textContent.startsWith('saved')", timeout=10_000)
    assert "saved (b)" in page.text_content("#saved")
    record = json.loads(prefs.read_text().splitlines()[-1])
    assert record["prompt"] == "Hello world" and record["chosen"] == b and record["rejected"] == a
    assert record["models"] == ["demo-sft", "demo-pretrain"] and record["source"] == "human-web"
    user = page.text_content("#user-id")
    assert record["consent"] is True and record["user"] == user and user.startswith("u-")
    page.click("#forget")
    page.wait_for_function("document.querySelector('#forget-note').textContent.startsWith('removed')")
    assert "removed 1" in page.text_content("#forget-note")
    assert all(json.loads(line).get("user") != user for line in prefs.read_text().splitlines())
