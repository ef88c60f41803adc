"""q, the posterior, p and the losses against closed forms: the formulas of Ho et al. 2020 one by one."""

import math

import pytest
import torch

from engine.config import DiffusionConfig, LossType, VarianceType
from engine.diffusion import GaussianDiffusion
from engine.distributions import discretized_gaussian_log_likelihood, normal_kl


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(DiffusionConfig())


def test_q_sample_moments(diffusion):
    """Over many draws, x_t has mean sqrt(a-bar_t) x_0 and variance 1 - a-bar_t (Eq. 4)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1, 1, 1), 0.7)
    for step in (1, 100, 500, 1000):
        t = diffusion.step_indices(step, x0.shape[0])
        x_t = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=g))
        ab = diffusion.schedule.alpha_bar(step)
        assert x_t.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=4 * math.sqrt((1 - ab) / 2e5) + 1e-6)
        assert x_t.var().item() == pytest.approx(1 - ab, rel=0.01)
    t0 = diffusion.step_indices(1, 1)
    # q(x_1 | x_0) is almost x_0: variance beta_1
    assert diffusion.q_mean_variance(torch.ones(1, 1, 1, 1), t0)[1].item() == pytest.approx(1e-4, rel=1e-4)


def test_posterior_is_bayes_rule(diffusion):
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0): multiply the two Gaussians in x_{t-1} (float64)."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 1, 2, 2, generator=g, dtype=torch.float64)
    x_t = torch.randn(5, 1, 2, 2, generator=g, dtype=torch.float64)
    for step in (2, 3, 50, 999, 1000):
        beta = float(diffusion.schedule.betas_float64[step - 1])
        ab_prev = diffusion.schedule.alpha_bar(step - 1)
        # q(x_t | x_{t-1}) = N(sqrt(1-beta) x_{t-1}, beta), as a density in x_{t-1}: precision (1-beta)/beta
        prec1, mean1 = (1 - beta) / beta, x_t / math.sqrt(1 - beta)
        prec2, mean2 = 1 / (1 - ab_prev), math.sqrt(ab_prev) * x0
        var = 1 / (prec1 + prec2)
        mean = var * (prec1 * mean1 + prec2 * mean2)
        t = diffusion.step_indices(step, 5)
        got_mean, got_var, got_logvar = diffusion.q_posterior(x0.float(), x_t.float(), t)
        assert torch.allclose(got_mean.double(), mean, atol=1e-5)
        assert got_var[0].item() == pytest.approx(var, rel=1e-5)
        assert got_logvar[0].item() == pytest.approx(math.log(var), abs=1e-5)


def test_x0_and_eps_are_inverse(diffusion):
    """Eq. 15 inverts Eq. 4: recovering x_0 from the true noise, and the noise from x_0."""
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(8, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 1, 10, 100, 400, 700, 900, 998])
    x_t = diffusion.q_sample(x0, t, noise)
    assert torch.allclose(diffusion.predict_x0_from_eps(x_t, t, noise), x0, atol=2e-3)
    assert torch.allclose(diffusion.predict_eps_from_x0(x_t, t, x0), noise, atol=1e-3)


def test_reverse_mean_is_equation_11(diffusion):
    """Unclipped, mu_theta = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - a-bar_t) eps) (Ho et al. 2020, Eq. 11)."""
    g = torch.Generator().manual_seed(3)
    x_t = torch.randn(6, 3, 4, 4, generator=g)
    eps = torch.randn(x_t.shape, generator=g)
    t = torch.tensor([1, 5, 50, 300, 800, 999])
    p = diffusion.p_mean_variance(eps, x_t, t, clip_denoised=False)
    s = diffusion.schedule
    alpha = s.alphas[t].reshape(-1, 1, 1, 1)
    beta = s.betas[t].reshape(-1, 1, 1, 1)
    expected = (x_t - beta / (1 - s.alphas_cumprod[t]).sqrt().reshape(-1, 1, 1, 1) * eps) / alpha.sqrt()
    assert torch.allclose(p.mean, expected, atol=1e-4)


def test_variance_choices():
    """sigma_t^2 = beta_t or beta~_t (Sec. 3.2); fixed-large takes beta~_2 at t = 1 as the paper's code does."""
    large = GaussianDiffusion(DiffusionConfig(variance=VarianceType.FIXED_LARGE))
    small = GaussianDiffusion(DiffusionConfig(variance=VarianceType.FIXED_SMALL))
    t = torch.tensor([0, 1, 500, 999])
    v_large, _ = large.model_variance(t, (4, 1, 1, 1))
    v_small, _ = small.model_variance(t, (4, 1, 1, 1))
    s = large.schedule
    assert torch.allclose(v_large.flatten()[1:], s.betas[t[1:]])
    assert v_large.flatten()[0].item() == pytest.approx(s.posterior_variance[1].item())
    assert torch.allclose(v_small.flatten()[1:], s.posterior_variance[t[1:]])
    assert bool((v_small.flatten()[1:] < v_large.flatten()[1:]).all())


