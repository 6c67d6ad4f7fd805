"""A worker thread that batches concurrent requests through one ``BatchDecoder``.

Requests wait in a queue. When the worker is free it takes every waiting request (up to
``max_batch``), prefills them together and decodes them step by step, handing each new token to
its request's callback on the worker thread. Requests that arrive while a batch runs wait for the
next batch (this is static batching; continuous batching would also admit them mid-run).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from fidan.infer.engine import BatchDecoder, SamplingParams
from fidan.model.gpt import GPT

# on_event(kind, value): ("token", id) for every token, then ("end", reason) or ("error", message)
Callback = Callable[[str, object], None]


@dataclass
class Job:
    prompt: list[int]
    params: SamplingParams
    on_event: Callback
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()


class Scheduler:
    def __init__(self, model: GPT, max_batch: int = 8, pad_id: int = 0):
        self.model, self.pad_id = model, pad_id
        self.max_batch = 1 if model.cfg.prompt_tokens else max_batch
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.batches = 0           # how many batches ran, and the largest, for tests and logs
        self.largest = 0
        threading.Thread(target=self._work, name="fidan-decoder", daemon=True).start()

    def submit(self, prompt: list[int], params: SamplingParams, on_event: Callback) -> Job:
        job = Job(prompt, params, on_event)
        self.jobs.put(job)
        return job

    def _work(self) -> None:
        while True:
            batch = [self.jobs.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            batch = [j for j in batch if not j.cancelled.is_set()]
            if batch:
                self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        try:
            decoder = BatchDecoder(self.model, [j.prompt for j in batch], [j.params for j in batch], self.pad_id)
            while not decoder.done:
                for row, job in enumerate(batch):
                    if job.cancelled.is_set():
                        decoder.cancel(row)
                for row, token in decoder.step().items():
                    if token is None:
                        reason = "length" if decoder.produced[row] >= decoder.limits[row] else "stop"
                        batch[row].on_event("end", reason)
                    else:
                        batch[row].on_event("token", token)
        except Exception as e:  # reported to every request of the batch as a server error
            for job in batch:
                job.on_event("error", f"{type(e).__name__}: {e}")
