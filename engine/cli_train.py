"""`ddpm train`: create or resume a run and train it, with a progress bar; under torchrun every process runs this
and only rank 0 talks. The run is opened as the studio opens it (`train.open_trainer`)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from . import config as cfg
from .cli_args import RECIPE_OPTIONS


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
    from .progress import ProgressBar
    from .threads import ThreadPolicy
    from .train_events import (
        CheckpointSaved,
        RolledBack,
        SamplesReady,
        StepLogged,
        StepSkipped,
        TrainFinished,
        TrainStarted,
    )
    from .train_state import open_trainer

    say = (lambda *a: print(*a, file=sys.stderr)) if main else (lambda *a: None)
    run_dir = Path(args.run)
    resuming = (run_dir / "run.json").exists()
    if not resuming:  # refused before anything is written (a resumed run's batch is checked by the Trainer)
        distributed.shard_size(args.batch_size or cfg.get_preset(args.preset or "tiny").train.batch_size)
    spec = dataset = None
    if not resuming and main:
        spec, dataset = _new_run_spec(args)
    trainer, passed_over = open_trainer(run_dir, spec, device, dataset)
    run = trainer.run_dir
    if resuming:
        say(f"resuming {run_dir} (preset {run.spec.preset or 'custom'}, data {run.spec.data})")
        ignored = [flag for flag, dest in RECIPE_OPTIONS if getattr(args, dest) is not None]
        if ignored:
            say(f"warning: {', '.join(ignored)} ignored: a resumed run keeps its recipe (start a new run to change it)")
    for problem in passed_over:
        say(f"passed over: {problem}")

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
    progress = ProgressBar(total, "train")
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

    from .data import flips_note, load_dataset, parse_data_spec
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
    train = {
        k: v
        for k, v in (
            ("batch_size", args.batch_size),
            ("learning_rate", args.lr),
            ("seed", args.seed),
            ("total_steps", args.steps),
            ("ema_decay", args.ema_decay),
            ("hflip", args.hflip),
            ("precision", args.precision and cfg.Precision(args.precision)),
            ("lr_schedule", args.lr_schedule and cfg.LRSchedule(args.lr_schedule)),
        )
        if v is not None
    }
    diffusion = {
        k: v
        for k, v in (
            ("schedule", args.schedule and cfg.ScheduleKind(args.schedule)),
            ("loss", args.loss and cfg.LossType(args.loss)),
        )
        if v is not None
    }
    run_spec = RunSpec.for_data(preset, str(spec), dataset.channels, dataset.image_size, train, diffusion)
    if args.hflip is None:  # the data's rule, said with how to change it
        print(flips_note(dataset.report.kind), file=sys.stderr)
    else:
        print(f"random horizontal flips: {'on' if args.hflip else 'off'} (as asked)", file=sys.stderr)
    return run_spec, dataset
