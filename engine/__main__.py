"""The command line: `python -m engine COMMAND ...` (also installed as `ddpm`).

Each command is a small function over the engine's public API; `python -m engine COMMAND --help` says what it does.
Long work shows a progress bar on stderr; Ctrl-C during training saves a checkpoint and exits cleanly.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from . import config as cfg
from . import limits as L

EXAMPLES = """examples:
  python -m engine inspect ~/Pictures/cats
  python -m engine train --data builtin:shapes --preset tiny --steps 2000 --run runs/shapes
  python -m engine sample --run runs/shapes --n 16 --steps 100 --seed 0 --out samples.png
  python -m engine trajectory --run runs/shapes --n 4 --seed 0 --out trajectory.png --gif trajectory.gif
  python -m engine fork --run runs/shapes --t 500 --forks 8 --seed 0 --out fork.png
  python -m engine interpolate --run runs/shapes --a data:0 --b data:1 --t 500 --out interp.png
  python -m engine eval --run runs/shapes --n 64
"""


class Progress:
    """A one-line progress bar on stderr (quiet when stderr is not a terminal, except for the final line)."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.start = max(1, total), label, time.perf_counter()
        self.live = sys.stderr.isatty()
        self._last = 0.0

    def update(self, done: int, extra: str = "") -> None:
        now = time.perf_counter()
        if not self.live or (now - self._last < 0.1 and done < self.total):
            return
        self._last = now
        frac = min(1.0, done / self.total)
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {done}/{self.total} {elapsed:5.0f}s eta {eta:5.0f}s {extra}   ")
        sys.stderr.flush()

    def close(self, message: str = "") -> None:
        if self.live:
            sys.stderr.write("\n")
        if message:
            print(message, file=sys.stderr)


# ---- checking what a person typed ----


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (exit status 2), not a usage block."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


# Every number each command takes, with its range; checked before any work (model-bound ones once it is loaded).
_EXPLORE = [("seed", "--seed", L.SEED), ("scale", "--scale", L.SCALE)]
RANGES: dict[str, list[tuple[str, str, L.Limit]]] = {
    "presets": [("batch", "--batch", L.FORWARD_BATCH)],
    "train": [
        ("steps", "--steps", L.TRAIN_STEPS),
        ("batch_size", "--batch-size", L.BATCH_SIZE),
        ("lr", "--lr", L.LEARNING_RATE),
        ("seed", "--seed", L.SEED),
        ("ema_decay", "--ema-decay", L.EMA_DECAY),
    ],
    "sample": [*_EXPLORE, ("n", "--n", L.IMAGES), ("eta", "--eta", L.ETA), ("nrow", "--nrow", L.GRID_COLUMNS)],
    "trajectory": [*_EXPLORE, ("n", "--n", L.TRAJECTORY_IMAGES), ("frames", "--frames", L.FRAMES)],
    "fork": [*_EXPLORE, ("n", "--n", L.IMAGES), ("forks", "--forks", L.FORKS)],
    "interpolate": [*_EXPLORE, ("lambdas", "--lambdas", L.LAMBDAS)],
    "eval": [("seed", "--seed", L.SEED), ("n", "--n", L.EVAL_IMAGES)],
}


# What `train` takes only when it creates a run (a resumed run keeps the recipe in its run.json).
RECIPE_OPTIONS = [
    ("--data", "data"),
    ("--preset", "preset"),
    ("--batch-size", "batch_size"),
    ("--lr", "lr"),
    ("--lr-schedule", "lr_schedule"),
    ("--seed", "seed"),
    ("--precision", "precision"),
    ("--schedule", "schedule"),
    ("--ema-decay", "ema_decay"),
    ("--loss", "loss"),
]


def check_ranges(args: argparse.Namespace) -> None:
    for dest, flag, limit in RANGES.get(args.command, []):
        limit.check(flag, getattr(args, dest))
    if args.command == "fork":
        L.IMAGES.check("--n x --forks", args.n * args.forks, why="images in one batch")


# ---- presets ----


