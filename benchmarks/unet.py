"""Our U-Net against diffusers' `UNet2DModel` built to the same architecture, on this machine's CPU.

For each preset it builds `engine.unet.UNet` and a `UNet2DModel` with the same channels, blocks, attention levels,
GroupNorm groups, dropout and timestep embedding (google/ddpm-cifar10-32's settings: positional, flip_sin_to_cos=False,
freq_shift=1, single-head attention), checks that their parameter counts and forward FLOPs agree, then measures

  * training images/s: forward + MSE loss against a random target + backward + Adam step, train mode;
  * sampling image-evaluations/s: a no_grad forward at batch 16, eval mode;

in eager fp32 and under bf16 autocast, both with torch's default Adam (the networks compared as such), and, as the
headline, the path the product uses (`product`): sampling through the `Denoiser` that `ddpm sample` and the studio
call, at the precision engine.device resolves AUTO to here, and training with the trainer's optimiser
(engine.train.make_adam, the fused kernel), measured side by side with diffusers' fp32 default beside the project's
goals. `--compiled` adds the studio's background-compiled sampling path (`product_compiled`; engine/compiled.py),
whose compile takes about a minute per preset. The two models alternate repeat by repeat (ours, reference, ours, ...)
so that load from elsewhere on a shared machine falls on both; the figures are medians. The headline is the ratio
ours / reference (above 1: ours is faster), not absolute seconds, which drift with the machine.

    .venv/bin/pip install diffusers  # the reference (the `bench` extra)
    python benchmarks/unet.py --presets tiny,small          # ~5 minutes on 2 cores (7 with --compiled)
    python benchmarks/unet.py --presets cifar10 --repeats 3 # the paper's 35.7M model: slow on a CPU

JSON goes to stdout, progress to stderr. Keep the machine otherwise idle: two threads slow down several-fold
when another process competes for the cores (docs/performance.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout, uninstalled
from engine import compiled  # noqa: E402
from engine.config import PRESETS, Precision, UNetConfig  # noqa: E402
from engine.device import Denoiser, inference_network, resolve_precision  # noqa: E402
from engine.train import make_adam  # noqa: E402
from engine.unet import UNet, count_parameters  # noqa: E402

TRAIN_BATCH = {"cifar10": 8}  # docs/performance.md's batches: 32 for the CPU presets, 8 for the paper's model
SAMPLE_BATCH = 16
NUM_TIMESTEPS = 1000
TARGET_REPEAT_S = 0.5  # each timed repeat runs enough steps to last about this long; fewer makes medians jumpy
# The project's bar: the product's path against diffusers' fp32 default (above 1: ours is faster).
GOALS = {
    "tiny": {"sample": 1.7, "train": 1.5},
    "small": {"sample": 2.0, "train": 1.8},
}


def build_reference(config: UNetConfig) -> nn.Module:
    """diffusers' UNet2DModel with our architecture; output via `.sample`, wrapped to take (x, t) like ours."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        sys.exit("benchmarks/unet.py needs diffusers as its reference: pip install -e '.[bench]'")

    height, width = config.image_size
    attention = [min(height, width) // 2**i in config.attention_resolutions for i in range(len(config.channel_mults))]
    model = UNet2DModel(
        sample_size=config.image_size,
        in_channels=config.in_channels,
        out_channels=config.in_channels,
        block_out_channels=tuple(config.base_channels * m for m in config.channel_mults),
        layers_per_block=config.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        attention_head_dim=None,  # None: each level's channel count, i.e. one head, as in the paper
        norm_num_groups=config.norm_groups,
        norm_eps=1e-6,
        dropout=config.dropout,
        time_embedding_type="positional",
        flip_sin_to_cos=False,
        freq_shift=1,  # exp(-log(10000) * i / (half - 1)), the paper's frequencies (and ours)
        downsample_padding=0,  # pads (0, 1, 0, 1): TensorFlow's SAME, as the paper's code and ours do
    )
    return _SampleOutput(model)


class _SampleOutput(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.model(x, t, return_dict=False)[0]


def forward_gflops(model: nn.Module, config: UNetConfig) -> float:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    x, t = torch.zeros(1, config.in_channels, *config.image_size), torch.zeros(1, dtype=torch.long)
    # The counter has no formula for the fused CPU attention kernel: force the math one so both count q k^T and a v.
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(x, t)
    return counter.get_total_flops() / 1e9


def train_step_fn(
    model: nn.Module, config: UNetConfig, batch: int, bf16: bool, product: bool = False
) -> Callable[[], None]:
    """One optimiser step of L_simple's shape (Ho et al. 2020, Eq. 14) on fixed random data; torch's default Adam,
    or with `product` the trainer's (engine.train.make_adam: the fused kernel)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, config.in_channels, *config.image_size, generator=gen)
    t = torch.randint(0, NUM_TIMESTEPS, (batch,), generator=gen)
    target = torch.randn(x.shape, generator=gen)
    if product:
        optimizer = make_adam(model.parameters(), 1e-4, torch.device("cpu"))
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # = engine.device.autocast(cpu, BF16)
            eps = model(x, t)
        F.mse_loss(eps.float(), target).backward()
        optimizer.step()

    return step


def sample_step_fn(
    model: nn.Module, config: UNetConfig, batch: int, bf16: bool, product: bool = False, compiled_forward=None
) -> Callable[[], None]:
    """One network evaluation of a reverse-process step (Ho et al. 2020, Algorithm 2, line 4); with `product`,
    through the `Denoiser` that `ddpm sample` calls (precision AUTO, weights converted once; float32 result), with
    `compiled_forward` as the studio's (engine/compiled.py) once its background compile is done."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, config.in_channels, *config.image_size, generator=gen)
    t = torch.randint(0, NUM_TIMESTEPS, (batch,), generator=gen)
    if product:
        network = inference_network(model.eval(), Precision.AUTO)  # as LoadedModel.denoiser() converts it
        denoiser = Denoiser(model, Precision.AUTO, compiled=compiled_forward, network=network)
        return lambda: denoiser(x, t)

    def step() -> None:
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x, t).float()

    return step


def busy_cpu_seconds() -> float:
    """CPU seconds all processes spent busy since boot, plus those a hypervisor stole (Linux); NaN where unknown."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    except (OSError, ValueError):
        return float("nan")
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def compare(ours: Callable[[], None], ref: Callable[[], None], batch: int, repeats: int, warmup: int) -> dict:
    """Images per second of each, medians over `repeats` alternating repeats, and ours / reference."""
    fastest = float("inf")
    for _ in range(max(warmup, 1)):
        start = time.perf_counter()
        ours()
        fastest = min(fastest, time.perf_counter() - start)
        ref()
    steps = max(1, round(TARGET_REPEAT_S / fastest))  # the same count for both

    rates: dict[str, list[float]] = {"ours": [], "reference": []}
    busy, own, wall = busy_cpu_seconds(), time.process_time(), time.perf_counter()
    for _ in range(repeats):
        for name, step in (("ours", ours), ("reference", ref)):
            start = time.perf_counter()
            for _ in range(steps):
                step()
            rates[name].append(steps * batch / (time.perf_counter() - start))
    # Cores kept busy by other processes (or stolen by a hypervisor) while we timed: above ~0.2, distrust the figures.
    outside = (busy_cpu_seconds() - busy - (time.process_time() - own)) / (time.perf_counter() - wall)
    ours_rate, ref_rate = statistics.median(rates["ours"]), statistics.median(rates["reference"])
    # Each pair ran back to back, under the same outside load: far from "ratio", it says the run was disturbed.
    paired = statistics.median(a / b for a, b in zip(rates["ours"], rates["reference"]))
    return {
        "ours": round(ours_rate, 2),
        "reference": round(ref_rate, 2),
        "ratio": round(ours_rate / ref_rate, 3),
        "paired_ratio": round(paired, 3),
        "spread": {k: f"{min(v):.1f}..{max(v):.1f}" for k, v in rates.items()},  # min..max over the repeats
        "outside_load_cores": round(max(outside, 0.0), 2),
        "batch": batch,
        "steps_per_repeat": steps,
    }


def compiled_product(ours: nn.Module, ref: nn.Module, config: UNetConfig, repeats: int, warmup: int) -> dict:
    """The studio's compiled sampling path (engine/compiled.py, at this thread count) against diffusers' eager fp32
    default: the compile's seconds, then the evaluations side by side."""
    why_not = compiled.compile_available(torch.device("cpu"))
    if why_not is not None:
        return {"skipped": why_not}
    explored = copy.deepcopy(ours).eval().requires_grad_(False)  # as load_model gives it (the guards check the flag)
    network = inference_network(explored, Precision.AUTO)
    handle = compiled.start(network, config, Precision.AUTO)
    while handle.state == "compiling":
        time.sleep(0.2)
    if handle.state != "ready":
        return {"skipped": f"the compile failed: {handle.error}"}
    ours_step = sample_step_fn(explored, config, SAMPLE_BATCH, True, product=True, compiled_forward=handle)
    figures = compare(ours_step, sample_step_fn(ref, config, SAMPLE_BATCH, False), SAMPLE_BATCH, repeats, warmup)
    if handle.state != "ready" or SAMPLE_BATCH in handle.unserved:  # calls fell back to eager: not the compiled path
        return {
            "skipped": f"the compiled path did not serve batch {SAMPLE_BATCH}: {handle.error or 'a guard excludes it'}"
        }
    return {"compile_s": round(handle.seconds, 1), "sample": figures, "sample_vs_diffusers_fp32": figures["ratio"]}


def bench_preset(name: str, repeats: int, warmup: int, compile_too: bool = False) -> dict:
    config = PRESETS[name].unet
    torch.manual_seed(0)
    ours, ref = UNet(config), build_reference(config)
    params = {"ours": count_parameters(ours), "reference": count_parameters(ref)}
    gflops = {"ours": round(forward_gflops(ours, config), 4), "reference": round(forward_gflops(ref, config), 4)}
    print(f"{name}: parameters {params}, forward GFLOP/image {gflops}", file=sys.stderr)

    train_batch = TRAIN_BATCH.get(name, 32)
    result: dict = {"params": params, "forward_gflop_per_image": gflops}
    for precision, bf16 in (("fp32", False), ("bf16", True)):
        result[precision] = {}
        for task, make, batch in (
            ("train_images_per_s", train_step_fn, train_batch),
            ("sample_evals_per_s", sample_step_fn, SAMPLE_BATCH),
        ):
            figures = compare(make(ours, config, batch, bf16), make(ref, config, batch, bf16), batch, repeats, warmup)
            result[precision][task] = figures
            print(
                f"{name} {precision} {task}: ours {figures['ours']}, reference {figures['reference']}, "
                f"ratio {figures['ratio']}",
                file=sys.stderr,
            )
            if figures["outside_load_cores"] > 0.2:
                print(f"  disturbed: {figures['outside_load_cores']} cores busy elsewhere", file=sys.stderr)
    # The product's own path, measured side by side with diffusers' fp32 default (torch's default Adam).
    product = resolve_precision(Precision.AUTO, torch.device("cpu")).value
    result["product"] = {"precision": product, "optimizer": "engine.train.make_adam (fused)"}
    for task, key, make, batch in (
        ("sample", "sample_evals_per_s", sample_step_fn, SAMPLE_BATCH),
        ("train", "train_images_per_s", train_step_fn, train_batch),
    ):
        figures = compare(
            make(ours, config, batch, product == "bf16", product=True),
            make(ref, config, batch, False),
            batch,
            repeats,
            warmup,
        )
        result["product"][task] = figures
        result["product"][f"{task}_vs_diffusers_fp32"] = figures["ratio"]
        # Like for like at the product's precision, from the block above (both networks with torch's default Adam):
        # a rate from this block over one from that would mix two stretches of a drifting machine.
        result["product"][f"{task}_vs_diffusers_same_precision"] = result[product][key]["ratio"]
    if name in GOALS:
        result["product"]["goals_vs_diffusers_fp32"] = GOALS[name]
    print(f"{name} product path ({product}): {result['product']}", file=sys.stderr)
    if compile_too:
        result["product_compiled"] = compiled_product(ours, ref, config, repeats, warmup)
        print(f"{name} compiled product path: {result['product_compiled']}", file=sys.stderr)
    return result


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import diffusers

        diffusers_version = diffusers.__version__
    except ImportError:
        diffusers_version = None
    return {
        "torch": torch.__version__,
        "diffusers": diffusers_version,
        "python": platform.python_version(),
        "cpu": cpu,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny,small", help="comma-separated, from: " + ", ".join(PRESETS))
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per model (median taken)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model before timing")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument(
        "--compiled", action="store_true", help="also the studio's compiled sampling path (~1 minute per preset)"
    )
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        parser.error(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    report = {
        "machine": machine_info(),
        "settings": {
            "repeats": args.repeats,
            "warmup": args.warmup,
            "sample_batch": SAMPLE_BATCH,
            "ratio": "ours / reference; above 1 means ours is faster",
        },
        "presets": {name: bench_preset(name, args.repeats, args.warmup, args.compiled) for name in names},
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
