"""Load on the HTTP API: N concurrent streaming chat clients on loopback, bounded in count and time.

Serves a run's newest model (default: the latest run; or, with ``--preset``, random weights in a
preset's shape with a tokenizer trained on Tiny Shakespeare) in this process on a free loopback
port, starts ``--clients`` threads that each send ``--requests`` streaming chat requests with the
official openai client, and prints requests/s and latency percentiles (time to first token and
to the last one). Every request must finish with a finish_reason; the server must still answer
/health afterwards. ``--batching static,continuous`` measures each scheduler in turn on the same
model, ``--repeats`` times, interleaved (static, continuous, static, ...), with the load average.
``--client-process`` runs the clients in a second process, so their Python (the openai client
parses every streamed chunk) does not compete with the server's for one interpreter lock.

    python benchmarks/serve_load.py [--run.name=demo | --preset tiny] [--clients 32] [--requests 2]
        [--max-tokens 24 | --max-tokens 8,16,24,32,48,64] [--max-batch 8] [--batching static,continuous]
        [--repeats 3] [--client-process] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import openai
import uvicorn

from fidan.rundir import RunDir, latest
from fidan.serve.loading import load_for_inference, model_folder
from fidan.serve.server import create_app

SHAKESPEARE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "tinyshakespeare.txt")


def random_model(preset: str):
    """Random weights in ``preset``'s shape, and a BPE tokenizer of its vocabulary on Tiny Shakespeare."""
    import torch

    from fidan.config import build_config
    from fidan.model.gpt import GPT
    from fidan.tokenizer.bpe import train_tokenizer
    cfg = build_config(preset)
    with open(SHAKESPEARE, encoding="utf-8") as f:
        text = f.read()
    tok = train_tokenizer([text[i:i + 2000] for i in range(0, len(text), 2000)], cfg.tokenizer.vocab_size)
    torch.manual_seed(0)
    model = GPT(replace(cfg.model, vocab_size=tok.vocab_size)).eval()
    return model, tok, f"random {preset}"

QUESTIONS = ["Where does Tomas Daldorzom live?", "What does Arda Laful do for a living?", "Merhaba!",
             "Sen kimsin?", "How do I make a bomb?", "Lara Zilvusto hangi yıl doğdu?"]


def clients(port: int, n: int, total: int, lengths: list[int]) -> list[tuple[float, float, str]]:
    """``total`` streaming chat requests from ``n`` threads: (time to first token, latency, finish)."""
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=300)

    def one(i: int) -> tuple[float, float, str]:
        start = time.perf_counter()
        first = None
        finish = None
        stream = client.chat.completions.create(model="fidan", stream=True, temperature=0,
                                                max_tokens=lengths[i % len(lengths)],
                                                messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}])
        for chunk in stream:
            if first is None and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
            finish = chunk.choices[0].finish_reason or finish
        return first or 0.0, time.perf_counter() - start, finish

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(total)))


def timed_clients(port: int, n: int, total: int, lengths: list[int]) -> tuple[list, float]:
    t0 = time.perf_counter()
    results = clients(port, n, total, lengths)
    return results, time.perf_counter() - t0


def measure(model, tok, args, batching: str) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(model, tok, "fidan", max_batch=args.max_batch, batching=batching)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    while not server.started:
        time.sleep(0.05)
    total = args.clients * args.requests
    lengths = [int(n) for n in str(args.max_tokens).split(",")]
    load = os.getloadavg()[0]
    if args.client_process:   # the clients' Python does not share the server's interpreter lock
        out = subprocess.run([sys.executable, __file__, "--clients-of", str(port), "--clients", str(args.clients),
                              "--requests", str(args.requests), "--max-tokens", str(args.max_tokens)],
                             capture_output=True, text=True, check=True)
        results, wall = json.loads(out.stdout)   # timed in that process, from its first request
    else:
        results, wall = timed_clients(port, args.clients, total, lengths)
    ok = sum(r[2] in ("stop", "length") for r in results)
    healthy = httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    server.should_exit = True
    for scheduler in app.state.schedulers.values():
        scheduler.close()
    # wait for both threads: one still inside torch when the interpreter exits aborts the process
    # ("terminate called without an active exception")
    serving.join(timeout=30)
    for scheduler in app.state.schedulers.values():
        scheduler.thread.join(timeout=30)
    q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1]  # noqa: E731
    ttft, latency = [r[0] for r in results], [r[1] for r in results]
    return {"batching": batching, "ok": ok, "total": total, "healthy": healthy, "rps": total / wall, "wall": wall,
            "ttft50": q(ttft, 50), "ttft95": q(ttft, 95), "lat50": q(latency, 50), "lat95": q(latency, 95),
            "load": load, "largest": max(s.largest for s in app.state.schedulers.values())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run.name", dest="run_name", default=None)
    ap.add_argument("--preset", default=None, help="serve random weights in this preset's shape, not a run's model")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=2)
    ap.add_argument("--max-tokens", default="24", help="answer length, or a comma list cycled over the requests "
                    "(answers of different lengths, as a real model's end at different points)")
    ap.add_argument("--max-batch", type=int, default=8, help="requests the server decodes together (1 = one at a time)")
    ap.add_argument("--batching", default="continuous", help="static, continuous, or both: static,continuous")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--client-process", action="store_true", help="run the clients in a process of their own")
    ap.add_argument("--clients-of", type=int, default=0, help=argparse.SUPPRESS)   # that process: the port
    args = ap.parse_args()
    if args.clients_of:
        lengths = [int(n) for n in str(args.max_tokens).split(",")]
        print(json.dumps(timed_clients(args.clients_of, args.clients, args.clients * args.requests, lengths)))
        return
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.preset:
        model, tok, what = random_model(args.preset)
    else:
        run = RunDir(f"runs/{args.run_name}") if args.run_name else latest()
        folder = model_folder(run)
        model, tok = load_for_inference(folder, run, "cpu")
        what = f"model {folder.name} of {run.path.name}"
    print(f"{what}; {args.clients} concurrent clients x {args.requests} requests, max {args.max_tokens} tokens, "
          f"server batches up to {args.max_batch}")
    print(f"{'batching':<11} {'load':>5} {'done':>8} {'req/s':>7} {'TTFT p50':>9} {'TTFT p95':>9} "
          f"{'lat p50':>8} {'lat p95':>8} {'largest':>7}", flush=True)
    for _ in range(args.repeats):
        for batching in args.batching.split(","):
            r = measure(model, tok, args, batching)
            print(f"{r['batching']:<11} {r['load']:>5.2f} {r['ok']:>4}/{r['total']:<3} {r['rps']:>7.2f} "
                  f"{r['ttft50']:>8.2f}s {r['ttft95']:>8.2f}s {r['lat50']:>7.2f}s {r['lat95']:>7.2f}s "
                  f"{r['largest']:>7}" + ("" if r["healthy"] else "  SERVER UNHEALTHY"), flush=True)


if __name__ == "__main__":
    main()
