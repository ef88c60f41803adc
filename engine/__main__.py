"""The command line: `python -m engine COMMAND ...` (also installed as `ddpm`).

Each command is a small function over the engine's public API; `--help` on any of them says what it does.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from . import config as cfg


def _preset_rows(measure: bool, batch: int, device_name: str | None) -> list[dict]:
    import torch

    from .device import autocast, pick_device, resolve_precision
    from .unet import UNet, count_parameters, forward_flops

    device = pick_device(device_name)
    rows = []
    for name, preset in cfg.PRESETS.items():
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
            row.update(_time_forward(UNet(unet).to(device).eval(), unet, batch, device, autocast, resolve_precision))
        rows.append(row)
    return rows


def _time_forward(model, unet: cfg.UNetConfig, batch: int, device, autocast, resolve_precision) -> dict:
    """Median milliseconds per image of a no-grad forward pass, fp32 and (where native) bf16."""
    import torch

    x = torch.randn(batch, unet.in_channels, *unet.image_size, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    out = {}
    precisions = [cfg.Precision.FP32]
    if resolve_precision(cfg.Precision.AUTO, device) is cfg.Precision.BF16:
        precisions.append(cfg.Precision.BF16)
    for precision in precisions:
        times = []
        with torch.no_grad(), autocast(device, precision):
            for i in range(4):
                start = time.perf_counter()
                model(x, t)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i:  # the first call warms up
                    times.append(time.perf_counter() - start)
        out[f"ms_per_image_{precision.value}"] = round(sorted(times)[len(times) // 2] / batch * 1000, 2)
    return out


def cmd_presets(args: argparse.Namespace) -> int:
    rows = _preset_rows(args.time, args.batch, args.device)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    timed = [k for k in rows[0] if k.startswith("ms_per_image")]
    header = f"{'preset':<12} {'params':>9} {'GFLOP/img':>10} {'size':>10} {'T':>5}" + "".join(f" {k[13:]:>9}" for k in timed)
    print(header + "  " + ("(ms/img)" if timed else "description"))
    for r in rows:
        line = f"{r['preset']:<12} {r['params_M']:>8.2f}M {r['gflop_per_image']:>10.2f} {r['resolution']:>10} {r['T']:>5}"
        line += "".join(f" {r[k]:>9.1f}" for k in timed)
        print(line + ("" if timed else "  " + r["description"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="DDPM Studio's engine: train and explore Denoising Diffusion Probabilistic Models (Ho et al. 2020).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    presets = commands.add_parser(
        "presets", help="list the model presets with their size and cost",
        description="List every preset: parameter count, forward GFLOP per image (2 FLOPs per multiply-add), "
                    "resolution and number of diffusion steps. With --time, also measure a forward pass here.")
    presets.add_argument("--time", action="store_true", help="time a no-grad forward pass of each preset on this machine")
    presets.add_argument("--batch", type=int, default=8, help="batch size for --time (default 8)")
    presets.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    presets.add_argument("--json", action="store_true", help="print JSON instead of a table")
    presets.set_defaults(run=cmd_presets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
