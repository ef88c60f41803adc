"""A compiled copy of the explored model's forward pass, built in another process while the eager one serves.

torch.compile (Inductor) fuses the U-Net's small ops (GroupNorm + SiLU, the timestep MLP, the residual adds): on this
project's 2-core CPU one evaluation of the bundled tiny model in bf16 took 7.5 ms compiled against 9.9 ms eager at a
strip of 6, 4.8 against 7.9 at 2 and 19.9 against 26.5 at 40; a chain of 8 images ran 1.23x faster
(docs/performance.md). On a CPU that pays only where an evaluation is short (CPU_COMPILE_BELOW_S).

Compiling takes 50-100 s, mostly Python that holds the GIL (Dynamo's tracing), which the engine thread needs between
every two ops: compiled on a thread of the studio's process (before 2026-12-02), it made the first chain after launch
finish 25-40 s after launch instead of 16-25 s. So the compile runs in a child process, which traces a network of the
same configuration (its weights do not matter: they are the compiled function's inputs, not constants) with
torch.compile's ahead-of-time API and saves the compiled function, guards included, to the user data folder. The child
runs at idle priority and, more than that, is stopped (SIGSTOP, its whole process group) whenever the studio's process
is busy: even at idle priority a compiler beside the engine thread slowed chains by 20-27% on 2 cores, through the
caches and memory they share. Once the studio is idle, a thread of its own loads the function (~4-5 s, of which ~1.5 s
of imports hold the GIL), and from then on `LoadedModel.denoiser()` calls it, checking its first answer against the
eager network's. Every later launch finds the file and only loads. Until it is ready, and for any call it was not
compiled for (a batch of one, another shape, precision or CPU thread count, a batch size its guards exclude), the
eager network answers: nothing compiles on the engine thread, so a slider drag never stalls on a compile. A guard
failure answers eagerly for that batch size from then on; any other failure turns the compiled path off.

The saved function is a pickle and holds compiled code, as Inductor's own on-disk cache does: it is only ever read
from the application's cache folder, under a name that hashes everything it depends on (the network's configuration,
the precision, the thread count, torch's and Python's versions and this engine's network source), never from a file
a user hands the studio.

On by default where it can pay (`compile_available`): a C++ compiler for Inductor's CPU backend (g++), a short
evaluation on a CPU, and CUDA (not run on a GPU yet: benchmarks/gpu.py --compiled measures it); not on MPS, not for
the command line, whose single runs would not earn back the compile. `DDPM_COMPILE=0` turns it off.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .config import Precision, UNetConfig, from_jsonable, to_jsonable
from .device import autocast, check_against_eager, resolve_precision

# How a loaded function refuses a call its guards exclude (torch 2.13: a plain RuntimeError whose message starts so).
GUARD_REFUSED = "GuardManager check failed"
# On a CPU compiling pays where per-op overhead is a large share of an evaluation, i.e. where one is short: the tiny
# preset (one image eager in bf16: 6.4-6.8 ms on 2 threads here) sampled 1.72x diffusers' fp32 compiled against
# 1.37-1.60x eager; `small` (21-23 ms) 1.61x compiled against 1.67-1.69x eager, its convolutions already near the
# CPU's bf16 peak (docs/performance.md). The bar sits between the two (their geometric mean).
CPU_COMPILE_BELOW_S = 0.012
BATCH = 6  # the batch the child traces with: dynamic, so one graph serves every size its guards allow (>= 2)
KEEP = 8  # compiled functions kept in the cache folder, newest first
BUILD_TIMEOUT_S = 1800.0
# The engine's sources a compiled function bakes in: a change to any of them is another function.
SOURCES = ("unet.py", "device.py", "compiled.py", "config.py")


def compile_available(device: torch.device, seconds_per_image: float | None = None) -> str | None:
    """None if a model (whose eager evaluation of one image takes `seconds_per_image`, where given: jobs.time_one_step)
    may be compiled on `device` here, else why not (for the status bar)."""
    if os.environ.get("DDPM_COMPILE", "1") == "0":
        return "compiling is off (DDPM_COMPILE=0)"
    if device.type not in ("cpu", "cuda"):
        return f"no compiled path for {device.type}"
    if device.type == "cpu" and not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        return "no C++ compiler (Inductor's CPU backend needs one)"
    if device.type == "cuda" and not (shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")):
        return "no C compiler (Triton, Inductor's GPU backend, needs one)"
    if device.type == "cpu" and seconds_per_image is not None and seconds_per_image > CPU_COMPILE_BELOW_S:
        return f"on this CPU a model this size ({seconds_per_image * 1e3:.0f} ms per image) runs as fast uncompiled"
    return None


class Autocasting(nn.Module):
    """What is compiled: `net`'s forward with the precision's autocast inside it and a float32 result, so the compiled
    function is called with no autocast around it (its guards check that global state)."""

    def __init__(self, net: nn.Module, bf16: bool):
        super().__init__()
        self.net = net
        self.bf16 = bf16

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.net(x, t).float()


@dataclass
class CompiledForward:
    """The compiled forward of one network configuration for one image shape and precision; `state` is "compiling",
    "ready" or "failed" (with `error`)."""

    image_shape: tuple[int, ...]  # (C, H, W)
    precision: Precision  # resolved: FP32 or BF16
    threads: int = 0  # torch's CPU thread count it was compiled under: the function's guards check it
    path: Path | None = None  # the compiled function's file
    state: str = "compiling"
    error: str = ""
    seconds: float = 0.0  # from start to ready: the compile (or only the load, from the cache), waits for idle too
    cached: bool = False  # whether the compiled function was found in the cache folder (only loaded)
    checked: bool = False  # whether an answer of it has been checked against the eager network's (the first one)
    function: object | None = None  # torch's AOTCompiledFunction
    # Batch sizes its guards exclude, answered eagerly from then on: in fp32 on a CPU, the graph traced at a batch of
    # 6 holds for 2..15 only (ATen picks another convolution backend from 16 images).
    unserved: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _wrappers: dict = field(default_factory=dict)  # id(network) -> Autocasting(network): it keeps the network alive
    _cancelled: threading.Event = field(default_factory=threading.Event)

    def serves(self, x_t: Tensor, precision: Precision) -> bool:
        """Whether this call can go to the compiled function."""
        return (
            self.state == "ready"
            and x_t.shape[0] >= 2  # dynamic shapes specialise sizes 0 and 1: a batch of one is outside its guards
            and x_t.shape[0] not in self.unserved
            and tuple(x_t.shape[1:]) == self.image_shape
            and precision is self.precision
            and torch.get_num_threads() == self.threads  # another count fails a guard
        )

    def __call__(self, network: nn.Module, x_t: Tensor, t: Tensor) -> Tensor | None:
        """`network`'s eps through the compiled function (call it with no autocast around), or None where its guards
        exclude the call (the caller then runs eager: for this batch size from now on) or it failed (eager for every
        call from now on). The first answer is checked against the eager network's."""
        wrapper = self._wrappers.get(id(network))
        if wrapper is None:
            wrapper = self._wrappers[id(network)] = Autocasting(network, self.precision is Precision.BF16)
        try:
            eps = self.function(wrapper, x_t, t)
            if not self.checked:
                self._check(eps, network, x_t, t)
            return eps
        except Exception as e:  # noqa: BLE001 - any failure of the compiled path answers eagerly
            with self._lock:
                if isinstance(e, RuntimeError) and str(e).startswith(GUARD_REFUSED):  # a guard excludes this size
                    self.unserved.add(x_t.shape[0])
                else:
                    self.state, self.error = "failed", f"{type(e).__name__}: {str(e)[:200]}"
                    if self.path is not None:
                        self.path.unlink(missing_ok=True)  # wrong or stale: the next launch compiles afresh
            return None

    def cancel(self) -> None:
        """Stop compiling or loading (another model is explored now): the child process is killed."""
        self._cancelled.set()
        with self._lock:
            if self.state == "compiling":
                self.state, self.error = "failed", "cancelled"

    def _check(self, eps: Tensor, network: nn.Module, x_t: Tensor, t: Tensor) -> None:
        """The compiled answer against the eager network's on the same call (once, on the thread that samples): a
        wrong or stale compile never serves."""
        with autocast(x_t.device, self.precision):
            want = network(x_t, t).float()
        check_against_eager(eps, want, self.precision, "compiled")
        self.checked = True


