"""Every sampler as a generator of typed steps: ancestral (Alg. 2), strided/DDIM, forking, interpolation.

Each yields a `SampleStep(t, x_t, pred_x0)` for every step, from the starting x_t down to the final x_0, so the
scrubber, the grids, forking and interpolation consume the same stream and a consumer cancels by simply not asking
for the next step. `sample()` drains a stream. Every random draw comes from the `torch.Generator` passed in, in a
fixed order, so any picture can be replayed from its seed.

Steps here are the paper's: x_t has had t noising steps, t = T is pure noise and t = 0 the data. The network is
called with the index t - 1 (see diffusion.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .diffusion import EpsModel, GaussianDiffusion


@dataclass(frozen=True)
class SampleStep:
    t: int  # the paper's step of x_t, T..0
    x_t: Tensor  # [N, C, H, W]
    pred_x0: Tensor  # x^0(x_t) (Eq. 15), clipped to [-1, 1] when the sampler clips; equal to x_t at t = 0


def randn(shape: Sequence[int], generator: torch.Generator, device: torch.device | str) -> Tensor:
    """Standard normal noise drawn on the generator's device, then moved: one seed gives the same noise anywhere."""
    return torch.randn(tuple(shape), generator=generator, device=generator.device).to(device)


# The reverse chain's noise z, injected as in the paper's code (`noise_fn`): (x_t, generator) -> z like x_t.
NoiseFn = Callable[[Tensor, torch.Generator], Tensor]


def standard_noise(like: Tensor, generator: torch.Generator) -> Tensor:
    """z ~ N(0, I), one draw per element (Alg. 2)."""
    return randn(like.shape, generator, like.device)


