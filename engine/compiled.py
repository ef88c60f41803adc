"""A compiled copy of the explored model's forward pass, built in the background while the eager one serves.

torch.compile (Inductor) fuses the U-Net's small ops (GroupNorm + SiLU, the timestep MLP, the residual adds): on this
project's 2-core CPU, on the main thread, one evaluation of the bundled tiny model in bf16 took 8.3 ms compiled
against 11.6 ms eager at a strip of 6 (1.41x), 1.64x at 64 (docs/performance.md). Compiling takes about a minute,
so the studio never waits for it: `start(model, image_shape, precision)` compiles on a thread of its own with a dummy
batch, and `LoadedModel.denoiser()` uses the result only once it is ready. Until then, and for any call it was not
compiled for (a batch of one, another shape, precision or CPU thread count), the eager model answers: a compile never
happens on the engine thread, so a slider drag never stalls on one (`fail_on_recompile`, then eager). Inductor's
on-disk cache lives in the user data folder, so only the first use of a model on a machine pays the compile. The
compiling thread, and the compiler processes it starts, run at the lowest CPU priority: on a 2-core machine a
compile at normal priority made the first chain 2.5x slower.

It is compiled for the CPU thread count torch has when the load job starts it (torch.compile guards on the count;
another count runs eager). A batch size the compiled graph's guards exclude (in fp32, 16 images and more for a graph
compiled at 6) is answered eagerly from then on; the other sizes stay compiled.

It is opt-in (`DDPM_COMPILE=1`; the status bar then says "compiling a faster path…", then "compiled"): checked
end to end in the windowed studio (first launch, bundled model, 2 cores, screenshots at 8, 16, 25 and 40 s), the
compile makes the first chain of 8 x 1000 steps finish 25-40 s after launch instead of 16-25 s, with an empty cache
and with a warm one alike (at 16 s the warm run had 51 frames). Its tracing is Python that
holds the GIL, which the engine thread needs between every two ops, so niceness does not protect the eager path
(at 16 s: 1 of 1,001 frames computed, against 701 uncompiled; a 0.2 ms GIL switch interval gave 151). Ahead-of-time
compiled packages (torch.export + AOTInductor, built in another process) would avoid that, but their forward holds
the GIL while it runs (a Python thread beside it kept 7% of its speed; Inductor's in-process kernels: 90%), which
would stall the window for a whole evaluation. It needs a C++ compiler (Inductor's CPU backend) and is off where
there is none, on MPS, and for the command line, whose single runs would not earn back the minute.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .config import Precision
from .device import autocast, resolve_precision

# How Dynamo refuses a call that would recompile under set_stance("fail_on_recompile") (torch 2.13: a plain
# RuntimeError whose message starts so).
RECOMPILE_REFUSED = "Detected recompile when torch.compile stance is 'fail_on_recompile'"


def compile_available(device: torch.device) -> str | None:
    """None if a model may be compiled on `device` here, else why not (for the status bar). Opt-in
    (`DDPM_COMPILE=1`): compiling in the studio's process slows its engine thread while it runs (see the module
    docstring)."""
    if os.environ.get("DDPM_COMPILE", "0") != "1":
        return "compiling is off (DDPM_COMPILE=1 turns it on)"
    if device.type not in ("cpu", "cuda"):
        return f"no compiled path for {device.type}"
    if device.type == "cpu" and not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        return "no C++ compiler (Inductor's CPU backend needs one)"
    return None


@dataclass
class CompiledForward:
    """The compiled forward of one model for one image shape and precision; `state` is "compiling", "ready" or
    "failed" (with `error`)."""

    model: nn.Module
    image_shape: tuple[int, ...]  # (C, H, W)
    precision: Precision  # resolved: FP32 or BF16
    threads: int = 0  # torch's CPU thread count it was compiled under: torch.compile guards on it
    state: str = "compiling"
    error: str = ""
    seconds: float = 0.0  # how long the compile took
    module: nn.Module | None = None
    # Batch sizes the compiled graph's guards exclude, answered eagerly from then on: in fp32 on a CPU, Inductor's
    # graph compiled at a batch of 6 holds for 2..15 only (ATen picks another convolution backend from 16 images).
    unserved: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def serves(self, x_t: Tensor, precision: Precision) -> bool:
        """Whether this call can go to the compiled module without compiling anything."""
        return (
            self.state == "ready"
            and x_t.shape[0] >= 2  # dynamic shapes specialise sizes 0 and 1: a batch of one would recompile
            and x_t.shape[0] not in self.unserved
            and tuple(x_t.shape[1:]) == self.image_shape
            and precision is self.precision
            and torch.get_num_threads() == self.threads  # another count is another guard: a recompile
        )

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor | None:
        """The compiled forward, or None where it would have to recompile (the caller then runs eager: for this batch
        size from now on) or failed (eager for every call from now on)."""
        try:
            with torch.compiler.set_stance("fail_on_recompile"):
                return self.module(x_t, t)
        except Exception as e:  # noqa: BLE001 - any failure of the compiled path answers eagerly
            with self._lock:
                if isinstance(e, RuntimeError) and str(e).startswith(RECOMPILE_REFUSED):  # a guard excludes this size
                    self.unserved.add(x_t.shape[0])
                else:
                    self.state, self.error = "failed", f"{type(e).__name__}: {str(e)[:200]}"
            return None


def start(
    model: nn.Module, image_shape: tuple[int, ...], precision: Precision, batch: int = 6, threads: int | None = None
) -> CompiledForward:
    """Compile `model`'s forward for `image_shape` (C, H, W) under `precision` and `threads` CPU threads (None: the
    current count) on a background thread, with dynamic batch; the returned handle turns "ready" when done. The
    eager model stays usable meanwhile."""
    device = next(model.parameters()).device
    precision = resolve_precision(precision, device)
    handle = CompiledForward(model, tuple(image_shape), precision, threads=threads or torch.get_num_threads())
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(_cache_folder()))

    def build() -> None:
        started = time.perf_counter()
        _lowest_priority()  # the eager path the user waits on keeps the cores; the compile takes what is left
        torch.set_num_threads(handle.threads)  # this thread's count is the one the guards check
        try:
            module = torch.compile(model, dynamic=True)
            x = torch.randn(batch, *image_shape, device=device)
            t = torch.full((batch,), 1, dtype=torch.long, device=device)
            with torch.no_grad(), autocast(device, precision):
                module(x, t)
        except Exception as e:  # noqa: BLE001 - no compiler, an unsupported op: eager it is
            handle.state, handle.error = "failed", f"{type(e).__name__}: {str(e)[:200]}"
            return
        with handle._lock:
            if handle.state == "compiling":
                handle.module, handle.seconds, handle.state = module, time.perf_counter() - started, "ready"

    threading.Thread(target=build, name="compile", daemon=True).start()
    return handle


def start_for(loaded) -> CompiledForward:
    """`start` as the studio uses it: a LoadedModel's network at its image shape and inference precision, for the
    thread count the engine thread runs it at."""
    c = loaded.unet_config
    return start(loaded.model, (c.in_channels, *c.image_size), loaded.inference)


def _lowest_priority() -> None:
    """Nice this thread (and the compiler processes it starts, which inherit it) to 19, where the OS allows."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # Linux: a thread's own nice value
    except (AttributeError, OSError):
        pass


def _cache_folder():
    from .runs import user_data_folder

    return user_data_folder() / "compile-cache"