def start(network: nn.Module, config: UNetConfig, precision: Precision, threads: int | None = None) -> CompiledForward:
    """Compile the forward of networks of `config` (on `network`'s device) under `precision` and `threads` CPU
    threads (None: the current count) in a child process, unless the cache folder has it, then load it, on a
    background thread. The returned handle turns "ready" when done; the eager network stays usable meanwhile."""
    device = next(network.parameters()).device
    precision = resolve_precision(precision, device)
    threads = threads or torch.get_num_threads()
    spec = {
        "unet": to_jsonable(config),
        "precision": precision.value,
        "threads": threads,
        "device": str(device),
        "batch": BATCH,
    }
    path = _cache_folder() / f"{_key(spec, device)}.compiled"
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(path.parent / "inductor"))  # here: the engine thread
    handle = CompiledForward((config.in_channels, *config.image_size), precision, threads=threads, path=path)

    def build() -> None:
        started = time.perf_counter()
        try:
            handle.cached = path.is_file()
            if not handle.cached:
                _compile_in_child(spec, path, handle._cancelled)
            _wait_until_idle(handle._cancelled)
            if handle._cancelled.is_set():
                return
            try:
                function = _load(path)
            except Exception:
                path.unlink(missing_ok=True)  # unreadable here (a torch or CPU it was not made for): compile afresh
                raise
        except Exception as e:  # noqa: BLE001 - no compiler, an unsupported op, a stale file: eager it is
            handle.state, handle.error = "failed", f"{type(e).__name__}: {str(e)[:300]}"
            return
        with handle._lock:
            if handle.state == "compiling":
                handle.function, handle.seconds, handle.state = function, time.perf_counter() - started, "ready"

    threading.Thread(target=build, name="compile", daemon=True).start()
    return handle


