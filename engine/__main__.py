"""The command line: `python -m engine COMMAND ...` (also installed as `ddpm`); its options are in cli_args.py.

Each command is a small function over the engine's public API (the figures come from figures.py); `ddpm COMMAND
--help` says what it does. Long work shows a progress bar on stderr; Ctrl-C during training saves a checkpoint and
exits cleanly.
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
from .cli_args import RECIPE_OPTIONS, build_parser, check_ranges


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
    from .data import Split, held_out_notes, load_dataset, parse_data_spec

    loaded = _load(args)
    data = args.data or loaded.trained_on or "builtin:shapes"
    shape = {"image_size": loaded.unet_config.image_size, "channels": loaded.unet_config.in_channels}
    spec = dataclasses.replace(parse_data_spec(data), split=Split(args.split), **shape)
    dataset = load_dataset(spec)
    notes = held_out_notes(dataset.report, loaded.trained_on)
    for warning in notes.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    n = min(args.n, len(dataset))
    x0 = (torch.stack([dataset[i] for i in range(n)]).float() / 127.5 - 1).to(loaded.diffusion.device)
    progress = _progress("bound")
    summary = figures.bound_summary(loaded, x0, args.seed, args.split, progress)
    progress()
    summary |= {"data": notes.scored, "warnings": list(notes.warnings)}
    curves = {key: summary.pop(key) for key in ("rate_bpd", "distortion_rmse")}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps({**summary, **curves}))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .convert import import_run

    run = import_run(args.src, args.run, args.data, args.image_size)
    imported = run.record["imported"]
    print(
        f"{run.root}: imported {imported['file']} (sha256 {imported['sha256'][:12]}...), "
        f"{run.spec.unet.image_size[0]}x{run.spec.unet.image_size[1]}x{run.spec.unet.in_channels}, "
        f"T={run.spec.diffusion.num_timesteps}",
        file=sys.stderr,
    )
    print(run.root)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .convert import write_diffusers
    from .loading import provenance

    loaded = _load(args)
    card = _model_card(loaded, provenance(loaded))
    out = write_diffusers(args.out, loaded.unet_config, loaded.diffusion.config, loaded.model.state_dict(), card)
    print(out)
    return 0


def _model_card(loaded, meta: dict[str, str]) -> str:
    from .runs import Run

    try:
        run = Run.open(Path(loaded.source).parent.parent)
        data, train, imported = run.spec.data, cfg.to_jsonable(run.spec.train), run.record.get("imported")
    except ValueError:
        data, train, imported = "unknown", {}, None
    if imported is not None:  # not trained here: say where it came from instead of our default recipe
        train = {"imported from": imported}
    return f"""# {meta["run"]}: a DDPM (Ho, Jain & Abbeel 2020), written by DDPM Studio

- training data: `{data}`
- weights: {"EMA" if meta["weights"] == "ema" else "raw (live)"} at training step {meta["step"]}
- checkpoint SHA-256 (DDPM Studio's weights file): `{meta["checkpoint_sha256"]}`
- U-Net: `{meta["config"]}`
- diffusion: `{meta["diffusion"]}`
- training settings: `{json.dumps(train, sort_keys=True)}`

```python
from diffusers import DDPMPipeline
pipeline = DDPMPipeline.from_pretrained("THIS_FOLDER")
images = pipeline(batch_size=4, num_inference_steps={loaded.diffusion.num_timesteps}).images
```
"""


COMMANDS = {
    "presets": cmd_presets,
    "inspect": cmd_inspect,
    "train": cmd_train,
    "sample": cmd_sample,
    "trajectory": cmd_trajectory,
    "fork": cmd_fork,
    "interpolate": cmd_interpolate,
    "eval": cmd_eval,
    "import": cmd_import,
    "export": cmd_export,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_ranges(args)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # bad input: a readable message, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
