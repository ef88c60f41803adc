"""Negative log-likelihood in bits/dim through the variational bound, and the rate-distortion curve (Fig. 5).

The bound (Ho et al. 2020, Eq. 5) is L = L_T + sum_{t>1} L_{t-1} + L_0: the prior term KL(q(x_T|x_0) || N(0, I)),
one KL per reverse step, and the discretized decoder (Eq. 13). Every term is evaluated at one draw of x_t per
image and step, in bits per dimension. `bound_terms` yields the terms from t = T down to 1, so a caller can show
progress and stop early; `evaluate_bound` drains it.

Read as a code (Sec. 4.3), the receiver that holds x_t has been sent L_T + sum_{s > t} L_{s-1} bits and can guess
x^0(x_t): that pair, per step, is the rate-distortion curve of Fig. 5.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .diffusion import EpsModel, GaussianDiffusion
from .sampling import randn

PIXEL_SCALE = 127.5  # [-1, 1] -> [0, 255]: distortion is reported on the paper's 0-255 pixel scale


@dataclass(frozen=True)
class BoundTerm:
    t: int  # the paper's step of x_t that this term was evaluated at
    term_bpd: Tensor  # [N] L_{t-1} in bits/dim (the decoder L_0 at t = 1)
    x0_mse: Tensor  # [N] mean squared error of x^0(x_t) against x_0, on [-1, 1]


@dataclass(frozen=True)
class BoundResult:
    total_bpd: Tensor  # [N] the whole bound: prior + all terms
    prior_bpd: Tensor  # [N] L_T
    terms_bpd: Tensor  # [N, T] column t-1 holds L_{t-1}
    x0_mse: Tensor  # [N, T] column t-1 holds the MSE of x^0(x_t)

    def rate_distortion(self) -> tuple[Tensor, Tensor]:
        """Fig. 5, averaged over the batch: ([T+1] rate in bits/dim, [T+1] RMSE on the 0-255 scale), index t.

        At t the receiver holds x_t: rate = L_T + sum_{s>t} L_{s-1}; distortion = RMSE of x^0(x_t). At t = 0 it
        has received everything (the full bound) and the distortion is 0.
        """
        terms = self.terms_bpd.mean(dim=0)  # [T]
        received_after = torch.flip(torch.cumsum(torch.flip(terms, [0]), 0), [0])  # [T]: sum_{k >= j} terms[k]
        rate = torch.cat([received_after, received_after.new_zeros(1)]) + self.prior_bpd.mean()
        rmse = self.x0_mse.mean(dim=0).sqrt() * PIXEL_SCALE
        distortion = torch.cat([rmse.new_zeros(1), rmse])
        return rate, distortion


def bound_terms(
    model: EpsModel,
    diffusion: GaussianDiffusion,
    x0: Tensor,
    generator: torch.Generator,
    *,
    clip_denoised: bool | None = None,
) -> Iterator[BoundTerm]:
    """The bound's per-step terms for the batch x0 [N, C, H, W] on the 256-level grid in [-1, 1], t = T..1."""
    clip = diffusion.config.clip_denoised if clip_denoised is None else clip_denoised
    for t in range(diffusion.num_timesteps, 0, -1):
        index = diffusion.step_indices(t, x0.shape[0])
        x_t = diffusion.q_sample(x0, index, randn(x0.shape, generator, x0.device))
        eps = model(x_t, index)
        term, pred_x0 = diffusion.vb_term_bpd(eps, x0, x_t, index, clip)
        yield BoundTerm(t, term, (pred_x0 - x0).pow(2).flatten(1).mean(dim=1))


def evaluate_bound(
    model: EpsModel,
    diffusion: GaussianDiffusion,
    x0: Tensor,
    generator: torch.Generator,
    *,
    clip_denoised: bool | None = None,
    on_term: Callable[[BoundTerm], None] | None = None,
) -> BoundResult:
    """The full bound for the batch x0 (T network evaluations of the batch); `on_term` sees each term (progress)."""
    n, T = x0.shape[0], diffusion.num_timesteps
    terms = x0.new_zeros(n, T)
    mse = x0.new_zeros(n, T)
    for term in bound_terms(model, diffusion, x0, generator, clip_denoised=clip_denoised):
        terms[:, term.t - 1] = term.term_bpd
        mse[:, term.t - 1] = term.x0_mse
        if on_term is not None:
            on_term(term)
    prior = diffusion.prior_bpd(x0)
    return BoundResult(total_bpd=prior + terms.sum(dim=1), prior_bpd=prior, terms_bpd=terms, x0_mse=mse)
