"""How long engine work says how far it has got: one `Progress(stage, done, total)` for every recipe, job and load.

A piece of work is a generator (a figure's recipe, a studio job, a dataset load's callback) that yields, in any
order: a `Progress`, a partial result that also carries `done` and `total` (a stage of a progressive view, a chunk of
a trajectory's frames), or None, which is only a point where the engine thread may switch to a more urgent job. It
returns its result. The command line drains work with `finish` and a progress bar; the studio's engine thread
advances it one yield at a time. Nothing here imports torch, so the studio's panels may name these types.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar


class Stage(StrEnum):  # a str: a stage compares equal to its name, and a data source may give its own words
    DIRECT = "direct"  # x^0 from one evaluation (Eq. 15)
    SETTLED = "settled"  # a short strided chain
    EXACT = "exact"  # the ancestral chain of the paper (Alg. 2)
    SAMPLE = "sample"  # a sample grid's chain
    PREVIEW = "preview"  # the trainer's periodic sample grid
    TRAJECTORY = "trajectory"  # a chain with its frames kept (Fig. 6)
    FORK = "fork"  # the chain down to the held step, then its forks (Fig. 7)
    INTERPOLATION = "interpolation"  # the mixed latents' reverse chain (Figs. 8-9)
    BOUND = "bound"  # the variational bound's T terms per batch (Fig. 5, Table 2)
    READING = "reading"  # decoding images


@dataclass(frozen=True)
class Progress:
    stage: str  # a Stage, or a data source's words ("reading headers", "decoding")
    done: int
    total: int


T = TypeVar("T")
Work = Generator[Any, None, T]  # yields Progress, partial results or None; returns the result


def drain(steps: Iterable[T], stage: str, total: int, every: int = 10, done: int = 0) -> Work[T]:
    """Run a chain to its end, yielding its progress every `every` steps and at the end (None between: a point to
    pre-empt) out of `total`, counting from `done` steps already reported (the chain continues earlier work);
    returns the last step."""
    last = None
    for last in steps:  # noqa: B007 (the last step is the result)
        done += 1
        yield Progress(stage, min(done, total), total) if done % every == 0 or done == total else None
    return last


def finish(work: Work[T], on_progress: Callable[[Any], None] | None = None) -> T:
    """Run work to its end on this thread; `on_progress` sees every value it yields but None."""
    while True:
        try:
            value = next(work)
        except StopIteration as done:
            return done.value
        if value is not None and on_progress is not None:
            on_progress(value)


class ProgressBar:
    """The command line's one-line progress bar on stderr (quiet when stderr is not a terminal, but for the last
    line)."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.start = max(1, total), label, time.perf_counter()
        self.live = sys.stderr.isatty()
        self._last = 0.0

    def update(self, done: int, extra: str = "") -> None:
        now = time.perf_counter()
        if not self.live or (now - self._last < 0.1 and done < self.total):
            return
        self._last = now
        frac = min(1.0, done / self.total)
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {done}/{self.total} {elapsed:5.0f}s eta {eta:5.0f}s {extra}   ")
        sys.stderr.flush()

    def close(self, message: str = "") -> None:
        if self.live:
            sys.stderr.write("\n")
        if message:
            print(message, file=sys.stderr)
