"""What each preset costs: parameters, forward FLOPs and, optionally, a measured forward pass on this machine."""
from __future__ import annotations

import time

import torch

from .config import PRESETS, Precision, UNetConfig
from .device import autocast, pick_device, resolve_precision
from .unet import UNet, count_parameters, forward_flops


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