def test_p_sample_adds_no_noise_at_the_last_step(diffusion):
    """Algorithm 2, line 3: z = 0 when t = 1."""
    x_t = torch.zeros(2, 1, 2, 2)
    eps = torch.zeros_like(x_t)
    t = torch.tensor([0, 5])
    noise = torch.ones_like(x_t)
    x_prev, _ = diffusion.p_sample(eps, x_t, t, noise, clip_denoised=False)
    assert torch.all(x_prev[0] == 0)
    assert torch.allclose(x_prev[1], torch.full_like(x_prev[1], math.sqrt(diffusion.schedule.betas[5].item())))


def test_clipping_bounds_x0(diffusion):
    x_t = torch.full((1, 1, 1, 1), 3.0)
    t = diffusion.step_indices(10, 1)
    eps = torch.zeros_like(x_t)
    assert diffusion.p_mean_variance(eps, x_t, t, clip_denoised=True).pred_x0.item() == 1.0
    assert diffusion.p_mean_variance(eps, x_t, t, clip_denoised=False).pred_x0.item() > 2.9


def test_l_simple_is_the_noise_regression():
    """Eq. 14: zero for a model that returns the true noise; the mean squared error of eps otherwise."""
    diffusion = GaussianDiffusion(DiffusionConfig(num_timesteps=100))
    g = torch.Generator().manual_seed(4)
    x0 = torch.rand(4, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 10, 50, 99])
    oracle = lambda x_t, t_: diffusion.predict_eps_from_x0(x_t, t_, x0)
    assert torch.allclose(diffusion.training_losses(oracle, x0, t, noise), torch.zeros(4), atol=1e-6)
    zero = lambda x_t, t_: torch.zeros_like(x_t)
    assert torch.allclose(diffusion.training_losses(zero, x0, t, noise), noise.pow(2).mean(dim=(1, 2, 3)))


