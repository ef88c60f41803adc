"""Every setting of a run, as frozen dataclasses, and the named presets.

One dataclass per component: `UNetConfig` (the network), `DiffusionConfig` (the forward process and the loss),
`TrainConfig` (the optimiser recipe). A `Preset` bundles the three under a name. The GUI and the CLI derive
variants with `dataclasses.replace`, so every difference from a preset is a visible field, never a hidden flag.

The paper presets reproduce Ho, Jain & Abbeel 2020 (Sec. 4 and Appendix B); the CPU presets are ours, sized so that
a 2-core laptop trains something recognisable in minutes. Each field's comment says where its default comes from.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class ScheduleKind(Enum):
    LINEAR = "linear"  # Ho et al. 2020, Sec. 4: beta_1 = 1e-4 to beta_T = 0.02, linear
    COSINE = "cosine"  # Nichol & Dhariwal 2021, Eq. 17 (an option beyond the paper)


class VarianceType(Enum):
    """The reverse-process variance sigma_t^2 of Ho et al. 2020, Sec. 3.2: both gave similar samples."""

    FIXED_LARGE = "beta"  # sigma_t^2 = beta_t: optimal for x_0 ~ N(0, I); the paper's CIFAR-10 choice
    FIXED_SMALL = "beta_tilde"  # sigma_t^2 = beta~_t (Eq. 7): optimal for x_0 deterministic


class LossType(Enum):
    SIMPLE = "simple"  # L_simple, Ho et al. 2020, Eq. 14: the paper's choice
    VLB = "vlb"  # the true variational bound L_{t-1} (Eq. 5), in bits/dim: an option, trains worse (Table 2)
    MIN_SNR = "min_snr"  # ours, an option: L_simple weighted by min(SNR_t, gamma) / SNR_t (Hang et al. 2023)


class LRSchedule(Enum):
    CONSTANT = "constant"  # Ho et al. 2020, Appendix B: linear warmup, then constant
    COSINE = "cosine"  # ours, an option: after warmup, a half cosine from the peak down to 0 at total_steps


class Precision(Enum):
    FP32 = "fp32"
    BF16 = "bf16"  # torch.autocast to bfloat16; fp32 weights and optimiser state
    AUTO = "auto"  # bf16 where the device runs it natively (CUDA with bf16, CPUs with AVX-512 BF16/AMX), else fp32


@dataclass(frozen=True)
class UNetConfig:
    """The paper's U-Net (Ho et al. 2020, Appendix B; PixelCNN++ backbone with Wide-ResNet blocks)."""

    in_channels: int = 3  # 1 (grayscale), 3 (RGB) or 4 (RGBA); the output has the same count (epsilon)
    image_size: tuple[int, int] = (32, 32)  # (height, width); both divisible by 2**(len(channel_mults) - 1)
    base_channels: int = 128  # "ch" of the paper's code
    channel_mults: tuple[int, ...] = (1, 2, 2, 2)  # one per resolution level; CIFAR-10: 32, 16, 8, 4
    num_res_blocks: int = 2  # residual blocks per level on the way down (one more on the way up)
    attention_resolutions: tuple[int, ...] = (
        16,
    )  # self-attention where the feature map's shorter side is one of these
    dropout: float = 0.1  # CIFAR-10 in the paper; 0 for the 256x256 models
    norm_groups: int = 32  # GroupNorm groups (Wu & He 2018), as in the paper's code

    def __post_init__(self) -> None:
        height, width = self.image_size
        factor = 2 ** (len(self.channel_mults) - 1)
        if self.in_channels not in (1, 3, 4):
            raise ValueError(f"in_channels must be 1, 3 or 4, not {self.in_channels}")
        if height % factor or width % factor:
            raise ValueError(
                f"image size {height}x{width} is not divisible by {factor} "
                f"({len(self.channel_mults)} resolution levels halve it {len(self.channel_mults) - 1} times)"
            )
        for mult in self.channel_mults:
            if (self.base_channels * mult) % self.norm_groups:
                raise ValueError(
                    f"{self.base_channels * mult} channels do not split into {self.norm_groups} GroupNorm groups"
                )


@dataclass(frozen=True)
class DiffusionConfig:
    num_timesteps: int = 1000  # T, Ho et al. 2020, Sec. 4
    schedule: ScheduleKind = ScheduleKind.LINEAR
    beta_start: float = 1e-4  # beta_1 (linear schedule only)
    beta_end: float = 0.02  # beta_T (linear schedule only)
    variance: VarianceType = VarianceType.FIXED_LARGE
    loss: LossType = LossType.SIMPLE
    snr_gamma: float = 5.0  # the cap gamma of LossType.MIN_SNR (Hang et al. 2023 use 5); unused otherwise
    clip_denoised: bool = True  # clip x^0 to [-1, 1] when sampling, as the paper's code does