def cmd_presets(args: argparse.Namespace) -> int:
    from .report import preset_rows

    rows = preset_rows(args.time, args.batch, args.device)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    timed = [k for k in rows[0] if k.startswith("ms_per_image")]
    header = f"{'preset':<12} {'params':>9} {'GFLOP/img':>10} {'size':>10} {'T':>5}" + "".join(
        f" {k[13:]:>9}" for k in timed
    )
    print(header + "  " + ("(ms/img)" if timed else "description"))
    for r in rows:
        line = (
            f"{r['preset']:<12} {r['params_M']:>8.2f}M {r['gflop_per_image']:>10.2f} {r['resolution']:>10} {r['T']:>5}"
        )
        line += "".join(f" {r[k]:>9.1f}" for k in timed)
        print(line + ("" if timed else "  " + r["description"]))
    return 0


# ---- data ----


def cmd_inspect(args: argparse.Namespace) -> int:
    from .data import inspect_data, parse_data_spec

    report = inspect_data(parse_data_spec(args.data))
    print(report.format())
    return 0 if report.ok else 1


# ---- training ----


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed

    device = distributed.init_from_env(args.device)  # under torchrun: join the others, one device each
    try:
        return _train(args, device, distributed.is_main())
    finally:
        distributed.cleanup()


def _train(args: argparse.Namespace, device, main: bool) -> int:
    """Train on this process; under torchrun every process runs this, and only the main one (rank 0) talks."""
    from . import distributed
    from .runs import Run
    from .threads import ThreadPolicy
    from .train import (
        CheckpointSaved,
        RolledBack,
        SamplesReady,
        StepLogged,
        StepSkipped,
        Trainer,
        TrainFinished,
        TrainStarted,
    )

    say = (lambda *a: print(*a, file=sys.stderr)) if main else (lambda *a: None)
    run_dir = Path(args.run)
    resuming = (run_dir / "run.json").exists()
    if not resuming:  # refused before anything is written (a resumed run's batch is checked by the Trainer)
        distributed.shard_size(args.batch_size or cfg.get_preset(args.preset or "tiny").train.batch_size)
    distributed.barrier()  # every process has looked before rank 0 creates the run
    if resuming:
        run = Run.open(run_dir)
        say(f"resuming {run_dir} (preset {run.spec.preset or 'custom'}, data {run.spec.data})")
        ignored = [flag for flag, dest in RECIPE_OPTIONS if getattr(args, dest) is not None]
        if ignored:
            say(f"warning: {', '.join(ignored)} ignored: a resumed run keeps its recipe (start a new run to change it)")
        trainer = Trainer(run, device=device)
        for problem in trainer.resume():
            say(f"passed over: {problem}")
    elif main:
        spec, dataset = _new_run_spec(args)
        run = Run.create(run_dir, spec)
        distributed.barrier()
        trainer = Trainer(run, device=device, dataset=dataset)
    else:
        distributed.barrier()  # rank 0 has written run.json: the others read the same spec from it
        run = Run.open(run_dir)
        trainer = Trainer(run, device=device)

    stop_requested = {"flag": False}

    def on_interrupt(signum, frame):
        # Under torchrun, Ctrl-C reaches torchrun, which passes it to every process: each stops after the same step.
        if stop_requested["flag"]:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, the last checkpoint stays
        stop_requested["flag"] = True
        say("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort)")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    last_checkpoint = ""
    total = args.steps or run.spec.train.total_steps
    progress = Progress(total, "train")
    threads = ThreadPolicy()  # fewer CPU threads while other processes hold cores (see engine/threads.py)
    try:
        for event in trainer.run(total, stop=lambda: stop_requested["flag"]):
            threads.tick()
            if not main:
                continue
            if isinstance(event, TrainStarted):
                processes = f" x {event.processes} processes" if event.processes > 1 else ""
                print(
                    f"{event.parameters / 1e6:.2f}M parameters on {event.device}{processes} ({event.precision}), "
                    f"{event.dataset_size:,} images, step {event.step} -> {event.total_steps}",
                    file=sys.stderr,
                )
                for warning in event.warnings:
                    print(f"warning: {warning}", file=sys.stderr)
            elif isinstance(event, StepLogged):
                progress.update(event.step, f"loss {event.loss:.4f} {event.images_per_s:.0f} img/s")
                if not progress.live and event.step % (run.spec.train.log_every * 10) == 0:
                    print(
                        f"step {event.step} loss {event.loss:.4f} lr {event.lr:.2e} "
                        f"{event.images_per_s:.0f} img/s eta {event.eta_s:.0f}s",
                        file=sys.stderr,
                    )
            elif isinstance(event, SamplesReady):
                progress.update(event.step, f"samples -> {event.path}")
            elif isinstance(event, (StepSkipped, RolledBack)):
                print(f"\n{event}", file=sys.stderr)
            elif isinstance(event, CheckpointSaved):
                last_checkpoint = event.path
            elif isinstance(event, TrainFinished):
                progress.close(f"{event.reason} at step {event.step}; checkpoint {last_checkpoint}")
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0


