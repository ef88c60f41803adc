"""The paper's figures, each as one recipe: the sample grid, the trajectory (Fig. 6), the forks (Fig. 7), the
interpolation (Figs. 8-9) and the bound (Fig. 5, Table 2).

A recipe takes the loaded model, its settings and a seed; it is a generator (engine/progress.py) that yields its
`Progress` (and, where a view can show it early, partial results), and returns the figure: uint8 images [.., H, W, C],
the provenance every saved picture records, and the model that computed it. The command line drains a recipe with
a progress bar (`progress.finish`); the studio's jobs (engine/jobs.py) advance the same recipe on the engine thread
and tie it to the session (the cache, the refinement stages, the stored chain); the trainer's preview draws its
grids with `draw_samples`. So the two faces of the engine give the same pictures and numbers for the same request.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import Precision
from .diffusion import EpsModel, GaussianDiffusion
from .images import from_uint8, make_grid, to_uint8
from .likelihood import BoundResult, bound_terms
from .loading import LoadedModel, ModelIdentity, provenance
from .progress import Progress, Stage, Work, drain
from .sampling import encode_pair, fork, generate, mix_latents, reverse_chain, shared_noise

BOUND_BATCH = 256  # images through the bound at once: memory stays bounded whatever the number of images


def _metadata(loaded: LoadedModel, **settings) -> dict[str, str]:
    return {**provenance(loaded), **{k: str(v) for k, v in settings.items()}}


def sampler_name(num_steps: int | None, T: int, eta: float = 1.0) -> str:
    return "ancestral" if num_steps is None or num_steps >= T else f"strided (eta={eta})"


def chain_length(num_steps: int | None, t: int) -> int:
    """Network evaluations of a reverse chain from step t: all t (exact) or `num_steps` (strided)."""
    return t if num_steps is None else min(num_steps, t)


# ---- the sample grid ----


@dataclass(frozen=True)
class Samples:
    images: np.ndarray  # [N, H, W, C] uint8
    metadata: dict[str, str]  # provenance and settings: the PNG's text chunks
    model: ModelIdentity | None = None

    def picture(self, nrow: int | None = None, padding: int = 2) -> np.ndarray:
        return make_grid(self.images, nrow=nrow, padding=padding)


def draw_samples(
    denoiser: EpsModel,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    seed: int,
    num_steps: int | None = None,
    eta: float = 1.0,
    stage: str = Stage.SAMPLE,
) -> Work[np.ndarray]:
    """x_0 of shape [N, C, H, W] as [N, H, W, C] uint8: x_T from `seed`, then the exact chain of Algorithm 2
    (num_steps None or >= T) or a strided one with eta; one yield per network evaluation."""
    g = torch.Generator().manual_seed(seed)
    steps = generate(denoiser, diffusion, shape, g, num_steps=num_steps, eta=eta)
    last = yield from drain(steps, stage, chain_length(num_steps, diffusion.num_timesteps) + 1)
    return to_uint8(last.x_t)


def sample_grid(
    loaded: LoadedModel,
    n: int,
    seed: int,
    num_steps: int | None = None,
    eta: float = 1.0,
    precision: Precision | None = None,
) -> Work[Samples]:
    """n samples from seed; the network in `precision` (None: the model's inference precision, bf16 where the
    device runs it natively)."""
    c, T = loaded.unet_config, loaded.diffusion.num_timesteps
    shape = (n, c.in_channels, *c.image_size)
    images = yield from draw_samples(loaded.denoiser(precision), loaded.diffusion, shape, seed, num_steps, eta)
    settings = {"sampler": sampler_name(num_steps, T, eta), "steps": chain_length(num_steps, T), "seed": seed, "n": n}
    return Samples(images, _metadata(loaded, **settings), loaded.identity)


# ---- the trajectory (Fig. 6) ----


@dataclass(frozen=True)
class TrajectoryFrames:
    """Frames of a chain (Fig. 6): t_values [K] from T down, x_t and x^0 as [K, N, H, W, C] uint8. A recipe yields
    the frames computed since its last chunk and returns all of them, with the provenance."""

    trajectory_id: int
    t_values: np.ndarray
    x_t: np.ndarray
    pred_x0: np.ndarray
    done: int  # steps of the chain so far (of T + 1)
    total: int
    model: ModelIdentity | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def picture(self, padding: int = 2) -> np.ndarray:
        return trajectory_layout(self.x_t, self.pred_x0, padding)

    def animation(self, which: str = "x_t", padding: int = 2) -> list[np.ndarray]:
        """One grid per frame of "x_t" or "pred_x0"."""
        return [make_grid(frame, padding=padding) for frame in (self.x_t if which == "x_t" else self.pred_x0)]


def frame_steps(T: int, frames: int) -> list[int]:
    """`frames` evenly spaced steps from T to 0 (fewer where they round together): Fig. 6's columns."""
    return sorted(set(np.linspace(T, 0, frames).round().astype(int).tolist()), reverse=True)


