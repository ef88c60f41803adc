"""EngineWorker: the one thread that owns the model and the device, and runs every job on it.

A job is a generator function `fn(ctx)` that does its work in slices: each `yield` hands back a progress value and
a chance to switch. The worker always advances the most urgent job by one slice (interactive > one-off > training;
first come, first served within a priority), so an interactive job waits at most one training step. A new job with
the same `key` as a pending or running one *supersedes* it: the old one is cancelled at its next yield and never
finished. An exception in a job becomes a `JobFailed` event with a readable message; the thread keeps running.

Events (plain dataclasses) go to the `emit` callback, called on the engine thread: the studio's bridge moves them
to the GUI thread. Nothing here knows about Qt.
"""

from __future__ import annotations

import itertools
import queue
import threading
import traceback
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from .session import EngineSession
from .threads import ThreadPolicy


class Priority(IntEnum):
    INTERACTIVE = 0  # a slider, the scrubber: supersedes its own kind, runs before anything else
    ONE_OFF = 1  # sample, evaluate, export, load
    TRAINING = 2  # yields between steps


class JobKey(StrEnum):
    """What a job is, for supersession (a newer job of a key cancels the older) and for the status bar's words."""

    MODEL = "model"
    SAMPLE = "sample"
    TRAJECTORY = "trajectory"
    FORK = "fork"
    INTERPOLATE = "interpolate"
    LIKELIHOOD = "likelihood"
    DATASET = "dataset"
    DATASET_IMAGES = "dataset-images"
    HELD_OUT = "held-out"
    TRAINING_COST = "training-cost"
    TRAIN = "train"


class Cancelled(Exception):
    """Thrown into a job's generator at its yield once it has been cancelled or superseded (its `finally` runs)."""


@dataclass
class JobContext:
    """What a running job can see: the worker's shared state and its own cancellation flag."""

    worker: EngineWorker
    job_id: int
    cancelled: threading.Event = field(default_factory=threading.Event)
    key: str = ""

    @property
    def state(self) -> EngineSession:
        return self.worker.state

    def report(self, value: Any) -> None:
        """Progress from a plain (non-generator) job, sent as its generator's yield would be; raises Cancelled once
        the job is cancelled, so a long blocking call that reports progress can also be stopped."""
        self.worker.poll()  # a cancel or a superseding request sent meanwhile
        if self.cancelled.is_set():
            raise Cancelled()
        self.worker.emit(JobProgress(self.job_id, self.key, value))

    def announce(self, event: Any) -> None:
        """An event that outlives the job (the compile of the model it loaded finishing later): sent as it is, from
        any thread."""
        self.worker.emit(event)


JobFunction = Callable[[JobContext], Generator[Any, None, Any]]


@dataclass(frozen=True)
class JobStarted:
    job_id: int
    key: str


@dataclass(frozen=True)
class JobProgress:
    job_id: int
    key: str
    value: Any


@dataclass(frozen=True)
class JobFinished:
    job_id: int
    key: str
    result: Any


@dataclass(frozen=True)
class JobFailed:
    job_id: int
    key: str
    message: str
    details: str  # the traceback, for a "details" button and the log


@dataclass(frozen=True)
class JobCancelled:
    job_id: int
    key: str


@dataclass
class _Job:
    job_id: int
    key: str
    priority: Priority
    fn: JobFunction
    ctx: JobContext
    graceful: bool = False
    generator: Iterator[Any] | None = None


