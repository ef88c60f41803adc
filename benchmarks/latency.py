"""How live the Interpolation panel feels for each preset: the progressive-refinement latencies of docs/architecture.md.

Drives the real engine thread (`EngineWorker`) with the real `interpolate_job`, as the studio does when a slider
moves, on a model of the preset's architecture with its initial weights (the cost of a forward pass does not depend
on what the weights have learned). As in the studio, the model is built, warmed up and timed on the engine thread
and the main thread runs no torch work (docs/architecture.md, Threading). For each preset it reports, as medians
over repeats:

  * `direct_s`: submit -> the first preview (one network evaluation of the whole strip, Eq. 15);
  * `settled_s`: submit -> the settled image (a strided chain of up to 100 steps, sized to take ~0.8 s);
  * `forward_s`: one evaluation of the strip alone through the jobs' path (`LoadedModel.denoiser()`), measured
    beside them (the floor the preview cannot beat);

and, as the headline, the ratios to the design's targets (first preview within 0.15 s, settled within 1 s): at or
below 1 the target is met on this machine. The exact chain (up to T steps) is cancelled once settled, as moving
the slider again would.

Then a simulated drag of the mixing slider: 40 moves of t (300 -> 690, one every 30 ms), each a new request that
supersedes the one before, as the studio sends them. A move's latency is the time from it to the first direct
preview of a request made at or after it: how long the person waits to see the picture follow the slider. The
report gives its median, 95th percentile (`drag_direct_p95_s`, target 0.1 s) and maximum.

With `--compiled` the model is first compiled as the studio does it in the background (engine/compiled.py; the
compile's seconds are reported) and the figures are those of the compiled path.

    python benchmarks/latency.py --presets micro,tiny,small,cifar10 --repeats 3

JSON goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import platform
import queue
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout, uninstalled
from engine import compiled  # noqa: E402
from engine.config import PRESETS  # noqa: E402
from engine.device import pick_device, resolve_precision  # noqa: E402
from engine.diffusion import GaussianDiffusion  # noqa: E402
from engine.jobs import interpolate_job, time_one_step  # noqa: E402
from engine.loading import LoadedModel, Weights  # noqa: E402
from engine.refine import SETTLED_STEPS, Refined  # noqa: E402
from engine.unet import UNet  # noqa: E402
from engine.worker import EngineWorker, JobFailed, JobFinished, JobProgress, Priority  # noqa: E402

TARGETS = {"direct_s": 0.15, "settled_s": 1.0}  # docs/architecture.md, progressive refinement
DRAG_TARGET_P95_S = 0.1  # the design's target: the direct preview while dragging, 95th percentile
DRAG_MOVES, DRAG_INTERVAL_S, DRAG_FIRST_T, DRAG_T_STEP = 40, 0.030, 300, 10
LAMBDAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # the panel's default strip: reconstructions at the ends
MIX_STEP = 500


def _load_job(name: str, device: torch.device):
    """A job building the preset's model on the engine thread, as the studio's load job does: the main thread runs no
    torch work, which would give it an OpenMP pool beside the engine thread's and throttle both
    (docs/architecture.md, Threading)."""

    def job(ctx) -> LoadedModel:
        preset = PRESETS[name]
        torch.manual_seed(0)
        model = UNet(preset.unet).to(device).eval().requires_grad_(False)
        diffusion = GaussianDiffusion(preset.diffusion, device)
        loaded = LoadedModel(model, diffusion, preset.unet, 0, Weights.EMA, f"init:{name}", None)
        time_one_step(loaded)  # as the studio's load job: a warm-up evaluation, then one timed
        ctx.state.explore(loaded)
        return loaded

    return job


def _forward_job(loaded: LoadedModel, t: int, repeats: int):
    """Seconds of one evaluation of the strip through the jobs' path, `repeats` times, on the engine thread."""

    def job(ctx) -> list[float]:
        c = loaded.unet_config
        x = torch.randn(len(LAMBDAS), c.in_channels, *c.image_size, device=loaded.diffusion.device)
        index = torch.full((len(LAMBDAS),), t - 1, device=loaded.diffusion.device)
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            loaded.denoiser()(x, index)  # the inference precision, compiled where ready
            seconds.append(time.perf_counter() - started)
        return seconds

    return job


def _result(worker: EngineWorker, events: queue.Queue, job) -> object:
    """Run a plain job on the engine thread and wait for its result."""
    job_id = worker.submit("setup", job, Priority.ONE_OFF, supersede=False)
    while True:
        event = events.get(timeout=600)
        if isinstance(event, JobFinished) and event.job_id == job_id:
            return event.result
        if isinstance(event, JobFailed) and event.job_id == job_id:
            sys.exit(f"the engine thread failed: {event.message}")


