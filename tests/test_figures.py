"""Each figure has one recipe (engine/figures.py): the command line and the studio's job give the same pictures and
the same bits/dim for the same model, seed and settings; and a recipe running beside training leaves the engine
thread free for an interactive job after every network evaluation."""

import dataclasses
import json
import threading

import numpy as np
import pytest
from PIL import Image

from engine import figures
from engine.__main__ import main
from engine.data_jobs import dataset_images_job, dataset_job
from engine.images import read_png_metadata
from engine.jobs import fork_job, interpolate_job, likelihood_job, load_model_job, sample_job, trajectory_job
from engine.progress import Progress, Stage, finish
from engine.session import EngineSession
from engine.worker import JobContext


class _Worker:
    def __init__(self):
        self.state = EngineSession()


def _studio(micro_run):
    """A job context whose session explores the micro run, as the studio's engine thread has it."""
    ctx = JobContext(_Worker(), 1)
    load_model_job(str(micro_run))(ctx)
    return ctx


def _run(job, ctx):
    """A job as the engine thread runs it: a plain function's value, or a generator drained to its result."""
    result = job(ctx)
    return finish(result) if hasattr(result, "__next__") else result


def _cli_png(tmp_path, *args) -> tuple[np.ndarray, dict]:
    out = str(tmp_path / "cli.png")
    assert main([*args, "--scale", "1", "--out", out]) == 0
    return np.asarray(Image.open(out).convert("RGB")), read_png_metadata(out)


def test_the_sample_grid_of_the_cli_equals_the_studios(micro_run, tmp_path):
    """`ddpm sample` and the studio's sample job draw the same grid, and record the same provenance."""
    picture, meta = _cli_png(tmp_path, "sample", "--run", str(micro_run), "--n", "3", "--steps", "5", "--seed", "2")
    samples = finish(sample_job(3, 2, 5)(_studio(micro_run)))
    assert isinstance(samples, figures.Samples) and samples.images.shape == (3, 8, 8, 3)
    assert np.array_equal(picture, samples.picture())
    assert meta == samples.metadata and meta["sampler"] == "strided (eta=1.0)" and meta["steps"] == "5"


def test_the_trajectory_of_the_cli_equals_the_studios(micro_run, tmp_path):
    """`ddpm trajectory --frames 5` is the studio's stored chain (every frame) shown at the same five steps."""
    picture, meta = _cli_png(tmp_path, "trajectory", "--run", str(micro_run), "--n", "2", "--frames", "5")
    chain = finish(trajectory_job(2, 0)(_studio(micro_run)))  # seed 0, the CLI's default
    assert meta["frames"] == "100,75,50,25,0" and len(chain.t_values) == 101
    picks = [100 - t for t in figures.frame_steps(100, 5)]
    assert np.array_equal(picture, figures.trajectory_layout(chain.x_t[picks], chain.pred_x0[picks]))


def test_the_forks_of_the_cli_equal_the_studios(micro_run, tmp_path):
    """`ddpm fork` holds x_t of the chain of its seed and completes it from the same seed: the studio's fork of
    image 0 of a trajectory of that seed, forked with that seed, gives the same completions."""
    picture, meta = _cli_png(
        tmp_path, "fork", "--run", str(micro_run), "--n", "1", "--t", "10", "--forks", "3", "--seed", "4"
    )
    ctx = _studio(micro_run)
    chain = finish(trajectory_job(1, 4)(ctx))
    exact = finish(fork_job(ctx.job_id, 0, 10, 3, 4)(ctx))
    assert exact.stage == Stage.EXACT and exact.images.shape == (3, 8, 8, 3)
    held = chain.x_t[100 - 10]  # [1, H, W, C]
    assert np.array_equal(picture, figures.Forks(held, exact.images, {}).picture())
    assert meta["t"] == "10" and meta["forks"] == "3"


def test_the_interpolation_of_the_cli_equals_the_studios(micro_run, tmp_path):
    """`ddpm interpolate --a data:0 --b data:1` and the studio's interpolation of the same two images give the
    same strip."""
    picture, meta = _cli_png(
        tmp_path,
        *("interpolate", "--run", str(micro_run), "--a", "data:0", "--b", "data:1"),
        *("--t", "10", "--lambdas", "3", "--seed", "5"),
    )
    ctx = _studio(micro_run)
    _run(dataset_job(ctx.state.model.trained_on), ctx)
    a, b = _run(dataset_images_job([0, 1]), ctx)
    exact = finish(interpolate_job(a, b, 10, [0.0, 0.5, 1.0], 5)(ctx))
    assert exact.stage == Stage.EXACT
    assert np.array_equal(picture, figures.Interpolation(a, b, exact.images, {}).picture())
    assert json.loads(meta["lambdas"]) == [0.0, 0.5, 1.0]


