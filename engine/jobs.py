"""The studio's jobs, engine side: thin generator functions for `EngineWorker`, one network evaluation per slice.

Each job reads what it needs from the engine thread's `EngineSession` (engine/session.py), yields progress values
and returns a result; every image that leaves here is a uint8 numpy array [N, H, W, C] (docs/architecture.md:
tensors never cross to the GUI), and every result names the model that computed it. Views that need a reverse chain
refine progressively (engine/refine.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import compiled, figures
from .config import UNetConfig
from .figures import LikelihoodResult, Samples, TrajectoryFrames
from .loading import LoadedModel, ModelIdentity, Weights, load_model, provenance
from .refine import refine
from .report import TrainingCost, training_cost
from .session import StoredChain
from .unet import count_parameters
from .worker import JobContext

# ---- values that cross to the GUI ----


@dataclass(frozen=True)
class ModelInfo:
    source: str
    step: int
    weights: str
    image_size: tuple[int, int]
    channels: int
    num_timesteps: int
    parameters: int
    provenance: dict[str, str]  # what a picture made with this model records of it (loading.provenance)
    identity: ModelIdentity | None = None  # run name, step, weights, SHA-256
    seconds_per_image_step: float | None = None  # measured when loaded: one image through one network evaluation
    trained_on: str | None = None  # the data spec it was trained on; None where not recorded (imported)
    compile: compiled.CompileStatus = compiled.CompileStatus("off")  # its compiled path when loaded; then events


# ---- model ----


def time_one_step(loaded: LoadedModel) -> float:
    """Seconds of one network evaluation of one image, measured here after a warm-up evaluation, so a view can say
    what a chain will cost before it starts (the paper's 256x256 models take seconds per step on a CPU), and whether
    compiling pays (engine.compiled.compile_available). An upper bound per image: a batch shares the per-call
    overhead, which dominates for small models. Where one takes under ~17 ms, the least of three."""
    c = loaded.unet_config
    x = torch.zeros(1, c.in_channels, *c.image_size, device=loaded.diffusion.device)
    t = torch.full((1,), loaded.diffusion.num_timesteps - 1, device=loaded.diffusion.device)
    denoiser = loaded.denoiser()
    seconds: list[float] = []
    with torch.no_grad():
        denoiser(x, t)  # the first call pays one-time costs
        while len(seconds) < 3 and sum(seconds) < 0.05:  # a short one thrice (the least: noise only adds)
            started = time.perf_counter()
            denoiser(x, t)
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)  # the launch returns before the work is done
            seconds.append(time.perf_counter() - started)
    return min(seconds)


def model_info(
    loaded: LoadedModel,
    seconds_per_image_step: float | None = None,
    compile_status: compiled.CompileStatus = compiled.CompileStatus("off"),
) -> ModelInfo:
    return ModelInfo(
        loaded.source,
        loaded.step,
        loaded.weights.value,
        loaded.unet_config.image_size,
        loaded.unet_config.in_channels,
        loaded.diffusion.num_timesteps,
        count_parameters(loaded.model),
        provenance(loaded),
        loaded.identity,
        seconds_per_image_step,
        loaded.trained_on,
        compile_status,
    )


def load_model_job(source: str, weights: str = "ema", device: str | None = None):
    def job(ctx: JobContext) -> ModelInfo:
        from .convert import imported_run_for, is_importable

        # A diffusers model folder or an original-name checkpoint (the paper's models) is imported once, then
        # explored as a run.
        path = imported_run_for(source) if is_importable(source) else source
        loaded = load_model(path, Weights(weights), device)
        previous = ctx.state.model
        if previous is not None and previous.compiled is not None:
            previous.compiled.cancel()  # its compile would only compete with this model's
        ctx.state.explore(loaded)
        seconds = time_one_step(loaded)  # eager: the compiled forward is not ready yet
        loaded.compile_off = compiled.compile_available(loaded.diffusion.device, seconds)
        if loaded.compile_off is None:  # faster chains in a minute or so; its later words are announced
            loaded.compiled = compiled.start_for(loaded, on_change=ctx.announce)
        status = loaded.compiled.status() if loaded.compiled else compiled.CompileStatus("off", loaded.compile_off)
        return model_info(loaded, seconds, status)

    return job


def _model_key(loaded: LoadedModel) -> tuple:  # what a cached result depends on
    return (loaded.source, loaded.step, loaded.weights.value, id(loaded.model))


# ---- jobs ----


def sample_job(n: int, seed: int, num_steps: int | None = None, eta: float = 1.0):
    """n new samples from seed (figures.sample_grid): the exact chain (num_steps None) or a strided one."""

    def job(ctx: JobContext) -> figures.Work[Samples]:
        return (yield from figures.sample_grid(ctx.state.require_model(), n, seed, num_steps, eta))

    return job


def trajectory_job(n: int, seed: int, chunk: int = 50):
    """The exact chain of n samples from seed with every frame kept (figures.trajectory, Fig. 6); frames stream out
    in chunks.

    The float x_t of every step stays in the engine, stored under the job's id from the first step on, so a fork can
    hold any x_t already computed while the chain still runs (or after it was stopped); the GUI gets uint8 frames.
    """

    def job(ctx: JobContext) -> figures.Work[TrajectoryFrames]:
        loaded = ctx.state.require_model()
        states: list = []  # [N, C, H, W] each, index T - t; grows as the chain runs
        ctx.state.trajectories.clear()  # one stored chain at a time: T+1 float states can be hundreds of MB
        ctx.state.trajectories[ctx.job_id] = StoredChain(seed, states)
        return (yield from figures.trajectory(loaded, n, seed, None, chunk, ctx.job_id, states))

    return job


def fork_job(trajectory_id: int, index: int, t: int, forks: int, seed: int):
    """Fig. 7: hold x_t of image `index` of a stored trajectory and draw `forks` completions (figures.fork_chain),
    progressively. The chain may still be running: any step it has computed can be held."""

    def job(ctx: JobContext):
        loaded = ctx.state.require_model()
        stored = ctx.state.trajectories.get(trajectory_id)
        if stored is None:
            raise RuntimeError("that trajectory is no longer in memory; generate it again")
        states = stored.states
        T = loaded.diffusion.num_timesteps
        if not 0 <= T - t < len(states):
            raise RuntimeError(f"step t = {t} of that chain has not been computed yet")
        held = states[T - t][index : index + 1]  # [1, C, H, W]
        chain = figures.fork_chain(loaded, held, forks)
        key = ("fork", _model_key(loaded), trajectory_id, index, t, forks, seed)
        return (yield from refine(ctx.state, loaded, held.repeat_interleave(forks, 0), t, seed, chain, key))

    return job


def interpolate_job(a: np.ndarray, b: np.ndarray, t: int, lambdas: Sequence[float], seed: int, exact: bool = True):
    """Figs. 8-9: the strip of lambda values between a and b ([H, W, C] uint8) at mixing step t
    (figures.mixed_latents), progressively."""

    def job(ctx: JobContext):
        loaded = ctx.state.require_model()
        key = ("interpolate", _model_key(loaded), a.tobytes(), b.tobytes(), t, tuple(lambdas), seed, exact)
        mixed, chain = figures.mixed_latents(loaded, a, b, t, lambdas, seed)
        return (yield from refine(ctx.state, loaded, mixed, t, seed, chain, key, exact))

    return job


def likelihood_job(images: np.ndarray, seed: int = 0, batch_size: int = figures.BOUND_BATCH):
    """Bits/dim of [N, H, W, C] uint8 held-out images through the bound, and the rate-distortion curve (Fig. 5):
    figures.bound, in minibatches, so memory does not grow with N."""

    def job(ctx: JobContext) -> figures.Work[LikelihoodResult]:
        return (yield from figures.bound(ctx.state.require_model(), images, seed, batch_size))

    return job


def training_cost_job(config: UNetConfig):
    """`report.training_cost` of a U-Net configuration (meta device: no memory, no compute; cached per config)."""

    def job(ctx: JobContext) -> TrainingCost:
        return training_cost(config)

    return job


def train_job(run_dir: str, spec=None, total_steps: int | None = None, device: str | None = None):
    """Train (creating the run from `spec`, or resuming it) until total_steps or until cancelled, which saves a
    checkpoint first (submit with graceful=True). The model the studio explores stays the one the user chose: to
    explore this run, open one of its checkpoints (the newest appears as the run saves them)."""

    def job(ctx: JobContext):
        from pathlib import Path

        from .train_state import open_trainer

        trainer = ctx.state.trainer
        if trainer is None or trainer.run_dir.root.resolve() != Path(run_dir).resolve():
            trainer, _ = open_trainer(run_dir, spec, device, ctx.state.dataset)
            ctx.state.trainer = trainer
        yield from trainer.run(total_steps, stop=ctx.cancelled.is_set, switch_points=True)
        return trainer.step

    return job