def test_min_snr_loss_caps_the_weight_of_nearly_clean_steps():
    """The min-SNR option: L_simple times min(SNR_t, gamma) / SNR_t, i.e. L_simple itself where SNR_t <= gamma and
    gamma / SNR_t of it at the nearly noise-free steps."""
    config = DiffusionConfig(num_timesteps=100, beta_end=0.2, loss=LossType.MIN_SNR, snr_gamma=5.0)
    diffusion = GaussianDiffusion(config)
    g = torch.Generator().manual_seed(6)
    x0 = torch.rand(3, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    abar = diffusion.schedule.alphas_cumprod_float64
    snr = abar / (1 - abar)
    t = torch.tensor([0, int((snr > 5).sum()) - 1, 99])  # two steps above the cap, one far below it
    zero = lambda x_t, t_: torch.zeros_like(x_t)
    plain = noise.pow(2).mean(dim=(1, 2, 3)).double()
    expected = plain * torch.clamp(snr[t], max=5.0) / snr[t]
    torch.testing.assert_close(diffusion.training_losses(zero, x0, t, noise).double(), expected, rtol=1e-5, atol=0)
    assert snr[t[0]] > 5 and snr[t[1]] > 5 and snr[t[2]] < 5


def test_vlb_loss_is_the_bound_term():
    """The VLB option: L_{t-1} as a KL in bits/dim, and the decoder NLL at t = 1; an oracle model scores ~0 KL."""
    diffusion = GaussianDiffusion(DiffusionConfig(num_timesteps=100, loss=LossType.VLB))
    g = torch.Generator().manual_seed(5)
    x0 = torch.round((torch.rand(3, 1, 4, 4, generator=g) * 2 - 1) * 127.5) / 127.5
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 20, 80])
    oracle = lambda x_t, t_: diffusion.predict_eps_from_x0(x_t, t_, x0)
    losses = diffusion.training_losses(oracle, x0, t, noise)
    # The oracle's mean equals the true posterior mean, so only the variance mismatch beta_t vs beta~_t remains.
    s = diffusion.schedule
    for i, k in enumerate([20, 80]):
        ratio = (s.posterior_variance[k] / s.betas[k]).double()
        expected = 0.5 * (ratio - 1 - torch.log(ratio)) / math.log(2)
        assert losses[i + 1].item() == pytest.approx(expected.item(), rel=1e-3)
    # The decoder with the oracle mean: -log2 of the bin mass of N(x_0, sigma_1^2), per dimension.
    sigma = math.sqrt(s.posterior_variance[1].item())
    mass = math.erf((1 / 255) / (sigma * math.sqrt(2)))  # central bin mass at the true mean
    interior = (x0[0].abs() < 0.999).float().mean().item()
    assert losses[0].item() > 0 and losses[0].item() <= -math.log2(mass) * interior + 1e-3 + (1 - interior) * 1e-3


def test_normal_kl_closed_form():
    m1, m2 = torch.tensor(0.3), torch.tensor(-0.2)
    lv1, lv2 = torch.tensor(math.log(0.5)), torch.tensor(math.log(2.0))
    expected = math.log(math.sqrt(2.0) / math.sqrt(0.5)) + (0.5 + 0.25) / (2 * 2.0) - 0.5
    assert normal_kl(m1, lv1, m2, lv2).item() == pytest.approx(expected, rel=1e-6)
    assert normal_kl(m1, lv1, m1, lv1).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("mean,scale", [(0.0, 0.5), (0.37, 0.01), (-0.9, 0.002), (0.999, 0.3), (0.2, 1e-4)])
def test_discretized_decoder_is_a_distribution_over_256_levels(mean, scale):
    """Eq. 13 assigns every level its bin's mass, with the outer bins open: the 256 masses sum to 1."""
    grid = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    logp = discretized_gaussian_log_likelihood(
        grid, torch.full_like(grid, mean), torch.full_like(grid, math.log(scale))
    )
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-6)
    # The mass of the level nearest the mean agrees with the CDF difference computed independently.
    k = int(round((mean + 1) * 127.5))
    lo, hi = (grid[k] - 1 / 255 - mean) / scale, (grid[k] + 1 / 255 - mean) / scale
    lo = -math.inf if k == 0 else lo.item()
    hi = math.inf if k == 255 else hi.item()
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
    assert logp[k].exp().item() == pytest.approx(cdf(hi) - cdf(lo), rel=1e-6)


def test_decoder_tails_keep_precision():
    """Far in the upper tail the bin mass is tiny but its log stays finite and accurate (no 1 - 1 cancellation)."""
    x = torch.tensor([0.0], dtype=torch.float64)
    logp = discretized_gaussian_log_likelihood(
        x, torch.tensor([-0.05], dtype=torch.float64), torch.tensor([math.log(0.01)], dtype=torch.float64)
    )
    z_lo, z_hi = (0.05 - 1 / 255) / 0.01, (0.05 + 1 / 255) / 0.01
    expected = math.log(0.5 * (math.erfc(z_lo / math.sqrt(2)) - math.erfc(z_hi / math.sqrt(2))))
    assert logp.item() == pytest.approx(expected, rel=1e-6)
