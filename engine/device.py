"""Where the engine runs and in what precision: CUDA, else MPS, else CPU; bf16 autocast where it pays.

`Denoiser` wraps a network into the `EpsModel` the samplers call: autocast, channels_last and a float32 result,
so the samplers' arithmetic stays in float32 whatever the network ran in.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import os
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .config import Precision


def pick_device(name: str | None = None) -> torch.device:
    """`name` ("cuda", "mps", "cpu", "cuda:1") if given, else the best available device."""
    if name not in (None, "", "auto"):
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ValueError(f"--device must be cpu, cuda, cuda:N or mps, got {name!r}") from None
        available = {
            "cpu": True,
            "cuda": torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count(),
            "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        }
        if not available.get(device.type, False):
            raise ValueError(f"device {name!r} is not available here (cpu always is)")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@functools.cache
def _cpu_has_native_bf16() -> bool:
    # AVX-512 BF16 or AMX make bf16 convolutions ~2x the fp32 rate (docs/performance.md); without them bf16 is
    # emulated and slower.
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def supports_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return _cpu_has_native_bf16()
    return False  # MPS autocast to bf16 is not reliably faster; stay in fp32 there


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    """AUTO becomes BF16 or FP32 for this device; an explicit choice is kept."""
    if precision is Precision.AUTO:
        return Precision.BF16 if supports_bf16(device) else Precision.FP32
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision) -> Iterator[None]:
    """bf16 autocast on `device` when `precision` resolves to BF16, else nothing."""
    if resolve_precision(precision, device) is Precision.BF16:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def inference_network(model: nn.Module, precision: Precision) -> nn.Module:
    """`model` to evaluate under `precision`: itself where that is fp32; for bf16 a copy whose convolution and linear
    weights are bf16 once and for all, which autocast would otherwise cast again on every call (the same rounding, so
    eps is identical bit for bit; GroupNorm keeps its fp32 parameters, as autocast runs it in fp32). What it saves
    is in docs/performance.md; it costs a bf16 copy of those weights (half the fp32 model's size)."""
    device = next(model.parameters()).device
    if resolve_precision(precision, device) is not Precision.BF16:
        return model
    network = copy.deepcopy(model)
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.to(torch.bfloat16)
    return network


class CudaGraphs:
    """The network's forward captured as CUDA graphs, one per input shape (every reverse step of a chain has the same
    shape): a replay launches the whole forward's kernels at once instead of one by one from Python, which is most of
    an evaluation's time for these small networks on a GPU. Each graph's first answer is checked against the eager
    network's; any failure turns graphs off for good (`failed` says why) and the eager network answers. At most
    MAX graphs (their activation memory) are kept, the least recently used going first. Not yet run on a GPU:
    benchmarks/gpu.py runs tests/test_device.py there. `DDPM_CUDA_GRAPHS=0` turns them off."""

    MAX = 4

    def __init__(self, network: nn.Module, precision: Precision):
        self.network, self.precision = network, precision
        self.graphs: collections.OrderedDict = collections.OrderedDict()  # (x shape, t shape) -> captured
        self.failed = ""

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor | None:
        """eps (float32) from a replay, capturing this shape's graph first; None once graphs have failed."""
        if self.failed:
            return None
        key = (tuple(x_t.shape), tuple(t.shape), x_t.dtype, t.dtype)
        try:
            captured = self.graphs.get(key)
            if captured is None:
                captured = self._capture(x_t, t)
                self.graphs[key] = captured
                while len(self.graphs) > self.MAX:
                    self.graphs.popitem(last=False)
            self.graphs.move_to_end(key)
            graph, static_x, static_t, static_eps = captured
            static_x.copy_(x_t)
            static_t.copy_(t)
            graph.replay()
            return static_eps.clone()
        except Exception as e:  # noqa: BLE001 - any failure of the captured path answers eagerly
            self.failed, self.graphs = f"{type(e).__name__}: {str(e)[:200]}", collections.OrderedDict()
            return None

    def _eager(self, x_t: Tensor, t: Tensor) -> Tensor:
        # Autocast's cache of cast weights must be off around a capture (PyTorch's CUDA graphs notes).
        bf16 = self.precision is Precision.BF16
        with torch.autocast(x_t.device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
            return self.network(x_t, t).float()

    def _capture(self, x_t: Tensor, t: Tensor) -> tuple:
        static_x, static_t = x_t.clone(), t.clone()
        side = torch.cuda.Stream(x_t.device)
        side.wait_stream(torch.cuda.current_stream(x_t.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up off the capture: cuDNN's choices, the allocator's pools
                self._eager(static_x, static_t)
        torch.cuda.current_stream(x_t.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # the compile thread may touch CUDA meanwhile
            static_eps = self._eager(static_x, static_t)
        graph.replay()  # the inputs are this call's
        check_against_eager(static_eps, self._eager(x_t, t), self.precision, "captured")
        return graph, static_x, static_t, static_eps


def check_against_eager(got: Tensor, want: Tensor, precision: Precision, what: str) -> None:
    """Raise ValueError unless a faster path's eps (`what`: "compiled", "captured") agrees with the eager network's:
    within 1e-4 relative L2 in fp32, 3e-2 in bf16 (where fused kernels keep intermediates in fp32 that eager rounds
    to bf16 op by op: ~0.4% on the tiny model)."""
    error = ((got.float() - want).norm() / want.norm().clamp_min(1e-12)).item()
    if not error <= (3e-2 if precision is Precision.BF16 else 1e-4):
        raise ValueError(f"the {what} forward differs from the eager one by {error:.2e} (relative L2)")


def cuda_graphs_for(network: nn.Module, precision: Precision) -> CudaGraphs | None:
    """CUDA graphs for `network` where it runs on CUDA (and DDPM_CUDA_GRAPHS is not 0), else None."""
    device = next(network.parameters()).device
    if device.type != "cuda" or os.environ.get("DDPM_CUDA_GRAPHS", "1") == "0":
        return None
    return CudaGraphs(network, resolve_precision(precision, device))


class Denoiser:
    """The `EpsModel` for a network: (x_t, t) -> float32 eps, under the chosen precision and memory format.

    `network` is what the eager path evaluates, where it differs from `model` (inference_network's bf16 copy). On
    CUDA the eager network runs through CUDA graphs (`graphs`: a CudaGraphs of it to share between denoisers, else
    one of its own unless `cuda_graphs` is False); the compiled forward (engine/compiled.py), where it serves a call,
    goes first."""

    def __init__(
        self,
        model: nn.Module,
        precision: Precision = Precision.FP32,
        channels_last: bool = False,
        compiled=None,
        network: nn.Module | None = None,
        graphs: CudaGraphs | None = None,
        cuda_graphs: bool = True,
    ):
        self.model = model
        self.network = network if network is not None else model
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        self.channels_last = channels_last
        self.compiled = compiled  # engine.compiled.CompiledForward of this model, used where it serves the call
        if channels_last:
            self.network.to(memory_format=torch.channels_last)
        if graphs is None and cuda_graphs:
            graphs = cuda_graphs_for(self.network, self.precision)
        self.graphs = graphs

    @torch.no_grad()
    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        eps = None
        # The compiled forward autocasts inside itself, and serves only the calls its guards allow (engine/compiled.py).
        if self.compiled is not None and self.compiled.serves(x_t, self.precision):
            eps = self.compiled(self.network, x_t, t)  # None where its guards exclude the call: eager answers
        if eps is None and self.graphs is not None:
            eps = self.graphs(x_t, t)  # None once graphs failed
        if eps is None:
            with autocast(self.device, self.precision):
                eps = self.network(x_t, t)
        return eps.float().contiguous()
