"""Sample quality from image features: the Fréchet distance (FID; Heusel et al. 2017) and the kernel distance (KID;
Bińkowski et al. 2018), the two figures the diffusion literature reports against a reference set.

Both compare two sets of feature vectors (one per image, e.g. the 2048-d pool features of the Inception network
that FID's papers use) and know nothing of where the features came from; the feature extractor, the protocol and
the reference statistics are the caller's. All arithmetic is float64: FID subtracts large, nearly equal traces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class FeatureStats:
    """The first two moments of a set of features: what FID needs of a reference set (and can be cached)."""

    mean: Tensor  # [D] float64
    cov: Tensor  # [D, D] float64, the unbiased sample covariance
    count: int

    @classmethod
    def of(cls, features: Tensor) -> FeatureStats:
        """features: [N, D] with N >= 2."""
        assert features.ndim == 2 and features.shape[0] >= 2, features.shape
        f = features.to(torch.float64)
        mean = f.mean(dim=0)
        centred = f - mean
        return cls(mean, centred.T @ centred / (f.shape[0] - 1), f.shape[0])


def _sqrt_psd(matrix: Tensor) -> Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative rounding clipped to 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """FID: the Fréchet (2-Wasserstein) distance between Gaussians of these moments,
    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    tr((S_a S_b)^(1/2)) is computed as tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)), a symmetric PSD matrix with the same
    eigenvalues as S_a S_b, so no complex square root is needed (scipy's sqrtm of S_a S_b gives the same trace)."""
    assert a.mean.shape == b.mean.shape, (a.mean.shape, b.mean.shape)
    root_a = _sqrt_psd(a.cov)
    middle = root_a @ b.cov @ root_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    distance = (a.mean - b.mean).pow(2).sum() + a.cov.trace() + b.cov.trace() - 2 * trace_sqrt
    return float(distance.clamp_min(0))


def _polynomial_mmd2(x: Tensor, y: Tensor) -> Tensor:
    """The unbiased estimate of MMD^2 with the kernel k(u, v) = (u.v / d + 1)^3 (KID's)."""
    d = x.shape[1]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    m, n = x.shape[0], y.shape[0]
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2 * kxy.mean()


def kernel_distance(
    x: Tensor, y: Tensor, subsets: int = 100, subset_size: int = 1000, generator: torch.Generator | None = None
) -> tuple[float, float]:
    """KID: the unbiased MMD^2 between features x [M, D] and y [N, D] under KID's polynomial kernel, as (mean, std)
    over `subsets` random subsets of min(subset_size, M, N) of each (drawn without replacement within a subset).
    Unbiased: for two samples of one distribution its expectation is 0, so small negative values occur."""
    assert x.ndim == y.ndim == 2 and x.shape[1] == y.shape[1], (x.shape, y.shape)
    size = min(subset_size, x.shape[0], y.shape[0])
    assert size >= 2 and subsets >= 1, (size, subsets)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    x64, y64 = x.to(torch.float64), y.to(torch.float64)
    values = []
    for _ in range(subsets):
        pick_x, pick_y = torch.randperm(len(x64), generator=g)[:size], torch.randperm(len(y64), generator=g)[:size]
        values.append(_polynomial_mmd2(x64[pick_x.to(x64.device)], y64[pick_y.to(y64.device)]))
    stacked = torch.stack(values)
    return float(stacked.mean()), float(stacked.std()) if subsets > 1 else 0.0
