"""A compiled copy of the explored model's forward pass, built in another process while the eager one serves.

torch.compile (Inductor) fuses the U-Net's small ops (GroupNorm + SiLU, the timestep MLP, the residual adds), which
makes chains of the small models measurably faster (docs/performance.md has the figures). On a CPU that pays only
where an evaluation is short (CPU_COMPILE_BELOW_S).

Compiling takes about a minute, mostly Python that holds the GIL (Dynamo's tracing), which the engine thread needs
between every two ops: a compile on a thread of the studio's process delayed the first chain after launch. So the
compile runs in a child process (engine/compile_child.py), which traces a network of the same configuration (its
weights do not matter: they are the compiled function's inputs, not constants) with torch.compile's ahead-of-time API
and saves the compiled function, guards included, to the user data folder. The child runs at idle priority and, more
than that, is stopped (SIGSTOP, its whole process group) whenever the studio's process is busy: even at idle priority
a compiler beside the engine thread slows chains, through the caches and memory they share. Once the studio is idle,
a thread of its own loads the function (a few seconds, part of them imports that hold the GIL), and from then on
`LoadedModel.denoiser()` calls it, checking its first answer against the eager network's. Every later launch finds
the file and only loads. Until it is ready, and for any call it was not compiled for (a batch of one, another shape,
precision or CPU thread count, a batch size its guards exclude), the eager network answers: nothing compiles on the
engine thread, so a slider drag never stalls on a compile. A guard failure answers eagerly for that batch size from
then on; any other failure turns the compiled path off. Each change of state is told as a `CompileStatus` event.

The saved function is a pickle and holds compiled code, as Inductor's own on-disk cache does: it is only ever read
from the application's cache folder, under a name that hashes everything it depends on (the network's configuration,
the precision, the thread count, torch's and Python's versions and this engine's network source), never from a file
a user hands the studio.

On by default where it can pay (`compile_available`): a C++ compiler for Inductor's CPU backend (g++), a short
evaluation on a CPU, and CUDA (not run on a GPU yet: benchmarks/gpu.py --compiled measures it); not on MPS, not for
the command line, whose single runs would not earn back the compile. `DDPM_COMPILE=0` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .compile_child import compile_in_child, wait_until_idle
from .config import Precision, UNetConfig, to_jsonable
from .device import autocast, check_against_eager, resolve_precision

# How a loaded function refuses a call its guards exclude (torch 2.13: a plain RuntimeError whose message starts so).
GUARD_REFUSED = "GuardManager check failed"
# On a CPU compiling pays where per-op overhead is a large share of an evaluation, i.e. where one is short: it paid for
# the tiny preset and not for `small`, whose convolutions already run near the CPU's bf16 peak; the bar sits between
# their eager times per image (docs/performance.md has the figures).
CPU_COMPILE_BELOW_S = 0.012
BATCH = 6  # the batch the child traces with: dynamic, so one graph serves every size its guards allow (>= 2)
# The engine's sources a compiled function bakes in: a change to any of them is another function.
SOURCES = ("unet.py", "device.py", "compiled.py", "compile_child.py", "config.py")


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


@dataclass(frozen=True)
class CompileStatus:
    """Where the explored model's compiled path stands, as an event: "off" (detail: why not), "compiling", "ready"
    (detail: how, and in how many seconds) or "failed" (the error). `handle` tells one model's compile from another's:
    a late word of a compile that was cancelled for a newer model is not about the model explored now."""

    state: str
    detail: str = ""
    handle: int = 0  # id() of its CompiledForward (0: none)


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
    on_change: Callable[[CompileStatus], None] | None = None  # told of every change of `state` (any thread)

    def status(self) -> CompileStatus:
        if self.state == "ready":
            how = "loaded from the cache" if self.cached else "compiled"
            return CompileStatus("ready", f"{how} in {self.seconds:.0f} s", id(self))
        return CompileStatus(self.state, self.error, id(self))

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.status())

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
            if self.state == "failed":
                self._changed()
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


def start(
    network: nn.Module,
    config: UNetConfig,
    precision: Precision,
    threads: int | None = None,
    on_change: Callable[[CompileStatus], None] | None = None,
) -> CompiledForward:
    """Compile the forward of networks of `config` (on `network`'s device) under `precision` and `threads` CPU
    threads (None: the current count) in a child process, unless the cache folder has it, then load it, on a
    background thread. The returned handle turns "ready" when done (`on_change` is told, on that thread); the eager
    network stays usable meanwhile."""
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
    shape = (config.in_channels, *config.image_size)
    handle = CompiledForward(shape, precision, threads=threads, path=path, on_change=on_change)

    def build() -> None:
        started = time.perf_counter()
        try:
            handle.cached = path.is_file()
            if not handle.cached:
                compile_in_child(spec, path, handle._cancelled)
            wait_until_idle(handle._cancelled)
            if handle._cancelled.is_set():
                return
            try:
                function = _load(path)
            except Exception:
                path.unlink(missing_ok=True)  # unreadable here (a torch or CPU it was not made for): compile afresh
                raise
        except Exception as e:  # noqa: BLE001 - no compiler, an unsupported op, a stale file: eager it is
            if not handle._cancelled.is_set():
                handle.state, handle.error = "failed", f"{type(e).__name__}: {str(e)[:300]}"
                handle._changed()
            return
        with handle._lock:
            if handle.state == "compiling":
                handle.function, handle.seconds, handle.state = function, time.perf_counter() - started, "ready"
        if handle.state == "ready":
            handle._changed()

    threading.Thread(target=build, name="compile", daemon=True).start()
    return handle


def start_for(loaded, on_change: Callable[[CompileStatus], None] | None = None) -> CompiledForward:
    """`start` as the studio uses it: a LoadedModel's network at its inference precision, for the thread count the
    engine thread runs it at."""
    return start(loaded.denoiser().network, loaded.unet_config, loaded.inference, on_change=on_change)


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


def _load(path: Path):
    """The compiled function saved at `path`: the application's own cache file (see the module docstring)."""
    with open(path, "rb") as f:
        return torch.compiler.load_compiled_function(f)


def _cache_folder() -> Path:
    from .runs import user_data_folder

    return user_data_folder() / "compile-cache"