def _new_run_spec(args: argparse.Namespace):
    """A new run's configs: the preset, with the data's channels and size, and the command line's changes."""
    import dataclasses

    from .data import load_dataset, parse_data_spec
    from .runs import RunSpec

    preset = cfg.get_preset(args.preset or "tiny")
    data = args.data or "builtin:shapes"
    spec = parse_data_spec(data)
    if "size=" not in data:
        spec = dataclasses.replace(spec, image_size=preset.unet.image_size)
    dataset = load_dataset(spec)
    for skipped in dataset.report.skipped[:20]:
        print(f"skipped {skipped.reason.value}: {skipped.path}", file=sys.stderr)
    for warning in dataset.report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    unet = dataclasses.replace(preset.unet, in_channels=dataset.channels, image_size=dataset.image_size)
    changes = {
        k: v
        for k, v in (
            ("batch_size", args.batch_size),
            ("learning_rate", args.lr),
            ("seed", args.seed),
            ("total_steps", args.steps),
            ("ema_decay", args.ema_decay),
        )
        if v is not None
    }
    if args.precision:
        changes["precision"] = cfg.Precision(args.precision)
    if args.lr_schedule:
        changes["lr_schedule"] = cfg.LRSchedule(args.lr_schedule)
    train = dataclasses.replace(preset.train, **changes)
    diffusion = preset.diffusion
    if args.schedule:
        diffusion = dataclasses.replace(diffusion, schedule=cfg.ScheduleKind(args.schedule))
    if args.loss:
        diffusion = dataclasses.replace(diffusion, loss=cfg.LossType(args.loss))
    return RunSpec(unet, diffusion, train, str(spec), preset.name), dataset


# ---- exploring a trained model ----


def _load(args: argparse.Namespace):
    from .loading import Weights, load_model

    return load_model(args.run, Weights.RAW if getattr(args, "raw", False) else Weights.EMA, args.device)


def _progress(label: str):
    """A progress bar for a figure's `on_step(done, total)`; call the result with no arguments to close it."""
    bar: list[Progress] = []

    def on_step(done: int | None = None, total: int | None = None) -> None:
        if done is None:
            if bar:
                bar[0].close()
            return
        if not bar:
            bar.append(Progress(total, label))
        bar[0].update(done)

    return on_step


def _save(args: argparse.Namespace, figure, label: str) -> int:
    from .images import save_png, upscale

    save_png(args.out, upscale(figure.picture, args.scale), figure.metadata)
    print(args.out)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from . import figures

    loaded = _load(args)
    L.REVERSE_STEPS.check("--steps", args.steps, high=loaded.diffusion.num_timesteps)
    progress = _progress("sample")
    figure = figures.sample_grid(
        loaded, args.n, args.seed, args.steps, args.eta, args.nrow, cfg.Precision(args.precision), progress
    )
    progress()
    return _save(args, figure, "sample")


