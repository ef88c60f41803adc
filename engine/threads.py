"""How many CPU threads torch may use: as many as other processes leave free.

On a small CPU, torch's OpenMP threads spin-wait for one another; when another process holds a core, the thread that
lost it stalls all the others, and a 2-core machine trains 20-50x slower with 2 threads than with 1 (measured: 183
-> 3 images/s for the tiny preset beside one busy process; with one thread, ~110 images/s). `ThreadPolicy` watches
how much CPU is free (Linux /proc/stat) plus what this process uses itself, and moves torch between 1 thread and the
count it started with. It does nothing where the user chose (OMP_NUM_THREADS set), on a single thread, or off Linux.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

Sample = tuple[float, float, float]  # (wall seconds, seconds all CPUs sat idle or ran niced work, this process's CPU s)


def _read_sample() -> Sample | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 6:
        return None
    # idle + iowait, and the time of processes at a positive nice value (the studio's background compile runs at 19,
    # and is stopped while the studio works): torch's threads at nice 0 take such a core back at once (CFS weights
    # 1024 against 15 at nice 19; a process at nice 1-5 would still keep a third to four fifths of its share).
    idle_ticks = int(fields[2]) + int(fields[4]) + int(fields[5])  # summed over every CPU
    return time.monotonic(), idle_ticks / os.sysconf("SC_CLK_TCK"), time.process_time()


class ThreadPolicy:
    """Call `tick()` often (every training step, every job); every `interval` seconds it may change the thread count.

    Free cores = (idle or niced CPU seconds + this process's CPU seconds) / wall seconds over the last interval. The
    threads become floor(free + 0.25), between 1 and the starting count: a core that is mostly busy elsewhere is not
    used.
    """

    def __init__(
        self,
        max_threads: int | None = None,
        interval: float = 2.0,
        read_sample: Callable[[], Sample | None] = _read_sample,
        get_threads: Callable[[], int] | None = None,
        set_threads: Callable[[int], None] | None = None,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if get_threads is None or set_threads is None:
            import torch  # here, so the worker that owns a policy stays importable without torch

            get_threads, set_threads = torch.get_num_threads, torch.set_num_threads
        self.max_threads = max_threads or get_threads()
        self.interval = interval
        self._clock = clock
        self._read, self._get, self._set = read_sample, get_threads, set_threads
        if enabled is None:
            enabled = "OMP_NUM_THREADS" not in os.environ
        self._last = read_sample() if enabled and self.max_threads > 1 else None
        self.enabled = self._last is not None
        self.free_cores: float | None = None  # the last measurement, for the curious (and the tests)

    def tick(self) -> int:
        """The thread count, adjusted when an interval has passed."""
        if not self.enabled or self._clock() - self._last[0] < self.interval:  # no file read between decisions
            return self._get()
        now = self._read()
        if now is None:
            return self._get()
        wall, idle, own = (b - a for a, b in zip(self._last, now))
        self._last = now
        self.free_cores = (idle + own) / wall
        threads = min(self.max_threads, max(1, math.floor(self.free_cores + 0.25)))
        if threads != self._get():
            self._set(threads)
        return threads