def trajectory(
    loaded: LoadedModel,
    n: int,
    seed: int,
    shown: Collection[int] | None = None,
    chunk: int = 50,
    trajectory_id: int = 0,
    states: list[torch.Tensor] | None = None,
) -> Work[TrajectoryFrames]:
    """The exact chain of n samples from seed, keeping the frames of the steps in `shown` (None: every step).

    Yields x_T's frame at once, then a chunk of new frames every `chunk` steps (None between). `states`, where
    given, receives every float x_t [N, C, H, W] as it is computed (index T - t), so a fork can hold any of them
    while the chain still runs."""
    c, T = loaded.unet_config, loaded.diffusion.num_timesteps
    model = loaded.identity
    t_values, xs, preds = [], [], []
    sent = 0
    steps = generate(
        loaded.denoiser(), loaded.diffusion, (n, c.in_channels, *c.image_size), torch.Generator().manual_seed(seed)
    )
    for done, step in enumerate(steps, 1):
        if states is not None:
            states.append(step.x_t)
        if shown is None or step.t in shown:
            t_values.append(step.t)
            xs.append(to_uint8(step.x_t))
            preds.append(to_uint8(step.pred_x0))
        if len(xs) > sent and (len(xs) - sent >= chunk or step.t == 0 or sent == 0):
            yield TrajectoryFrames(
                trajectory_id,
                np.array(t_values[sent:]),
                np.stack(xs[sent:]),
                np.stack(preds[sent:]),
                done,
                T + 1,
                model,
            )
            sent = len(xs)
        else:
            yield Progress(Stage.TRAJECTORY, done, T + 1) if done % 10 == 0 else None
    metadata = _metadata(
        loaded,
        sampler="ancestral",
        steps=T,
        seed=seed,
        n=n,
        frames=",".join(str(t) for t in t_values) if shown is not None else "every step",
        layout="rows: x_t then x0_pred per image",
    )
    return TrajectoryFrames(
        trajectory_id, np.array(t_values), np.stack(xs), np.stack(preds), T + 1, T + 1, model, metadata
    )


def trajectory_layout(x_t: np.ndarray, pred_x0: np.ndarray, padding: int = 2) -> np.ndarray:
    """Fig. 6: x_t and x^0 frames [K, N, H, W, C] -> per image a row of x_t, then a row of x^0, t from T to 0."""
    assert x_t.shape == pred_x0.shape and x_t.ndim == 5, (x_t.shape, pred_x0.shape)
    rows = [np.concatenate([x_t[:, i], pred_x0[:, i]]) for i in range(x_t.shape[1])]
    return make_grid(np.concatenate(rows), nrow=x_t.shape[0], padding=padding)


# ---- the forks (Fig. 7) ----


@dataclass(frozen=True)
class Forks:
    held: np.ndarray  # [N, H, W, C] uint8: the held x_t
    completions: np.ndarray  # [N * F, H, W, C] uint8: image i's forks are rows i*F ... (i+1)*F-1
    metadata: dict[str, str]
    model: ModelIdentity | None = None

    def picture(self, padding: int = 2) -> np.ndarray:
        """Per row a held x_t, then its F forks."""
        n, forks = len(self.held), len(self.completions) // len(self.held)
        rows = [np.concatenate([self.held[i : i + 1], self.completions[i * forks : (i + 1) * forks]]) for i in range(n)]
        return make_grid(np.concatenate(rows), nrow=forks + 1, padding=padding)


