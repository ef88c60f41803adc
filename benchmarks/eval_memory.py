"""How much memory `ddpm eval` holds while it scores many images: the bound is batched in one place
(engine/figures.py, BOUND_BATCH images at a time), so its peak should not grow with --n.

Makes a run of the preset (its initial weights: memory does not depend on what they learned) in a temporary folder,
then runs `python -m engine eval --run RUN --n N` on built-in shapes at the preset's size in a child process, reads
its peak resident memory (VmHWM) every half second for `--seconds` and stops it: on a CPU the whole bound of 10,000
CIFAR-10-sized images takes days, but the peak is reached within the first batch's first terms. Reported against the
bar of 3 GB (`ratio_to_bar` at or below 1 meets it).

    python benchmarks/eval_memory.py --preset cifar10 --n 10000 --seconds 120

JSON goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BAR_BYTES = 3 * 1024**3


def _peak_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cifar10")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args()

    from engine.config import get_preset
    from engine.runs import RunSpec
    from engine.train_state import open_trainer

    preset = get_preset(args.preset)
    height, width = preset.unet.image_size
    data = f"builtin:shapes?size={height}x{width}&count=64"
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        spec = RunSpec.for_data(preset, data, preset.unet.in_channels, preset.unet.image_size)
        trainer, _ = open_trainer(run, spec)
        trainer.save()  # step 0: the initial weights
        print(f"scoring {args.n:,} images with {args.preset} for {args.seconds:.0f} s ...", file=sys.stderr)
        scored = f"builtin:shapes?size={height}x{width}&channels={preset.unet.in_channels}"
        command = [sys.executable, "-m", "engine", "eval", "--run", str(run), "--n", str(args.n), "--data", scored]
        child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started, peak, samples = time.monotonic(), 0, []
        while time.monotonic() - started < args.seconds and child.poll() is None:
            kib = _peak_kib(child.pid)
            if kib is not None:
                peak = max(peak, kib)
                samples.append((round(time.monotonic() - started, 1), kib))
            time.sleep(0.5)
        finished = child.poll() is not None
        if not finished:
            child.terminate()
        _, err = child.communicate(timeout=60)
    peak_bytes = peak * 1024
    result = {
        "preset": args.preset,
        "images": args.n,
        "seconds_watched": round(time.monotonic() - started, 1),
        "finished": finished,
        "returncode": child.returncode if finished else None,
        "peak_rss_gb": round(peak_bytes / 1024**3, 3),
        "bar_gb": BAR_BYTES / 1024**3,
        "ratio_to_bar": round(peak_bytes / BAR_BYTES, 3),
        "peak_rss_gb_by_time": [(t, round(k / 1024**2, 3)) for t, k in samples[:: max(1, len(samples) // 12)]],
        "cpu_count": os.cpu_count(),
    }
    if finished and child.returncode:
        result["stderr_tail"] = err[-500:]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
