"""Weights between diffusers' names and ours, tensor for tensor: renamed, q, k and v fused into one 1x1 convolution
(diffusers keeps three Linear layers, or 1x1 convolutions in its legacy naming), and the paper's original names
(pesser/pytorch_diffusion's checkpoints), from which a U-Net config can also be read off the shapes."""

from __future__ import annotations

import torch

from .config import UNetConfig
from .convert_config import ConvertError

RESBLOCK = {
    "norm1": "norm1",
    "conv1": "conv1",
    "temb_proj": "time_emb_proj",
    "norm2": "norm2",
    "conv2": "conv2",
    "shortcut": "conv_shortcut",
}  # ours -> diffusers
ATTENTION_NAMES = {  # diffusers has used two namings for the attention layers
    "current": {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "out": "to_out.0"},
    "legacy": {"norm": "group_norm", "q": "query", "k": "key", "v": "value", "out": "proj_attn"},
}


def _pairs(config: UNetConfig, style: str = "diffusers") -> list[tuple[str, str, str]]:
    """(kind, our prefix, their prefix) for every layer: kind is 'plain', 'res' or 'attn'; style 'diffusers'
    (UNet2DModel) or 'original' (the paper's TF names as pesser/pytorch_diffusion converted them)."""
    height, width = config.image_size
    levels = len(config.channel_mults)
    attention = [min(height, width) // 2**i in config.attention_resolutions for i in range(levels)]
    original = style == "original"
    temb = ("temb.dense.0", "temb.dense.1") if original else ("time_embedding.linear_1", "time_embedding.linear_2")
    pairs = [
        ("plain", "temb.0", temb[0]),
        ("plain", "temb.2", temb[1]),
        ("plain", "conv_in", "conv_in"),
        ("plain", "norm_out", "norm_out" if original else "conv_norm_out"),
        ("plain", "conv_out", "conv_out"),
    ]
    down, resnets, attns = ("down", "block", "attn") if original else ("down_blocks", "resnets", "attentions")
    for i in range(levels):
        for j in range(config.num_res_blocks):
            pairs.append(("res", f"down.{i}.blocks.{j}", f"{down}.{i}.{resnets}.{j}"))
            if attention[i]:
                pairs.append(("attn", f"down.{i}.attns.{j}", f"{down}.{i}.{attns}.{j}"))
        if i < levels - 1:
            sampler = f"{down}.{i}.downsample.conv" if original else f"{down}.{i}.downsamplers.0.conv"
            pairs.append(("plain", f"downsample.{i}.conv", sampler))
    mid = (
        ("mid.block_1", "mid.attn_1", "mid.block_2")
        if original
        else ("mid_block.resnets.0", "mid_block.attentions.0", "mid_block.resnets.1")
    )
    pairs += [("res", "mid_block1", mid[0]), ("attn", "mid_attn", mid[1]), ("res", "mid_block2", mid[2])]
    up = "up" if original else "up_blocks"
    for k in range(levels):  # ours and diffusers list the up levels from the lowest resolution; the original by level
        theirs = levels - 1 - k if original else k
        for j in range(config.num_res_blocks + 1):
            pairs.append(("res", f"up.{k}.blocks.{j}", f"{up}.{theirs}.{resnets}.{j}"))
            if attention[levels - 1 - k]:
                pairs.append(("attn", f"up.{k}.attns.{j}", f"{up}.{theirs}.{attns}.{j}"))
        if k < levels - 1:
            sampler = f"{up}.{theirs}.upsample.conv" if original else f"{up}.{theirs}.upsamplers.0.conv"
            pairs.append(("plain", f"upsample.{k}.conv", sampler))
    return pairs


ORIGINAL_NAMES = {"norm": "norm", "q": "q", "k": "k", "v": "v", "out": "proj_out"}
ORIGINAL_RESBLOCK = {**RESBLOCK, "temb_proj": "temb_proj", "shortcut": "nin_shortcut"}


def state_from_diffusers(state: dict[str, torch.Tensor], config: UNetConfig) -> dict[str, torch.Tensor]:
    """A UNet2DModel state dict (either attention naming) -> ours for `config`; ConvertError names a missing tensor."""
    naming = ATTENTION_NAMES["current" if any(".to_q." in k for k in state) else "legacy"]
    return _state_from(state, config, "diffusers", naming, RESBLOCK)


def state_from_original(state: dict[str, torch.Tensor], config: UNetConfig) -> dict[str, torch.Tensor]:
    """A checkpoint with the paper's original names (pesser/pytorch_diffusion's conversion) -> ours."""
    return _state_from(state, config, "original", ORIGINAL_NAMES, ORIGINAL_RESBLOCK)


def _state_from(state, config, style, naming, resblock) -> dict[str, torch.Tensor]:
    ours: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in state:
            raise ConvertError(f"the weights lack {name!r} (not a model of this config?)")
        used.add(name)
        return state[name]

    for kind, mine, theirs in _pairs(config, style):
        for field in ("weight", "bias"):
            if kind == "plain":
                ours[f"{mine}.{field}"] = take(f"{theirs}.{field}")
            elif kind == "res":
                for our_name, their_name in resblock.items():
                    if our_name == "shortcut" and f"{theirs}.{their_name}.{field}" not in state:
                        continue  # same channel count in and out: an identity shortcut
                    ours[f"{mine}.{our_name}.{field}"] = take(f"{theirs}.{their_name}.{field}")
            else:
                ours[f"{mine}.norm.{field}"] = take(f"{theirs}.{naming['norm']}.{field}")
                qkv = torch.cat([take(f"{theirs}.{naming[p]}.{field}") for p in "qkv"])
                out = take(f"{theirs}.{naming['out']}.{field}")
                if field == "weight":  # Linear [C_out, C_in] (diffusers) or 1x1 conv -> 1x1 conv [C_out, C_in, 1, 1]
                    qkv, out = qkv.reshape(*qkv.shape[:2], 1, 1), out.reshape(*out.shape[:2], 1, 1)
                ours[f"{mine}.qkv.{field}"], ours[f"{mine}.proj_out.{field}"] = qkv, out
    unused = sorted(set(state) - used)
    if unused:
        raise ConvertError(f"the weights hold {len(unused)} tensors this config does not use (e.g. {unused[0]!r})")
    return ours


def state_to_original(state: dict[str, torch.Tensor], config: UNetConfig) -> dict[str, torch.Tensor]:
    """Ours -> the paper's original names (for tests, and for anyone who wants them)."""
    return _state_to(state, config, "original", ORIGINAL_NAMES, ORIGINAL_RESBLOCK, linear_attention=False)


def config_from_original(state: dict[str, torch.Tensor], image_size: int | None = None) -> UNetConfig:
    """The U-Net an original-name checkpoint holds, read off its tensors' shapes. The image size is not in the
    weights: the paper's models attend at 16x16, so it follows from the level with attention unless given."""
    try:
        ch, in_channels = state["conv_in.weight"].shape[:2]
        levels = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("down."))
        blocks = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("down.0.block."))
        mults = tuple(state[f"down.{i}.block.0.conv1.weight"].shape[0] // ch for i in range(levels))
        attention = [any(k.startswith(f"down.{i}.attn.") for k in state) for i in range(levels)]
    except (KeyError, ValueError, IndexError) as e:
        raise ConvertError(f"not a checkpoint with the paper's original names ({e})") from None
    if image_size is None:
        if not any(attention):
            raise ConvertError("the image size is not in the weights and no level has attention: give it")
        image_size = 16 * 2 ** attention.index(True)
    return UNetConfig(
        in_channels=int(in_channels),
        image_size=(image_size, image_size),
        base_channels=int(ch),
        channel_mults=mults,
        num_res_blocks=blocks,
        attention_resolutions=tuple(image_size // 2**i for i, a in enumerate(attention) if a),
        dropout=0.0,
        norm_groups=32,
    )


def state_to_diffusers(state: dict[str, torch.Tensor], config: UNetConfig) -> dict[str, torch.Tensor]:
    """Our state dict -> a UNet2DModel's (current attention naming)."""
    return _state_to(state, config, "diffusers", ATTENTION_NAMES["current"], RESBLOCK, linear_attention=True)


def _state_to(state, config, style, naming, resblock, linear_attention: bool) -> dict[str, torch.Tensor]:
    theirs: dict[str, torch.Tensor] = {}
    for kind, mine, their in _pairs(config, style):
        for field in ("weight", "bias"):
            if kind == "plain":
                theirs[f"{their}.{field}"] = state[f"{mine}.{field}"]
            elif kind == "res":
                for our_name, their_name in resblock.items():
                    if f"{mine}.{our_name}.{field}" in state:
                        theirs[f"{their}.{their_name}.{field}"] = state[f"{mine}.{our_name}.{field}"]
            else:
                theirs[f"{their}.{naming['norm']}.{field}"] = state[f"{mine}.norm.{field}"]
                qkv, out = state[f"{mine}.qkv.{field}"], state[f"{mine}.proj_out.{field}"]
                if field == "weight" and linear_attention:  # 1x1 conv [C_out, C_in, 1, 1] -> Linear [C_out, C_in]
                    qkv, out = qkv.flatten(1), out.flatten(1)
                for part, tensor in zip("qkv", qkv.chunk(3)):
                    theirs[f"{their}.{naming[part]}.{field}"] = tensor.contiguous()
                theirs[f"{their}.{naming['out']}.{field}"] = out.contiguous()
    return theirs