def test_the_bits_per_dim_of_the_cli_equal_the_studios(micro_run, capsys):
    """`ddpm eval --n 5` and the studio's likelihood job on the same five test images give the same figures; the
    bound is batched in one place, so a batch size changes nothing but memory."""
    assert main(["eval", "--run", str(micro_run), "--n", "5", "--seed", "3"]) == 0
    cli = json.loads(capsys.readouterr().out)
    from engine.data import load_dataset

    test = load_dataset("builtin:shapes?size=8&count=5&split=test")
    images = np.concatenate(list(test.chunks(5)))
    ctx = _studio(micro_run)
    studio = finish(likelihood_job(images, seed=3)(ctx))
    assert cli["bits_per_dim"] == studio.bits_per_dim and cli["stderr"] == studio.stderr
    assert cli["prior_bpd"] == studio.prior_bpd and cli["images"] == 5
    batched = finish(likelihood_job(images, seed=3, batch_size=2)(ctx))
    assert batched.bits_per_dim == pytest.approx(studio.bits_per_dim, rel=0.2)  # other noise draws, same model
    one = finish(figures.bound(ctx.state.model, images[:1], seed=3))
    assert one.stderr is None and one.images == 1  # one image has no spread: said, not 0.0


def test_the_command_line_explores_the_bundled_model_without_a_run(tmp_path, capsys):
    """`ddpm sample --n 4 --out x.png` works on a fresh checkout: it samples the bundled model and says so first."""
    out = tmp_path / "x.png"
    assert main(["sample", "--n", "4", "--steps", "5", "--out", str(out)]) == 0
    assert capsys.readouterr().err.splitlines()[0].startswith("using the bundled model")
    meta = read_png_metadata(out)
    assert meta["run"] == "bundled" and meta["n"] == "4"
    explicit = tmp_path / "y.png"
    assert main(["sample", "--run", "bundled", "--n", "4", "--steps", "5", "--out", str(explicit)]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(explicit)))


# ---- a preview beside the studio's interactive jobs ----


def _train_spec(tmp_path, sample_steps: int):
    from engine.config import get_preset
    from engine.runs import RunSpec

    preset = get_preset("micro")
    train = dataclasses.replace(
        preset.train, batch_size=8, log_every=2, sample_every=2, sample_count=2, sample_steps=sample_steps
    )
    return RunSpec(preset.unet, preset.diffusion, train, "builtin:shapes?size=8&count=16", "micro")


def test_training_yields_after_every_network_evaluation_of_its_preview(tmp_path):
    """With switch points, the trainer yields after every training step and after every evaluation of the preview
    grid: between two yields the network runs at most once."""
    from engine.train_events import SamplesReady
    from engine.train_state import open_trainer

    trainer, _ = open_trainer(tmp_path / "run", _train_spec(tmp_path, 20))
    calls = []
    for module in (trainer.model, trainer.ema):
        module.register_forward_hook(lambda *_: calls.append(1))
    most, previews = 0, 0
    for event in trainer.run(4, switch_points=True):
        most = max(most, len(calls))
        calls.clear()
        previews += isinstance(event, SamplesReady)
    assert previews == 2 and most == 1


def test_an_interactive_job_waits_for_one_preview_step_at_most(tmp_path, micro_run):
    """An interactive job submitted while a preview is being drawn starts at the next evaluation's yield, long
    before the preview's 2 x 101 evaluations end."""
    from engine.jobs import train_job
    from engine.train_events import SamplesReady
    from engine.worker import EngineWorker, JobFinished, JobKey, JobProgress, JobStarted, Priority

    order, done = [], threading.Event()
    interactive: list[int] = []

    def emit(event):
        if isinstance(event, JobProgress) and isinstance(event.value, Progress) and event.value.stage == Stage.PREVIEW:
            order.append(("preview", event.value.done))
            if not interactive:  # the preview is drawing: ask for something interactive now
                interactive.append(worker.submit(JobKey.FORK, lambda ctx: "answered", Priority.INTERACTIVE))
        elif isinstance(event, JobProgress) and isinstance(event.value, SamplesReady):
            order.append(("samples", event.value.step))
        elif isinstance(event, JobStarted) and interactive and event.job_id == interactive[0]:
            order.append(("interactive", None))
        elif isinstance(event, JobFinished) and event.key == JobKey.TRAIN:
            done.set()

    worker = EngineWorker(emit)
    try:
        worker.submit(JobKey.TRAIN, train_job(str(tmp_path / "run"), _train_spec(tmp_path, 100), 2), Priority.TRAINING)
        assert done.wait(120)
    finally:
        worker.shutdown()
    first = order.index(("preview", 10))
    assert order[first + 1] == ("interactive", None), order[:5]
    assert order.index(("samples", 2)) > first + 1
