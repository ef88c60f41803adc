"""Closed-form densities the bound needs: Gaussian KL and the discretized Gaussian decoder (Ho et al. 2020, Eq. 13).

Everything returns natural-log values elementwise; callers sum over dimensions and convert to bits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# x_0 lives on 256 levels in [-1, 1]; each level owns a bin of half-width 1/255 (Eq. 13's delta_+ and delta_-).
BIN_HALF_WIDTH = 1.0 / 255.0


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log p(x) of Ho et al. 2020, Eq. 13: the Gaussian N(means, exp(log_scales)^2) integrated over x's bin.

    x: data in [-1, 1] on the 256-level grid; the outermost bins extend to -inf and +inf.
    Uses the exact normal CDF (the paper's code uses a tanh approximation), and takes the difference on the side
    of the mean where it does not cancel, so tails many standard deviations out keep their precision.
    """
    assert x.shape == means.shape == log_scales.shape, (x.shape, means.shape, log_scales.shape)
    inv_stdv = torch.exp(-log_scales)
    centered = x - means
    upper = inv_stdv * (centered + BIN_HALF_WIDTH)
    lower = inv_stdv * (centered - BIN_HALF_WIDTH)
    log_cdf_upper = torch.special.log_ndtr(upper)  # bin (-inf, x + 1/255] for x = -1
    log_survival_lower = torch.special.log_ndtr(-lower)  # bin [x - 1/255, inf) for x = 1
    # P(lower < Z < upper): right of the mean use the survival function, where the CDF would round to 1.
    bin_mass = torch.where(
        lower > 0,
        torch.special.ndtr(-lower) - torch.special.ndtr(-upper),
        torch.special.ndtr(upper) - torch.special.ndtr(lower),
    )
    log_bin_mass = torch.log(bin_mass.clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_survival_lower, log_bin_mass))


def nats_to_bits_per_dim(nats: Tensor) -> Tensor:
    """[N, ...] elementwise nats -> [N] bits per dimension (mean over all but the batch axis)."""
    return nats.flatten(1).mean(dim=1) / math.log(2.0)
