"""The studio's jobs, engine side: thin generator functions for `EngineWorker`, one network evaluation per slice.

Each job reads what it needs from the engine thread's `EngineSession` (engine/session.py), yields progress values
and returns a result; every image that leaves here is a uint8 numpy array [N, H, W, C] (docs/architecture.md:
tensors never cross to the GUI), and every result names the model that computed it. Views that need a reverse chain
refine progressively (engine/refine.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import compiled
from .config import Precision, UNetConfig
from .images import from_uint8, to_uint8
from .likelihood import BoundResult, bound_terms
from .loading import LoadedModel, ModelIdentity, Weights, load_model, provenance
from .refine import ChainProgress, Refined, Stage, drain, refine
from .report import TrainingCost, training_cost
from .sampling import encode_pair, fork, generate, mix_latents, reverse_chain, shared_noise
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


@dataclass(frozen=True)
class TrajectoryFrames:
    """Frames of a stored chain (Fig. 6): t_values [K] from T down, x_t and x^0 as [K, N, H, W, C] uint8."""

    trajectory_id: int
    t_values: np.ndarray
    x_t: np.ndarray
    pred_x0: np.ndarray
    done: int  # frames so far (of T + 1)
    total: int
    model: ModelIdentity | None = None


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


def model_info(loaded: LoadedModel, seconds_per_image_step: float | None = None) -> ModelInfo:
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
        info = model_info(loaded, seconds)
        loaded.compile_off = compiled.compile_available(loaded.diffusion.device, seconds)
        if loaded.compile_off is None:  # faster chains in a minute or so
            loaded.compiled = compiled.start_for(loaded)
        return info

    return job


def _model_key(loaded: LoadedModel) -> tuple:  # what a cached result depends on
    return (loaded.source, loaded.step, loaded.weights.value, id(loaded.model))


# ---- jobs ----


def sample_job(n: int, seed: int, num_steps: int | None = None, eta: float = 1.0):
    """n new samples from seed: the exact chain (num_steps None) or a strided one; returns Refined('exact')."""

    def job(ctx: JobContext):
        loaded = ctx.state.require_model()
        c = loaded.unet_config
        total = min(num_steps or loaded.diffusion.num_timesteps, loaded.diffusion.num_timesteps)
        model = loaded.identity
        steps = generate(
            loaded.denoiser(),
            loaded.diffusion,
            (n, c.in_channels, *c.image_size),
            torch.Generator().manual_seed(seed),
            num_steps=num_steps,
            eta=eta,
        )
        last = yield from drain(steps, Stage.SAMPLE, total + 1)
        return Refined(Stage.EXACT, to_uint8(last.x_t), total, total, model)

    return job


def trajectory_job(n: int, seed: int, chunk: int = 50):
    """The exact chain of n samples from seed with every frame kept (Fig. 6); frames stream out in chunks.

    The float x_t of every step stays in the engine, stored under the job's id from the first step on, so a fork can
    hold any x_t already computed while the chain still runs (or after it was stopped); the GUI gets uint8 frames.
    """

    def job(ctx: JobContext):
        loaded = ctx.state.require_model()
        c, T = loaded.unet_config, loaded.diffusion.num_timesteps
        model = loaded.identity
        trajectory_id = ctx.job_id
        states: list[torch.Tensor] = []  # [N, C, H, W] each, index T - t; grows as the chain runs
        ctx.state.trajectories.clear()  # one stored chain at a time: T+1 float states can be hundreds of MB
        ctx.state.trajectories[trajectory_id] = StoredChain(seed, states)
        t_values, xs, preds = [], [], []
        sent = 0
        steps = generate(
            loaded.denoiser(), loaded.diffusion, (n, c.in_channels, *c.image_size), torch.Generator().manual_seed(seed)
        )
        for step in steps:
            states.append(step.x_t)
            t_values.append(step.t)
            xs.append(to_uint8(step.x_t))
            preds.append(to_uint8(step.pred_x0))
            if len(xs) - sent >= chunk or step.t == 0 or sent == 0:  # x_T at once, then in chunks
                yield TrajectoryFrames(
                    trajectory_id,
                    np.array(t_values[sent:]),
                    np.stack(xs[sent:]),
                    np.stack(preds[sent:]),
                    len(xs),
                    T + 1,
                    model,
                )
                sent = len(xs)
            else:
                yield None
        return TrajectoryFrames(trajectory_id, np.array(t_values), np.stack(xs), np.stack(preds), len(xs), T + 1, model)

    return job


def fork_job(trajectory_id: int, index: int, t: int, forks: int, seed: int):
    """Fig. 7: hold x_t of image `index` of a stored trajectory and draw `forks` completions, progressively.

    The chain may still be running: any step it has computed can be held."""

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
        chain = lambda x, t_, g, k: fork(loaded.denoiser(), loaded.diffusion, held, t_, forks, g, num_steps=k)
        key = ("fork", _model_key(loaded), trajectory_id, index, t, forks, seed)
        return (yield from refine(ctx.state, loaded, held.repeat_interleave(forks, 0), t, seed, chain, key))

    return job


def interpolate_job(a: np.ndarray, b: np.ndarray, t: int, lambdas: Sequence[float], seed: int, exact: bool = True):
    """Figs. 8-9: the strip of lambda values between a and b ([H, W, C] uint8) at mixing step t, progressively."""

    def job(ctx: JobContext):
        loaded = ctx.state.require_model()
        device = loaded.diffusion.device
        x0_a, x0_b = from_uint8(a[None]).to(device), from_uint8(b[None]).to(device)
        lam = list(lambdas)
        key = ("interpolate", _model_key(loaded), a.tobytes(), b.tobytes(), t, tuple(lam), seed, exact)
        # Encoded once: every stage decodes the same mixed latents, its chain's noise continuing the seed's stream
        # after the encoding draws, exactly as sampling.interpolate(..., seed) would draw it.
        g = torch.Generator().manual_seed(seed)
        mixed = mix_latents(*encode_pair(loaded.diffusion, x0_a, x0_b, t, g), lam)
        after_encoding = g.get_state()
        chain = lambda x, t_, g_, k: reverse_chain(
            loaded.denoiser(),
            loaded.diffusion,
            x,
            t_,
            g_.set_state(after_encoding),
            num_steps=k,
            noise_fn=shared_noise(len(lam)),
        )
        return (yield from refine(ctx.state, loaded, mixed, t, seed, chain, key, exact))

    return job


@dataclass(frozen=True)
class LikelihoodResult:
    bits_per_dim: float
    stderr: float
    prior_bpd: float
    decoder_bpd: float
    images: int
    rate: np.ndarray  # [T+1] bits/dim at t (Fig. 5)
    distortion: np.ndarray  # [T+1] RMSE on the 0-255 scale
    model: ModelIdentity | None = None


def likelihood_job(images: np.ndarray, seed: int = 0, batch_size: int = 256):
    """Bits/dim of [N, H, W, C] uint8 held-out images through the bound, and the rate-distortion curve (Fig. 5).

    Minibatches of `batch_size` images, each through all T steps, so memory does not grow with N.
    """

    def job(ctx: JobContext):
        loaded = ctx.state.require_model()
        model = loaded.identity
        x0 = from_uint8(images).to(loaded.diffusion.device)
        n, T = x0.shape[0], loaded.diffusion.num_timesteps
        terms, mse = x0.new_zeros(n, T), x0.new_zeros(n, T)
        generator = torch.Generator().manual_seed(seed)
        batches = range(0, n, batch_size)
        for b, start in enumerate(batches):
            part = x0[start : start + batch_size]
            for term in bound_terms(loaded.denoiser(Precision.FP32), loaded.diffusion, part, generator):
                terms[start : start + len(part), term.t - 1] = term.term_bpd
                mse[start : start + len(part), term.t - 1] = term.x0_mse
                done = b * T + T - term.t + 1
                yield ChainProgress(Stage.BOUND, done, T * len(batches)) if done % 10 == 0 else None
        prior = loaded.diffusion.prior_bpd(x0)
        result = BoundResult(prior + terms.sum(1), prior, terms, mse)
        rate, distortion = result.rate_distortion()
        total = result.total_bpd
        return LikelihoodResult(
            float(total.mean()),
            float(total.std() / max(1, n) ** 0.5) if n > 1 else 0.0,
            float(prior.mean()),
            float(terms[:, 0].mean()),
            n,
            rate.cpu().numpy(),
            distortion.cpu().numpy(),
            model,
        )

    return job


@dataclass(frozen=True)
class DataPreview:
    spec: str
    report_text: str
    ok: bool
    count: int
    channels: int
    image_size: tuple[int, int]
    memory_bytes: int
    skipped: tuple[tuple[str, str], ...]  # (path, reason)
    warnings: tuple[str, ...]
    images: np.ndarray  # [K, H, W, C] uint8: the first images as the model will see them
    ignored: tuple[tuple[str, int], ...] = ()  # (file extension or "hidden folder", count) passed over unread
    error: str | None = None  # why nothing could be loaded ("...: no such file or folder")


def _skipped(report) -> tuple[tuple[str, str], ...]:
    return tuple((s.path, s.reason.value + (f" ({s.detail})" if s.detail else "")) for s in report.skipped)


def dataset_job(spec_text: str, preview: int = 64):
    """Inspect and load a dataset (a blocking one-off job, reporting `LoadProgress` and stoppable between its
    chunks); keeps it in the engine for training and sources."""

    def job(ctx: JobContext) -> DataPreview:
        from .data import DataError, inspect_data, load_dataset, parse_data_spec

        spec = parse_data_spec(spec_text)
        try:
            dataset = load_dataset(spec, progress=ctx.report)
        except DataError:
            report = inspect_data(spec)
            return DataPreview(
                str(spec),
                report.format(),
                False,
                0,
                report.channels,
                spec.image_size,
                0,
                _skipped(report),
                report.warnings,
                np.zeros((0, *spec.image_size, 3), np.uint8),
                tuple(report.ignored.items()),
                report.error or "no usable images",
            )
        ctx.state.dataset = dataset
        report = dataset.report
        shown = torch.stack([dataset[i] for i in range(min(preview, len(dataset)))])  # [K, C, H, W] uint8
        return DataPreview(
            str(spec),
            report.format(),
            report.ok,
            len(dataset),
            dataset.channels,
            dataset.image_size,
            report.memory_bytes,
            _skipped(report),
            report.warnings,
            shown.permute(0, 2, 3, 1).contiguous().numpy(),
            tuple(report.ignored.items()),
        )

    return job


@dataclass(frozen=True)
class HeldOutImages:
    """Images to score, [K, H, W, C] uint8, with what they are in words and why their bound may mislead."""

    images: np.ndarray
    scored: str  # "CIFAR-10 test split", "the folder pets (all of it: a folder has no held-out split)"
    warnings: tuple[str, ...]  # other data than the model's, its own training images, resized, recoloured


def held_out_images_job(spec_text: str, n: int | None = None, trained_on: str | None = None, chunk: int = 256):
    """The first n images (all with None) of a data spec, for evaluating a model trained on the spec `trained_on`
    (None: not recorded): typically the test split. Unlike `dataset_job` it leaves the loaded dataset alone, so
    training and the other panels keep theirs."""

    def job(ctx: JobContext) -> HeldOutImages:
        from .data import DataError, held_out_notes, load_dataset, parse_data_spec

        spec = parse_data_spec(spec_text)
        if n is not None and (spec.count is None or spec.count > n):
            spec = dataclasses.replace(spec, count=n)  # decode no more than needed
        try:
            dataset = load_dataset(spec)
        except DataError as e:
            raise RuntimeError(f"no usable images in {spec}: {str(e).strip()[:300]}") from None
        total = len(dataset) if n is None else min(n, len(dataset))
        parts = []
        for start in range(0, total, chunk):  # a streamed dataset decodes chunk by chunk: progress, cancellation
            end = min(start + chunk, total)
            images, _ = dataset.read(torch.arange(start, end))  # [B', C, H, W]: B' < B where a file fails to decode
            parts.append(images.permute(0, 2, 3, 1).contiguous().numpy())
            yield ChainProgress(Stage.READING, end, total)
        if not sum(len(part) for part in parts):
            raise RuntimeError(f"no usable images in {spec}")
        notes = held_out_notes(dataset.report, trained_on)
        return HeldOutImages(np.concatenate(parts), notes.scored, notes.warnings)

    return job


def training_cost_job(config: UNetConfig):
    """`report.training_cost` of a U-Net configuration (meta device: no memory, no compute; cached per config)."""

    def job(ctx: JobContext) -> TrainingCost:
        return training_cost(config)

    return job


def dataset_images_job(indices: Sequence[int]):
    """Images of the loaded dataset, [K, H, W, C] uint8 (interpolation sources, likelihood batches)."""

    def job(ctx: JobContext) -> np.ndarray:
        dataset = ctx.state.dataset
        if dataset is None:
            raise RuntimeError("no dataset is loaded")
        picked = torch.stack([dataset[i % len(dataset)] for i in indices])
        return picked.permute(0, 2, 3, 1).contiguous().numpy()

    return job


def train_job(run_dir: str, spec=None, total_steps: int | None = None, device: str | None = None):
    """Train (creating the run from `spec`, or resuming it) until total_steps or until cancelled, which saves a
    checkpoint first (submit with graceful=True). The model the studio explores stays the one the user chose: to
    explore this run, open one of its checkpoints (the newest appears as the run saves them)."""

    def job(ctx: JobContext):
        from pathlib import Path

        from .runs import Run
        from .train import Trainer

        trainer = ctx.state.trainer
        if trainer is None or trainer.run_dir.root.resolve() != Path(run_dir).resolve():
            if spec is not None and not (Path(run_dir) / "run.json").exists():
                run = Run.create(run_dir, spec)
                dataset = ctx.state.dataset
                usable = dataset is not None and str(dataset.spec) == spec.data
                trainer = Trainer(run, device=device, dataset=dataset if usable else None)
            else:
                trainer = Trainer(Run.open(run_dir), device=device)
                trainer.resume()
            ctx.state.trainer = trainer
        yield from trainer.run(total_steps, stop=ctx.cancelled.is_set)
        return trainer.step

    return job