def shared_noise(repeats: int) -> NoiseFn:
    """Noise for a batch laid out as `repeats` copies of one group: drawn once per group, then tiled. Interpolation
    uses it so that every lambda shares the reverse chain's noise (Ho et al. 2020, Sec. 4.4)."""

    def noise(like: Tensor, generator: torch.Generator) -> Tensor:
        assert like.shape[0] % repeats == 0, (like.shape, repeats)
        group = randn((like.shape[0] // repeats, *like.shape[1:]), generator, like.device)
        return group.repeat(repeats, *((1,) * (like.ndim - 1))) if repeats > 1 else group

    return noise


def ancestral(
    model: EpsModel,
    diffusion: GaussianDiffusion,
    x_t: Tensor,
    t: int,
    generator: torch.Generator,
    *,
    clip_denoised: bool | None = None,
    noise_fn: NoiseFn = standard_noise,
) -> Iterator[SampleStep]:
    """Algorithm 2 of Ho et al. 2020 from x_t at the paper's step t (t = T: from pure noise) down to x_0.

    Yields t + 1 steps: (t, x_t, x^0(x_t)), (t-1, ...), ..., (0, x_0, x_0).
    """
    clip = diffusion.config.clip_denoised if clip_denoised is None else clip_denoised
    assert 0 <= t <= diffusion.num_timesteps, t
    for step in range(t, 0, -1):
        index = diffusion.step_indices(step, x_t.shape[0])
        eps = model(x_t, index)
        noise = noise_fn(x_t, generator) if step > 1 else None  # Alg. 2: z = 0 when t = 1
        x_prev, pred_x0 = diffusion.p_sample(eps, x_t, index, noise, clip)
        yield SampleStep(step, x_t, pred_x0)
        x_t = x_prev
    yield SampleStep(0, x_t, x_t)


def strided_timesteps(t_start: int, num_steps: int) -> list[int]:
    """`num_steps` + 1 evenly spaced paper steps from t_start down to 0 (all of them when num_steps >= t_start)."""
    if num_steps >= t_start:
        return list(range(t_start, -1, -1))
    assert num_steps >= 1, num_steps
    steps = sorted({round(t_start * i / num_steps) for i in range(num_steps + 1)}, reverse=True)
    return steps


def strided(
    model: EpsModel,
    diffusion: GaussianDiffusion,
    x_t: Tensor,
    timesteps: Sequence[int],
    generator: torch.Generator,
    *,
    eta: float = 1.0,
    clip_denoised: bool | None = None,
    noise_fn: NoiseFn = standard_noise,
) -> Iterator[SampleStep]:
    """The generalised sampler of Song et al. 2021 (DDIM, Eq. 12) over a decreasing subsequence of steps.

    From step t to the next step s < t, with x^0 and eps from the network at t:
        sigma = eta * sqrt((1 - a-bar_s) / (1 - a-bar_t)) * sqrt(1 - a-bar_t / a-bar_s)
        x_s = sqrt(a-bar_s) x^0 + sqrt(1 - a-bar_s - sigma^2) eps + sigma z
    eta = 1 over every step is DDPM's ancestral sampler with sigma_t^2 = beta~_t; eta = 0 is deterministic DDIM.
    `timesteps` starts at x_t's step and ends at 0, e.g. `strided_timesteps(T, 50)`.
    """
    clip = diffusion.config.clip_denoised if clip_denoised is None else clip_denoised
    assert list(timesteps) == sorted(set(timesteps), reverse=True) and timesteps[-1] == 0, "steps must decrease to 0"
    schedule = diffusion.schedule
    for t, s in zip(timesteps[:-1], timesteps[1:]):
        index = diffusion.step_indices(t, x_t.shape[0])
        eps = model(x_t, index)
        pred_x0 = diffusion.predict_x0_from_eps(x_t, index, eps)
        if clip:
            pred_x0 = pred_x0.clamp(-1.0, 1.0)
            eps = diffusion.predict_eps_from_x0(x_t, index, pred_x0)  # keep x_s consistent with the clipped x^0
        a_t, a_s = schedule.alpha_bar(t), schedule.alpha_bar(s)
        sigma = eta * math.sqrt((1.0 - a_s) / (1.0 - a_t)) * math.sqrt(max(0.0, 1.0 - a_t / a_s))
        x_s = math.sqrt(a_s) * pred_x0 + math.sqrt(max(0.0, 1.0 - a_s - sigma**2)) * eps
        if sigma > 0:
            x_s = x_s + sigma * noise_fn(x_t, generator)
        yield SampleStep(t, x_t, pred_x0)
        x_t = x_s
    yield SampleStep(0, x_t, x_t)


def reverse_chain(
    model: EpsModel,
    diffusion: GaussianDiffusion,
    x_t: Tensor,
    t: int,
    generator: torch.Generator,
    *,
    num_steps: int | None = None,
    eta: float = 1.0,
    clip_denoised: bool | None = None,
    noise_fn: NoiseFn = standard_noise,
) -> Iterator[SampleStep]:
    """The exact ancestral chain from step t when `num_steps` is None (or >= t), else a strided one of `num_steps`."""
    if num_steps is None or num_steps >= t:
        return ancestral(model, diffusion, x_t, t, generator, clip_denoised=clip_denoised, noise_fn=noise_fn)
    return strided(
        model,
        diffusion,
        x_t,
        strided_timesteps(t, num_steps),
        generator,
        eta=eta,
        clip_denoised=clip_denoised,
        noise_fn=noise_fn,
    )


def generate(
    model: EpsModel,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    generator: torch.Generator,
    *,
    num_steps: int | None = None,
    eta: float = 1.0,
    clip_denoised: bool | None = None,
) -> Iterator[SampleStep]:
    """New samples: x_T ~ N(0, I) of `shape` [N, C, H, W], then the reverse chain (exact, or strided in num_steps)."""
    x_T = randn(shape, generator, diffusion.device)
    return reverse_chain(
        model,
        diffusion,
        x_T,
        diffusion.num_timesteps,
        generator,
        num_steps=num_steps,
        eta=eta,
        clip_denoised=clip_denoised,
    )


def fork(
    model: EpsModel,
    diffusion: GaussianDiffusion,
    x_t: Tensor,
    t: int,
    num_forks: int,
    generator: torch.Generator,
    *,
    num_steps: int | None = None,
    eta: float = 1.0,
    clip_denoised: bool | None = None,
) -> Iterator[SampleStep]:
    """Ho et al. 2020, Fig. 7: hold x_t and draw `num_forks` samples x_0 ~ p(x_0 | x_t) for each held image.

    x_t: [N, C, H, W] -> steps over [N * num_forks, C, H, W]; the forks of image i are rows
    i*num_forks ... (i+1)*num_forks-1.
    """
    held = x_t.repeat_interleave(num_forks, dim=0)
    return reverse_chain(
        model, diffusion, held, t, generator, num_steps=num_steps, eta=eta, clip_denoised=clip_denoised
    )


def encode_pair(
    diffusion: GaussianDiffusion, x0_a: Tensor, x0_b: Tensor, t: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """x_t ~ q(x_t | x_0) for both images (Eq. 4), noise drawn for A, then for B; identity at t = 0."""
    assert x0_a.shape == x0_b.shape, (x0_a.shape, x0_b.shape)
    if t == 0:
        return x0_a, x0_b
    noise_a = randn(x0_a.shape, generator, x0_a.device)
    noise_b = randn(x0_b.shape, generator, x0_b.device)
    index = diffusion.step_indices(t, x0_a.shape[0])
    return diffusion.q_sample(x0_a, index, noise_a), diffusion.q_sample(x0_b, index, noise_b)


def mix_latents(x_t_a: Tensor, x_t_b: Tensor, lambdas: Sequence[float]) -> Tensor:
    """Fig. 8's mix of the noised latents, x_t = (1 - lambda) x_t^A + lambda x_t^B, for every lambda:
    [N, C, H, W] twice -> [L * N, C, H, W], lambda-major (rows l*N ... (l+1)*N-1 hold lambdas[l])."""
    lam = torch.tensor(list(lambdas), dtype=x_t_a.dtype, device=x_t_a.device).reshape(-1, 1, 1, 1, 1)
    return ((1.0 - lam) * x_t_a[None] + lam * x_t_b[None]).flatten(0, 1)


def interpolate(
    model: EpsModel,
    diffusion: GaussianDiffusion,
    x0_a: Tensor,
    x0_b: Tensor,
    t: int,
    lambdas: Sequence[float],
    generator: torch.Generator,
    *,
    num_steps: int | None = None,
    eta: float = 1.0,
    clip_denoised: bool | None = None,
) -> Iterator[SampleStep]:
    """Ho et al. 2020, Sec. 4.4 and Figs. 8-9: interpolate in the noised latent space at the mixing step t.

    x_t = (1 - lambda) x_t^A + lambda x_t^B, decoded by the reverse chain. Sec. 4.4 writes the mix on x_0, but
    Fig. 8's diagram and the paper's code mix the *noised* latents; we follow the figure. The encoding noise is drawn
    once and the reverse chain's noise is shared by every lambda, so lambda = 0 and 1 reconstruct A and B and the row
    varies smoothly with lambda. Small t keeps the sources' fine detail, large t only their coarse layout (Fig. 9).

    x0_a, x0_b: [N, C, H, W] -> steps over [L * N, C, H, W], lambda-major (rows l*N ... (l+1)*N-1 hold lambdas[l]).
    """
    x_t_a, x_t_b = encode_pair(diffusion, x0_a, x0_b, t, generator)
    mixed = mix_latents(x_t_a, x_t_b, lambdas)
    return reverse_chain(
        model,
        diffusion,
        mixed,
        t,
        generator,
        num_steps=num_steps,
        eta=eta,
        clip_denoised=clip_denoised,
        noise_fn=shared_noise(len(lambdas)),
    )


def sample(steps: Iterator[SampleStep]) -> Tensor:
    """Drain a stream of steps; the final x_0."""
    last = None
    for last in steps:  # noqa: B007 (the last step is the result)
        pass
    assert last is not None and last.t == 0
    return last.x_t
