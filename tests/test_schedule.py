"""The noise schedule and its derived coefficients, against their definitions computed independently."""

import math

import pytest
import torch

from engine.config import DiffusionConfig, ScheduleKind
from engine.schedule import NoiseSchedule, cosine_betas, extract, linear_betas


def test_linear_schedule_is_the_papers():
    """T = 1000 betas from 1e-4 to 0.02, evenly spaced (Ho et al. 2020, Sec. 4)."""
    s = NoiseSchedule.from_config(DiffusionConfig())
    assert s.num_timesteps == 1000
    assert s.betas[0].item() == pytest.approx(1e-4, rel=1e-6)
    assert s.betas[-1].item() == pytest.approx(0.02, rel=1e-6)
    steps = torch.diff(s.betas_float64)
    assert torch.allclose(steps, torch.full_like(steps, (0.02 - 1e-4) / 999), rtol=1e-9)


def test_alphas_cumprod_is_a_product_in_float64():
    """alpha-bar_t = prod (1 - beta_s); the float32 buffer is the float64 product rounded, not a float32 product."""
    betas = linear_betas(1000, 1e-4, 0.02)
    s = NoiseSchedule(betas)
    exact = [1.0]
    for b in betas.tolist():
        exact.append(exact[-1] * (1 - b))
    assert torch.allclose(s.alphas_cumprod_float64, torch.tensor(exact[1:], dtype=torch.float64), rtol=1e-12)
    assert torch.equal(s.alphas_cumprod, s.alphas_cumprod_float64.float())
    assert s.alpha_bar(0) == 1.0 and s.alpha_bar(1000) == pytest.approx(exact[-1], rel=1e-12)
    # The paper's schedule leaves almost no signal at T: SNR(T) ~ 4e-5.
    assert s.alphas_cumprod[-1].item() == pytest.approx(4.04e-5, rel=0.02)


def test_posterior_coefficients_match_their_definitions():
    """beta~_t (Eq. 7) and the posterior-mean coefficients, from alpha-bar directly."""
    s = NoiseSchedule.from_config(DiffusionConfig(num_timesteps=50, beta_end=0.2))
    ab = s.alphas_cumprod_float64
    abp = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    b = s.betas_float64
    assert torch.allclose(s.posterior_variance.double(), b * (1 - abp) / (1 - ab), rtol=1e-6)
    assert s.posterior_variance[0].item() == 0.0  # x_0 is known exactly given x_1 and x_0
    assert s.posterior_log_variance_clipped[0].item() == pytest.approx(
        math.log(s.posterior_variance[1].item()), rel=1e-6
    )
    assert torch.allclose(s.posterior_mean_coef1.double(), abp.sqrt() * b / (1 - ab), rtol=1e-6)
    assert torch.allclose(s.posterior_mean_coef2.double(), (1 - b).sqrt() * (1 - abp) / (1 - ab), rtol=1e-6)


def test_cosine_schedule_follows_its_closed_form():
    """Nichol & Dhariwal 2021: alpha-bar_t = f(t) / f(0), betas clipped at 0.999."""
    T = 1000
    betas = cosine_betas(T)
    ab = torch.cumprod(1 - betas, 0)
    f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2
    for t in (1, 10, 500, 900):
        assert ab[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-9)
    assert betas.max().item() == pytest.approx(0.999)
    assert bool((betas > 0).all()) and bool((torch.diff(ab) < 0).all())
    s = NoiseSchedule.from_config(DiffusionConfig(schedule=ScheduleKind.COSINE))
    assert torch.equal(s.betas, betas.float())


def test_extract_gathers_and_broadcasts():
    a = torch.arange(10, dtype=torch.float32)
    t = torch.tensor([0, 3, 9])
    out = extract(a, t, (3, 2, 4, 4))
    assert out.shape == (3, 1, 1, 1)
    assert out.flatten().tolist() == [0.0, 3.0, 9.0]


def test_schedule_moves_with_the_module():
    s = NoiseSchedule.from_config(DiffusionConfig(num_timesteps=10))
    s.to(torch.float64)  # buffers follow .to(); the float64 host copies are unaffected
    assert s.betas.dtype == torch.float64
    with pytest.raises(AssertionError):
        NoiseSchedule(torch.tensor([0.5, 1.0]))
