"""A worker thread that batches concurrent requests through one ``BatchDecoder``.

Requests wait in a bounded queue (``submit`` raises ``QueueFull`` when it is full, and
``Unavailable`` once the worker has stopped). The worker decodes step by step, handing each new
token to its request's callback on the worker thread. Two ways to fill the batch
(``batching``):

- ``continuous`` (the default): between two decoding steps the worker admits waiting requests
  into the running batch, up to ``max_batch`` rows (they are prefilled together, then joined:
  ``BatchDecoder.add``), and a row that ends leaves at once, so its slot goes to the next request.
- ``static``: when the worker is free it takes every waiting request (up to ``max_batch``),
  prefills them together and decodes them until the last one ends; requests that arrive while a
  batch runs wait for the next batch.

One request's failure is its own: a row whose sampling fails ends with an error while the others
carry on (``BatchDecoder(isolate=True)``); if the shared prefill fails (of a new batch, or of the
requests joining one), each of those requests is retried alone, and the running rows are not
touched; if a shared decoding step fails, each unfinished row continues alone from the
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


BATCHING = ("continuous", "static")


class Scheduler:
    def __init__(self, model: GPT, max_batch: int = 8, pad_id: int = 0, max_queue: int = 256,
                 batching: str = "continuous"):
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {', '.join(BATCHING)}, not {batching!r}")
        self.model, self.pad_id, self.batching = model, pad_id, batching
        self.max_batch = 1 if model.cfg.prompt_tokens else max_batch
        self.max_queue = max_queue
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.batches = 0           # how many batches ran (continuous: runs from empty to empty), the largest
        self.largest = 0
        self.joined = 0            # rows admitted into a batch that was already running (continuous)
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
        """Stop the worker after its current batch (continuous: once its running rows end, admitting
        no more); waiting requests get an error."""
        with self._lock:
            self._closed = True
            self.jobs.put(None)

    def _work(self) -> None:
        if self.batching == "continuous":
            self._work_continuous()
        else:
            self._work_static()
        while True:  # closed: whatever still waits will never run
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._finish(job, "error", Unavailable("the server is shutting down"))

    def _work_static(self) -> None:
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

    # ---- continuous batching ----------------------------------------------------------------------

    def _take(self, room: int, wait: bool) -> tuple[list[Job], bool]:
        """Up to ``room`` waiting requests (blocking for the first when ``wait``), and whether
        ``close`` was called."""
        taken: list[Job] = []
        while len(taken) < room:
            try:
                job = self.jobs.get() if wait and not taken else self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return taken, True
            if not job.cancelled.is_set():
                taken.append(job)
        return taken, False

    def _work_continuous(self) -> None:
        decoder: BatchDecoder | None = None
        jobs: list[Job] = []       # row id -> its request, for the running decoder
        closing = False
        while True:
            running = decoder is not None and not decoder.done
            if not closing:
                room = self.max_batch - (len(decoder.rows) if running else 0)
                new, closing = self._take(room, wait=not running)
                if new:
                    try:
                        decoder, jobs = self._admit(decoder if running else None, jobs, new)
                    except Exception as e:  # a bug in this file: fail what is unfinished, keep the worker alive
                        log.exception("decoding worker failed")
                        for job in new + jobs:
                            self._finish(job, "error", e)
                        decoder, jobs = None, []
                    running = decoder is not None and not decoder.done
            if not running:
                if closing:
                    return
                continue
            try:
                if self._advance(decoder, jobs):
                    decoder, jobs = None, []
            except Exception as e:
                log.exception("decoding worker failed")
                for job in jobs:
                    self._finish(job, "error", e)
                decoder, jobs = None, []

    def _admit(self, decoder: BatchDecoder | None, jobs: list[Job],
               new: list[Job]) -> tuple[BatchDecoder | None, list[Job]]:
        """Prefill ``new`` and join it to ``decoder`` (or start a batch); on failure, one by one."""
        groups = [new]
        while groups:
            group = groups.pop(0)
            prompts, params = [j.prompt for j in group], [j.params for j in group]
            try:
                if decoder is None:
                    decoder = BatchDecoder(self.model, prompts, params, self.pad_id, isolate=True)
                    jobs = list(group)
                    self.batches += 1
                else:
                    decoder.add(prompts, params)
                    jobs = jobs + group
                    self.joined += len(group)
            except Exception as e:
                if len(group) == 1:
                    self._finish(group[0], "error", e)
                else:
                    log.warning("%d requests failed to start together (%s); starting them one by one",
                                len(group), e)
                    groups = [[j] for j in group] + groups
                continue
            self.largest = max(self.largest, len(decoder.rows))
        return decoder, jobs

    def _advance(self, decoder: BatchDecoder, jobs: list[Job]) -> bool:
        """One decoding step of the running batch; True when it cannot go on (its rows were split off)."""
        for row in decoder.rows:
            if jobs[row].cancelled.is_set():
                decoder.cancel(row)
        self._deliver(decoder, jobs, decoder.step())
        if decoder.broken is not None:
            self._split(decoder, jobs, decoder.params)
            return True
        return False

    # ---- both --------------------------------------------------------------------------------------

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
            self._deliver(decoder, jobs, decoder.step())
            if decoder.broken is not None:
                self._split(decoder, jobs, params)
                return

    def _deliver(self, decoder: BatchDecoder, jobs: list[Job], tokens: dict[int, int | None]) -> None:
        for row, token in tokens.items():
            if row in decoder.failed:
                self._finish(jobs[row], "error", decoder.failed[row])
            elif token is None:
                self._finish(jobs[row], "end", self._reason(decoder, row))
            else:
                self._emit(jobs[row], "token", token)

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
