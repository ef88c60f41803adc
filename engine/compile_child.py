"""The background compile's child process (engine/compiled.py says why there is one): how it is started (at idle
priority, in a process group of its own), paused while the studio is busy and continued when it is idle, killed
when cancelled or when the studio quits; and `build`, what the child itself runs. The compiled functions live in the
application's cache folder, the newest KEEP of them."""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .config import Precision, UNetConfig, from_jsonable

BUILD_TIMEOUT_S = 1800.0  # of the child's running time (stopped time does not count)
KEEP = 8  # compiled functions kept in the cache folder, newest first

_children: set[subprocess.Popen] = set()

# The child starts at the lowest priority before it imports torch (see _idle_priority), then runs this module.
CHILD = (
    "import os, runpy\n"
    "os.nice(19)\n"
    "try:\n"
    "    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
    "except (AttributeError, OSError):\n"
    "    pass\n"
    "runpy.run_module('engine.compile_child', run_name='__main__')\n"
)


class Activity:
    """Whether this process (the studio) is at work, from its CPU time over the last tick: its user is waiting on it
    then, so the background compile pauses: even at idle priority a compiler beside the engine thread slows it, as
    they share the caches and memory (docs/performance.md)."""

    def __init__(self, busy_share: float = 0.3, clock=time.monotonic, cpu=time.process_time):
        self.busy_share, self._clock, self._cpu = busy_share, clock, cpu
        self._last = (clock(), cpu())

    def busy(self) -> bool:
        now = (self._clock(), self._cpu())
        wall, used = now[0] - self._last[0], now[1] - self._last[1]
        self._last = now
        return used > self.busy_share * max(wall, 1e-6)


TICK_S = 0.25


def compile_in_child(spec: dict, path: Path, cancelled: threading.Event | None = None) -> None:
    """Run this module in a child process on `spec` and wait for it to write `path` (raises with its last words).
    The child (and the compilers it starts: one process group) is stopped while this process is busy and continued
    when it is idle, and killed when `cancelled` is set; if the studio dies meanwhile, the kernel hangs up on the
    orphaned, stopped group."""
    cancelled = cancelled or threading.Event()
    path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(path.parent / "inductor")}
    pausable = hasattr(os, "killpg") and hasattr(signal, "SIGSTOP")
    with tempfile.TemporaryFile() as log:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
            **({"process_group": 0} if pausable else {}),
        )
        _children.add(child)
        try:
            child.stdin.write(json.dumps(spec))
            child.stdin.close()
            activity, stopped, ran = Activity(), False, 0.0
            while True:
                try:
                    child.wait(TICK_S)  # waits without the GIL
                    break
                except subprocess.TimeoutExpired:
                    pass
                if cancelled.is_set():
                    raise RuntimeError("cancelled")
                if pausable and activity.busy() != stopped:
                    stopped = not stopped
                    _signal_group(child, signal.SIGSTOP if stopped else signal.SIGCONT)
                ran += 0.0 if stopped else TICK_S
                if ran > BUILD_TIMEOUT_S:
                    raise RuntimeError(f"the compile took over {BUILD_TIMEOUT_S:.0f} s")
        finally:
            _children.discard(child)
            _kill(child)  # whatever of its group is left (a stop may have landed after the child itself ended)
        log.seek(max(0, log.seek(0, os.SEEK_END) - 4000))
        err = log.read().decode(errors="replace")
    if child.returncode != 0 or not path.is_file():
        lines = [line for line in err.strip().splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"the compiling process ended with code {child.returncode}")
    _prune(path.parent)


def _signal_group(child: subprocess.Popen, number: int) -> None:
    try:
        os.killpg(child.pid, number)  # the compilers it started too
    except (AttributeError, OSError):  # no process groups here, or the group is gone
        pass


def _kill(child: subprocess.Popen) -> None:
    if hasattr(signal, "SIGKILL"):  # POSIX; SIGKILL ends a stopped process too
        _signal_group(child, signal.SIGKILL)
    if child.poll() is None:
        child.kill()
    child.wait()


@atexit.register
def _stop_children() -> None:
    """A compile still running when the studio quits is stopped: no process outlives the window."""
    for child in list(_children):
        _kill(child)


def wait_until_idle(cancelled: threading.Event) -> None:
    """Return once this process has been idle for a tick (loading takes ~1.5 s of imports that hold the GIL), or
    cancelled."""
    activity = Activity()
    while not cancelled.wait(TICK_S):
        if not activity.busy():
            return


def _prune(folder: Path) -> None:
    """Keep the KEEP newest compiled functions (each a few MB; a new torch or engine makes the old ones stale)."""
    found = sorted(folder.glob("*.compiled"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in found[KEEP:]:
        old.unlink(missing_ok=True)


def build(spec: dict, path: Path) -> None:
    """The child process's work: trace a network of `spec`'s configuration (random weights: they are inputs of the
    compiled function, and only their shapes and dtypes are guarded) through torch.compile's ahead-of-time API, with
    a dynamic batch, and save the compiled function to `path` (whole or not at all)."""
    import torch._dynamo.config

    from .compiled import Autocasting
    from .device import inference_network
    from .unet import UNet

    torch._dynamo.config.specialize_float = True  # else the ahead-of-time trace stops on a float it would tensorify
    torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    precision = Precision(spec["precision"])
    config = from_jsonable(UNetConfig, spec["unet"])
    network = inference_network(UNet(config).to(device).eval().requires_grad_(False), precision)
    wrapper = Autocasting(network, precision is Precision.BF16)
    batch = int(spec["batch"])
    x = torch.randn(batch, config.in_channels, *config.image_size, device=device)
    t = torch.full((batch,), 1, dtype=torch.long, device=device)
    with torch.no_grad():
        function = torch.compile(wrapper.forward, fullgraph=True, dynamic=True).aot_compile(((x, t), {}))
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    function.save_compiled_function(str(partial))
    os.replace(partial, path)  # a reader never sees half a file, and two compiles of one key never mix


if __name__ == "__main__":  # the child process (CHILD): PATH as its argument, the spec as JSON on stdin
    from engine.compile_child import (
        build as build_here,  # the importable module's: the saved function names its classes
    )

    try:
        build_here(json.loads(sys.stdin.read()), Path(sys.argv[1]))
    except Exception as e:  # noqa: BLE001 - the last line of stderr is the studio's reason: the error, not a hint
        import traceback

        traceback.print_exc()
        lines = str(e).strip().splitlines() or [""]
        sys.exit(f"{type(e).__name__}: {lines[0][:300]}")
