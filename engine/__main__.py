"""The command line: `python -m engine COMMAND ...` (also installed as `ddpm`); its options are in cli_args.py.

Each command is a small function over the engine's public API (the figures come from figures.py); `ddpm COMMAND
--help` says what it does. Long work shows a progress bar on stderr; Ctrl-C during training saves a checkpoint and
exits cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config as cfg
from . import limits as L
from .cli_args import BUNDLED_NAME, build_parser, check_ranges
from .cli_train import cmd_train

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


# ---- exploring a trained model ----


def _load(args: argparse.Namespace):
    """The model --run names: a run, a checkpoint, or (omitted, or `bundled`) the bundled model, as the studio opens
    it; the first line says which when it is the bundled one."""
    from .loading import BUNDLED_RUN, Weights, load_model

    source = args.run
    if source in (None, BUNDLED_NAME):
        source = BUNDLED_RUN
        print("using the bundled model (a tiny model of builtin:shapes; --run RUN names another)", file=sys.stderr)
    return load_model(source, Weights.RAW if getattr(args, "raw", False) else Weights.EMA, args.device)


def _drain(label: str, work):
    """Run a figure's recipe (engine/figures.py) to its end with a progress bar on stderr; returns its result."""
    from .progress import ProgressBar, finish

    bar: list[ProgressBar] = []

    def on_progress(value) -> None:
        if not bar:
            bar.append(ProgressBar(value.total, label))
        bar[0].update(value.done)

    try:
        return finish(work, on_progress)
    finally:
        if bar:
            bar[0].close()


def _save(args: argparse.Namespace, picture, metadata: dict[str, str]) -> int:
    from .images import save_png, upscale

    save_png(args.out, upscale(picture, args.scale), metadata)
    print(args.out)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from . import figures

    loaded = _load(args)
    L.REVERSE_STEPS.check("--steps", args.steps, high=loaded.diffusion.num_timesteps)
    recipe = figures.sample_grid(loaded, args.n, args.seed, args.steps, args.eta, cfg.Precision(args.precision))
    samples = _drain("sample", recipe)
    return _save(args, samples.picture(args.nrow), samples.metadata)


def cmd_trajectory(args: argparse.Namespace) -> int:
    from . import figures
    from .images import save_gif, upscale

    loaded = _load(args)
    T = loaded.diffusion.num_timesteps
    L.FRAMES.check("--frames", args.frames, high=min(L.FRAMES.high, T + 1), why="at most the model's T + 1")
    shown = figures.frame_steps(T, args.frames)
    frames = _drain("trajectory", figures.trajectory(loaded, args.n, args.seed, shown))
    if args.gif:
        save_gif(args.gif, [upscale(f, args.scale) for f in frames.animation("pred_x0" if args.gif_pred else "x_t")])
    return _save(args, frames.picture(), frames.metadata)


def cmd_fork(args: argparse.Namespace) -> int:
    from . import figures

    loaded = _load(args)
    L.TIMESTEP.check("--t", args.t, high=loaded.diffusion.num_timesteps)
    forks = _drain("fork", figures.forks_figure(loaded, args.n, args.t, args.forks, args.seed))
    return _save(args, forks.picture(), forks.metadata)


def _source_image(flag: str, text: str, loaded, data_spec: str):
    """'data:INDEX' (the model's data), 'test:INDEX' (its test split) or an image file, as [H, W, C] uint8 at the
    model's size."""
    import dataclasses

    from .data import FitMode, Split, decode_image, load_dataset, parse_data_spec

    c = loaded.unet_config
    if text.startswith(("data:", "test:")):
        split = Split.TEST if text.startswith("test:") else Split.TRAIN
        shape = {"image_size": c.image_size, "channels": c.in_channels}
        dataset = load_dataset(dataclasses.replace(parse_data_spec(data_spec), split=split, **shape))
        prefix, index = text.split(":", 1)
        if not index.isdigit():
            raise L.LimitError(f"{flag}: {prefix}:INDEX needs a whole number, got {text!r}")
        L.Limit(0, len(dataset) - 1).check(flag, int(index), why=f"the run's {split.value} images")
        return dataset[int(index)].permute(1, 2, 0).numpy()  # [C, H, W] -> [H, W, C] uint8
    if not Path(text).is_file():
        raise L.LimitError(f"{flag}: {text!r} is no image file here, nor data:INDEX or test:INDEX")
    return decode_image(text, c.image_size, c.in_channels, FitMode.CROP)


def cmd_interpolate(args: argparse.Namespace) -> int:
    import numpy as np

    from . import figures

    loaded = _load(args)
    L.TIMESTEP.check("--t", args.t, high=loaded.diffusion.num_timesteps)
    L.REVERSE_STEPS.check("--steps", args.steps, high=args.t, why="the mixing step --t")
    data_spec = loaded.trained_on or "builtin:shapes"
    a = _source_image("--a", args.a, loaded, data_spec)
    b = _source_image("--b", args.b, loaded, data_spec)
    lambdas = np.linspace(0, 1, args.lambdas).tolist()
    recipe = figures.interpolation(loaded, a, b, args.t, lambdas, args.seed, args.steps, (args.a, args.b))
    strip = _drain("interpolate", recipe)
    return _save(args, strip.picture(), strip.metadata)


def _held_out(args: argparse.Namespace, loaded, n: int):
    """The first n images of the model's data (or --data) in --split, at the model's size, as [N, H, W, C] uint8,
    with what they are and why a figure on them may mislead (the warnings are also printed)."""
    import dataclasses

    import numpy as np

    from .data import Split, held_out_notes, load_dataset, parse_data_spec

    data = args.data or loaded.trained_on or "builtin:shapes"
    shape = {"image_size": loaded.unet_config.image_size, "channels": loaded.unet_config.in_channels}
    spec = dataclasses.replace(parse_data_spec(data), split=Split(args.split), **shape)
    if spec.count is None or spec.count > n:
        spec = dataclasses.replace(spec, count=n)  # decode no more than needed
    dataset = load_dataset(spec)
    notes = held_out_notes(dataset.report, loaded.trained_on)
    for warning in notes.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return np.concatenate(list(dataset.chunks(n))), notes


def cmd_eval(args: argparse.Namespace) -> int:
    from . import figures

    loaded = _load(args)
    images, notes = _held_out(args, loaded, args.n)
    result = _drain("bound", figures.bound(loaded, images, args.seed))
    summary = result.summary() | {"split": args.split, "data": notes.scored, "warnings": list(notes.warnings)}
    print(json.dumps(summary, indent=2))
    if args.out:
        curves = {"rate_bpd": result.rate.tolist(), "distortion_rmse": result.distortion.tolist()}
        Path(args.out).write_text(json.dumps({**summary, **curves}))
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from .quality import load_feature_network, quality

    features = load_feature_network(args.features)  # before any work: a missing or bad file is one line
    loaded = _load(args)
    L.REVERSE_STEPS.check("--steps", args.steps, high=loaded.diffusion.num_timesteps)
    reference, notes = _held_out(args, loaded, args.reference)
    steps = None if args.steps >= loaded.diffusion.num_timesteps else args.steps
    result = _drain("metrics", quality(loaded, features, reference, notes.scored, args.n, args.seed, steps))
    print(json.dumps(result.summary() | {"warnings": list(notes.warnings)}, indent=2))
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
    "metrics": cmd_metrics,
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