def cmd_trajectory(args: argparse.Namespace) -> int:
    from . import figures
    from .images import save_gif, upscale

    loaded = _load(args)
    T = loaded.diffusion.num_timesteps
    L.FRAMES.check("--frames", args.frames, high=min(L.FRAMES.high, T + 1), why="at most the model's T + 1")
    progress = _progress("trajectory")
    figure = figures.trajectory(loaded, args.n, args.seed, args.frames, progress)
    progress()
    if args.gif:
        frames = figure.frames["pred_x0" if args.gif_pred else "x_t"]
        save_gif(args.gif, [upscale(frame, args.scale) for frame in frames])
    return _save(args, figure, "trajectory")


def cmd_fork(args: argparse.Namespace) -> int:
    from . import figures

    loaded = _load(args)
    L.TIMESTEP.check("--t", args.t, high=loaded.diffusion.num_timesteps)
    progress = _progress("fork")
    figure = figures.forks_figure(loaded, args.n, args.t, args.forks, args.seed, progress)
    progress()
    return _save(args, figure, "fork")


def _source_image(flag: str, text: str, loaded, data_spec: str):
    """'data:INDEX' (the run's data), 'test:INDEX' (its test split) or an image file, as [1, C, H, W] in [-1, 1]."""
    import dataclasses

    from .data import Split, decode_image, load_dataset, parse_data_spec
    from .images import from_uint8

    c = loaded.unet_config
    if text.startswith(("data:", "test:")):
        split = Split.TEST if text.startswith("test:") else Split.TRAIN
        spec = dataclasses.replace(parse_data_spec(data_spec), split=split)
        dataset = load_dataset(spec)
        prefix, index = text.split(":", 1)
        if not index.isdigit():
            raise L.LimitError(f"{flag}: {prefix}:INDEX needs a whole number, got {text!r}")
        L.Limit(0, len(dataset) - 1).check(flag, int(index), why=f"the run's {split.value} images")
        image = dataset[int(index)]  # [C, H, W] uint8
        return from_uint8(image.permute(1, 2, 0)[None].numpy())
    from .data import FitMode

    if not Path(text).is_file():
        raise L.LimitError(f"{flag}: {text!r} is no image file here, nor data:INDEX or test:INDEX")
    array = decode_image(text, c.image_size, c.in_channels, FitMode.CROP)  # [H, W, C] uint8
    return from_uint8(array[None])


def cmd_interpolate(args: argparse.Namespace) -> int:
    import numpy as np

    from . import figures
    from .runs import Run

    loaded = _load(args)
    L.TIMESTEP.check("--t", args.t, high=loaded.diffusion.num_timesteps)
    L.REVERSE_STEPS.check("--steps", args.steps, high=args.t, why="the mixing step --t")
    data_spec = Run.open(Path(loaded.source).parent.parent).spec.data
    device = loaded.diffusion.device
    a = _source_image("--a", args.a, loaded, data_spec).to(device)
    b = _source_image("--b", args.b, loaded, data_spec).to(device)
    lambdas = np.linspace(0, 1, args.lambdas).tolist()
    progress = _progress("interpolate")
    figure = figures.interpolation(loaded, a, b, args.t, lambdas, args.seed, args.steps, (args.a, args.b), progress)
    progress()
    return _save(args, figure, "interpolate")


def cmd_eval(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from . import figures
    from .data import Split, load_dataset, parse_data_spec
    from .runs import Run

    loaded = _load(args)
    run = Run.open(Path(loaded.source).parent.parent)
    spec = dataclasses.replace(parse_data_spec(run.spec.data), split=Split(args.split))
    dataset = load_dataset(spec)
    n = min(args.n, len(dataset))
    x0 = (torch.stack([dataset[i] for i in range(n)]).float() / 127.5 - 1).to(loaded.diffusion.device)
    progress = _progress("bound")
    summary = figures.bound_summary(loaded, x0, args.seed, args.split, progress)
    progress()
    curves = {key: summary.pop(key) for key in ("rate_bpd", "distortion_rmse")}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps({**summary, **curves}))
    return 0


