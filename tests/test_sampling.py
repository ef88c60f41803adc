"""The samplers against the closed-form Gaussian model, and against each other."""

import math

import pytest
import torch

from engine.config import DiffusionConfig, VarianceType
from engine.diffusion import GaussianDiffusion
from engine.sampling import ancestral, fork, generate, interpolate, sample, strided, strided_timesteps
from tests.gaussian_model import GaussianEps, sampler_moments, strided_moments

MU, S = 0.1, 0.3


def _diffusion(variance=VarianceType.FIXED_LARGE, T=1000):
    return GaussianDiffusion(DiffusionConfig(num_timesteps=T, variance=variance, clip_denoised=False))


@pytest.mark.parametrize("variance", list(VarianceType))
def test_ancestral_samples_have_the_datas_distribution(variance):
    """With the Bayes-optimal eps for N(mu, s^2) data, Algorithm 2's output has the mean and variance that the
    linear-Gaussian recursion predicts exactly, and (with sigma^2 = beta) those are the data's to within 1%."""
    diffusion = _diffusion(variance)
    g = torch.Generator().manual_seed(0)
    x0 = sample(generate(GaussianEps(diffusion, MU, S), diffusion, (256, 1, 8, 8), g))  # 16384 independent pixels
    mean, var = sampler_moments(diffusion, MU, S)
    n = x0.numel()
    assert x0.mean().item() == pytest.approx(mean, abs=4 * math.sqrt(var / n))
    assert x0.var().item() == pytest.approx(var, rel=4 * math.sqrt(2 / n))
    if variance is VarianceType.FIXED_LARGE:
        assert mean == pytest.approx(MU, abs=1e-3) and math.sqrt(var) == pytest.approx(S, rel=0.01)


def test_every_step_is_yielded_in_order():
    diffusion = _diffusion(T=20)
    g = torch.Generator().manual_seed(0)
    steps = list(generate(GaussianEps(diffusion, MU, S), diffusion, (2, 3, 4, 4), g))
    assert [s.t for s in steps] == list(range(20, -1, -1))
    assert all(s.x_t.shape == (2, 3, 4, 4) and s.pred_x0.shape == (2, 3, 4, 4) for s in steps)
    assert torch.equal(steps[-1].x_t, steps[-1].pred_x0)


def test_fixed_seed_replays_the_trajectory_bit_for_bit():
    diffusion = _diffusion(T=50)
    model = GaussianEps(diffusion, MU, S)
    runs = [list(generate(model, diffusion, (3, 1, 4, 4), torch.Generator().manual_seed(7))) for _ in range(2)]
    for a, b in zip(*runs):
        assert torch.equal(a.x_t, b.x_t) and torch.equal(a.pred_x0, b.pred_x0)
    other = sample(generate(model, diffusion, (3, 1, 4, 4), torch.Generator().manual_seed(8)))
    assert not torch.equal(other, runs[0][-1].x_t)


def test_strided_over_all_steps_with_eta_1_is_the_ancestral_chain():
    """DDIM's sampler with eta = 1 over every step is Algorithm 2 with sigma^2 = beta~ (x^0 unclipped)."""
    diffusion = _diffusion(VarianceType.FIXED_SMALL)
    model = GaussianEps(diffusion, MU, S)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    a = list(ancestral(model, diffusion, x_T, 1000, torch.Generator().manual_seed(2)))
    b = list(strided(model, diffusion, x_T, strided_timesteps(1000, 1000), torch.Generator().manual_seed(2), eta=1.0))
    assert [s.t for s in a] == [s.t for s in b]
    worst = max((sa.x_t - sb.x_t).abs().max().item() for sa, sb in zip(a, b))
    assert worst < 1e-4


def test_strided_timesteps():
    assert strided_timesteps(1000, 4) == [1000, 750, 500, 250, 0]
    assert strided_timesteps(10, 50) == list(range(10, -1, -1))
    steps = strided_timesteps(1000, 50)
    assert len(steps) == 51 and steps[0] == 1000 and steps[-1] == 0


def test_ddim_eta_0_is_deterministic_and_strided_samples_follow_their_recursion():
    """eta = 0 draws no noise (any generator gives the same x_0); with 50 strided steps, eta = 0 and eta = 1 give
    the moments of their exact linear recursion (both narrower than the
    data's with so few steps: the recursion, not N(mu, s^2), is the reference)."""
    diffusion = _diffusion()
    model = GaussianEps(diffusion, MU, S)
    x_T = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    steps = strided_timesteps(1000, 50)
    a = sample(strided(model, diffusion, x_T, steps, torch.Generator().manual_seed(0), eta=0.0))
    b = sample(strided(model, diffusion, x_T, steps, torch.Generator().manual_seed(1), eta=0.0))
    assert torch.equal(a, b)
    n = a.numel()
    for eta, x0 in (
        (0.0, a),
        (1.0, sample(strided(model, diffusion, x_T, steps, torch.Generator().manual_seed(0), eta=1.0))),
    ):
        mean, var = strided_moments(diffusion, steps, eta, MU, S)
        assert x0.mean().item() == pytest.approx(mean, abs=4 * math.sqrt(var / n))
        assert x0.var().item() == pytest.approx(var, rel=4 * math.sqrt(2 / n))