def fork_chain(loaded: LoadedModel, held: torch.Tensor, forks: int):
    """The reverse chain of `forks` completions of each held x_t [N, C, H, W], as a refinement stage runs it:
    (x_t, t, generator, num_steps) -> steps over [N * forks, C, H, W] (x_t is the held state repeated)."""
    return lambda x, t, g, k: fork(loaded.denoiser(), loaded.diffusion, held, t, forks, g, num_steps=k)


def forks_figure(loaded: LoadedModel, n: int, t: int, forks: int, seed: int) -> Work[Forks]:
    """Fig. 7: the chains of n samples from seed (as `trajectory` draws them) down to step t, then each held x_t
    completed `forks` times, x_0 ~ p(x_0 | x_t), the completions drawing from a generator of seed of their own."""
    c, T = loaded.unet_config, loaded.diffusion.num_timesteps
    held = None
    steps = generate(
        loaded.denoiser(), loaded.diffusion, (n, c.in_channels, *c.image_size), torch.Generator().manual_seed(seed)
    )
    total = (T - t + 1) + (t + 1)  # down to the held step, then the forks' chain
    for done, step in enumerate(steps, 1):
        if step.t == t:
            held = step.x_t
            break
        yield Progress(Stage.FORK, done, total) if done % 10 == 0 else None
    completions = fork_chain(loaded, held, forks)(held, t, torch.Generator().manual_seed(seed), None)
    last = yield from drain(completions, Stage.FORK, total, done=T - t + 1)
    settings = {"sampler": "ancestral", "t": t, "forks": forks, "seed": seed, "layout": "rows: held x_t then its forks"}
    return Forks(to_uint8(held), to_uint8(last.x_t), _metadata(loaded, **settings), loaded.identity)


# ---- the interpolation (Figs. 8-9) ----


@dataclass(frozen=True)
class Interpolation:
    a: np.ndarray  # [H, W, C] uint8: the sources
    b: np.ndarray
    images: np.ndarray  # [L, H, W, C] uint8: lambda = 0 .. 1
    metadata: dict[str, str]
    model: ModelIdentity | None = None

    def picture(self, padding: int = 2) -> np.ndarray:
        """Source A, the lambdas, source B side by side in one row."""
        return strip_layout(np.concatenate([self.a[None], self.images, self.b[None]]), padding)


def mixed_latents(loaded: LoadedModel, a: np.ndarray, b: np.ndarray, t: int, lambdas: Sequence[float], seed: int):
    """Sources a, b ([H, W, C] uint8) encoded at step t with q(x_t | x_0) from seed and mixed for every lambda
    (Fig. 8): ([L, C, H, W] latents, the chain that decodes them). Encoded once: every stage of a progressive view
    decodes the same latents, its chain's noise continuing the seed's stream after the encoding draws and shared by
    every lambda (Sec. 4.4), exactly as `sampling.interpolate` draws it."""
    device = loaded.diffusion.device
    x0_a, x0_b = from_uint8(a[None]).to(device), from_uint8(b[None]).to(device)
    g = torch.Generator().manual_seed(seed)
    mixed = mix_latents(*encode_pair(loaded.diffusion, x0_a, x0_b, t, g), list(lambdas))
    after_encoding = g.get_state()

    def chain(x: torch.Tensor, t_: int, g_: torch.Generator, k: int | None):
        g_.set_state(after_encoding)
        noise = shared_noise(len(lambdas))
        return reverse_chain(loaded.denoiser(), loaded.diffusion, x, t_, g_, num_steps=k, noise_fn=noise)

    return mixed, chain


