"""FID and KID (engine/quality.py) against closed forms: the Fréchet distance of two Gaussians, zero for a set
against itself, small for two halves of one sample; KID unbiased (about 0 for two samples of one distribution)."""

import math

import pytest
import torch

from engine.quality import FeatureStats, frechet_distance, kernel_distance


def _stats(mean, cov):
    return FeatureStats(torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64), 1000)


def test_the_frechet_distance_of_two_gaussians_is_the_closed_form():
    """Commuting covariances (shared eigenvectors): ||mu_a - mu_b||^2 + sum (sqrt(s_a) - sqrt(s_b))^2; any two:
    ||mu_a - mu_b||^2 + tr S_a + tr S_b - 2 sum sqrt(eig(S_a S_b))."""
    g = torch.Generator().manual_seed(0)
    d = 6
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    s_a, s_b = torch.rand(d, generator=g, dtype=torch.float64) + 0.1, torch.rand(d, generator=g, dtype=torch.float64)
    mu_a, mu_b = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    a, b = _stats(mu_a, q @ torch.diag(s_a) @ q.T), _stats(mu_b, q @ torch.diag(s_b) @ q.T)
    want = float((mu_a - mu_b).pow(2).sum() + (s_a.sqrt() - s_b.sqrt()).pow(2).sum())
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(want, rel=1e-9)

    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    c = _stats(mu_b, m @ m.T + 0.01 * torch.eye(d, dtype=torch.float64))
    products = torch.linalg.eigvals(a.cov @ c.cov).real.clamp_min(0).sqrt().sum()
    want = float((mu_a - mu_b).pow(2).sum() + a.cov.trace() + c.cov.trace() - 2 * products)
    assert frechet_distance(a, c) == pytest.approx(want, rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero_and_of_two_halves_small():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(4000, 16, generator=g) * 0.5 + torch.randn(16, generator=g)
    same = FeatureStats.of(features)
    assert same.count == 4000 and frechet_distance(same, same) == pytest.approx(0.0, abs=1e-9)
    halves = frechet_distance(FeatureStats.of(features[:2000]), FeatureStats.of(features[2000:]))
    shifted = frechet_distance(FeatureStats.of(features[:2000]), FeatureStats.of(features[2000:] + 0.5))
    assert 0 < halves < 0.05 * shifted and shifted == pytest.approx(16 * 0.25 + halves, rel=0.05)


def test_kid_is_unbiased_and_grows_with_the_difference():
    """For two samples of one distribution KID's estimate averages 0 (it is unbiased: negative values occur), and
    it is clearly positive between two distributions."""
    g = torch.Generator().manual_seed(2)
    means = []
    for _ in range(20):
        x, y = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g)
        mean, std = kernel_distance(x, y, subsets=10, subset_size=200, generator=g)
        means.append(mean)
        assert std >= 0
    other, _ = kernel_distance(torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g) + 0.5, 10, 200, g)
    average = sum(means) / len(means)
    spread = (sum((m - average) ** 2 for m in means) / (len(means) - 1)) ** 0.5
    assert abs(average) < 3 * spread / math.sqrt(len(means)) + 1e-12  # zero within its error
    assert min(means) < 0 < other and other > 10 * spread
