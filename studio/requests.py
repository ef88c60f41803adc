"""One view's requests to the engine, and the rules every view follows: Qt-free, testable without a window.

A view (the interpolation strip, a fork, an evaluation, a sample grid) asks the engine for one thing at a time; a
newer request supersedes the older one, whose stages, progress and result are then never shown (the bridge cancels
its job). For the current request `ViewRequests` calls, in order: `on_value` for every value the job yields (stages
of a progressive view, progress), then exactly one of `on_done(result)`, `on_error(message)` or `on_cancelled()`.
It keeps what each panel used to count itself: which request is current, when it was asked, the stages seen so far.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

# `start(on_value)` submits the job with `on_value` as its progress callback and returns the job's future.
Start = Callable[[Callable[[Any], None]], Awaitable[Any]]


class ViewRequests:
    def __init__(
        self,
        on_value: Callable[[Any], None],
        on_done: Callable[[Any], None],
        on_error: Callable[[str], None],
        on_cancelled: Callable[[], None] | None = None,
    ):
        self._on_value, self._on_done, self._on_error = on_value, on_done, on_error
        self._on_cancelled = on_cancelled or (lambda: None)
        self._current = 0  # the request whose values may still be shown; older ones are ignored
        self._running = False
        self.asked_at = 0.0
        self.stages: list[str] = []  # the stages (values with .stage and .images) the current request has shown

    @property
    def running(self) -> bool:
        return self._running

    @property
    def elapsed(self) -> float:
        """Seconds since the current request was asked."""
        return time.perf_counter() - self.asked_at

    def ask(self, start: Start) -> asyncio.Future:
        """Supersede whatever was asked before and ask anew; the returned task ends when this request does."""
        self._current += 1
        request = self._current
        self.asked_at, self.stages, self._running = time.perf_counter(), [], True
        future = start(lambda value: self._value(request, value))
        get_loop = getattr(future, "get_loop", None)  # the job's own loop (the studio's qasync loop)
        finish = self._finish(request, future)
        return get_loop().create_task(finish) if get_loop is not None else asyncio.ensure_future(finish)

    def drop(self) -> None:
        """Ignore whatever is in flight from now on (the model changed, the view was cleared)."""
        self._current += 1
        self._running = False

    def _value(self, request: int, value: Any) -> None:
        if request != self._current:
            return  # a superseded request's late progress
        if hasattr(value, "stage") and hasattr(value, "images"):
            self.stages.append(str(value.stage))
        self._on_value(value)

    async def _finish(self, request: int, future: Awaitable[Any]) -> None:
        try:
            result = await future
        except asyncio.CancelledError:
            if request == self._current:
                self._running = False
                self._on_cancelled()
            return
        except Exception as e:  # noqa: BLE001 - the bridge's EngineError, or anything a job raised: one message
            if request == self._current:
                self._running = False
                self._on_error(str(e))
            return
        if request == self._current:
            self._running = False
            self._value(request, result)  # the final stage is a value like the others ...
            self._on_done(result)  # ... and then the end
