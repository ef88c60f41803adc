"""The paper's U-Net: parameter counts of the presets, shapes, the zero-init identity, gradient flow."""

import dataclasses
import math

import pytest
import torch

from engine.config import PRESETS, UNetConfig
from engine.unet import Downsample, UNet, count_parameters, forward_flops, timestep_embedding

MICRO = PRESETS["micro"].unet


def _meta_count(config: UNetConfig) -> int:
    with torch.device("meta"):
        return count_parameters(UNet(config))


def test_cifar10_preset_has_the_papers_35_7M_parameters():
    assert _meta_count(PRESETS["cifar10"].unet) == pytest.approx(35.7e6, rel=0.005)


def test_celebahq256_preset_has_the_papers_114M_parameters():
    assert _meta_count(PRESETS["celebahq256"].unet) == pytest.approx(114e6, rel=0.01)


def test_cpu_presets_are_small_and_cheap():
    """small, and tiny's architecture as it stood in docs/performance.md (two blocks per level, attention at 8x8),
    match the sizes measured there (6.47M and 1.62M parameters; 3.0 and 0.19 GFLOP); today's tiny (one block per level,
    attention at 4x4) is 1.11M parameters and 0.124 GFLOP."""
    facts_tiny = dataclasses.replace(PRESETS["tiny"].unet, num_res_blocks=2, attention_resolutions=(8,))
    assert _meta_count(facts_tiny) == pytest.approx(1.62e6, rel=0.01)
    assert _meta_count(PRESETS["small"].unet) == pytest.approx(6.47e6, rel=0.01)
    assert forward_flops(facts_tiny) / 1e9 == pytest.approx(0.19, rel=0.05)
    assert forward_flops(PRESETS["small"].unet) / 1e9 == pytest.approx(3.1, rel=0.05)
    assert _meta_count(PRESETS["tiny"].unet) == 1_113_955
    assert forward_flops(PRESETS["tiny"].unet) / 1e9 == pytest.approx(0.124, rel=0.01)


@pytest.mark.parametrize("channels,size", [(1, (8, 8)), (3, (8, 8)), (4, (8, 8)), (3, (8, 12)), (1, (16, 4))])
def test_output_shape_matches_input(channels, size):
    """eps has x_t's shape for 1, 3 and 4 channels and for non-square images."""
    config = dataclasses.replace(MICRO, in_channels=channels, image_size=size)
    model = UNet(config)
    x = torch.randn(2, channels, *size)
    assert model(x, torch.tensor([0, 99])).shape == x.shape


def test_attention_sits_at_the_configured_resolution():
    """CIFAR-10: attention in the 16x16 level (down and up) and in the middle, nowhere else."""
    with torch.device("meta"):
        model = UNet(PRESETS["cifar10"].unet)
    from engine.unet import AttentionBlock

    attention_levels = [i for i, level in enumerate(model.down) if isinstance(level.attns[0], AttentionBlock)]
    assert attention_levels == [1]
    assert sum(isinstance(m, AttentionBlock) for m in model.modules()) == 2 + 3 + 1


def test_sizes_the_levels_cannot_divide_are_refused():
    with pytest.raises(ValueError, match="not divisible"):
        UNetConfig(image_size=(30, 32))
    with pytest.raises(ValueError, match="1, 3 or 4"):
        UNetConfig(in_channels=2)


def test_every_residual_path_starts_at_zero():
    """The paper's init: zero output layer (and zero residual branches), so an untrained model predicts eps = 0."""
    model = UNet(MICRO)
    out = model(torch.randn(3, 3, 8, 8), torch.tensor([0, 50, 99]))
    assert torch.count_nonzero(out) == 0


def test_gradients_reach_every_parameter():
    """No parameter is unused: with the zero-initialised layers perturbed, every one receives a gradient."""
    torch.manual_seed(0)
    model = UNet(dataclasses.replace(MICRO, dropout=0.1))
    with torch.no_grad():
        for p in model.parameters():
            if torch.count_nonzero(p) == 0:
                p.normal_(0, 0.02)
    x = torch.randn(4, 3, 8, 8)
    model(x, torch.tensor([0, 3, 50, 99])).pow(2).mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or torch.count_nonzero(p.grad) == 0]
    assert missing == []


def test_timestep_embedding_is_sinusoidal():
    t = torch.tensor([0, 1, 999])
    emb = timestep_embedding(t, 8)
    freqs = [math.exp(-math.log(10000) * i / 3) for i in range(4)]
    for row, step in zip(emb.tolist(), t.tolist()):
        expected = [math.sin(step * f) for f in freqs] + [math.cos(step * f) for f in freqs]
        assert row == pytest.approx(expected, abs=1e-4)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = UNet(dataclasses.replace(MICRO, dropout=0.5))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    model.eval()
    assert torch.equal(model(x, t), model(x, t))
    model.train()
    assert not torch.equal(model(x, t), model(x, t))


def test_attention_paths_agree():
    """Sampling (fused SDPA, no grad) and training (plain matmuls) compute the same softmax(q k^T / sqrt(C)) v."""
    torch.manual_seed(0)
    model = UNet(MICRO).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 70])
        sampled = model(x, t)
    trained = model(x, t)
    assert torch.allclose(sampled, trained.detach(), atol=1e-5)


@pytest.mark.parametrize("size", [8, 7])
def test_downsample_pads_like_tensorflow_same(size):
    """The paper's code pads its stride-2 convolution 'SAME': no zeros before an even-sized input, so the kernel's
    top-left tap of output (i, j) reads input (2i, 2j); an odd size gets one zero on each side."""
    down = Downsample(1)
    with torch.no_grad():
        down.conv.weight.zero_()
        down.conv.weight[0, 0, 0, 0] = 1.0
        down.conv.bias.zero_()
    x = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(0))
    y = down(x)
    assert y.shape[-1] == -(-size // 2)  # ceil(size / 2), as TensorFlow's SAME
    if size % 2 == 0:
        torch.testing.assert_close(y, x[..., ::2, ::2], rtol=0, atol=0)
    else:
        assert torch.all(y[..., 0, :] == 0) and torch.all(y[..., :, 0] == 0)  # the leading zero row and column
        torch.testing.assert_close(y[..., 1:, 1:], x[..., 1::2, 1::2], rtol=0, atol=0)