@dataclass(frozen=True)
class TrainConfig:
    """The optimiser recipe of Ho et al. 2020, Appendix B, unless a preset says otherwise."""

    batch_size: int = 128
    learning_rate: float = 2e-4  # Adam; 2e-5 for the 256x256 models
    warmup_steps: int = 5000  # linear learning-rate warmup
    lr_schedule: LRSchedule = LRSchedule.CONSTANT
    grad_clip: float = 1.0  # global gradient-norm clipping
    ema_decay: float = 0.9999
    ema_warmup: bool = False  # ours: decay min(ema_decay, (1 + n) / (10 + n)) so short runs are not all noise
    hflip: bool = True  # random horizontal flips (CIFAR-10)
    precision: Precision = Precision.FP32
    total_steps: int = 800_000  # CIFAR-10 in the paper
    seed: int = 0
    # Bookkeeping (ours): how often to log, sample and checkpoint, and what the preview grids cost.
    log_every: int = 50
    sample_every: int = 5000
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    sample_count: int = 16
    sample_steps: int = 100  # strided (DDIM eta = 1) steps for the periodic previews; T gives the exact chain
    nonfinite_patience: int = 3  # consecutive non-finite steps before rolling back to the last good checkpoint


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    unet: UNetConfig
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "cifar10",
            "The paper's CIFAR-10 model (35.7M parameters), 32x32 RGB.",
            UNetConfig(),
        ),
        Preset(
            "celebahq256",
            "The paper's CelebA-HQ/LSUN 256x256 model (114M parameters): lr 2e-5, batch 64, no dropout.",
            UNetConfig(image_size=(256, 256), channel_mults=(1, 1, 2, 2, 4, 4), dropout=0.0),
            train=TrainConfig(batch_size=64, learning_rate=2e-5, hflip=True, total_steps=500_000),
        ),
        Preset(
            "small",
            "Ours, for a CPU: the paper's architecture at width 64 on 32x32 images (6.5M parameters).",
            UNetConfig(base_channels=64, channel_mults=(1, 2, 2), attention_resolutions=(16,), dropout=0.1),
            train=TrainConfig(
                batch_size=32,
                learning_rate=2e-4,
                warmup_steps=200,
                ema_decay=0.999,
                ema_warmup=True,
                precision=Precision.AUTO,
                total_steps=20_000,
                log_every=10,
                sample_every=500,
                checkpoint_every=500,
            ),
        ),
        Preset(
            "tiny",
            "Ours, the default, for a 2-core laptop: width 32 on 16x16 images, one residual block per level "
            "(1.1M parameters), batch 128 at a high learning rate: recognisable shapes in about 10 minutes.",
            UNetConfig(
                image_size=(16, 16),
                base_channels=32,
                channel_mults=(1, 2, 2),
                num_res_blocks=1,
                attention_resolutions=(4,),
                dropout=0.0,
            ),
            # Sized by measurement (docs/performance.md): per image this learns a little slower than two blocks per
            # level with attention at 8x8, but it trains more images per second, and the larger batch with lr 8e-3
            # and a cosine decay learns faster per image than batch 32 at lr 1e-3.
            train=TrainConfig(
                batch_size=128,
                learning_rate=8e-3,
                warmup_steps=100,
                lr_schedule=LRSchedule.COSINE,
                ema_decay=0.999,
                ema_warmup=True,
                precision=Precision.AUTO,
                total_steps=2_000,
                log_every=10,
                sample_every=250,
                checkpoint_every=250,
            ),
        ),
        Preset(
            "micro",
            "Ours, for tests and smoke runs: width 16 on 8x8 images, 100 diffusion steps.",
            UNetConfig(
                image_size=(8, 8),
                base_channels=16,
                channel_mults=(1, 2),
                num_res_blocks=1,
                attention_resolutions=(4,),
                dropout=0.0,
                norm_groups=8,
            ),
            diffusion=DiffusionConfig(num_timesteps=100, beta_end=0.2),
            train=TrainConfig(
                batch_size=16,
                learning_rate=1e-3,
                warmup_steps=10,
                ema_decay=0.99,
                ema_warmup=True,
                total_steps=200,
                log_every=5,
                sample_every=100,
                checkpoint_every=100,
                sample_count=4,
                sample_steps=10,
            ),
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


# ---- JSON round trip (checkpoints and run.json store configs as JSON, never pickles) ----


def to_jsonable(config: Any) -> Any:
    """A dataclass (nested, with enums and tuples) as plain JSON values."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Enum):
        return config.value
    if isinstance(config, (tuple, list)):
        return [to_jsonable(v) for v in config]
    return config


def from_jsonable(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from `to_jsonable` output; unknown keys are refused, missing ones take defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    return cls(**{name: _coerce(hints[name], value) for name, value in data.items()})


def _coerce(hint: Any, value: Any) -> Any:
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(value)
    if dataclasses.is_dataclass(hint):
        return from_jsonable(hint, value)
    if typing.get_origin(hint) is tuple:
        return tuple(value)
    return value


def preset_to_json(preset: Preset) -> str:
    return json.dumps(to_jsonable(preset), indent=2)