class EngineWorker:
    """Runs jobs on one background thread. `submit` and `cancel` are safe from any thread."""

    def __init__(self, emit: Callable[[Any], None], state: EngineSession | None = None):
        self.emit = emit
        self.state = state if state is not None else EngineSession()  # owned by the engine thread
        self._inbox: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        self._jobs: list[_Job] = []
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
        self._stopping = False
        self.threads = ThreadPolicy()  # torch's CPU threads follow the cores other processes leave free
        self._thread.start()

    def submit(
        self,
        key: str,
        fn: JobFunction,
        priority: Priority = Priority.ONE_OFF,
        supersede: bool = True,
        graceful: bool = False,
    ) -> int:
        """Queue `fn` as a job; returns its id. With `supersede`, a pending or running job of the same key is cancelled.

        A `graceful` job is not interrupted when cancelled: it watches `ctx.cancelled` itself and finishes its own
        way (training saves a checkpoint first).
        """
        job_id = next(self._ids)
        self._inbox.put(("submit", job_id, key, fn, priority, supersede, graceful))
        return job_id

    def cancel(self, job_id: int | None = None, key: str | None = None) -> None:
        """Cancel a job by id, or every job of a key; it stops at its next yield."""
        self._inbox.put(("cancel", job_id, key))

    def shutdown(self, timeout: float | None = 10.0) -> None:
        """Cancel everything, let the jobs clean up (a training job saves its checkpoint), and end the thread."""
        self._inbox.put(("shutdown",))
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def poll(self) -> None:
        """Take in the requests sent while a plain job blocks the engine thread (cancels, newer jobs that supersede
        it); does nothing on any other thread."""
        if threading.current_thread() is self._thread:
            self._drain_inbox(block=False)

    # ---- the engine thread ----

    def _loop(self) -> None:
        while not (self._stopping and not self._jobs):
            self._drain_inbox(block=not self._jobs)
            if not self._jobs:
                continue
            job = min(self._jobs, key=lambda j: (j.priority, j.job_id))
            self._advance(job)

    def _drain_inbox(self, block: bool) -> None:
        try:
            message = self._inbox.get(block=block)
        except queue.Empty:
            return
        while True:
            self._handle(message)
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "submit":
            _, job_id, key, fn, priority, supersede, graceful = message
            if supersede:
                for old in self._jobs:
                    if old.key == key:
                        old.ctx.cancelled.set()
            self._jobs.append(_Job(job_id, key, priority, fn, JobContext(self, job_id, key=key), graceful))
        elif kind == "cancel":
            _, job_id, key = message
            for job in self._jobs:
                if job.job_id == job_id or (key is not None and job.key == key):
                    job.ctx.cancelled.set()
        elif kind == "shutdown":
            self._stopping = True
            for job in self._jobs:
                job.ctx.cancelled.set()

    def _advance(self, job: _Job) -> None:
        """One slice of `job`: start it, or resume it until its next yield; report how it ended if it did."""
        self.threads.tick()
        try:
            if job.generator is None:
                if job.ctx.cancelled.is_set():  # superseded before it ever ran: never started, never finished
                    self._end(job, JobCancelled(job.job_id, job.key))
                    return
                self.emit(JobStarted(job.job_id, job.key))
                job.generator = job.fn(job.ctx)
                if not hasattr(job.generator, "__next__"):  # a plain function: its return value is the result
                    self._end(job, JobFinished(job.job_id, job.key, job.generator))
                    return
            if job.ctx.cancelled.is_set() and not job.graceful:
                value = job.generator.throw(Cancelled())  # stops it at its yield; its `finally` blocks run
            else:
                value = next(job.generator)
            if value is not None:  # a bare `yield` is only a switch point
                self.emit(JobProgress(job.job_id, job.key, value))
        except StopIteration as done:
            self._end(job, JobFinished(job.job_id, job.key, done.value))
        except Cancelled:
            self._end(job, JobCancelled(job.job_id, job.key))
        except Exception as e:  # noqa: BLE001 - any failure of a job is reported, never fatal to the thread
            self._end(job, JobFailed(job.job_id, job.key, _readable(e), traceback.format_exc()))

    def _end(self, job: _Job, event: Any) -> None:
        self._jobs.remove(job)
        if job.generator is not None and hasattr(job.generator, "close"):
            job.generator.close()
        self.emit(event)


def _readable(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, MemoryError) or "out of memory" in text.lower():
        return f"out of memory: {text} (try a smaller batch or fewer images)"
    return text