def _one(worker: EngineWorker, events: queue.Queue, image_shape: tuple, seed: int, t: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    a, b = (rng.integers(0, 256, image_shape, dtype=np.uint8) for _ in range(2))
    started = time.perf_counter()
    job_id = worker.submit("interpolate", interpolate_job(a, b, t, LAMBDAS, seed), Priority.INTERACTIVE)
    times: dict[str, float] = {}
    while "settled_s" not in times:
        event = events.get(timeout=600)
        if isinstance(event, JobProgress) and event.job_id == job_id and isinstance(event.value, Refined):
            times.setdefault(f"{event.value.stage}_s", time.perf_counter() - started)
        elif isinstance(event, JobFinished) and event.job_id == job_id:
            break
    worker.cancel(job_id)
    return times


def drag(worker: EngineWorker, events: queue.Queue, image_shape: tuple, num_timesteps: int) -> list[float]:
    """Latencies of the moves of a simulated drag (see the module's docstring), in seconds."""
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, image_shape, dtype=np.uint8) for _ in range(2))
    moves: list[tuple[int, float]] = []  # (job id, submitted at)
    previews: dict[int, float] = {}  # job id -> its direct preview's arrival

    def take_events(until: float) -> None:
        while (left := until - time.perf_counter()) > 0:
            try:
                event = events.get(timeout=left)
            except queue.Empty:
                return
            if isinstance(event, JobProgress) and isinstance(event.value, Refined) and event.value.stage == "direct":
                previews.setdefault(event.job_id, time.perf_counter())

    start = time.perf_counter()
    for i in range(DRAG_MOVES):
        t = min(DRAG_FIRST_T + DRAG_T_STEP * i, num_timesteps)
        job = worker.submit("interpolate", interpolate_job(a, b, t, LAMBDAS, 0), Priority.INTERACTIVE)
        moves.append((job, time.perf_counter()))
        take_events(start + (i + 1) * DRAG_INTERVAL_S)
    last = moves[-1][0]
    deadline = time.perf_counter() + 60
    while last not in previews and time.perf_counter() < deadline:
        take_events(time.perf_counter() + 0.05)
    worker.cancel(last)
    latencies = []
    for i, (_, asked) in enumerate(moves):
        seen = [previews[job] for job, _ in moves[i:] if job in previews]
        if seen:
            latencies.append(min(seen) - asked)
    return latencies


def bench(name: str, repeats: int, device: torch.device, compile_first: bool = False) -> dict:
    preset = PRESETS[name]
    events: queue.Queue = queue.Queue()
    worker = EngineWorker(events.put)
    loaded = _result(worker, events, _load_job(name, device))
    compile_s = None
    if compile_first:
        handle = _result(worker, events, lambda ctx: compiled.start_for(loaded))  # as the load job: engine thread
        while handle.state == "compiling":
            time.sleep(0.2)
        if handle.state != "ready":
            sys.exit(f"{name}: the compile failed: {handle.error}")
        loaded.compiled, compile_s = handle, handle.seconds
    shape = (*preset.unet.image_size, preset.unet.in_channels)
    t = min(MIX_STEP, loaded.diffusion.num_timesteps)
    runs = [_one(worker, events, shape, seed, t) for seed in range(repeats + 1)][1:]  # the first warms up
    dragged = drag(worker, events, shape, loaded.diffusion.num_timesteps)
    forwards = _result(worker, events, _forward_job(loaded, t, repeats))
    worker.shutdown()
    result = {
        "preset": name,
        "strip": len(LAMBDAS),
        "mix_step": t,
        "settled_steps": SETTLED_STEPS,
        "forward_s": statistics.median(forwards),
        "compiled": compile_first,
        "compile_s": compile_s,
        "precision": resolve_precision(loaded.inference, device).value,
    }
    for key, target in TARGETS.items():
        values = [r[key] for r in runs if key in r]
        if values:
            result[key] = statistics.median(values)
            result[key.replace("_s", "_over_target")] = result[key] / target
    if dragged:
        p95 = float(np.percentile(dragged, 95))
        result |= {
            "drag_moves": DRAG_MOVES,
            "drag_interval_s": DRAG_INTERVAL_S,
            "drag_direct_median_s": statistics.median(dragged),
            "drag_direct_p95_s": p95,
            "drag_direct_max_s": max(dragged),
            "drag_p95_over_target": p95 / DRAG_TARGET_P95_S,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="micro,tiny,small", help="comma-separated preset names")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--compiled", action="store_true", help="compile the model first, as the studio does")
    args = parser.parse_args()
    device = pick_device(args.device)
    results = []
    for name in args.presets.split(","):
        print(f"{name} ...", file=sys.stderr, flush=True)
        results.append(bench(name, args.repeats, device, args.compiled))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "device": str(device),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "targets_s": {**TARGETS, "drag_direct_p95_s": DRAG_TARGET_P95_S},
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
