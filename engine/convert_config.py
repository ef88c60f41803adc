"""diffusers' configs against ours: a `UNet2DModel` config.json and a `DDPMScheduler` scheduler_config.json read into
UNetConfig and DiffusionConfig, and written back. A setting we cannot represent exactly is refused with the field and
the value (ConvertError), never approximated."""

from __future__ import annotations

from typing import Any

from .config import DiffusionConfig, ScheduleKind, UNetConfig, VarianceType


class ConvertError(ValueError):
    """A model we cannot represent exactly; the message names the field and the value."""


# UNet2DModel settings that must have these values (the paper's architecture, and ours).
_UNET_FIXED = {
    "act_fn": "silu",
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "mid_block_scale_factor": 1,
    "downsample_padding": 0,  # pads (0, 1, 0, 1): TensorFlow's SAME, as the paper's code and ours
    "norm_eps": 1e-6,
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
    "time_embedding_dim": None,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "attn_norm_num_groups": None,
    "num_train_timesteps": None,
    "mid_block_type": "UNetMidBlock2D",
}
_UNET_READ = {
    "sample_size",
    "in_channels",
    "out_channels",
    "down_block_types",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "attention_head_dim",
    "norm_num_groups",
    "dropout",
}


def _refuse(field: str, value: Any, why: str) -> ConvertError:
    return ConvertError(f"config.json: {field} = {value!r} cannot be represented exactly ({why})")


def unet_config_from_diffusers(config: dict[str, Any]) -> UNetConfig:
    """A UNet2DModel config.json -> our UNetConfig, or ConvertError naming the first field we cannot represent."""
    for field, value in config.items():
        if field.startswith("_") or field in _UNET_READ:
            continue
        if field not in _UNET_FIXED:
            raise _refuse(field, value, "a setting this converter does not know")
        wanted = _UNET_FIXED[field]
        close = isinstance(wanted, float) and isinstance(value, float) and abs(value - wanted) < 1e-12
        same = value == wanted or close
        if not same and not (field == "mid_block_type" and value is None):
            raise _refuse(field, value, f"the paper's architecture has {wanted!r}")
    if config.get("in_channels", 3) != config.get("out_channels", 3):
        raise _refuse("out_channels", config.get("out_channels"), "epsilon has as many channels as the image")
    channels = list(config.get("block_out_channels", (224, 448, 672, 896)))
    base = channels[0]
    if any(c % base for c in channels):
        raise _refuse("block_out_channels", channels, "every level must be a multiple of the first")
    down = list(config.get("down_block_types", ()))
    up = list(config.get("up_block_types", ()))
    known = {"DownBlock2D": False, "AttnDownBlock2D": True}
    if len(down) != len(channels) or any(kind not in known for kind in down):
        raise _refuse("down_block_types", down, "DownBlock2D or AttnDownBlock2D, one per level")
    attention = [known[kind] for kind in down]
    mirrored = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)]
    if up != mirrored:
        raise _refuse("up_block_types", up, f"the mirror of the down blocks, {mirrored}")
    head = config.get("attention_head_dim")
    if head is not None and any(a and head != c for a, c in zip(attention, channels)):
        raise _refuse("attention_head_dim", head, "the paper's attention has one head as wide as its level")
    size = config.get("sample_size", 32)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return UNetConfig(
        in_channels=int(config.get("in_channels", 3)),
        image_size=(int(height), int(width)),
        base_channels=int(base),
        channel_mults=tuple(c // base for c in channels),
        num_res_blocks=int(config.get("layers_per_block", 2)),
        attention_resolutions=tuple(min(height, width) // 2**i for i, a in enumerate(attention) if a),
        dropout=float(config.get("dropout", 0.0)),
        norm_groups=int(config.get("norm_num_groups", 32)),
    )


def unet_config_to_diffusers(config: UNetConfig) -> dict[str, Any]:
    """Our UNetConfig as a UNet2DModel config.json."""
    height, width = config.image_size
    attention = [min(height, width) // 2**i in config.attention_resolutions for i in range(len(config.channel_mults))]
    return {
        "_class_name": "UNet2DModel",
        "sample_size": height if height == width else [height, width],
        "in_channels": config.in_channels,
        "out_channels": config.in_channels,
        "block_out_channels": [config.base_channels * m for m in config.channel_mults],
        "layers_per_block": config.num_res_blocks,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "attention_head_dim": None,
        "norm_num_groups": config.norm_groups,
        "dropout": config.dropout,
        **{k: v for k, v in _UNET_FIXED.items() if v is not None},
    }


def diffusion_config_from_scheduler(config: dict[str, Any]) -> DiffusionConfig:
    """A DDPMScheduler scheduler_config.json -> our DiffusionConfig (linear betas only, epsilon prediction)."""
    if config.get("beta_schedule", "linear") != "linear":
        raise ConvertError(
            f"scheduler_config.json: beta_schedule = {config['beta_schedule']!r} is not supported "
            "(the paper's linear schedule is)"
        )
    if config.get("trained_betas") is not None:
        raise ConvertError("scheduler_config.json: trained_betas are not supported (a linear schedule is)")
    if config.get("prediction_type", "epsilon") != "epsilon":
        raise ConvertError(
            f"scheduler_config.json: prediction_type = {config['prediction_type']!r} is not "
            "supported (the paper predicts epsilon)"
        )
    if config.get("thresholding", False) or float(config.get("clip_sample_range", 1.0)) != 1.0:
        raise ConvertError("scheduler_config.json: thresholding or a clip_sample_range other than 1 is not supported")
    variances = {"fixed_large": VarianceType.FIXED_LARGE, "fixed_small": VarianceType.FIXED_SMALL}
    variance = config.get("variance_type", "fixed_small")
    if variance not in variances:
        raise ConvertError(
            f"scheduler_config.json: variance_type = {variance!r} is not supported "
            "(fixed_large or fixed_small, the paper's two)"
        )
    return DiffusionConfig(
        num_timesteps=int(config.get("num_train_timesteps", 1000)),
        schedule=ScheduleKind.LINEAR,
        beta_start=float(config.get("beta_start", 1e-4)),
        beta_end=float(config.get("beta_end", 0.02)),
        variance=variances[variance],
        clip_denoised=bool(config.get("clip_sample", True)),
    )


def diffusion_config_to_scheduler(config: DiffusionConfig) -> dict[str, Any]:
    if config.schedule is not ScheduleKind.LINEAR:
        raise ConvertError(f"a {config.schedule.value} noise schedule has no DDPMScheduler equivalent here")
    return {
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": config.num_timesteps,
        "beta_schedule": "linear",
        "beta_start": config.beta_start,
        "beta_end": config.beta_end,
        "variance_type": "fixed_large" if config.variance is VarianceType.FIXED_LARGE else "fixed_small",
        "clip_sample": config.clip_denoised,
        "prediction_type": "epsilon",
    }
