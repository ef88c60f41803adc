"""What the background compile costs and earns the studio's first minute, on the engine thread as the studio runs it.

Opening a model starts its compile (engine/compiled.py: a child process, then a load on a thread of the studio's
own), while the user's first chain runs eagerly beside it. This benchmark does what the studio does on launch, with
the engine alone (no window): the load job of the bundled model, then the Trajectory tab's first chain (8 images x
1000 steps, every frame kept), then `--pause` idle seconds (the user looks at it), then a second chain, and reports:

  * `first_chain_s`: seconds from the load's submission to the first chain done (what a new user waits for);
  * `second_chain_s`: how long the second chain took (the compiled path's pay-off where it is ready by then);
  * `compiled_at_s`: the compiled forward serving (after the chains, the benchmark waits for it: idle, the compile
    gets the cores, as it does in the studio while the user looks at the result), and `compile_s`, its own seconds.

Three modes, each in a fresh process, one after another: `off` (DDPM_COMPILE=0), `cold` (compile on, an empty cache:
the first launch on a machine) and `warm` (the cache from `cold`: every later launch). Ratios are against `off`.

    python benchmarks/first_chain.py [--repeats 2]    # ~3 minutes a repeat on 2 cores

JSON goes to stdout, progress to stderr. Keep the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAIN_IMAGES = 8  # the Trajectory tab's default


def one_launch(pause: float) -> dict:
    """In this process: the studio's launch on the engine thread (the main thread runs no torch work)."""
    sys.path.insert(0, str(ROOT))
    from engine.jobs import load_model_job, trajectory_job
    from engine.loading import BUNDLED_RUN
    from engine.worker import EngineWorker, JobFailed, JobFinished, Priority

    events: queue.Queue = queue.Queue()
    worker = EngineWorker(events.put)
    started = time.perf_counter()
    figures: dict = {"compiled_at_s": None}

    def wait(job_id: int) -> float:
        while True:
            try:
                event = events.get(timeout=0.05)
            except queue.Empty:
                event = None
            model = worker.state.model
            handle = model.compiled if model is not None else None
            if figures["compiled_at_s"] is None and handle is not None and handle.state == "ready":
                figures["compiled_at_s"] = round(time.perf_counter() - started, 2)
            if isinstance(event, JobFinished) and event.job_id == job_id:
                return time.perf_counter() - started
            if isinstance(event, JobFailed) and event.job_id == job_id:
                sys.exit(f"the engine thread failed: {event.message}")

    figures["load_s"] = round(wait(worker.submit("load", load_model_job(str(BUNDLED_RUN)), Priority.ONE_OFF)), 2)
    first = wait(worker.submit("trajectory", trajectory_job(CHAIN_IMAGES, 0), Priority.ONE_OFF))
    figures["first_chain_s"] = round(first, 2)
    time.sleep(pause)  # the user looks at the result: the studio is idle
    second_at = time.perf_counter() - started
    second = wait(worker.submit("trajectory", trajectory_job(CHAIN_IMAGES, 1), Priority.ONE_OFF)) - second_at
    figures["second_chain_s"] = round(second, 2)
    handle = worker.state.model.compiled
    while handle is not None and handle.state == "compiling":  # idle now: the compile gets the cores
        time.sleep(0.1)
    if handle is not None and handle.state == "ready":
        figures["compiled_at_s"] = figures["compiled_at_s"] or round(time.perf_counter() - started, 2)
        figures["compile_s"], figures["from_cache"] = round(handle.seconds, 2), handle.cached
    elif handle is not None:
        figures["compile_error"] = handle.error
    worker.shutdown()
    return figures


def launch(mode: str, data_home: Path, pause: float) -> dict:
    env = {**os.environ, "XDG_DATA_HOME": str(data_home), "DDPM_COMPILE": "0" if mode == "off" else "1"}
    command = [sys.executable, __file__, "--one", "--pause", str(pause)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        sys.exit(f"{mode}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="launches per mode (default 1)")
    parser.add_argument("--pause", type=float, default=8.0, help="idle seconds between the chains (default 8)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a single launch, in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_launch(args.pause)))
        return
    if not 1 <= args.repeats <= 10:
        parser.error("--repeats must be 1..10")
    if not 0 <= args.pause <= 600:
        parser.error("--pause must be 0..600 seconds")
    runs: dict[str, list[dict]] = {"off": [], "cold": [], "warm": []}
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as off_home, tempfile.TemporaryDirectory() as home:
            for mode, data_home in (("off", off_home), ("cold", home), ("warm", home)):
                figures = launch(mode, Path(data_home), args.pause)
                runs[mode].append(figures)
                print(f"repeat {repeat + 1} {mode}: {json.dumps(figures)}", file=sys.stderr)

    def median(mode: str, key: str):
        values = [run[key] for run in runs[mode] if run[key] is not None]
        return round(statistics.median(values), 2) if values else None

    summary = {
        mode: {key: median(mode, key) for key in ("load_s", "compiled_at_s", "first_chain_s", "second_chain_s")}
        for mode in runs
    }
    for mode in ("cold", "warm"):
        for key in ("first_chain_s", "second_chain_s"):
            summary[mode][f"{key}_vs_off"] = round(summary[mode][key] / summary["off"][key], 2)
    print(json.dumps({"chain_images": CHAIN_IMAGES, "summary": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
