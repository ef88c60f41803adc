"""The studio trains as fast as the command line when nobody is exploring (the bar: within 5%).

For each repeat it trains the same new run twice, in turn (CLI, studio, CLI, studio, ...), each in a process of its
own as a user runs them:

  * `cli`: `ddpm train`'s loop, `Trainer.run` on the main thread with its ThreadPolicy ticking;
  * `studio`: the studio's engine thread (`EngineWorker`) loading the data (`data_jobs.dataset_job`) and then running
    `jobs.train_job`, its events taken by a waiting main thread as the Bridge takes them (without Qt: the window's
    own drawing is not in it). As in the studio, the main thread runs no torch work of its own.

A run's rate is images per second between its first and its last logged step, each timed where the trainer yields
it (setup, data loading and the final checkpoint are outside it); the headline is the median of the pairwise ratios
studio / cli (1.0: as fast; the issue's bar is 0.95). Previews and checkpoints are scheduled beyond the run's end so
both measure the same steps. The data is the built-in shapes at the preset's size. Each process also reports its
voluntary context switches: torch's OpenMP threads sleep between parallel regions (~2,000 times per step of tiny)
when another thread of the process has run parallel torch work too (docs/architecture.md, Threading).

    python benchmarks/studio_training.py --preset tiny --steps 200 --repeats 3   # ~6 minutes on 2 cores

JSON goes to stdout, progress to stderr. Keep the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import queue
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout, uninstalled
from engine.config import PRESETS, get_preset  # noqa: E402
from engine.data import load_dataset  # noqa: E402
from engine.data_jobs import dataset_job
from engine.jobs import train_job  # noqa: E402
from engine.runs import Run, RunSpec  # noqa: E402
from engine.threads import ThreadPolicy  # noqa: E402
from engine.train import Trainer  # noqa: E402
from engine.train_events import StepLogged  # noqa: E402
from engine.worker import EngineWorker, JobFailed, JobFinished, JobProgress, Priority  # noqa: E402


def spec_for(preset_name: str, steps: int) -> RunSpec:
    preset = get_preset(preset_name)
    height, width = preset.unet.image_size
    data = f"builtin:shapes?size={height}x{width}"
    train = dataclasses.replace(
        preset.train, total_steps=steps, log_every=10, sample_every=10 * steps, checkpoint_every=10 * steps
    )
    return RunSpec(preset.unet, preset.diffusion, train, data, preset_name)


def rate(logged: list[tuple[float, int]], batch: int) -> float:
    """Images per second between the first and the last (time, step) logged."""
    (t0, s0), (t1, s1) = logged[0], logged[-1]
    return (s1 - s0) * batch / (t1 - t0)


def train_cli(folder: Path, spec: RunSpec) -> list[tuple[float, int]]:
    trainer = Trainer(Run.create(folder, spec), dataset=load_dataset(spec.data))
    threads = ThreadPolicy()
    logged = []
    for event in trainer.run(spec.train.total_steps):
        threads.tick()
        if isinstance(event, StepLogged):
            logged.append((time.perf_counter(), event.step))
    return logged


def train_studio(folder: Path, spec: RunSpec) -> list[tuple[float, int]]:
    events: queue.Queue = queue.Queue()
    # Timed where the engine thread emits them, as the trainer yields each one.
    worker = EngineWorker(lambda event: events.put((time.perf_counter(), event)))
    worker.submit("dataset", dataset_job(spec.data), Priority.ONE_OFF)  # as the Dataset tab has it loaded
    job = worker.submit("train", train_job(str(folder), spec, spec.train.total_steps), Priority.TRAINING, graceful=True)
    logged = []
    try:
        while True:
            when, event = events.get(timeout=600)
            if isinstance(event, JobProgress) and isinstance(event.value, StepLogged):
                logged.append((when, event.value.step))
            elif isinstance(event, JobFailed):
                sys.exit(f"the studio's {event.key} job failed: {event.message}")
            elif isinstance(event, JobFinished) and event.job_id == job:
                return logged
    finally:
        worker.shutdown()


def one_run(mode: str, folder: Path, preset: str, steps: int) -> None:
    """One run in this process; prints its rate (JSON) on stdout."""
    spec = spec_for(preset, steps)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    logged = (train_cli if mode == "cli" else train_studio)(folder, spec)
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before
    print(json.dumps({"images_per_s": rate(logged, spec.train.batch_size), "voluntary_switches": switches}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=200, help="training steps per run (>= 30)")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs (CLI, studio)")
    parser.add_argument("--one", choices=("cli", "studio"), help=argparse.SUPPRESS)  # a child process: one run
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 30 or args.repeats < 1:
        parser.error("--steps must be at least 30 and --repeats at least 1")
    if args.one:
        one_run(args.one, Path(args.folder), args.preset, args.steps)
        return

    spec = spec_for(args.preset, args.steps)
    runs: dict[str, list[dict]] = {"cli": [], "studio": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for mode in ("cli", "studio"):
                command = [sys.executable, __file__, "--one", mode, "--folder", str(Path(tmp) / f"{mode}-{i}")]
                command += ["--preset", args.preset, "--steps", str(args.steps)]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    sys.exit(f"the {mode} run failed:\n{done.stderr[-2000:]}")
                runs[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
                figures = runs[mode][-1]
                print(
                    f"repeat {i + 1} {mode}: {figures['images_per_s']:.1f} images/s, "
                    f"{figures['voluntary_switches']:,} voluntary context switches",
                    file=sys.stderr,
                )
    rates = {mode: [r["images_per_s"] for r in found] for mode, found in runs.items()}
    ratios = [s / c for s, c in zip(rates["studio"], rates["cli"])]
    report = {
        "preset": args.preset,
        "steps": args.steps,
        "batch": spec.train.batch_size,
        "threads": torch.get_num_threads(),
        "images_per_s": {k: [round(r, 1) for r in v] for k, v in rates.items()},
        "voluntary_switches": {k: [r["voluntary_switches"] for r in v] for k, v in runs.items()},
        "median_images_per_s": {k: round(statistics.median(v), 1) for k, v in rates.items()},
        "studio_over_cli": round(statistics.median(ratios), 3),
        "bar": 0.95,
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
