"""``fidan serve``: an OpenAI-compatible HTTP API and a chat page over a run's models.

Routes: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (streaming as server-sent
events, or one JSON response), ``GET /v1/models`` (one entry per stage's model), ``GET /health``,
``POST /v1/preferences`` (the web page's compare mode records a person's choice there, in the
file the RLHF stage reads) and ``GET /``, the chat page. With an API key set, every route but
``/health`` and the page needs ``Authorization: Bearer <key>``.

Every request is checked before it reaches a model: each sampling field against its range (a
temperature below ``GREEDY_BELOW`` decodes greedily), ``n``, the stop list, message content (a
string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts), text that is not valid
Unicode (a lone surrogate), message count, prompt length and ``max_tokens``; bodies are bounded
(``ServerLimits.max_body_bytes``, refused with 413 from ``Content-Length`` or while the body
streams in). Every error is JSON in OpenAI's shape ``{"error": {"message", "type", "param",
"code"}}``: 400 a bad value or malformed JSON, 422 a body whose structure does not match (a
required field missing, a field of the wrong type), 401 the API key, 404 an unknown model or
route, 405 a wrong method, 413 a body too large, 429 too many requests waiting, 500 a failure
while decoding that request, 503 a model whose worker has stopped. No response names a server
file. Each model has a worker thread that batches the requests waiting for it
(``serve/batching.py``; continuously by default: requests join the running batch between two
decoding steps); a row that fails there fails its own request only.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from fidan.infer.engine import SEED_MAX, SamplingParams, TextStream
from fidan.model.gpt import GPT
from fidan.rlhf import preferences
from fidan.serve.batching import QueueFull, Scheduler, Unavailable
from fidan.tokenizer.bpe import FidanTokenizer
from fidan.tokenizer.chat import render

PAGE = Path(__file__).with_name("static") / "index.html"
OPEN_PATHS = ("/health", "/")
log = logging.getLogger("fidan.serve")


@dataclass(frozen=True)
class ServerLimits:
    max_messages: int = 64
    max_tokens: int = 512              # a larger max_tokens is cut to this
    max_prompt_chars: int = 32_000
    max_n: int = 8                     # choices per request
    max_stop: int = 4                  # stop strings per request (OpenAI's limit)
    max_stop_chars: int = 64           # characters per stop string
    max_body_bytes: int = 2 * 2**20    # request bodies over this get 413
    max_queue: int = 256               # rows waiting per model before requests get 429
    max_answer_chars: int = 32_000     # each answer of a preference record
    max_record_models: int = 8         # model names in a preference record (each at most 200 characters)


# ---- request schemas ------------------------------------------------------------------------

def _unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"not valid Unicode text (a lone surrogate \\u{ord(value[e.start]):04x} "
                         f"at character {e.start})") from None
    return value


Text = Annotated[str, AfterValidator(_unicode)]


def _content(value: Any) -> Any:
    """A message's content: a string, or OpenAI's list of text parts (joined)."""
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict):
                raise ValueError(f"content part {i} must be an object like {{\"type\": \"text\", \"text\": \"...\"}}")
            if part.get("type") != "text":
                raise ValueError(f"content part {i} has type {str(part.get('type'))[:40]!r}; "
                                 "this server reads only text parts")
            if not isinstance(part.get("text"), str):
                raise ValueError(f"content part {i} needs a string 'text'")
            texts.append(part["text"])
        return "".join(texts)
    return value


def _stop(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return value


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: Annotated[Text, BeforeValidator(_content)]


Finite = dict(allow_inf_nan=False)


class Sampling(BaseModel):
    """Settings both endpoints share."""
    model: Text | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=2**31)   # cut to ServerLimits.max_tokens
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, **Finite)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, **Finite)
    top_k: int = Field(default=0, ge=0, le=2**31)
    n: int = Field(default=1, ge=1, le=2**31)                       # checked against ServerLimits.max_n
    stop: Annotated[list[Text], BeforeValidator(_stop)] = Field(default_factory=list)
    stream: bool = False
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)
    repetition_penalty: float = Field(default=1.0, ge=1.0, le=5.0, **Finite)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0, **Finite)  # accepted for compatibility; not used
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0, **Finite)   # accepted for compatibility; not used


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=2**31)


class CompletionRequest(Sampling):
    prompt: Text


class PreferenceRequest(BaseModel):
    prompt: Text | Annotated[list[Message], Field(min_length=1)]
    a: Text
    b: Text
    choice: Literal["a", "b", "tie", "skip"]
    models: list[Annotated[Text, Field(max_length=200)]] = Field(default_factory=list)
    user: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None   # the person's anonymous id
    consent: bool = False           # the person agreed, on the page, that the choice is kept


class ForgetRequest(BaseModel):
    user: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


# ---- errors ---------------------------------------------------------------------------------

class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.headers = headers


def _safe(text: str | None) -> str | None:
    """Text that can always be encoded (a lone surrogate becomes its escape)."""
    return None if text is None else str(text).encode("utf-8", "backslashreplace").decode("utf-8")


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][^\s/\\'\"():,;]+){2,}[/\\]?")


def public(exc: BaseException) -> str:
    """An exception as a client may see it: its type and message with file paths removed."""
    return f"{type(exc).__name__}: {_PATH.sub('<path>', str(exc).splitlines()[0] if str(exc) else '')}"


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": _safe(message), "type": kind, "param": _safe(param), "code": code}}


def error_response(status: int, message: str, kind: str | None = None, code: str | None = None,
                   param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = kind or ("server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse(status_code=status, content=error_body(message, kind, code, param), headers=headers)


# pydantic error types that mean "the body has the wrong structure" (422) rather than a bad value (400)
SHAPE_ERRORS = {"missing", "model_type", "model_attributes_type", "dict_type", "list_type", "string_type",
                "int_type", "float_type", "bool_type", "int_parsing", "float_parsing", "bool_parsing",
                "int_from_float", "string_sub_type", "union_tag_invalid"}


class Guard:
    """Plain ASGI middleware: the API key, then the body size (header first, then bytes as they arrive)."""

    def __init__(self, app, api_key: str | None, max_body: int):
        self.app, self.api_key, self.max_body = app, api_key, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.api_key and scope["path"] not in OPEN_PATHS:
            given = headers.get("authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, f"Bearer {self.api_key}".encode()):
                response = error_response(401, "missing or wrong API key (Authorization: Bearer ...)",
                                          "invalid_request_error", "invalid_api_key")
                return await response(scope, receive, send)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await self._too_large(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"request body larger than {self.max_body} bytes"

    async def _too_large(self, scope, receive, send):
        response = error_response(413, self._message(), "invalid_request_error", "request_too_large",
                                  headers={"Connection": "close"})
        await response(scope, receive, send)


# ---- the app --------------------------------------------------------------------------------

def create_app(models: GPT | dict[str, GPT], tok: FidanTokenizer, model_name: str = "fidan",
               api_key: str | None = None, limits: ServerLimits = ServerLimits(),
               preference_file: Path | None = None, max_batch: int = 8, batching: str = "continuous") -> FastAPI:
    """``models`` maps names to models (the first is the default); a single model is named ``model_name``.
    ``batching`` is the schedulers' (``serve/batching.py``): ``continuous`` or ``static``."""
    if isinstance(models, GPT):
        models = {model_name: models}
    app = FastAPI(title="fidan", version="1")
    schedulers = {name: Scheduler(m, max_batch, tok.pad, limits.max_queue, batching) for name, m in models.items()}
    app.state.schedulers = schedulers
    app.state.preference_file = preference_file
    default = next(iter(models))
    stop_ids = set(tok.stop_ids)
    created = int(time.time())
    app.add_middleware(Guard, api_key=api_key, max_body=limits.max_body_bytes)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.kind, exc.code, exc.param, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors() or [{"msg": "invalid request", "type": "invalid", "loc": ()}]
        # A field that takes one of several types (a preference's prompt) reports one error per
        # type; the one that is not "wrong type" says what is wrong with the value given.
        first = next((e for e in errors if e.get("type") not in SHAPE_ERRORS), errors[0])
        loc = [str(p) for p in first.get("loc", ()) if not re.search(r"[\[(]", str(p))]
        where = ".".join(loc[1:] if loc[:1] == ["body"] else loc) or "body"
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        if first.get("type") == "json_invalid":
            error = (first.get("ctx") or {}).get("error", "")
            return error_response(400, f"the body is not valid JSON ({error})", code="invalid_json")
        status = 422 if first.get("type") in SHAPE_ERRORS else 400
        return error_response(status, f"{where}: {message}", code=first.get("type"), param=where)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            message, code = f"no route {request.method} {request.url.path}", "not_found"
        elif exc.status_code == 405:
            message, code = f"{request.method} is not allowed on {request.url.path}", "method_not_allowed"
        elif exc.status_code == 413:
            message, code = str(exc.detail), "request_too_large"
        elif exc.status_code == 400:  # FastAPI could not parse the body (e.g. JSON nested too deeply)
            message, code = f"the body could not be read as JSON ({exc.detail})", "invalid_json"
        else:
            message, code = str(exc.detail), None
        return error_response(exc.status_code, message, code=code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error (the server's log has the details)", "server_error",
                              "internal_error")

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/health")
    async def health():
        down = [name for name, s in schedulers.items() if not s.alive]
        if down:
            return error_response(503, f"model {', '.join(down)} is not running", "server_error", "model_unavailable")
        return {"status": "ok", "model": default, "models": list(models)}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "fidan",
                                            "parameters": m.num_params()} for name, m in models.items()]}

    @app.post("/v1/preferences")
    async def prefer(req: PreferenceRequest):
        if preference_file is None:
            raise APIError(404, "this server records no preferences (start it with --preferences FILE)",
                           code="preferences_disabled")
        prompt = req.prompt if isinstance(req.prompt, str) else [m.model_dump() for m in req.prompt]
        if isinstance(prompt, list) and len(prompt) > limits.max_messages:
            raise APIError(400, f"too many messages ({len(prompt)} > {limits.max_messages})", param="prompt")
        chars = len(prompt) if isinstance(prompt, str) else sum(len(m["content"]) for m in prompt)
        if chars > limits.max_prompt_chars:
            raise APIError(400, f"prompt longer than {limits.max_prompt_chars} characters", param="prompt")
        for field, text in (("a", req.a), ("b", req.b)):
            if len(text) > limits.max_answer_chars:
                raise APIError(400, f"answer {field} longer than {limits.max_answer_chars} characters", param=field)
        if len(req.models) > limits.max_record_models:
            raise APIError(400, f"more than {limits.max_record_models} model names", param="models")
        if not req.consent or not req.user:
            raise APIError(403, "a choice is kept only with the person's consent: send \"consent\": true and "
                                "their anonymous \"user\" id", code="consent_required", param="consent")
        try:
            line = preferences.record(prompt, req.a, req.b, req.choice, "human-web", models=req.models,
                                      user=req.user, consent=True)
            await asyncio.get_running_loop().run_in_executor(None, preferences.append, preference_file, line)
        except ValueError as e:
            raise APIError(400, f"not a valid preference record ({public(e)})") from None
        except OSError as e:
            log.error("cannot append to %s: %s", preference_file, e)
            raise APIError(500, "could not record the preference (the server's log says why)", "server_error",
                           "preferences_write_failed") from None
        return {"saved": True, "choice": req.choice, "user": req.user}

    @app.post("/v1/preferences/forget")
    async def forget(req: ForgetRequest):
        """Take one person's choices back (the page's "forget me"; ``fidan forget`` does the same
        and also marks the stages trained on them as stale)."""
        if preference_file is None:
            raise APIError(404, "this server records no preferences", code="preferences_disabled")
        removed = await asyncio.get_running_loop().run_in_executor(None, preferences.forget, preference_file,
                                                                   req.user)
        return {"user": req.user, "removed": removed}

    def pick_model(name: str | None) -> tuple[str, GPT]:
        if not name:
            return default, models[default]
        if name not in models:
            raise APIError(404, f"model '{name[:200]}' not found; this server has {', '.join(models)}",
                           code="model_not_found", param="model")
        return name, models[name]

    def budget(model: GPT, requested: int | None, prompt_len: int) -> int:
        wanted = min(requested or limits.max_tokens, limits.max_tokens)
        room = model.cfg.context - model.cfg.prompt_tokens - prompt_len
        if room < 1:
            raise APIError(400, f"prompt is {prompt_len} tokens; the model's context is {model.cfg.context}",
                           code="context_length_exceeded", param="messages")
        return min(wanted, room)

    def check_sampling(req: Sampling) -> None:
        if req.n > limits.max_n:
            raise APIError(400, f"n is {req.n}; this server gives at most {limits.max_n} choices per request",
                           code="invalid_value", param="n")
        if len(req.stop) > limits.max_stop:
            raise APIError(400, f"at most {limits.max_stop} stop strings (got {len(req.stop)})",
                           code="invalid_value", param="stop")
        if any(len(s) > limits.max_stop_chars for s in req.stop):
            raise APIError(400, f"a stop string is longer than {limits.max_stop_chars} characters",
                           code="invalid_value", param="stop")

    def params(req: Sampling, max_tokens: int, row: int) -> SamplingParams:
        seed = None if req.seed is None else (req.seed + row) % (SEED_MAX + 1)
        return SamplingParams(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                              max_tokens=max_tokens, seed=seed, stop_ids=stop_ids,
                              repetition_penalty=req.repetition_penalty, stop=list(req.stop))

    async def run(name: str, ids: list[int], samplings: list[SamplingParams]):
        """Yield (index, "piece", text) as the model's worker produces tokens for each of the
        request's rows, and (index, "done", (reason, count)) as each ends. A failed row raises."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def callback(index: int):
            return lambda kind, value: loop.call_soon_threadsafe(events.put_nowait, (index, kind, value))

        try:
            jobs = schedulers[name].submit_many([(ids, s, callback(i)) for i, s in enumerate(samplings)])
        except QueueFull as e:
            raise APIError(429, f"model {name} is busy ({e}); retry shortly", "rate_limit_error", "queue_full",
                           headers={"Retry-After": "1"}) from None
        except Unavailable as e:
            raise APIError(503, f"model {name} is not available ({e})", "server_error",
                           "model_unavailable") from None
        streams = [TextStream(tok, s.stop) for s in samplings]
        counts = [0] * len(samplings)
        running = set(range(len(samplings)))
        try:
            while running:
                index, kind, value = await events.get()
                if index not in running:
                    continue
                stream = streams[index]
                if kind == "error":
                    raise APIError(500, f"decoding this request failed ({public(value)})", "server_error",
                                   "decoding_failed")
                if kind == "end":
                    if tail := stream.flush():
                        yield index, "piece", tail
                    running.discard(index)
                    yield index, "done", (value, counts[index])
                    continue
                counts[index] += 1
                if piece := stream.push(value):
                    yield index, "piece", piece
                if stream.stopped:
                    jobs[index].cancel()  # a stop string matched: free the batch row
                    running.discard(index)
                    yield index, "done", ("stop", counts[index])
        finally:
            for job in jobs:
                job.cancel()  # the client left, or an error: free the batch rows

    async def respond(kind: str, ids: list[int], req, prompt_tokens: int):
        name, model = pick_model(req.model)
        check_sampling(req)
        requested = req.max_tokens if kind == "text" else (req.max_completion_tokens or req.max_tokens)
        max_tokens = budget(model, requested, prompt_tokens)
        samplings = [params(req, max_tokens, i) for i in range(req.n)]
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        obj = "chat.completion" if kind == "chat" else "text_completion"

        def chunk(index: int, piece: str | None, finish: str | None, first: bool = False) -> dict:
            if kind == "chat":
                delta = ({"role": "assistant", "content": ""} if first else {}) | \
                        ({"content": piece} if piece else {})
                choice = {"index": index, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": index, "text": piece or "", "finish_reason": finish}
            return {"id": rid, "object": obj + (".chunk" if kind == "chat" else ""), "created": int(time.time()),
                    "model": name, "choices": [choice]}

        events = run(name, ids, samplings)
        if req.stream:
            # The first event is awaited here, so a request refused or failed at once gets a real
            # status; a failure after that arrives as an error event in the stream.
            try:
                first = await events.__anext__()
            except StopAsyncIteration:
                first = None

            def sse(obj: dict) -> str:
                return f"data: {json.dumps(obj)}\n\n"

            async def stream():
                try:
                    if kind == "chat":
                        for i in range(req.n):
                            yield sse(chunk(i, None, None, first=True))
                    pending = [first] if first else []
                    while True:
                        if pending:
                            index, what, value = pending.pop()
                        else:
                            try:
                                index, what, value = await events.__anext__()
                            except StopAsyncIteration:
                                break
                        yield sse(chunk(index, value, None) if what == "piece" else chunk(index, None, value[0]))
                    yield "data: [DONE]\n\n"
                except APIError as e:
                    yield sse(error_body(e.message, e.kind, e.code, e.param))
                except Exception as e:  # the response has started: report in the stream
                    log.exception("stream failed")
                    yield sse(error_body(f"internal server error ({public(e)})", "server_error", "internal_error"))
                finally:
                    await events.aclose()
            return StreamingResponse(stream(), media_type="text/event-stream")

        texts, finishes, counts = [""] * req.n, ["length"] * req.n, [0] * req.n
        async for index, what, value in events:
            if what == "piece":
                texts[index] += value
            else:
                finishes[index], counts[index] = value
        if kind == "chat":
            choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]},
                        "finish_reason": finishes[i]} for i in range(req.n)]
        else:
            choices = [{"index": i, "text": texts[i], "finish_reason": finishes[i], "logprobs": None}
                       for i in range(req.n)]
        completion = sum(counts)
        return {"id": rid, "object": obj, "created": int(time.time()), "model": name, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                          "total_tokens": prompt_tokens + completion}}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        if len(req.messages) > limits.max_messages:
            raise APIError(400, f"too many messages ({len(req.messages)} > {limits.max_messages})",
                           param="messages")
        if sum(len(m.content) for m in req.messages) > limits.max_prompt_chars:
            raise APIError(400, f"prompt longer than {limits.max_prompt_chars} characters", param="messages")
        ids, _ = render(tok, [m.model_dump() for m in req.messages], add_generation_prompt=True)
        return await respond("chat", ids, req, len(ids))

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        if len(req.prompt) > limits.max_prompt_chars:
            raise APIError(400, f"prompt longer than {limits.max_prompt_chars} characters", param="prompt")
        ids = [tok.bos] + tok.encode(req.prompt)
        return await respond("text", ids, req, len(ids))

    return app


def serve(models: dict[str, GPT], tok: FidanTokenizer, host: str, port: int, api_key: str | None,
          preference_file: Path | None = None, max_batch: int = 8, limits: ServerLimits = ServerLimits(),
          batching: str = "continuous") -> None:
    import uvicorn
    app = create_app(models, tok, api_key=api_key, preference_file=preference_file, max_batch=max_batch,
                     limits=limits, batching=batching)
    print(f"fidan serve: models {', '.join(models)}; chat page at http://{host}:{port}/"
          + (f"; preferences go to {preference_file}" if preference_file else ""), flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info")
