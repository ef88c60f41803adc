"""The studio's jobs, engine side: generator functions for `EngineWorker`, one network evaluation per slice.

Each job reads the loaded model from the worker's state, yields progress values and returns a result; every image that
leaves here is a uint8 numpy array [N, H, W, C] (docs/architecture.md: tensors never cross to the GUI). Views that need
a reverse chain from step t refine progressively (docs/architecture.md): the direct prediction x^0(x_t) first (one
evaluation), then a strided chain (the settled image), then the exact ancestral chain (Alg. 2) with progress. Exact
results are cached by (model, parameters, seed), so returning to a value seen before is instant.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .config import UNetConfig
from .images import from_uint8, to_uint8
from .likelihood import BoundResult, bound_terms
from .loading import LoadedModel, ModelIdentity, Weights, load_model, provenance
from .report import TrainingCost, training_cost
from .sampling import SampleStep, encode_pair, fork, generate, interpolate
from .unet import count_parameters
from .worker import JobContext

SETTLED_STEPS = 25  # the strided chain shown while the exact one runs: at most this many steps ...
SETTLED_MIN_STEPS = 5  # ... and at least this many,
SETTLED_BUDGET_S = 0.8  # sized so that it takes about this long (docs/architecture.md: settled within about a second)
CACHE_ENTRIES = 64


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


@dataclass(frozen=True)
class Refined:
    """One stage of a progressive view: 'direct' (x^0 from one evaluation), 'settled' (strided), 'exact' (Alg. 2)."""

    stage: str
    images: np.ndarray  # [N, H, W, C] uint8
    done: int  # reverse steps finished in this stage
    total: int
    model: ModelIdentity | None = None  # which model computed it (see Computed)


@dataclass(frozen=True)
class ChainProgress:
    stage: str
    done: int
    total: int


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


def _model(ctx: JobContext) -> LoadedModel:
    loaded = ctx.state.get("model")
    if loaded is None:
        raise RuntimeError("no model is loaded yet: open a run or train one")
    return loaded


def model_info(loaded: LoadedModel) -> ModelInfo:
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
    )


def load_model_job(source: str, weights: str = "ema", device: str | None = None):
    def job(ctx: JobContext) -> ModelInfo:
        loaded = load_model(source, Weights(weights), device)
        ctx.state["model"] = loaded
        ctx.state["cache"] = collections.OrderedDict()
        ctx.state["trajectories"] = {}
        return model_info(loaded)

    return job


def _cache_get(ctx: JobContext, key: tuple) -> Any:
    cache = ctx.state.setdefault("cache", collections.OrderedDict())
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    return None


def _cache_put(ctx: JobContext, key: tuple, value: Any) -> None:
    cache = ctx.state.setdefault("cache", collections.OrderedDict())
    cache[key] = value
    while len(cache) > CACHE_ENTRIES:
        cache.popitem(last=False)


def _model_key(loaded: LoadedModel) -> tuple:
    return (loaded.source, loaded.step, loaded.weights.value, id(loaded.model))


# ---- progressive refinement ----


def _drain_chain(steps: Iterator[SampleStep], stage: str, total: int) -> Generator[Any, None, SampleStep]:
    last, done = None, 0
    for last in steps:  # noqa: B007 (the last step is the result)
        done += 1
        yield ChainProgress(stage, min(done, total), total) if done % 10 == 0 else None
    return last


def settled_steps_for(seconds_per_step: float) -> int:
    """How many strided steps the settled stage takes: as many as fit SETTLED_BUDGET_S at the measured cost of one
    network evaluation, between SETTLED_MIN_STEPS and SETTLED_STEPS (a GPU, or a small model, gets all 25)."""
    fits = int(SETTLED_BUDGET_S / max(seconds_per_step, 1e-6))
    return max(SETTLED_MIN_STEPS, min(SETTLED_STEPS, fits))


def _refine(
    ctx: JobContext,
    loaded: LoadedModel,
    x_t: torch.Tensor,
    t: int,
    seed: int,
    chain,
    cache_key: tuple,
    exact: bool = True,
) -> Generator[Any, None, Refined]:
    """Yield the direct prediction, the settled image, then the exact chain's; `chain(x_t, t, generator, num_steps)`."""
    cached = _cache_get(ctx, cache_key)
    if cached is not None:
        return cached
    denoiser = loaded.denoiser()
    model = loaded.identity
    if t == 0:
        done = Refined("exact", to_uint8(x_t), 0, 0, model)
        _cache_put(ctx, cache_key, done)
        return done
    d = loaded.diffusion
    index = d.step_indices(t, x_t.shape[0])
    started = time.perf_counter()
    pred = d.predict_x0_from_eps(x_t, index, denoiser(x_t, index)).clamp(-1, 1)  # Ho et al. 2020, Eq. 15
    settled_steps = settled_steps_for(time.perf_counter() - started)  # timed before the yield: other jobs may run
    yield Refined("direct", to_uint8(pred), 1, 1, model)
    if t > settled_steps:
        last = yield from _drain_chain(
            chain(x_t, t, torch.Generator().manual_seed(seed), settled_steps), "settled", settled_steps
        )
        settled = Refined("settled", to_uint8(last.x_t), settled_steps, settled_steps, model)
        if not exact:
            return settled
        yield settled
    last = yield from _drain_chain(chain(x_t, t, torch.Generator().manual_seed(seed), None), "exact", t)
    result = Refined("exact", to_uint8(last.x_t), t, t, model)
    _cache_put(ctx, cache_key, result)
    return result


