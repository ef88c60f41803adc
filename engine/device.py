"""Where the engine runs and in what precision: CUDA, else MPS, else CPU; bf16 autocast where it pays.

`Denoiser` wraps a network into the `EpsModel` the samplers call: autocast, channels_last and a float32 result,
so the samplers' arithmetic stays in float32 whatever the network ran in.
"""

from __future__ import annotations

import contextlib
import copy
import functools
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
    eps is identical bit for bit; GroupNorm keeps its fp32 parameters, as autocast runs it in fp32). On this CPU it
    saves ~5% of an evaluation of the paper's CIFAR-10 model at batch 8 and nothing measurable for tiny or small
    (docs/performance.md); it costs a bf16 copy of those weights (half the fp32 model's size)."""
    device = next(model.parameters()).device
    if resolve_precision(precision, device) is not Precision.BF16:
        return model
    network = copy.deepcopy(model)
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.to(torch.bfloat16)
    return network


class Denoiser:
    """The `EpsModel` for a network: (x_t, t) -> float32 eps, under the chosen precision and memory format.

    `network` is what the eager path evaluates, where it differs from `model` (inference_network's bf16 copy)."""

    def __init__(
        self,
        model: nn.Module,
        precision: Precision = Precision.FP32,
        channels_last: bool = False,
        compiled=None,
        network: nn.Module | None = None,
    ):
        self.model = model
        self.network = network if network is not None else model
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        self.channels_last = channels_last
        self.compiled = compiled  # engine.compiled.CompiledForward of this model, used where it serves the call
        if channels_last:
            self.network.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        eps = None
        # The compiled forward autocasts inside itself, and serves only the calls its guards allow (engine/compiled.py).
        if self.compiled is not None and self.compiled.serves(x_t, self.precision):
            eps = self.compiled(self.network, x_t, t)  # None where its guards exclude the call: eager answers
        if eps is None:
            with autocast(self.device, self.precision):
                eps = self.network(x_t, t)
        return eps.float().contiguous()
