"""What each preset costs: parameters, forward FLOPs and, optionally, a measured forward pass on this machine; and
what one image costs a training step of any U-Net configuration (`training_cost`), for planning a run."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch

from .config import PRESETS, Precision, UNetConfig
from .device import autocast, pick_device, resolve_precision
from .unet import UNet, count_parameters, forward_flops


@dataclass(frozen=True)
class TrainingCost:
    """What a U-Net costs per training image, counted on the meta device: no memory is allocated, nothing computed."""

    parameters: int
    forward_flops: int  # one image's forward pass, 2 FLOPs per multiply-add (the backward costs about twice as much)
    activation_bytes: int  # fp32 tensors autograd keeps for the backward pass of one image (the weights excluded)


@functools.lru_cache(maxsize=128)
def training_cost(config: UNetConfig) -> TrainingCost:
    """Parameters, forward FLOPs and activation memory per image of `config` at its image size and channels.

    One forward pass of the training path on the meta device, with a FLOP counter and autograd's saved-tensor hooks;
    a tensor saved by several operations is counted once. Costs ~0.1-1 s per new config (the first call in a
    process also warms up the meta device, ~2 s on the reference CPU); cached per config.
    """
    from torch.autograd.graph import saved_tensors_hooks
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = UNet(config)
        x = torch.zeros(1, config.in_channels, *config.image_size)
        t = torch.zeros(1, dtype=torch.long)
    # Storages are told apart by their C++ address (_cdata): meta tensors have no data pointer. The graph keeps every
    # saved tensor alive until the pass ends, so no address is reused while counting.
    weights = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}

    def count(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in weights:
            saved[storage._cdata] = storage.nbytes()
        return tensor

    with torch.enable_grad(), FlopCounterMode(display=False) as counter, saved_tensors_hooks(count, lambda t: t):
        out = model(x, t)
    del out
    return TrainingCost(count_parameters(model), counter.get_total_flops(), sum(saved.values()))


def preset_rows(measure: bool = False, batch: int = 8, device_name: str | None = None) -> list[dict]:
    device = pick_device(device_name)
    rows = []
    for name, preset in PRESETS.items():
        unet = preset.unet
        with torch.device("meta"):
            params = count_parameters(UNet(unet))
        row = {
            "preset": name,
            "params_M": round(params / 1e6, 3),
            "gflop_per_image": round(forward_flops(unet) / 1e9, 3),
            "resolution": f"{unet.image_size[0]}x{unet.image_size[1]}x{unet.in_channels}",
            "T": preset.diffusion.num_timesteps,
            "description": preset.description,
        }
        if measure:
            row.update(time_forward(UNet(unet).to(device).eval(), unet, batch, device))
        rows.append(row)
    return rows


def time_forward(model: UNet, unet: UNetConfig, batch: int, device: torch.device, repeats: int = 3) -> dict:
    """Median milliseconds per image of a no-grad forward pass, fp32 and (where native) bf16."""
    x = torch.randn(batch, unet.in_channels, *unet.image_size, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    out = {}
    precisions = [Precision.FP32]
    if resolve_precision(Precision.AUTO, device) is Precision.BF16:
        precisions.append(Precision.BF16)
    for precision in precisions:
        times = []
        with torch.no_grad(), autocast(device, precision):
            for i in range(repeats + 1):
                start = time.perf_counter()
                model(x, t)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i:  # the first call warms up
                    times.append(time.perf_counter() - start)
        out[f"ms_per_image_{precision.value}"] = round(sorted(times)[len(times) // 2] / batch * 1000, 2)
    return out