# ---- jobs ----


def sample_job(n: int, seed: int, num_steps: int | None = None, eta: float = 1.0):
    """n new samples from seed: the exact chain (num_steps None) or a strided one; returns Refined('exact')."""

    def job(ctx: JobContext):
        loaded = _model(ctx)
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
        last = yield from _drain_chain(steps, "sample", total + 1)
        return Refined("exact", to_uint8(last.x_t), total, total, model)

    return job


def trajectory_job(n: int, seed: int, chunk: int = 50):
    """The exact chain of n samples from seed with every frame kept (Fig. 6); frames stream out in chunks.

    The float x_t of every step stays in the engine, stored under the job's id from the first step on, so a fork can
    hold any x_t already computed while the chain still runs (or after it was stopped); the GUI gets uint8 frames.
    """

    def job(ctx: JobContext):
        loaded = _model(ctx)
        c, T = loaded.unet_config, loaded.diffusion.num_timesteps
        model = loaded.identity
        trajectory_id = ctx.job_id
        states: list[torch.Tensor] = []  # [N, C, H, W] each, index T - t; grows as the chain runs
        trajectories = ctx.state.setdefault("trajectories", {})
        trajectories.clear()  # one stored chain at a time: T+1 float states can be hundreds of MB
        trajectories[trajectory_id] = (seed, states)
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
        loaded = _model(ctx)
        stored = ctx.state.get("trajectories", {}).get(trajectory_id)
        if stored is None:
            raise RuntimeError("that trajectory is no longer in memory; generate it again")
        _, states = stored
        T = loaded.diffusion.num_timesteps
        if not 0 <= T - t < len(states):
            raise RuntimeError(f"step t = {t} of that chain has not been computed yet")
        held = states[T - t][index : index + 1]  # [1, C, H, W]
        chain = lambda x, t_, g, k: fork(loaded.denoiser(), loaded.diffusion, held, t_, forks, g, num_steps=k)
        key = ("fork", _model_key(loaded), trajectory_id, index, t, forks, seed)
        return (yield from _refine(ctx, loaded, held.repeat_interleave(forks, 0), t, seed, chain, key))

    return job


