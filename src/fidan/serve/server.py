"""``fidan serve``: an OpenAI-compatible HTTP API over a fidan model.

Routes: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (streaming as server-sent
events, or one JSON response), ``GET /v1/models``, ``GET /health``. With an API key set, every
route but ``/health`` needs ``Authorization: Bearer <key>``. Requests are validated (errors are
4xx JSON in OpenAI's ``{"error": {...}}`` shape) and bounded: message count, prompt length and
``max_tokens``. Generation runs in a worker thread, one request at a time behind a queue, so
concurrent clients all complete and the event loop stays responsive.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from fidan.model.gpt import GPT
from fidan.serve.engine import SamplingParams, TextStream, generate
from fidan.tokenizer.bpe import END, EOS, FidanTokenizer
from fidan.tokenizer.chat import render


@dataclass(frozen=True)
class ServerLimits:
    max_messages: int = 64
    max_tokens: int = 512
    max_prompt_chars: int = 32_000


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class Sampling(BaseModel):
    """Settings both endpoints share."""
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)
    stop: str | list[str] | None = None
    stream: bool = False
    seed: int | None = None
    repetition_penalty: float = Field(default=1.0, ge=1.0, le=5.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)  # accepted for compatibility; not used


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(Sampling):
    prompt: str


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        self.status, self.message, self.kind, self.code = status, message, kind, code


def error_response(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "param": None,
                                                               "code": code}})


def create_app(model: GPT, tok: FidanTokenizer, model_name: str, api_key: str | None = None,
               limits: ServerLimits = ServerLimits()) -> FastAPI:
    app = FastAPI(title="fidan", version="1")
    lock = asyncio.Lock()          # one generation at a time; waiting requests queue here
    stop_ids = {tok.id_of(END), tok.id_of(EOS)}
    created = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.kind, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", [])[1:]) or "body"
        return error_response(400, f"{where}: {first.get('msg')}", "invalid_request_error")

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key and request.url.path != "/health":
            if request.headers.get("authorization", "") != f"Bearer {api_key}":
                return error_response(401, "missing or wrong API key (Authorization: Bearer ...)",
                                      "authentication_error", "invalid_api_key")
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "fidan"}]}

    def budget(requested: int | None, prompt_len: int) -> int:
        wanted = min(requested or limits.max_tokens, limits.max_tokens)
        room = model.cfg.context - model.cfg.prompt_tokens - prompt_len
        if room < 1:
            raise APIError(400, f"prompt is {prompt_len} tokens; the model's context is {model.cfg.context}",
                           code="context_length_exceeded")
        return min(wanted, room)

    def params(req, max_tokens: int) -> SamplingParams:
        return SamplingParams(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                              max_tokens=max_tokens, seed=req.seed, stop_ids=stop_ids,
                              repetition_penalty=req.repetition_penalty)

    async def run(ids: list[int], sampling: SamplingParams, stops: list[str]):
        """Yield text pieces as the worker thread produces them; stop strings end the reply."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def work():
            stream = TextStream(tok)
            try:
                for token in generate(model, ids, sampling):
                    if cancel.is_set():
                        break
                    piece = stream.push(token)
                    loop.call_soon_threadsafe(queue.put_nowait, ("piece", piece))
                loop.call_soon_threadsafe(queue.put_nowait, ("done", "stop"))
            except Exception as e:  # surfaced to the client as a server error
                loop.call_soon_threadsafe(queue.put_nowait, ("error", str(e)))

        hold = max((len(x) for x in stops), default=1) - 1  # a stop string may straddle two pieces

        async with lock:
            worker = loop.run_in_executor(None, work)
            text, sent, count, reason = "", 0, 0, "length"
            try:
                while True:
                    kind, value = await queue.get()
                    if kind == "error":
                        raise APIError(500, value, "server_error")
                    if kind == "done":
                        reason = "stop" if count < sampling.max_tokens else "length"
                        if text[sent:]:
                            yield ("piece", text[sent:])
                        break
                    count += 1
                    text += value
                    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
                    if cut >= 0:
                        if text[sent:cut]:
                            yield ("piece", text[sent:cut])
                        reason = "stop"
                        break
                    safe = len(text) - hold
                    if safe > sent:
                        yield ("piece", text[sent:safe])
                        sent = safe
            finally:
                cancel.set()
                await worker
            yield ("done", (reason, count))

    def stop_list(stop) -> list[str]:
        return [stop] if isinstance(stop, str) else list(stop or [])

    async def respond(kind: str, ids: list[int], req, prompt_tokens: int):
        requested = req.max_tokens if kind == "text" else (req.max_completion_tokens or req.max_tokens)
        sampling = params(req, budget(requested, prompt_tokens))
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        obj = "chat.completion" if kind == "chat" else "text_completion"
        stops = stop_list(req.stop)

        def chunk(piece: str | None, finish: str | None, first: bool = False) -> dict:
            if kind == "chat":
                delta = ({"role": "assistant", "content": ""} if first else {}) | \
                        ({"content": piece} if piece else {})
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": piece or "", "finish_reason": finish}
            return {"id": rid, "object": obj + (".chunk" if kind == "chat" else ""), "created": int(time.time()),
                    "model": model_name, "choices": [choice]}

        if req.stream:
            async def events():
                if kind == "chat":
                    yield f"data: {json.dumps(chunk(None, None, first=True))}\n\n"
                async for what, value in run(ids, sampling, stops):
                    if what == "piece":
                        yield f"data: {json.dumps(chunk(value, None))}\n\n"
                    else:
                        yield f"data: {json.dumps(chunk(None, value[0]))}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")

        text, finish, count = "", "length", 0
        async for what, value in run(ids, sampling, stops):
            if what == "piece":
                text += value
            else:
                finish, count = value
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                  if kind == "chat" else {"index": 0, "text": text, "finish_reason": finish, "logprobs": None})
        return {"id": rid, "object": obj, "created": int(time.time()), "model": model_name, "choices": [choice],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": count,
                          "total_tokens": prompt_tokens + count}}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        if len(req.messages) > limits.max_messages:
            raise APIError(400, f"too many messages ({len(req.messages)} > {limits.max_messages})")
        if sum(len(m.content) for m in req.messages) > limits.max_prompt_chars:
            raise APIError(400, f"prompt longer than {limits.max_prompt_chars} characters")
        ids, _ = render(tok, [m.model_dump() for m in req.messages], add_generation_prompt=True)
        return await respond("chat", ids, req, len(ids))

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        if len(req.prompt) > limits.max_prompt_chars:
            raise APIError(400, f"prompt longer than {limits.max_prompt_chars} characters")
        ids = [tok.bos] + tok.encode(req.prompt)
        return await respond("text", ids, req, len(ids))

    return app


def serve(model: GPT, tok: FidanTokenizer, model_name: str, host: str, port: int, api_key: str | None) -> None:
    import uvicorn
    uvicorn.run(create_app(model, tok, model_name, api_key), host=host, port=port, log_level="info")
