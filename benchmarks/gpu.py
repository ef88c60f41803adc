"""The engine on a GPU, in one prepared run: what the paper's numbers become on the device at hand.

1. Training: steps/s of the cifar10 preset (the paper's 35.7M-parameter U-Net) at batch 128 in bf16, through the
   product's own `engine.train.Trainer` (data, EMA, clipping and all). The paper's TPU v3-8 did 21 steps/s; the goal
   here is >= 40.
2. Sampling: seconds for 256 samples x 1000 ancestral steps (Alg. 2) through `engine.sampling.generate`, as
   `ddpm sample` runs it. The paper: 17 s on a TPU v3-8 for 256 samples; the goal here is <= 8 s.
3. The same two for diffusers' `UNet2DModel` of the identical architecture (its DDPMScheduler for sampling), at the
   same batch and precision, when diffusers is installed: the ratios ours / reference.
4. The engine's tests (the files that need no Qt), run on the device.

It needs only torch, numpy, Pillow, safetensors and pytest: no Qt, no diffusers. It runs on a CPU too, so the script
is checked before a GPU is at hand: `--small` uses the tiny preset, batch 8 and 8 samples x 20 steps.

    python3 benchmarks/gpu.py --out gpu.json          # on the GPU machine: about 5 minutes
    python3 benchmarks/gpu.py --small --no-tests      # here, to check the script (about a minute)
    python3 benchmarks/gpu.py --compiled --no-tests   # + training via torch.compile, the studio's compiled sampling

JSON goes to stdout (and to --out), progress to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from a checkout, uninstalled
from engine import compiled as engine_compiled  # noqa: E402
from engine import convert  # noqa: E402
from engine.config import PRESETS, Precision  # noqa: E402
from engine.device import Denoiser, inference_network, pick_device  # noqa: E402
from engine.diffusion import GaussianDiffusion  # noqa: E402
from engine.runs import Run, RunSpec  # noqa: E402
from engine.sampling import generate  # noqa: E402
from engine.train import Trainer  # noqa: E402
from engine.train_events import StepDone  # noqa: E402
from engine.unet import UNet, count_parameters  # noqa: E402

PAPER = {"train_steps_per_s": 21.0, "sample_256x1000_s": 17.0}  # Ho et al. 2020, Sec. 4 / Appendix B (TPU v3-8)
GOALS = {"train_steps_per_s": 40.0, "sample_256x1000_s": 8.0}  # the project's GPU goals (docs/performance.md)
# The tests that run without Qt (the studio's need a display and PySide6, which the GPU image lacks).
ENGINE_TESTS = [
    "tests/test_diffusion.py",
    "tests/test_schedule.py",
    "tests/test_unet.py",
    "tests/test_sampling.py",
    "tests/test_likelihood.py",
    "tests/test_train.py",
    "tests/test_jobs.py",
    "tests/test_device.py",
    "tests/test_convert.py",
    "tests/test_cli.py",
]


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_ours(preset, batch: int, steps: int, warmup: int, device: torch.device, compiled: bool = False) -> dict:
    """Steps/s of the product's trainer on in-memory data of the preset's shape (shapes: decoding is not measured);
    with `compiled`, its network through torch.compile (not the product's path yet: a measurement for deciding)."""
    h, w = preset.unet.image_size
    train = dataclasses.replace(
        preset.train,
        batch_size=batch,
        precision=Precision.BF16,
        total_steps=warmup + steps,
        log_every=10**9,
        sample_every=10**9,
        checkpoint_every=10**9,
    )
    data = f"builtin:shapes?size={h}x{w}&count={batch * 4}"
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(Run.create(Path(folder) / "run", RunSpec(preset.unet, preset.diffusion, train, data)), device)
        if compiled:
            trainer.network = torch.compile(trainer.model)  # the first (warm-up) step compiles
        times = []
        for event in trainer.run(warmup + steps):
            if isinstance(event, StepDone):
                sync(device)
                times.append(time.perf_counter())
    timed = times[warmup:]
    rate = (len(timed) - 1) / (timed[-1] - timed[0]) if len(timed) > 1 else float("nan")
    return {"steps_per_s": rate, "images_per_s": rate * batch, "steps_timed": len(timed) - 1}


def _reference(preset, device: torch.device):
    try:
        from diffusers import DDPMScheduler, UNet2DModel
    except ImportError:
        return None
    config = convert.unet_config_to_diffusers(preset.unet)
    model = UNet2DModel(**{k: v for k, v in config.items() if not k.startswith("_")}).to(device)
    scheduler_config = convert.diffusion_config_to_scheduler(preset.diffusion)
    scheduler = DDPMScheduler(**{k: v for k, v in scheduler_config.items() if not k.startswith("_")})
    return model, scheduler


def train_reference(reference, preset, batch: int, steps: int, warmup: int, device: torch.device) -> dict:
    """The same step for diffusers' UNet2DModel: L_simple (Eq. 14), bf16 autocast, clip 1, Adam (fused on CUDA)."""
    model, _ = reference
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, fused=device.type == "cuda")
    g = torch.Generator(device).manual_seed(0)
    x0 = torch.randn(batch, preset.unet.in_channels, *preset.unet.image_size, device=device, generator=g)
    T = preset.diffusion.num_timesteps
    times = []
    for _ in range(warmup + steps):
        t = torch.randint(0, T, (batch,), device=device, generator=g)
        noise = torch.randn(x0.shape, device=device, generator=g)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            eps = model(x0 + noise, t, return_dict=False)[0]  # the noising itself is negligible beside the network
        loss = F.mse_loss(eps.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        sync(device)
        times.append(time.perf_counter())
    timed = times[warmup:]
    rate = (len(timed) - 1) / (timed[-1] - timed[0])
    return {"steps_per_s": rate, "images_per_s": rate * batch}


def sample_ours(preset, n: int, steps: int, device: torch.device, compiled: bool = False) -> dict:
    """Seconds for n samples through `steps` network evaluations, as `ddpm sample --precision bf16` runs them; with
    `compiled`, through the studio's compiled forward (engine/compiled.py: compiled in a child process, loaded, its
    first answer checked against the eager network's; the compile's seconds are reported)."""
    torch.manual_seed(0)
    model = UNet(preset.unet).to(device).eval().requires_grad_(False)
    diffusion = GaussianDiffusion(preset.diffusion, device)
    network = inference_network(model, Precision.BF16)  # as LoadedModel.denoiser() converts it
    handle = None
    if compiled:
        handle = engine_compiled.start(network, preset.unet, Precision.BF16)
        while handle.state == "compiling":
            time.sleep(0.2)
        if handle.state != "ready":
            return {"skipped": f"the compile failed: {handle.error}"}
    denoiser = Denoiser(model, Precision.BF16, network=network, compiled=handle)
    shape = (n, preset.unet.in_channels, *preset.unet.image_size)
    num_steps = None if steps >= diffusion.num_timesteps else steps
    warmup_started = time.perf_counter()
    for _ in generate(denoiser, diffusion, shape, torch.Generator(device).manual_seed(0), num_steps=2):
        pass  # warm-up: kernels chosen, memory pools filled (and the compile, where compiled)
    sync(device)
    warmup_s = time.perf_counter() - warmup_started
    started = time.perf_counter()
    for _ in generate(denoiser, diffusion, shape, torch.Generator(device).manual_seed(0), num_steps=num_steps):
        pass
    sync(device)
    figures = {"seconds": time.perf_counter() - started, "n": n, "steps": steps, "warmup_s": warmup_s}
    if handle is not None:
        figures["compile_s"] = handle.seconds
        figures["served_compiled"] = handle.state == "ready" and n not in handle.unserved
        figures["compile_error"] = handle.error
    return figures


def sample_reference(reference, preset, n: int, steps: int, device: torch.device) -> dict:
    model, scheduler = reference
    model.eval()
    scheduler.set_timesteps(steps)
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(n, preset.unet.in_channels, *preset.unet.image_size, device=device, generator=g)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        model(x, torch.zeros(n, dtype=torch.long, device=device), return_dict=False)  # warm-up
    sync(device)
    started = time.perf_counter()
    with torch.no_grad():
        for t in scheduler.timesteps:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                eps = model(x, t.to(device).expand(n), return_dict=False)[0]
            x = scheduler.step(eps.float(), t, x, generator=g).prev_sample
    sync(device)
    return {"seconds": time.perf_counter() - started, "n": n, "steps": steps}


def run_tests(device: torch.device) -> dict:
    """The engine's tests on this machine (the engine picks CUDA by itself where there is one)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *ENGINE_TESTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return {
        "exit_code": proc.returncode,
        "summary": lines[-1] if lines else proc.stderr[-500:],
        "failures": [line for line in lines if line.startswith(("FAILED", "ERROR"))][:20],
        "seconds": time.perf_counter() - started,
        "device_seen_by_engine": str(pick_device()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--small", action="store_true", help="a check of the script: tiny preset, batch 8, 8 x 20")
    parser.add_argument("--no-tests", action="store_true", help="skip the engine's tests")
    parser.add_argument("--no-reference", action="store_true", help="skip diffusers even where it is installed")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="also train through torch.compile and sample through the studio's compiled forward (minutes to compile)",
    )
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    name, batch, n, steps, train_steps, warmup = (
        ("tiny", 8, 8, 20, 5, 2) if args.small else ("cifar10", 128, 256, 1000, 60, 10)
    )
    preset = PRESETS[name]
    result: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "preset": name,
        "parameters": count_parameters(UNet(preset.unet)),
        "precision": "bf16",
        "paper": PAPER,
        "goals": GOALS,
    }
    log(f"training {name} at batch {batch} on {result['device']} ...")
    result["train"] = train_ours(preset, batch, train_steps, warmup, device)
    log(json.dumps(result["train"]))
    log(f"sampling {n} x {steps} ...")
    result["sample"] = sample_ours(preset, n, steps, device)
    log(json.dumps(result["sample"]))
    if args.compiled:
        log("the same two through torch.compile ...")
        result["train_compiled"] = train_ours(preset, batch, train_steps, warmup, device, compiled=True)
        result["sample_compiled"] = sample_ours(preset, n, steps, device, compiled=True)
        log(json.dumps({k: result[k] for k in ("train_compiled", "sample_compiled")}))
    reference = None if args.no_reference else _reference(preset, device)
    if reference is None:
        result["reference"] = "diffusers is not installed (or --no-reference): no side-by-side figures"
    else:
        log("diffusers' UNet2DModel, the same two ...")
        ref_train = train_reference(reference, preset, batch, train_steps, warmup, device)
        ref_sample = sample_reference(reference, preset, n, steps, device)
        result["reference"] = {
            "train": ref_train,
            "sample": ref_sample,
            "train_ours_over_reference": result["train"]["steps_per_s"] / ref_train["steps_per_s"],
            "sample_ours_over_reference": ref_sample["seconds"] / result["sample"]["seconds"],
        }
        log(json.dumps(result["reference"]))
    if not args.small:
        result["train_over_paper"] = result["train"]["steps_per_s"] / PAPER["train_steps_per_s"]
        result["sample_paper_over_ours"] = PAPER["sample_256x1000_s"] / result["sample"]["seconds"]
    if not args.no_tests:
        log("the engine's tests ...")
        result["tests"] = run_tests(device)
        log(json.dumps(result["tests"]))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
