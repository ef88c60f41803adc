"""Models in diffusers' format, in and out: `UNet2DModel` + `DDPMScheduler` folders, among them the paper's own
models as Google published them (google/ddpm-cifar10-32, -celebahq-256, -church-256, -bedroom-256, -cat-256 and
their ddpm-ema-* variants). Our U-Net is the same architecture as a `UNet2DModel` with the paper's settings, so the
weights map tensor for tensor (renamed; q, k and v fused into one 1x1 convolution; Linear <-> 1x1 conv). A config
we cannot represent exactly is refused with the field and the value, never approximated. Nothing is unpickled: a
`.bin` is read with `torch.load(weights_only=True)` or refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import DiffusionConfig, ScheduleKind, UNetConfig, VarianceType
from .untrusted import MAX_JSON_BYTES, MAX_WEIGHTS_BYTES, UntrustedFileError, read_bounded, read_json

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
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


class ConvertError(ValueError):
    """A model we cannot represent exactly; the message names the field and the value."""


# ---- configs ----

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


# ---- weights ----


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


# ---- folders ----


def import_run(src: str | Path, root: str | Path, data: str | None = None, image_size: int | None = None):
    """Make a run directory from a diffusers folder: run.json (the configs, `imported` = where the weights came
    from, and the data spec to explore with) and one checkpoint whose model and EMA weights are the imported ones.
    Such a run explores like any other; it cannot be trained further here (the trainer refuses it). Written into
    a temporary folder beside `root` and renamed when complete: a failed import leaves nothing behind."""
    import shutil

    from . import checkpoint as ckpt
    from .config import TrainConfig
    from .runs import Run, RunError, RunSpec

    root = Path(root)
    if root.exists():
        raise RunError(f"{root} exists already: import into a new folder")
    imported = read_model(src, image_size)
    h, w = imported.unet.image_size
    size = str(h) if h == w else f"{h}x{w}"
    channels = "" if imported.unet.in_channels == 3 else f"&channels={imported.unet.in_channels}"
    trained_on, data = data, data or f"builtin:shapes?size={size}{channels}"
    spec = RunSpec(imported.unet, imported.diffusion, TrainConfig(), data, "imported")
    partial = root.with_name(f".{root.name}.importing")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        run = Run.create(partial, spec, extra={"imported": imported.source, "trained_on": trained_on})
        tensors = {f"model.{k}": v for k, v in imported.state.items()}
        tensors |= {f"ema.{k}": v.clone() for k, v in imported.state.items()}  # the same weights, stored twice
        metadata = {"run": root.name, **spec.to_json(), "imported": imported.source, "trained_on": trained_on}
        ckpt.save_checkpoint(run.checkpoints_dir, 0, tensors, metadata)
        partial.rename(root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Run.open(root)


def is_importable(path: str | Path) -> bool:
    """What the studio imports when it is opened: a diffusers folder or an original-name checkpoint file."""
    return is_diffusers_folder(path) or is_original_checkpoint(path)


def is_diffusers_folder(path: str | Path) -> bool:
    """A UNet2DModel folder, or a pipeline folder with unet/ (what `read_diffusers` takes)."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    for config in (folder / "config.json", folder / "unet" / "config.json"):
        try:
            if config.is_file() and read_json(config, MAX_JSON_BYTES).get("_class_name") == "UNet2DModel":
                return True
        except (UntrustedFileError, AttributeError):
            return False
    return False


def imports_folder() -> Path:
    """Where the studio keeps the runs it imported: $XDG_DATA_HOME/ddpm-studio/imports (~/.local/share/...)."""
    from .runs import user_data_folder

    return user_data_folder() / "imports"


def imported_run_for(src: str | Path) -> Path:
    """The run an opened diffusers folder explores: made once in `imports_folder()` (named after the folder and the
    weights' SHA-256), reused when the same weights are opened again."""
    if is_original_checkpoint(src):
        weights, name = Path(src), Path(src).stem
    else:
        folder, _ = _find(Path(src))
        weights = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
        if weights is None:
            raise ConvertError(f"{folder}: no {' or '.join(WEIGHT_FILES)}")
        name = (folder.parent.name if folder.name == "unet" else folder.name) or "model"
    digest = hashlib.sha256(read_bounded(weights, MAX_WEIGHTS_BYTES)).hexdigest()
    root = imports_folder() / f"{name}-{digest[:12]}"
    if not (root / "run.json").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        import_run(src, root)
    return root


@dataclass(frozen=True)
class Imported:
    unet: UNetConfig
    diffusion: DiffusionConfig
    state: dict[str, torch.Tensor]  # ours
    source: dict[str, str]  # what the run records of its origin: format, weight file name and SHA-256 (no path)