def start_for(loaded) -> CompiledForward:
    """`start` as the studio uses it: a LoadedModel's network at its inference precision, for the thread count the
    engine thread runs it at."""
    return start(loaded.denoiser().network, loaded.unet_config, loaded.inference)


def _key(spec: dict, device: torch.device) -> str:
    """A name for the compiled function of `spec` on this torch, Python, engine source and processor (a home folder
    shared between machines must not hand one an instruction set it lacks)."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    digest.update(f"{torch.__version__} {sys.version} {platform.machine()}".encode())
    digest.update(torch.backends.cpu.get_cpu_capability().encode())
    if device.type == "cuda":
        digest.update(f"{torch.cuda.get_device_name(device)} {torch.cuda.get_device_capability(device)}".encode())
    for name in SOURCES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:32]


_children: set[subprocess.Popen] = set()

# The child starts at the lowest priority before it imports torch (see _idle_priority), then runs this module.
CHILD = (
    "import os, runpy\n"
    "os.nice(19)\n"
    "try:\n"
    "    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
    "except (AttributeError, OSError):\n"
    "    pass\n"
    "runpy.run_module('engine.compiled', run_name='__main__')\n"
)


class Activity:
    """Whether this process (the studio) is at work, from its CPU time over the last tick: its user is waiting on it
    then, so the background compile pauses. Even at idle priority a compiler beside the engine thread slowed the
    first chain 20-27% on 2 cores (caches and memory are shared; a spinning process at idle priority cost nothing)."""

    def __init__(self, busy_share: float = 0.3, clock=time.monotonic, cpu=time.process_time):
        self.busy_share, self._clock, self._cpu = busy_share, clock, cpu
        self._last = (clock(), cpu())

    def busy(self) -> bool:
        now = (self._clock(), self._cpu())
        wall, used = now[0] - self._last[0], now[1] - self._last[1]
        self._last = now
        return used > self.busy_share * max(wall, 1e-6)


TICK_S = 0.25


def _compile_in_child(spec: dict, path: Path, cancelled: threading.Event | None = None) -> None:
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


def _wait_until_idle(cancelled: threading.Event) -> None:
    """Return once this process has been idle for a tick (loading takes ~1.5 s of imports that hold the GIL), or
    cancelled."""
    activity = Activity()
    while not cancelled.wait(TICK_S):
        if not activity.busy():
            return


def _load(path: Path):
    """The compiled function saved at `path`: the application's own cache file (see the module docstring)."""
    with open(path, "rb") as f:
        return torch.compiler.load_compiled_function(f)


def _prune(folder: Path) -> None:
    """Keep the KEEP newest compiled functions (each a few MB; a new torch or engine makes the old ones stale)."""
    found = sorted(folder.glob("*.compiled"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in found[KEEP:]:
        old.unlink(missing_ok=True)


def _cache_folder() -> Path:
    from .runs import user_data_folder

    return user_data_folder() / "compile-cache"


def build(spec: dict, path: Path) -> None:
    """The child process's work: trace a network of `spec`'s configuration (random weights: they are inputs of the
    compiled function, and only their shapes and dtypes are guarded) through torch.compile's ahead-of-time API, with
    a dynamic batch, and save the compiled function to `path` (whole or not at all)."""
    import torch._dynamo.config

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
    from engine.compiled import build as build_here  # the importable module's: the saved function names its classes

    try:
        build_here(json.loads(sys.stdin.read()), Path(sys.argv[1]))
    except Exception as e:  # noqa: BLE001 - the last line of stderr is the studio's reason: the error, not a hint
        import traceback

        traceback.print_exc()
        lines = str(e).strip().splitlines() or [""]
        sys.exit(f"{type(e).__name__}: {lines[0][:300]}")
