"""The paper's noise-prediction network eps_theta(x_t, t) (Ho et al. 2020, Appendix B).

A U-Net on the PixelCNN++ backbone: Wide-ResNet blocks with GroupNorm and swish, the sinusoidal timestep embedding
passed through an MLP into every block, self-attention at 16x16 (and in the middle), dropout, strided-convolution
downsampling and nearest-neighbour upsampling. It follows the paper's own code (models/unet.py) block for block, so
the CIFAR-10 configuration counts its 35.7M parameters; initialisation is its "fan_avg" uniform with the last
convolution of every residual path set to zero, so each block starts as the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import UNetConfig


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of the step index (Vaswani et al. 2017, as in the paper's code): [N] -> [N, dim]."""
    assert t.ndim == 1 and dim % 2 == 0
    half = dim // 2
    frequencies = torch.exp(-math.log(10000.0) / (half - 1) * torch.arange(half, dtype=torch.float32, device=t.device))
    angles = t.float()[:, None] * frequencies[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)  # tf.contrib group_norm's epsilon


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """norm -> swish -> conv, + t-embedding, norm -> swish -> dropout -> conv(zero-init), + shortcut."""

    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_ch, out_ch)
        self.norm2 = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()  # "nin_shortcut"

    def forward(self, x: Tensor, temb_act: Tensor) -> Tensor:
        """x: [N, in_ch, H, W]; temb_act: swish(t-embedding), [N, temb_ch]."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(temb_act)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over all H*W positions, with a zero-initialised output projection."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)  # the paper's separate q, k, v "nin" layers, fused
        self.proj_out = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [N, HW, C]
        qkv = F.linear(tokens, self.qkv.weight.flatten(1), self.qkv.bias)  # the 1x1 conv as one matmul: [N, HW, 3C]
        q, k, v = qkv.reshape(n, h * w, 3, c).unbind(2)  # each [N, HW, C], unit stride in C
        if torch.is_grad_enabled():  # training: plain matmuls beat the fused kernel's backward on CPU at these sizes
            out = torch.softmax(q @ k.transpose(1, 2) * c**-0.5, dim=-1) @ v  # softmax(q k^T / sqrt(C)) v
        else:  # sampling: unit stride lets SDPA take its fused CPU kernel (~2x faster in bf16)
            out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        out = F.linear(out, self.proj_out.weight.flatten(1), self.proj_out.bias)  # [N, HW, C]
        return x + out.transpose(1, 2).reshape(n, c, h, w)


class Downsample(nn.Module):
    """A 3x3 stride-2 convolution with TensorFlow's 'SAME' padding, as in the paper's code: on an even size that is
    one row and column of zeros at the bottom and right only, so output (i, j) is centred on input (2i+1, 2j+1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = max(3 - 2 + (-height) % 2, 0), max(3 - 2 + (-width) % 2, 0)  # TF: k - s (+1 for an odd size)
        return self.conv(F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """The residual blocks of one resolution, each optionally followed by self-attention."""

    def __init__(self, channels_in: list[int], out_ch: int, temb_ch: int, attention: bool, dropout: float, groups: int):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c, out_ch, temb_ch, dropout, groups) for c in channels_in)
        self.attns = nn.ModuleList(AttentionBlock(out_ch, groups) if attention else nn.Identity() for _ in channels_in)


class UNet(nn.Module):
    """eps_theta(x_t, t): x_t [N, C, H, W] in [-1, 1], t [N] step indices in [0, T) -> eps [N, C, H, W]."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        ch, groups, dropout = config.base_channels, config.norm_groups, config.dropout
        temb_ch = 4 * ch
        self.temb = nn.Sequential(nn.Linear(ch, temb_ch), nn.SiLU(), nn.Linear(temb_ch, temb_ch))
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)

        height, width = config.image_size
        num_levels = len(config.channel_mults)
        attention = [min(height, width) // 2**i in config.attention_resolutions for i in range(num_levels)]

        # Down: every block's output is kept for a skip connection, as is every downsample's.
        skip_channels = [ch]
        current = ch
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, mult in enumerate(config.channel_mults):
            out_ch = ch * mult
            ins = [current] + [out_ch] * (config.num_res_blocks - 1)
            self.down.append(Level(ins, out_ch, temb_ch, attention[i], dropout, groups))
            current = out_ch
            skip_channels += [out_ch] * config.num_res_blocks
            if i != num_levels - 1:
                self.downsample.append(Downsample(current))
                skip_channels.append(current)

        self.mid_block1 = ResBlock(current, current, temb_ch, dropout, groups)
        self.mid_attn = AttentionBlock(current, groups)
        self.mid_block2 = ResBlock(current, current, temb_ch, dropout, groups)

        # Up: num_res_blocks + 1 blocks per level, each consuming one skip connection.
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, mult in reversed(list(enumerate(config.channel_mults))):
            out_ch = ch * mult
            ins = []
            for _ in range(config.num_res_blocks + 1):
                ins.append(current + skip_channels.pop())
                current = out_ch
            self.up.append(Level(ins, out_ch, temb_ch, attention[i], dropout, groups))
            if i != 0:
                self.upsample.append(Upsample(current))
        assert not skip_channels

        self.norm_out = _norm(current, groups)
        self.conv_out = nn.Conv2d(current, config.in_channels, 3, padding=1)
        self._init_weights()

    def _init_weights(self) -> None:
        # The paper's code: variance scaling "fan_avg" uniform (Glorot) for every conv and dense layer, zero biases,
        # and zero for the last layer of each residual path and for the output (init_scale=0).
        zero_init = {id(m) for block in self.modules() if isinstance(block, ResBlock) for m in [block.conv2]}
        zero_init |= {id(block.proj_out) for block in self.modules() if isinstance(block, AttentionBlock)}
        zero_init.add(id(self.conv_out))
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if id(module) in zero_init:
                    nn.init.zeros_(module.weight)
                else:
                    nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        assert x.shape[1:] == (self.config.in_channels, *self.config.image_size), (
            f"expected [N, {self.config.in_channels}, {self.config.image_size[0]}, {self.config.image_size[1]}], "
            f"got {list(x.shape)}"
        )
        temb = self.temb(timestep_embedding(t, self.config.base_channels))
        temb_act = F.silu(temb)  # every block applies swish before its projection; do it once

        h = self.conv_in(x)
        skips = [h]
        for i, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(h, temb_act))
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)

        h = self.mid_block2(self.mid_attn(self.mid_block1(h, temb_act)), temb_act)

        for i, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), temb_act))
            if i < len(self.upsample):
                h = self.upsample[i](h)
        assert not skips
        return self.conv_out(F.silu(self.norm_out(h)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(config: UNetConfig) -> int:
    """FLOPs (2 per multiply-add) of one image's forward pass, counted by torch's FlopCounterMode on the meta device."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = UNet(config)
        x = torch.zeros(1, config.in_channels, *config.image_size)
        t = torch.zeros(1, dtype=torch.long)
    # The counter has no formula for the fused CPU attention kernel: count the math path (q k^T and a v).
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(x, t)
    return counter.get_total_flops()
