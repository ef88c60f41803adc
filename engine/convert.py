"""Models in diffusers' format, in and out: `UNet2DModel` + `DDPMScheduler` folders, among them the paper's own
models as Google published them (google/ddpm-cifar10-32, -celebahq-256, -church-256, -bedroom-256, -cat-256 and
their ddpm-ema-* variants). Our U-Net is the same architecture as a `UNet2DModel` with the paper's settings, so the
weights map tensor for tensor (renamed; q, k and v fused into one 1x1 convolution; Linear <-> 1x1 conv). A config
we cannot represent exactly is refused with the field and the value, never approximated. Nothing is unpickled: a
`.bin` is read with `torch.load(weights_only=True)` or refused. This file holds the folders (import a run, read and
write a model); convert_config.py the configs, convert_weights.py the tensors' names.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import DiffusionConfig, UNetConfig
from .convert_config import (
    ConvertError,
    diffusion_config_from_scheduler,
    diffusion_config_to_scheduler,
    unet_config_from_diffusers,
    unet_config_to_diffusers,
)
from .convert_weights import (
    config_from_original,
    state_from_diffusers,
    state_from_original,
    state_to_diffusers,
    state_to_original,
)
from .untrusted import MAX_JSON_BYTES, MAX_WEIGHTS_BYTES, UntrustedFileError, read_bounded, read_json

__all__ = [  # the configs and the weights' names live in convert_config.py and convert_weights.py
    "ConvertError",
    "diffusion_config_from_scheduler",
    "diffusion_config_to_scheduler",
    "unet_config_from_diffusers",
    "unet_config_to_diffusers",
    "state_to_diffusers",
    "state_to_original",
    "import_run",
    "read_diffusers",
    "read_model",
    "write_diffusers",
]

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


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