def interpolate_job(a: np.ndarray, b: np.ndarray, t: int, lambdas: Sequence[float], seed: int, exact: bool = True):
    """Figs. 8-9: the strip of lambda values between a and b ([H, W, C] uint8) at mixing step t, progressively."""

    def job(ctx: JobContext):
        loaded = _model(ctx)
        device = loaded.diffusion.device
        x0_a, x0_b = from_uint8(a[None]).to(device), from_uint8(b[None]).to(device)
        lam = list(lambdas)
        key = ("interpolate", _model_key(loaded), a.tobytes(), b.tobytes(), t, tuple(lam), seed, exact)
        # The direct preview needs the mixed latents with the same encoding noise as the chains draw.
        g = torch.Generator().manual_seed(seed)
        x_t_a, x_t_b = encode_pair(loaded.diffusion, x0_a, x0_b, t, g)
        w = torch.tensor(lam, dtype=x_t_a.dtype, device=device).view(-1, 1, 1, 1)
        mixed = (1 - w) * x_t_a + w * x_t_b
        chain = lambda x, t_, g_, k: interpolate(
            loaded.denoiser(), loaded.diffusion, x0_a, x0_b, t_, lam, g_, num_steps=k
        )
        return (yield from _refine(ctx, loaded, mixed, t, seed, chain, key, exact))

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
        loaded = _model(ctx)
        model = loaded.identity
        x0 = from_uint8(images).to(loaded.diffusion.device)
        n, T = x0.shape[0], loaded.diffusion.num_timesteps
        terms, mse = x0.new_zeros(n, T), x0.new_zeros(n, T)
        generator = torch.Generator().manual_seed(seed)
        batches = range(0, n, batch_size)
        for b, start in enumerate(batches):
            part = x0[start : start + batch_size]
            for term in bound_terms(loaded.denoiser(), loaded.diffusion, part, generator):
                terms[start : start + len(part), term.t - 1] = term.term_bpd
                mse[start : start + len(part), term.t - 1] = term.x0_mse
                done = b * T + T - term.t + 1
                yield ChainProgress("bound", done, T * len(batches)) if done % 10 == 0 else None
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


def _skipped(report) -> tuple[tuple[str, str], ...]:
    return tuple((s.path, s.reason.value + (f" ({s.detail})" if s.detail else "")) for s in report.skipped)


def dataset_job(spec_text: str, preview: int = 64):
    """Inspect and load a dataset (a blocking one-off job); keeps it in the engine for training and sources."""

    def job(ctx: JobContext) -> DataPreview:
        from .data import DataError, inspect_data, load_dataset, parse_data_spec

        spec = parse_data_spec(spec_text)
        try:
            dataset = load_dataset(spec)
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
            )
        ctx.state["dataset"] = dataset
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
        )

    return job


def held_out_images_job(spec_text: str, n: int | None = None, chunk: int = 256):
    """The first n images (all with None) of a data spec, [K, H, W, C] uint8, for evaluation: typically the test
    split. Unlike `dataset_job` it leaves the loaded dataset alone, so training and the other panels keep theirs."""

    def job(ctx: JobContext):
        from .data import DataError, load_dataset, parse_data_spec

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
            yield ChainProgress("reading", end, total)
        if not sum(len(part) for part in parts):
            raise RuntimeError(f"no usable images in {spec}")
        return np.concatenate(parts)

    return job


def training_cost_job(config: UNetConfig):
    """`report.training_cost` of a U-Net configuration (meta device: no memory, no compute; cached per config)."""

    def job(ctx: JobContext) -> TrainingCost:
        return training_cost(config)

    return job


def dataset_images_job(indices: Sequence[int]):
    """Images of the loaded dataset, [K, H, W, C] uint8 (interpolation sources, likelihood batches)."""

    def job(ctx: JobContext) -> np.ndarray:
        dataset = ctx.state.get("dataset")
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

        trainer = ctx.state.get("trainer")
        if trainer is None or trainer.run_dir.root.resolve() != Path(run_dir).resolve():
            if spec is not None and not (Path(run_dir) / "run.json").exists():
                run = Run.create(run_dir, spec)
                dataset = ctx.state.get("dataset")
                usable = dataset is not None and str(dataset.spec) == spec.data
                trainer = Trainer(run, device=device, dataset=dataset if usable else None)
            else:
                trainer = Trainer(Run.open(run_dir), device=device)
                trainer.resume()
            ctx.state["trainer"] = trainer
        yield from trainer.run(total_steps, stop=ctx.cancelled.is_set)
        return trainer.step

    return job