def test_sampling_from_an_intermediate_step():
    """Starting at x_t for t < T runs exactly t steps, and the first step holds the given x_t."""
    diffusion = _diffusion(T=100)
    x_t = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    steps = list(ancestral(GaussianEps(diffusion, MU, S), diffusion, x_t, 30, torch.Generator().manual_seed(0)))
    assert [s.t for s in steps] == list(range(30, -1, -1))
    assert torch.equal(steps[0].x_t, x_t)


def test_fork_holds_x_t_and_draws_different_completions():
    """Fig. 7: every fork starts from the same x_t; their x_0 differ, more so the larger t."""
    diffusion = _diffusion(T=200)
    model = GaussianEps(diffusion, MU, S)
    x_t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    spread = {}
    for t in (20, 180):
        steps = list(fork(model, diffusion, x_t, t, 4, torch.Generator().manual_seed(1)))
        first, last = steps[0].x_t, steps[-1].x_t
        assert first.shape == last.shape == (8, 1, 8, 8)
        assert torch.equal(first[0:4], x_t[0:1].expand(4, -1, -1, -1)) and torch.equal(
            first[4:8], x_t[1:2].expand(4, -1, -1, -1)
        )
        assert not torch.equal(last[0], last[1])
        spread[t] = last.reshape(2, 4, -1).std(dim=1).mean().item()
    assert spread[20] < spread[180]


def test_interpolation_endpoints_reconstruct_and_the_row_is_smooth():
    """Sec. 4.4: lambda = 0 and 1 reproduce the chains of A and B (same encoding and reverse noise); the row is
    affine in lambda at the mixing step and changes monotonically on the way."""
    diffusion = _diffusion(T=100)
    model = GaussianEps(diffusion, MU, S)
    g = torch.Generator().manual_seed(0)
    x0_a = torch.rand(2, 1, 8, 8, generator=g) * 2 - 1
    x0_b = torch.rand(2, 1, 8, 8, generator=g) * 2 - 1
    lambdas = [0.0, 0.25, 0.5, 0.75, 1.0]
    steps = list(interpolate(model, diffusion, x0_a, x0_b, 60, lambdas, torch.Generator().manual_seed(5)))
    out = steps[-1].x_t.reshape(5, 2, 1, 8, 8)

    # The chain of A alone with the same generator: encoding noise for A, then B, then the reverse chain.
    g = torch.Generator().manual_seed(5)
    noise_a = torch.randn(x0_a.shape, generator=g)
    noise_b = torch.randn(x0_b.shape, generator=g)
    index = diffusion.step_indices(60, 2)
    x_t_a = diffusion.q_sample(x0_a, index, noise_a)
    x_t_b = diffusion.q_sample(x0_b, index, noise_b)
    chain_a = sample(ancestral(model, diffusion, x_t_a, 60, g))
    assert torch.allclose(out[0], chain_a, atol=1e-5)
    g2 = torch.Generator().manual_seed(5)
    torch.randn(x0_a.shape, generator=g2), torch.randn(x0_b.shape, generator=g2)
    chain_b = sample(ancestral(model, diffusion, x_t_b, 60, g2))
    assert torch.allclose(out[4], chain_b, atol=1e-5)

    mixed = steps[0].x_t.reshape(5, 2, 1, 8, 8)
    for i, lam in enumerate(lambdas):
        assert torch.allclose(mixed[i], (1 - lam) * x_t_a + lam * x_t_b, atol=1e-6)
    # The Gaussian model's chain is affine in x_t, and the noise is shared: the decoded row is affine in lambda.
    assert torch.allclose(out[2], (out[0] + out[4]) / 2, atol=1e-4)


def test_interpolation_at_t0_mixes_pixels():
    diffusion = _diffusion(T=10)
    a, b = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    steps = list(interpolate(GaussianEps(diffusion, MU, S), diffusion, a, b, 0, [0.0, 0.3], torch.Generator()))
    assert len(steps) == 1 and torch.allclose(steps[0].x_t[1], torch.full((1, 2, 2), 0.3))


def test_a_consumer_cancels_by_stopping():
    """The chain is lazy: taking 3 steps evaluates the network 3 times, not T."""
    diffusion = _diffusion(T=1000)
    calls = []
    inner = GaussianEps(diffusion, MU, S)

    def counting(x, t):
        calls.append(int(t[0]))
        return inner(x, t)

    stream = generate(counting, diffusion, (1, 1, 2, 2), torch.Generator().manual_seed(0))
    for _ in zip(range(3), stream):
        pass
    assert calls == [999, 998, 997]
