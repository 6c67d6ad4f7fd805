"""``fidan serve``: an OpenAI-compatible HTTP API and a chat page over a run's models.

Routes: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (streaming as server-sent
events, or one JSON response), ``GET /v1/models`` (one entry per stage's model), ``GET /health``,
``POST /v1/preferences`` (the web page's compare mode records a person's choice there, in the
file the RLHF stage reads) and ``GET /``, the chat page. With an API key set, every route but
``/health`` and the page needs ``Authorization: Bearer <key>``. Requests are validated (errors
are 4xx JSON in OpenAI's ``{"error": {...}}`` shape) and bounded: message count, prompt length
and ``max_tokens``. Each model has a worker thread that batches the requests waiting for it
(``serve/batching.py``), so concurrent clients share the decoding steps and the event loop
stays responsive.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from fidan.infer.engine import SamplingParams, TextStream
from fidan.model.gpt import GPT
from fidan.rlhf import preferences
from fidan.serve.batching import Scheduler
from fidan.tokenizer.bpe import END, EOS, PAD, FidanTokenizer
from fidan.tokenizer.chat import render

PAGE = Path(__file__).with_name("static") / "index.html"


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


class PreferenceRequest(BaseModel):
    prompt: str | list[Message]
    a: str
    b: str
    choice: Literal["a", "b", "tie", "skip"]
    models: list[str] = Field(default_factory=list)


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        self.status, self.message, self.kind, self.code = status, message, kind, code


def error_response(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "param": None,
                                                               "code": code}})


def create_app(models: GPT | dict[str, GPT], tok: FidanTokenizer, model_name: str = "fidan",
               api_key: str | None = None, limits: ServerLimits = ServerLimits(),
               preference_file: Path | None = None, max_batch: int = 8) -> FastAPI:
    """``models`` maps names to models (the first is the default); a single model is named ``model_name``."""
    if isinstance(models, GPT):
        models = {model_name: models}
    app = FastAPI(title="fidan", version="1")
    schedulers = {name: Scheduler(m, max_batch, tok.id_of(PAD)) for name, m in models.items()}
    app.state.schedulers = schedulers
    default = next(iter(models))
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
        if api_key and request.url.path not in ("/health", "/"):
            if request.headers.get("authorization", "") != f"Bearer {api_key}":
                return error_response(401, "missing or wrong API key (Authorization: Bearer ...)",
                                      "authentication_error", "invalid_api_key")
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/health")
    async def health():
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
        line = preferences.record(prompt, req.a, req.b, req.choice, "human-web", models=req.models)
        await asyncio.get_running_loop().run_in_executor(None, preferences.append, preference_file, line)
        return {"saved": True, "file": str(preference_file), "choice": req.choice}

    def pick_model(name: str | None) -> tuple[str, GPT]:
        if not name:
            return default, models[default]
        if name not in models:
            raise APIError(404, f"model '{name}' not found; this server has {', '.join(models)}",
                           code="model_not_found")
        return name, models[name]

    def budget(model: GPT, requested: int | None, prompt_len: int) -> int:
        wanted = min(requested or limits.max_tokens, limits.max_tokens)
        room = model.cfg.context - model.cfg.prompt_tokens - prompt_len
        if room < 1:
            raise APIError(400, f"prompt is {prompt_len} tokens; the model's context is {model.cfg.context}",
                           code="context_length_exceeded")
        return min(wanted, room)

    def params(req, max_tokens: int) -> SamplingParams:
        return SamplingParams(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                              max_tokens=max_tokens, seed=req.seed, stop_ids=stop_ids,
                              repetition_penalty=req.repetition_penalty, stop=stop_list(req.stop))

    async def run(name: str, ids: list[int], sampling: SamplingParams):
        """Yield ("piece", text) as the model's worker produces tokens, then ("done", (reason, count))."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = schedulers[name].submit(ids, sampling,
                                      lambda kind, value: loop.call_soon_threadsafe(events.put_nowait, (kind, value)))
        stream, count, reason = TextStream(tok, sampling.stop), 0, "length"
        try:
            while True:
                kind, value = await events.get()
                if kind == "error":
                    raise APIError(500, value, "server_error")
                if kind == "end":
                    reason = value
                    if tail := stream.flush():
                        yield ("piece", tail)
                    break
                count += 1
                if piece := stream.push(value):
                    yield ("piece", piece)
                if stream.stopped:
                    reason = "stop"
                    break
        finally:
            job.cancel()  # the client left or a stop string matched: free the batch row
        yield ("done", (reason, count))

    def stop_list(stop) -> list[str]:
        return [stop] if isinstance(stop, str) else list(stop or [])

    async def respond(kind: str, ids: list[int], req, prompt_tokens: int):
        name, model = pick_model(req.model)
        requested = req.max_tokens if kind == "text" else (req.max_completion_tokens or req.max_tokens)
        sampling = params(req, budget(model, requested, prompt_tokens))
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        obj = "chat.completion" if kind == "chat" else "text_completion"

        def chunk(piece: str | None, finish: str | None, first: bool = False) -> dict:
            if kind == "chat":
                delta = ({"role": "assistant", "content": ""} if first else {}) | \
                        ({"content": piece} if piece else {})
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": piece or "", "finish_reason": finish}
            return {"id": rid, "object": obj + (".chunk" if kind == "chat" else ""), "created": int(time.time()),
                    "model": name, "choices": [choice]}

        if req.stream:
            async def events():
                if kind == "chat":
                    yield f"data: {json.dumps(chunk(None, None, first=True))}\n\n"
                async for what, value in run(name, ids, sampling):
                    if what == "piece":
                        yield f"data: {json.dumps(chunk(value, None))}\n\n"
                    else:
                        yield f"data: {json.dumps(chunk(None, value[0]))}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")

        text, finish, count = "", "length", 0
        async for what, value in run(name, ids, sampling):
            if what == "piece":
                text += value
            else:
                finish, count = value
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                  if kind == "chat" else {"index": 0, "text": text, "finish_reason": finish, "logprobs": None})
        return {"id": rid, "object": obj, "created": int(time.time()), "model": name, "choices": [choice],
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


def serve(models: dict[str, GPT], tok: FidanTokenizer, host: str, port: int, api_key: str | None,
          preference_file: Path | None = None, max_batch: int = 8) -> None:
    import uvicorn
    app = create_app(models, tok, api_key=api_key, preference_file=preference_file, max_batch=max_batch)
    print(f"fidan serve: models {', '.join(models)}; chat page at http://{host}:{port}/"
          + (f"; preferences go to {preference_file}" if preference_file else ""), flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info")
