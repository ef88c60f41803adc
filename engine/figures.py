"""The paper's figures as recipes: what to compute and how to lay it out, with the provenance every picture records.

One place for Figs. 5-9 (Ho et al. 2020), used by the command line (`ddpm sample/trajectory/fork/interpolate/eval`)
and, for the layouts, by the studio's Export tab: the two faces of the engine draw the same figure the same way.
Each recipe takes a loaded model and its settings, reports progress through `on_step(done, total)`, and returns a
`Figure`: the picture at zoom 1 ([H, W, C] uint8) and the text chunks to save with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import Precision
from .images import make_grid, to_uint8
from .likelihood import evaluate_bound
from .loading import LoadedModel, provenance
from .sampling import SampleStep, fork, generate, interpolate

OnStep = Callable[[int, int], None] | None  # (done, total)


@dataclass(frozen=True)
class Figure:
    picture: np.ndarray  # [H, W, C] uint8, zoom 1
    metadata: dict[str, str]  # provenance and settings: the PNG's text chunks
    frames: dict[str, list[np.ndarray]] = field(default_factory=dict)  # animations (Fig. 6): "x_t", "pred_x0"


def _metadata(loaded: LoadedModel, **settings) -> dict[str, str]:
    return {**provenance(loaded), **{k: str(v) for k, v in settings.items()}}


def _drain(steps: Iterator[SampleStep], total: int, on_step: OnStep, keep=None) -> tuple[SampleStep, list]:
    kept, last = [], None
    for done, step in enumerate(steps, 1):
        last = step
        if keep is not None and keep(step):
            kept.append(step)
        if on_step is not None:
            on_step(done, total)
    return last, kept


# ---- layouts (also the studio's Export) ----


def trajectory_layout(x_t: np.ndarray, pred_x0: np.ndarray, padding: int = 2) -> np.ndarray:
    """Fig. 6: x_t and x^0 frames [K, N, H, W, C] -> per image a row of x_t, then a row of x^0, t from T to 0."""
    assert x_t.shape == pred_x0.shape and x_t.ndim == 5, (x_t.shape, pred_x0.shape)
    rows = [np.concatenate([x_t[:, i], pred_x0[:, i]]) for i in range(x_t.shape[1])]
    return make_grid(np.concatenate(rows), nrow=x_t.shape[0], padding=padding)


def forks_layout(held: np.ndarray, completions: np.ndarray, padding: int = 2) -> np.ndarray:
    """Fig. 7: held states [N, H, W, C] and completions [N * F, H, W, C] -> per row a held x_t, then its F forks."""
    n, forks = len(held), len(completions) // len(held)
    rows = [np.concatenate([held[i : i + 1], completions[i * forks : (i + 1) * forks]]) for i in range(n)]
    return make_grid(np.concatenate(rows), nrow=forks + 1, padding=padding)


def strip_layout(images: np.ndarray, padding: int = 2) -> np.ndarray:
    """Figs. 8-9: [K, H, W, C] side by side in one row (source A, the lambdas, source B)."""
    return make_grid(images, nrow=len(images), padding=padding)


# ---- recipes ----


def sample_grid(
    loaded: LoadedModel,
    n: int,
    seed: int,
    num_steps: int | None = None,
    eta: float = 1.0,
    nrow: int | None = None,
    precision: Precision | None = None,
    on_step: OnStep = None,
) -> Figure:
    """n samples x_0: the exact chain of Algorithm 2 (num_steps None or >= T), else a strided chain with eta; the
    network in `precision` (None: the model's inference precision, bf16 where the device runs it natively)."""
    c, T = loaded.unet_config, loaded.diffusion.num_timesteps
    steps = generate(
        loaded.denoiser(precision),
        loaded.diffusion,
        (n, c.in_channels, *c.image_size),
        torch.Generator().manual_seed(seed),
        num_steps=num_steps,
        eta=eta,
    )
    total = min(num_steps or T, T)
    last, _ = _drain(steps, total, on_step)
    sampler = "ancestral" if total >= T else f"strided (eta={eta})"
    metadata = _metadata(loaded, sampler=sampler, steps=total, seed=seed, n=n)
    return Figure(make_grid(to_uint8(last.x_t), nrow=nrow), metadata)


def trajectory(loaded: LoadedModel, n: int, seed: int, frames: int, on_step: OnStep = None) -> Figure:
    """Fig. 6: the exact chain of n samples, shown at `frames` evenly spaced steps from t = T to 0; the figure's
    `frames` hold the grids of x_t and of x^0 at those steps, for an animation."""
    c, T = loaded.unet_config, loaded.diffusion.num_timesteps
    shown = set(np.linspace(T, 0, frames).round().astype(int).tolist())
    steps = generate(
        loaded.denoiser(), loaded.diffusion, (n, c.in_channels, *c.image_size), torch.Generator().manual_seed(seed)
    )
    _, kept = _drain(steps, T + 1, on_step, keep=lambda s: s.t in shown)
    x_t = np.stack([to_uint8(s.x_t) for s in kept])  # [K, N, H, W, C]
    pred = np.stack([to_uint8(s.pred_x0) for s in kept])
    metadata = _metadata(
        loaded,
        sampler="ancestral",
        steps=T,
        seed=seed,
        n=n,
        frames=",".join(str(s.t) for s in kept),
        layout="rows: x_t then x0_pred per image",
    )
    animation = {"x_t": [make_grid(f) for f in x_t], "pred_x0": [make_grid(f) for f in pred]}
    return Figure(trajectory_layout(x_t, pred), metadata, animation)


def forks_figure(loaded: LoadedModel, n: int, t: int, forks: int, seed: int, on_step: OnStep = None) -> Figure:
    """Fig. 7: n chains down to step t, each held x_t completed `forks` times, x_0 ~ p(x_0 | x_t)."""
    c = loaded.unet_config
    denoiser = loaded.denoiser()
    g = torch.Generator().manual_seed(seed)
    held = None
    for step in generate(denoiser, loaded.diffusion, (n, c.in_channels, *c.image_size), g):
        if step.t == t:
            held = step.x_t
            break
    last, _ = _drain(fork(denoiser, loaded.diffusion, held, t, forks, g), t + 1, on_step)
    metadata = _metadata(
        loaded, sampler="ancestral", t=t, forks=forks, seed=seed, layout="rows: held x_t then its forks"
    )
    return Figure(forks_layout(to_uint8(held), to_uint8(last.x_t)), metadata)


def interpolation(
    loaded: LoadedModel,
    a: torch.Tensor,
    b: torch.Tensor,
    t: int,
    lambdas: Sequence[float],
    seed: int,
    num_steps: int | None = None,
    sources: tuple[str, str] = ("A", "B"),
    on_step: OnStep = None,
) -> Figure:
    """Figs. 8-9: sources a, b [1, C, H, W] in [-1, 1] mixed at step t for each lambda, then decoded."""
    steps = interpolate(
        loaded.denoiser(),
        loaded.diffusion,
        a,
        b,
        t,
        list(lambdas),
        torch.Generator().manual_seed(seed),
        num_steps=num_steps,
    )
    last, _ = _drain(steps, min(num_steps or t, t) + 1, on_step)
    row = np.concatenate([to_uint8(a), to_uint8(last.x_t), to_uint8(b)])  # source A, lambda = 0..1, source B
    metadata = _metadata(
        loaded,
        a=sources[0],
        b=sources[1],
        t=t,
        lambdas=json.dumps(list(lambdas)),
        seed=seed,
        steps=num_steps or t,
        layout="source A, lambda = 0 .. 1, source B",
    )
    return Figure(strip_layout(row), metadata)


def bound_summary(loaded: LoadedModel, x0: torch.Tensor, seed: int, split: str, on_step: OnStep = None) -> dict:
    """Fig. 5 and Table 2's bits/dim: the bound on x0 [N, C, H, W] in [-1, 1], its parts, and the rate-distortion
    curve (rate in bits/dim, distortion as RMSE on the 0-255 scale, both indexed by t)."""
    T, n = loaded.diffusion.num_timesteps, x0.shape[0]
    on_term = (lambda term: on_step(T - term.t + 1, T)) if on_step is not None else None
    result = evaluate_bound(
        loaded.denoiser(Precision.FP32), loaded.diffusion, x0, torch.Generator().manual_seed(seed), on_term=on_term
    )
    rate, distortion = result.rate_distortion()
    return {
        "bits_per_dim": float(result.total_bpd.mean()),
        "stderr": float(result.total_bpd.std() / n**0.5) if n > 1 else None,  # one image has no spread
        "prior_bpd": float(result.prior_bpd.mean()),
        "decoder_bpd": float(result.terms_bpd[:, 0].mean()),
        "images": n,
        "split": split,
        "run": loaded.identity.run,
        "step": loaded.step,
        "weights": loaded.weights.value,
        "rate_bpd": rate.tolist(),
        "distortion_rmse": distortion.tolist(),
    }
