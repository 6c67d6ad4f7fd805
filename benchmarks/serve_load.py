"""Load on the HTTP API: N concurrent streaming chat clients on loopback, bounded in count and time.

Serves a run's newest model (default: the latest run) in this process on a free loopback port,
starts ``--clients`` threads that each send ``--requests`` streaming chat requests with the
official openai client, and prints requests/s and latency percentiles (time to first token and
to the last one). Every request must finish with a finish_reason; the server must still answer
/health afterwards.

    python benchmarks/serve_load.py [--run.name=demo] [--clients 32] [--requests 2] [--max-tokens 24] [--max-batch 8]
"""
from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import uvicorn

from fidan.rundir import RunDir, latest
from fidan.serve.loading import load_for_inference, model_folder
from fidan.serve.server import create_app

QUESTIONS = ["Where does Tomas Daldorzom live?", "What does Arda Laful do for a living?", "Merhaba!",
             "Sen kimsin?", "How do I make a bomb?", "Lara Zilvusto hangi yıl doğdu?"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run.name", dest="run_name", default=None)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--max-batch", type=int, default=8, help="requests the server decodes together (1 = one at a time)")
    args = ap.parse_args()
    run = RunDir(f"runs/{args.run_name}") if args.run_name else latest()
    folder = model_folder(run)
    model, tok = load_for_inference(folder, run, "cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(model, tok, "fidan", max_batch=args.max_batch)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=300)

    def one(i: int) -> tuple[float, float, str]:
        start = time.perf_counter()
        first = None
        finish = None
        stream = client.chat.completions.create(model="fidan", stream=True, temperature=0, max_tokens=args.max_tokens,
                                                messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}])
        for chunk in stream:
            if first is None and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
            finish = chunk.choices[0].finish_reason or finish
        return first or 0.0, time.perf_counter() - start, finish

    total = args.clients * args.requests
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        results = list(pool.map(one, range(total)))
    wall = time.perf_counter() - t0
    ok = sum(r[2] in ("stop", "length") for r in results)
    healthy = httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    server.should_exit = True
    q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1]
    ttft, latency = [r[0] for r in results], [r[1] for r in results]
    print(f"model {folder.name} of {run.path.name}; {args.clients} concurrent clients x {args.requests} requests, "
          f"max {args.max_tokens} tokens, server batches up to {args.max_batch}")
    print(f"completed {ok}/{total}; server healthy afterwards: {healthy}")
    print(f"throughput {total / wall:.2f} requests/s over {wall:.1f} s")
    print(f"time to first token p50 {q(ttft, 50):.2f} s, p95 {q(ttft, 95):.2f} s")
    print(f"request latency     p50 {q(latency, 50):.2f} s, p95 {q(latency, 95):.2f} s")


if __name__ == "__main__":
    main()