def _find(src: Path) -> tuple[Path, Path | None]:
    """(the folder with config.json and the weights, scheduler_config.json or None) for a UNet folder, a pipeline
    folder (unet/ and scheduler/), or a weights file inside either."""
    folder = src.parent if src.is_file() else src
    if (folder / "unet" / "config.json").is_file():
        folder = folder / "unet"
    if not (folder / "config.json").is_file():
        raise ConvertError(f"{src}: no config.json of a UNet2DModel here (nor in unet/)")
    for candidate in (folder / "scheduler_config.json", folder.parent / "scheduler" / "scheduler_config.json"):
        if candidate.is_file():
            return folder, candidate
    return folder, None


ORIGINAL_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")


def is_original_checkpoint(path: str | Path) -> bool:
    """A weights file with no diffusers config.json beside it (the paper's models as pesser converted them)."""
    path = Path(path)
    return path.is_file() and path.suffix in ORIGINAL_SUFFIXES and not (path.parent / "config.json").is_file()


def read_original(src: str | Path, image_size: int | None = None) -> Imported:
    """A checkpoint with the paper's original names -> configs (the U-Net read off the tensors, the paper's diffusion
    settings: T = 1000, linear betas 1e-4 to 0.02, sigma^2 = beta, x^0 clipped) and our state dict."""
    path = Path(src)
    try:
        blob = read_bounded(path, MAX_WEIGHTS_BYTES)
    except UntrustedFileError as e:
        raise ConvertError(f"{path.name} {e}") from None
    state = _load_weights(path, blob)
    unet = config_from_original(state, image_size)
    source = {"format": "original (the paper's names)", "file": path.name, "sha256": hashlib.sha256(blob).hexdigest()}
    return Imported(unet, DiffusionConfig(), state_from_original(state, unet), source)


def read_model(src: str | Path, image_size: int | None = None) -> Imported:
    """Either kind: a diffusers folder, or an original-name checkpoint file."""
    return read_original(src, image_size) if is_original_checkpoint(src) else read_diffusers(src)


def read_diffusers(src: str | Path) -> Imported:
    """A diffusers UNet2DModel folder (or DDPMPipeline folder) -> configs and our state dict."""
    folder, scheduler = _find(Path(src))
    try:
        config = read_json(folder / "config.json", MAX_JSON_BYTES)
        scheduler_config = read_json(scheduler, MAX_JSON_BYTES) if scheduler is not None else {}
    except UntrustedFileError as e:
        raise ConvertError(f"{folder}: a config file {e}") from None
    if not isinstance(config, dict) or config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ConvertError(f"{folder / 'config.json'}: not a UNet2DModel config")
    unet = unet_config_from_diffusers(config)
    diffusion = diffusion_config_from_scheduler(scheduler_config if isinstance(scheduler_config, dict) else {})
    weights = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        raise ConvertError(f"{folder}: no {' or '.join(WEIGHT_FILES)}")
    try:
        blob = read_bounded(weights, MAX_WEIGHTS_BYTES)
    except UntrustedFileError as e:
        raise ConvertError(f"{weights.name} {e}") from None
    state = _load_weights(weights, blob)
    source = {"format": "diffusers", "file": weights.name, "sha256": hashlib.sha256(blob).hexdigest()}
    if scheduler is None:
        source["scheduler"] = "none found: DDPMScheduler's defaults"
    return Imported(unet, diffusion, state_from_diffusers(state, unet), source)


def _load_weights(path: Path, blob: bytes) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            return load(blob)
        except (SafetensorError, ValueError) as e:
            raise ConvertError(f"{path.name}: not a readable safetensors file ({e})") from None
    import io

    try:  # never a full unpickle: tensors and plain containers only
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever the restricted unpickler refuses
        raise ConvertError(f"{path.name}: refused, not a plain state dict of tensors ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConvertError(f"{path.name}: not a state dict of tensors")
    return state


def write_diffusers(
    out: str | Path, unet: UNetConfig, diffusion: DiffusionConfig, state: dict[str, torch.Tensor], card: str
) -> Path:
    """A DDPMPipeline folder: unet/ (config.json, diffusion_pytorch_model.safetensors), scheduler/, model_index.json
    and README.md (the model card)."""
    from safetensors.torch import save_file

    out = Path(out)
    (out / "unet").mkdir(parents=True, exist_ok=True)
    (out / "scheduler").mkdir(exist_ok=True)
    theirs = state_to_diffusers(state, unet)
    save_file({k: v.detach().contiguous().cpu() for k, v in theirs.items()}, str(out / "unet" / WEIGHT_FILES[0]))
    (out / "unet" / "config.json").write_text(json.dumps(unet_config_to_diffusers(unet), indent=2))
    (out / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(diffusion_config_to_scheduler(diffusion), indent=2)
    )
    index = {
        "_class_name": "DDPMPipeline",
        "unet": ["diffusers", "UNet2DModel"],
        "scheduler": ["diffusers", "DDPMScheduler"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    (out / "README.md").write_text(card)
    return out