def interpolation(
    loaded: LoadedModel,
    a: np.ndarray,
    b: np.ndarray,
    t: int,
    lambdas: Sequence[float],
    seed: int,
    num_steps: int | None = None,
    sources: tuple[str, str] = ("A", "B"),
) -> Work[Interpolation]:
    """Figs. 8-9: sources a, b ([H, W, C] uint8) mixed at step t for each lambda, then decoded by the exact chain
    (num_steps None) or a strided one."""
    mixed, chain = mixed_latents(loaded, a, b, t, lambdas, seed)
    last = yield from drain(
        chain(mixed, t, torch.Generator(), num_steps), Stage.INTERPOLATION, chain_length(num_steps, t) + 1
    )
    metadata = _metadata(
        loaded,
        a=sources[0],
        b=sources[1],
        t=t,
        lambdas=json.dumps(list(lambdas)),
        seed=seed,
        steps=chain_length(num_steps, t),
        layout="source A, lambda = 0 .. 1, source B",
    )
    return Interpolation(a, b, to_uint8(last.x_t), metadata, loaded.identity)


def strip_layout(images: np.ndarray, padding: int = 2) -> np.ndarray:
    """Figs. 8-9: [K, H, W, C] side by side in one row (source A, the lambdas, source B)."""
    return make_grid(images, nrow=len(images), padding=padding)


# ---- the bound (Fig. 5, Table 2) ----


@dataclass(frozen=True)
class LikelihoodResult:
    bits_per_dim: float
    stderr: float | None  # of the mean; None for one image, which has no spread
    prior_bpd: float
    decoder_bpd: float
    images: int
    rate: np.ndarray  # [T+1] bits/dim at t (Fig. 5)
    distortion: np.ndarray  # [T+1] RMSE on the 0-255 scale
    model: ModelIdentity | None = None

    def summary(self) -> dict:
        """The figures as JSON values (the curves apart)."""
        return {
            "bits_per_dim": self.bits_per_dim,
            "stderr": self.stderr,
            "prior_bpd": self.prior_bpd,
            "decoder_bpd": self.decoder_bpd,
            "images": self.images,
            **({"run": self.model.run, "step": self.model.step, "weights": self.model.weights} if self.model else {}),
        }


def bound(
    loaded: LoadedModel, images: np.ndarray, seed: int = 0, batch_size: int = BOUND_BATCH
) -> Work[LikelihoodResult]:
    """Bits/dim of images [N, H, W, C] uint8 through the variational bound (Eq. 5) in fp32, with its parts and the
    rate-distortion curve (Fig. 5). Batches of `batch_size` images, each through all T steps, one generator from
    seed continuing from batch to batch: memory does not grow with N."""
    n, T = len(images), loaded.diffusion.num_timesteps
    assert n >= 1 and images.ndim == 4 and images.dtype == np.uint8, (images.shape, images.dtype)
    device = loaded.diffusion.device
    terms, mse, prior = torch.zeros(n, T), torch.zeros(n, T), torch.zeros(n)
    generator = torch.Generator().manual_seed(seed)
    denoiser = loaded.denoiser(Precision.FP32)
    starts = range(0, n, batch_size)
    for b, start in enumerate(starts):
        part = from_uint8(images[start : start + batch_size]).to(device)
        rows = slice(start, start + len(part))
        for term in bound_terms(denoiser, loaded.diffusion, part, generator):
            terms[rows, term.t - 1] = term.term_bpd.cpu()
            mse[rows, term.t - 1] = term.x0_mse.cpu()
            done = b * T + T - term.t + 1
            yield Progress(Stage.BOUND, done, T * len(starts)) if done % 10 == 0 else None
        prior[rows] = loaded.diffusion.prior_bpd(part).cpu()
    result = BoundResult(prior + terms.sum(1), prior, terms, mse)
    rate, distortion = result.rate_distortion()
    total = result.total_bpd
    return LikelihoodResult(
        float(total.mean()),
        float(total.std() / n**0.5) if n > 1 else None,
        float(prior.mean()),
        float(terms[:, 0].mean()),
        n,
        rate.numpy(),
        distortion.numpy(),
        loaded.identity,
    )