# ---- the parser ----


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ddpm",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
        description="DDPM Studio's engine: train and explore Denoising Diffusion Probabilistic Models "
        "(Ho et al. 2020).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run, help: str, description: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help, description=description)
        p.set_defaults(handler=run)
        return p

    def explore_options(p: argparse.ArgumentParser, out: str) -> None:
        p.add_argument("--run", required=True, help="a run directory (its newest checkpoint) or a checkpoint file")
        p.add_argument("--seed", type=int, default=0, help="the random seed: the same seed gives the same picture")
        p.add_argument("--out", default=out, help=f"the PNG to write (default {out}); it records how it was made")
        p.add_argument("--scale", type=int, default=4, help="nearest-neighbour zoom of the saved picture (default 4)")
        p.add_argument("--raw", action="store_true", help="use the live training weights instead of their EMA")
        p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")

    p = command(
        "presets",
        cmd_presets,
        "list the model presets with their size and cost",
        "List every preset: parameter count, forward GFLOP per image (2 FLOPs per multiply-add), "
        "resolution and number of diffusion steps. With --time, also measure a forward pass here.",
    )
    p.add_argument("--time", action="store_true", help="time a no-grad forward pass of each preset on this machine")
    p.add_argument("--batch", type=int, default=8, help="batch size for --time (default 8)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = command(
        "inspect",
        cmd_inspect,
        "report what a dataset holds and what would be skipped",
        "Look through a dataset without training: image count, sizes, modes, channels, the memory it needs, "
        "and every file that would be skipped, with the reason. DATA is builtin:shapes, a folder of images, "
        "a CIFAR-10 python folder or .tar.gz, or an MNIST IDX file; add ?size=32&channels=3 to choose the "
        "training shape.",
    )
    p.add_argument(
        "data", help="e.g. builtin:shapes, ~/Pictures/cats, cifar-10-python.tar.gz, train-images-idx3-ubyte.gz"
    )

    p = command(
        "train",
        cmd_train,
        "train a model (or resume a run)",
        "Train a DDPM on DATA with a preset's recipe, writing the run directory (run.json, metrics.jsonl, "
        "checkpoints/, samples/). If --run already holds a run, it resumes from its newest checkpoint. "
        "Ctrl-C stops after the current step and saves a checkpoint. On several GPUs (or CPU processes): "
        "`torchrun --standalone --nproc_per_node N -m engine train --run-dir DIR ...` trains with "
        "DistributedDataParallel, one GPU per process; --batch-size stays the global batch, split evenly "
        "over the N processes, so the run computes what one process would.",
    )
    p.add_argument("--data", default=None, help="the images (default builtin:shapes); see `inspect --help`")
    p.add_argument("--preset", default=None, choices=list(cfg.PRESETS), help="model and recipe (default tiny)")
    p.add_argument("--steps", type=int, default=None, help="train until this step (default: the preset's total)")
    # --run-dir because torchrun's own parser reads every option on its command line, and takes --run for an
    # ambiguous abbreviation of its --run-path: under torchrun, name the run directory with --run-dir.
    p.add_argument(
        "--run",
        "--run-dir",
        dest="run",
        required=True,
        help="the run directory to create or resume (under torchrun, spell it --run-dir)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    p.add_argument("--lr", type=float, default=None, help="override the preset's learning rate")
    p.add_argument(
        "--lr-schedule",
        choices=[k.value for k in cfg.LRSchedule],
        default=None,
        help="after the warmup: constant (the paper) or cosine (decays to 0 at the last step)",
    )
    p.add_argument("--seed", type=int, default=None, help="override the preset's seed")
    p.add_argument(
        "--precision",
        choices=[p.value for p in cfg.Precision],
        default=None,
        help="fp32, bf16 (autocast) or auto (bf16 where the device runs it natively)",
    )
    p.add_argument(
        "--schedule",
        choices=[k.value for k in cfg.ScheduleKind],
        default=None,
        help="noise schedule: linear (the paper) or cosine (Nichol & Dhariwal 2021)",
    )
    p.add_argument("--ema-decay", type=float, default=None, help="override the preset's EMA decay")
    p.add_argument(
        "--loss",
        choices=[k.value for k in cfg.LossType],
        default=None,
        help="simple (the paper's L_simple), vlb (the bound itself) or min_snr (L_simple weighted by "
        "min(SNR, 5) / SNR, Hang et al. 2023)",
    )
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")

    p = command(
        "sample",
        cmd_sample,
        "generate a grid of samples",
        "Draw N samples x_0 from the model: the exact ancestral chain of Algorithm 2 when --steps is T (or "
        "omitted), else a strided chain of K steps (Song et al. 2021, with --eta).",
    )
    explore_options(p, "samples.png")
    p.add_argument("--n", type=int, default=16, help="how many samples (default 16)")
    p.add_argument("--steps", type=int, default=None, help="reverse steps K (default: all T; fewer is faster)")
    p.add_argument(
        "--eta", type=float, default=1.0, help="strided sampler noise: 1 = DDPM-like, 0 = deterministic DDIM"
    )
    p.add_argument("--nrow", type=int, default=None, help="images per row (default: a square grid)")
    p.add_argument("--precision", choices=[p.value for p in cfg.Precision], default="fp32", help="network precision")

    p = command(
        "trajectory",
        cmd_trajectory,
        "show the denoising process step by step (Fig. 6)",
        "Run the exact reverse chain and save, for each of N samples, a row of x_t and a row of the "
        "network's prediction x^0 at evenly spaced steps from t = T to 0, as in the paper's Fig. 6.",
    )
    explore_options(p, "trajectory.png")
    p.add_argument("--n", type=int, default=4, help="how many samples (default 4)")
    p.add_argument("--frames", type=int, default=11, help="steps shown from T to 0 (default 11)")
    p.add_argument("--gif", default=None, help="also write an animated GIF of the grid over time")
    p.add_argument("--gif-pred", action="store_true", help="animate x^0 instead of x_t")

    p = command(
        "fork",
        cmd_fork,
        "draw several completions of one noisy state (Fig. 7)",
        "Sample N chains down to step t, hold each x_t, and draw --forks samples x_0 ~ p(x_0 | x_t) from it. "
        "Large t shares only coarse layout; small t shares detail (the paper's Fig. 7).",
    )
    explore_options(p, "fork.png")
    p.add_argument("--t", type=int, default=500, help="the step to fork at (default 500)")
    p.add_argument("--forks", type=int, default=8, help="completions per held state (default 8)")
    p.add_argument("--n", type=int, default=2, help="how many held states (default 2)")

    p = command(
        "interpolate",
        cmd_interpolate,
        "interpolate two images in latent space (Figs. 8-9)",
        "Encode A and B with q(x_t | x_0) at the mixing step t, mix the noised latents for evenly spaced "
        "lambda, and decode with the reverse chain. Small t keeps the sources' detail, large t only their "
        "coarse layout. A and B are image files, or data:INDEX / test:INDEX from the run's data.",
    )
    explore_options(p, "interpolation.png")
    p.add_argument("--a", required=True, help="source A: an image file, data:INDEX or test:INDEX")
    p.add_argument("--b", required=True, help="source B: an image file, data:INDEX or test:INDEX")
    p.add_argument("--t", type=int, default=500, help="the mixing step (default 500)")
    p.add_argument("--lambdas", type=int, default=9, help="how many lambda values from 0 to 1 (default 9)")
    p.add_argument("--steps", type=int, default=None, help="reverse steps (default: all t, the exact chain)")

    p = command(
        "eval",
        cmd_eval,
        "bits/dim and the rate-distortion curve (Fig. 5)",
        "Evaluate the variational bound (Ho et al. 2020, Eq. 5 with the discretized decoder of Eq. 13) on "
        "held-out images in bits per dimension, and the rate-distortion curve of Fig. 5. T network "
        "evaluations of the batch.",
    )
    p.add_argument("--run", required=True, help="a run directory or a checkpoint file")
    p.add_argument("--n", type=int, default=64, help="how many images (default 64)")
    p.add_argument("--split", choices=["test", "train"], default="test", help="which split (default test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the curve as JSON here")
    p.add_argument("--raw", action="store_true", help="use the live weights instead of their EMA")
    p.add_argument("--device", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_ranges(args)
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # bad input: a readable message, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
