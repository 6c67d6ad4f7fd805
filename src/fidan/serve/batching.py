"""A worker thread that batches concurrent requests through one ``BatchDecoder``.

Requests wait in a bounded queue (``submit`` raises ``QueueFull`` when it is full, and
``Unavailable`` once the worker has stopped). When the worker is free it takes every waiting
request (up to ``max_batch``), prefills them together and decodes them step by step, handing each
new token to its request's callback on the worker thread. Requests that arrive while a batch runs
wait for the next batch (this is static batching; continuous batching would also admit them mid-run).

One request's failure is its own: a row whose sampling fails ends with an error while the others
carry on (``BatchDecoder(isolate=True)``); if the shared prefill fails, each request of the batch
is retried alone; if a shared decoding step fails, each unfinished row continues alone from the
tokens it already has, with its own random generator, so its output is unchanged. Only a request
that also fails alone gets an error. Exceptions never reach the worker's loop, so the thread lives
as long as the scheduler.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from fidan.infer.engine import BatchDecoder, SamplingParams
from fidan.model.gpt import GPT

log = logging.getLogger("fidan.serve")

# on_event(kind, value): ("token", id) for every token, then ("end", reason) or ("error", exception)
Callback = Callable[[str, object], None]


class QueueFull(Exception):
    """More requests are waiting than the scheduler accepts."""


class Unavailable(Exception):
    """The scheduler's worker has stopped."""


@dataclass
class Job:
    prompt: list[int]
    params: SamplingParams
    on_event: Callback
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: bool = False   # "end" or "error" was sent; nothing more is

    def cancel(self) -> None:
        self.cancelled.set()


class Scheduler:
    def __init__(self, model: GPT, max_batch: int = 8, pad_id: int = 0, max_queue: int = 256):
        self.model, self.pad_id = model, pad_id
        self.max_batch = 1 if model.cfg.prompt_tokens else max_batch
        self.max_queue = max_queue
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.batches = 0           # how many batches ran, and the largest, for tests and logs
        self.largest = 0
        self.row_errors = 0        # rows that ended in an error
        self._lock = threading.Lock()
        self._closed = False
        self.thread = threading.Thread(target=self._work, name="fidan-decoder", daemon=True)
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and not self._closed

    @property
    def waiting(self) -> int:
        return self.jobs.qsize()

    def submit(self, prompt: list[int], params: SamplingParams, on_event: Callback) -> Job:
        return self.submit_many([(prompt, params, on_event)])[0]

    def submit_many(self, rows: list[tuple[list[int], SamplingParams, Callback]]) -> list[Job]:
        """Queue several rows at once (a request with ``n`` choices): all of them, or none."""
        with self._lock:
            if not self.alive:
                raise Unavailable("the model's decoding worker has stopped")
            if self.jobs.qsize() + len(rows) > self.max_queue:
                raise QueueFull(f"{self.jobs.qsize()} rows are already waiting (at most {self.max_queue})")
            jobs = [Job(prompt, params, on_event) for prompt, params, on_event in rows]
            for job in jobs:
                self.jobs.put(job)
        return jobs

    def close(self) -> None:
        """Stop the worker after its current batch; waiting requests get an error."""
        with self._lock:
            self._closed = True
            self.jobs.put(None)

    def _work(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self.jobs.put(None)  # seen again by the outer loop, after this batch
                    break
                batch.append(job)
            batch = [j for j in batch if not j.cancelled.is_set()]
            if batch:
                self._run(batch)
        while True:  # closed: whatever still waits will never run
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._finish(job, "error", Unavailable("the server is shutting down"))

    def _emit(self, job: Job, kind: str, value: object) -> None:
        """Hand an event to a request; a callback that fails (its client left) cancels that request only."""
        if job.finished:
            return
        try:
            job.on_event(kind, value)
        except Exception:
            job.cancel()

    def _finish(self, job: Job, kind: str, value: object) -> None:
        if job.finished:
            return
        if kind == "error":
            self.row_errors += 1
        self._emit(job, kind, value)
        job.finished = True

    def _run(self, batch: list[Job]) -> None:
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        try:
            self._decode(batch, [j.prompt for j in batch], [j.params for j in batch], None)
        except Exception as e:  # a bug in this file: fail what is unfinished, keep the worker alive
            log.exception("decoding worker failed")
            for job in batch:
                self._finish(job, "error", e)

    def _decode(self, jobs: list[Job], prompts: list[list[int]], params: list[SamplingParams],
                generators: list[torch.Generator] | None) -> None:
        try:
            decoder = BatchDecoder(self.model, prompts, params, self.pad_id, generators, isolate=True)
        except Exception as e:
            if len(jobs) == 1:
                self._finish(jobs[0], "error", e)
                return
            log.warning("a batch of %d failed to start (%s); running its requests one by one", len(jobs), e)
            for i, job in enumerate(jobs):
                self._decode([job], [prompts[i]], [params[i]], [generators[i]] if generators else None)
            return
        while not decoder.done:
            for row, job in enumerate(jobs):
                if job.cancelled.is_set():
                    decoder.cancel(row)
            for row, token in decoder.step().items():
                if row in decoder.failed:
                    self._finish(jobs[row], "error", decoder.failed[row])
                elif token is None:
                    self._finish(jobs[row], "end", self._reason(decoder, row))
                else:
                    self._emit(jobs[row], "token", token)
            if decoder.broken is not None:
                self._split(decoder, jobs, params)
                return

    @staticmethod
    def _reason(decoder: BatchDecoder, row: int) -> str:
        return "length" if decoder.produced[row] >= decoder.limits[row] else "stop"

    def _split(self, decoder: BatchDecoder, jobs: list[Job], params: list[SamplingParams]) -> None:
        """The batch's forward pass failed: each row still running goes on by itself."""
        if len(decoder.rows) == 1 and len(jobs) == 1:
            self._finish(jobs[decoder.rows[0]], "error", decoder.broken)
            return
        log.warning("a decoding step of %d rows failed (%s); continuing each alone", len(decoder.rows),
                    decoder.broken)
        for row in list(decoder.rows):
            job = jobs[row]
            if job.cancelled.is_set() or row in decoder.cancelled:
                self._finish(job, "end", self._reason(decoder, row))
                continue
            left = decoder.limits[row] - decoder.produced[row]
            self._decode([job], [decoder.seen[row]], [replace(params[row], max_tokens=left)],
                         [decoder.generators[row]])
