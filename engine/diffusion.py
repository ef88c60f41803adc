"""The forward process q, the reverse process p, one reverse step, and the training losses (Ho et al. 2020).

Conventions, used in every function here:
- images x_0, x_t: [N, C, H, W] float32, data scaled to [-1, 1];
- `t`: [N] long step *indices* in [0, T): index k is the paper's step t = k + 1 (as in the paper's code), and it is
  the integer the network sees;
- an `EpsModel` is any callable (x_t, t) -> eps_theta(x_t, t) of x_t's shape (the U-Net, or a closed form in tests).
Randomness is never global: every noise tensor is passed in (and drawn by the caller from a torch.Generator).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import DiffusionConfig, LossType, VarianceType
from .distributions import discretized_gaussian_log_likelihood, nats_to_bits_per_dim, normal_kl
from .schedule import NoiseSchedule, extract

EpsModel = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ReverseDistribution:
    """p_theta(x_{t-1} | x_t) = N(mean, variance), with the network's epsilon and its x^0 (Eq. 15)."""

    mean: Tensor
    variance: Tensor  # [N, 1, 1, 1] (fixed variances are per step, not per pixel)
    log_variance: Tensor
    pred_x0: Tensor
    eps: Tensor


class GaussianDiffusion:
    """A DDPM's forward and reverse processes for one `DiffusionConfig`; owns the schedule's buffers."""

    def __init__(self, config: DiffusionConfig, device: torch.device | str = "cpu"):
        self.config = config
        self.schedule = NoiseSchedule.from_config(config).to(device)

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    @property
    def device(self) -> torch.device:
        return self.schedule.betas.device

    def to(self, device: torch.device | str) -> GaussianDiffusion:
        self.schedule.to(device)
        return self

    def step_indices(self, t: int, batch: int) -> Tensor:
        """The [batch] index tensor for the paper's step t in [1, T]."""
        assert 1 <= t <= self.num_timesteps, t
        return torch.full((batch,), t - 1, dtype=torch.long, device=self.device)

    # ---- the forward process q ----

    def q_mean_variance(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q(x_t | x_0) = N(sqrt(a-bar_t) x_0, (1 - a-bar_t) I): Ho et al. 2020, Eq. 4."""
        s = self.schedule
        mean = extract(s.sqrt_alphas_cumprod, t, x0.shape) * x0
        variance = extract(s.one_minus_alphas_cumprod, t, x0.shape)
        log_variance = extract(s.log_one_minus_alphas_cumprod, t, x0.shape)
        return mean, variance, log_variance

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(a-bar_t) x_0 + sqrt(1 - a-bar_t) eps: Ho et al. 2020, Eq. 4 (reparameterised, as in Eq. 12)."""
        assert noise.shape == x0.shape
        s = self.schedule
        return (
            extract(s.sqrt_alphas_cumprod, t, x0.shape) * x0
            + extract(s.sqrt_one_minus_alphas_cumprod, t, x0.shape) * noise
        )

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I): Ho et al. 2020, Eqs. 6-7."""
        assert x0.shape == x_t.shape
        s = self.schedule
        mean = extract(s.posterior_mean_coef1, t, x_t.shape) * x0 + extract(s.posterior_mean_coef2, t, x_t.shape) * x_t
        variance = extract(s.posterior_variance, t, x_t.shape)
        log_variance = extract(s.posterior_log_variance_clipped, t, x_t.shape)
        return mean, variance, log_variance

    # ---- x_0 <-> epsilon ----

    def predict_x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x^0 = (x_t - sqrt(1 - a-bar_t) eps) / sqrt(a-bar_t): Ho et al. 2020, Eq. 15."""
        s = self.schedule
        return (
            extract(s.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
            - extract(s.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps
        )

    def predict_eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """Eq. 15 solved for eps (used after x^0 has been clipped)."""
        s = self.schedule
        return (extract(s.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - x0) / extract(
            s.sqrt_recipm1_alphas_cumprod, t, x_t.shape
        )

    # ---- the reverse process p ----

    def model_variance(self, t: Tensor, x_shape: torch.Size) -> tuple[Tensor, Tensor]:
        """sigma_t^2 and its log for the fixed variances of Ho et al. 2020, Sec. 3.2."""
        s = self.schedule
        if self.config.variance is VarianceType.FIXED_SMALL:
            return extract(s.posterior_variance, t, x_shape), extract(s.posterior_log_variance_clipped, t, x_shape)
        return extract(s.fixed_large_variance, t, x_shape), extract(s.fixed_large_log_variance, t, x_shape)

    def p_mean_variance(self, eps: Tensor, x_t: Tensor, t: Tensor, clip_denoised: bool) -> ReverseDistribution:
        """p_theta(x_{t-1} | x_t) from the network's eps (Ho et al. 2020, Eqs. 11 and 15).

        The mean is the posterior mean (Eq. 7) at x^0 from Eq. 15. Unclipped this is exactly Eq. 11,
        1/sqrt(a_t) (x_t - beta_t / sqrt(1 - a-bar_t) eps); clipping x^0 to [-1, 1] first is what the paper's code does.
        """
        assert eps.shape == x_t.shape, (eps.shape, x_t.shape)
        pred_x0 = self.predict_x0_from_eps(x_t, t, eps)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1.0, 1.0)
        mean, _, _ = self.q_posterior(pred_x0, x_t, t)
        variance, log_variance = self.model_variance(t, x_t.shape)
        return ReverseDistribution(mean, variance, log_variance, pred_x0, eps)

    def p_sample(
        self, eps: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None, clip_denoised: bool
    ) -> tuple[Tensor, Tensor]:
        """One step of Algorithm 2: x_{t-1} = mu_theta(x_t, t) + sigma_t z, with z = 0 at the last step.

        `noise` may be None only where every t is the last step (index 0). Returns (x_{t-1}, x^0).
        """
        p = self.p_mean_variance(eps, x_t, t, clip_denoised)
        if noise is None:
            assert bool((t == 0).all()), "noise is required before the last step"
            return p.mean, p.pred_x0
        not_last = (t != 0).to(x_t.dtype).reshape(-1, *((1,) * (x_t.ndim - 1)))
        return p.mean + not_last * torch.exp(0.5 * p.log_variance) * noise, p.pred_x0

    # ---- the bound and the losses ----

    def vb_term_bpd(
        self, eps: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, clip_denoised: bool
    ) -> tuple[Tensor, Tensor]:
        """One term of the variational bound (Ho et al. 2020, Eq. 5), in bits/dim, per example.

        L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) for t > 1, and the discretized decoder
        L_0 = -log p_theta(x_0 | x_1) (Eq. 13) at t = 1. Returns ([N] bits/dim, [N, C, H, W] x^0).
        """
        true_mean, _, true_log_variance = self.q_posterior(x0, x_t, t)
        p = self.p_mean_variance(eps, x_t, t, clip_denoised)
        kl = nats_to_bits_per_dim(normal_kl(true_mean, true_log_variance, p.mean, p.log_variance))
        decoder_nll = nats_to_bits_per_dim(
            -discretized_gaussian_log_likelihood(x0, p.mean, (0.5 * p.log_variance).expand_as(x0))
        )
        return torch.where(t == 0, decoder_nll, kl), p.pred_x0

    def prior_bpd(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim, per example; ~1e-5 for the paper's schedule."""
        t = torch.full((x0.shape[0],), self.num_timesteps - 1, dtype=torch.long, device=x0.device)
        mean, _, log_variance = self.q_mean_variance(x0, t)
        zeros = torch.zeros_like(mean)
        return nats_to_bits_per_dim(normal_kl(mean, log_variance.expand_as(mean), zeros, zeros))

    def training_losses(self, model: EpsModel, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """The per-example training loss at uniformly drawn t (Algorithm 1), [N].

        L_simple: || eps - eps_theta(sqrt(a-bar_t) x_0 + sqrt(1 - a-bar_t) eps, t) ||^2, Ho et al. 2020, Eq. 14
        (a mean over pixels rather than a sum, as in the paper's code, so the scale does not depend on image size).
        L_vlb (option): the bound's term L_{t-1} in bits/dim, with x^0 unclipped.
        """
        x_t = self.q_sample(x0, t, noise)
        eps = model(x_t, t).float()
        if self.config.loss is LossType.SIMPLE:
            return (noise - eps).pow(2).flatten(1).mean(dim=1)
        if self.config.loss is LossType.MIN_SNR:
            # Hang et al. 2023, Eq. 10 for eps-prediction: the nearly noise-free steps, whose eps error says little
            # about x_0, stop dominating the gradient; at t where SNR_t <= gamma this is L_simple itself.
            snr = extract(self.schedule.signal_to_noise_ratio, t, (t.shape[0],))
            weight = torch.clamp(snr, max=self.config.snr_gamma) / snr
            return weight * (noise - eps).pow(2).flatten(1).mean(dim=1)
        if self.config.loss is LossType.VLB:
            terms, _ = self.vb_term_bpd(eps, x0, x_t, t, clip_denoised=False)
            return terms
        raise ValueError(f"unknown loss {self.config.loss}")
