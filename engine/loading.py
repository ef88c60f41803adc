"""Open a trained model for exploration: from a run directory, a checkpoint file, or the bundled model.

Returns the network (EMA or live weights) in eval mode with its diffusion process and configs, verified against
the checkpoint's own record of its architecture, so a checkpoint from another model is refused with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .compiled import CompiledForward
from .config import DiffusionConfig, Precision, UNetConfig, from_jsonable, to_jsonable
from .device import Denoiser, cuda_graphs_for, inference_network, pick_device, resolve_precision
from .diffusion import GaussianDiffusion
from .runs import Run
from .unet import UNet


def _assets() -> Path:
    """The assets folder: inside the package where the wheel put it (site-packages/engine/assets), else the
    checkout's top-level assets/."""
    package = Path(__file__).resolve().parent
    installed = package / "assets"
    return installed if (installed / "bundled" / "run.json").is_file() else package.parent / "assets"


ASSETS = _assets()
BUNDLED_RUN = ASSETS / "bundled"  # the model a new user explores first (assets/README.md says how it was trained)


@dataclass(frozen=True)
class ModelIdentity:
    """Which model computed a result: it travels with the result from the engine to the screen and into every
    export, so a label is never taken from a remembered copy that has gone stale (a run trains on meanwhile)."""

    run: str  # the run's name (a folder name, never a path)
    step: int  # the training step of the weights
    weights: str  # "ema" or "model" (the raw weights)
    sha256: str | None  # of the checkpoint's weights file; None for the live weights of a run in training

    def label(self) -> str:
        """How the studio names it: "shapes · step 1,250 · EMA" (and "live" for weights not saved yet)."""
        kind = "EMA" if self.weights == "ema" else "raw weights"
        return f"{self.run} · step {self.step:,} · {kind}" + (" · live" if self.sha256 is None else "")


class Weights(Enum):
    EMA = "ema"  # the exponential moving average the paper samples from
    RAW = "model"  # the live training weights


@dataclass
class LoadedModel:
    model: UNet
    diffusion: GaussianDiffusion
    unet_config: UNetConfig
    step: int
    weights: Weights
    source: str  # the checkpoint's path on this machine: for finding it again, never for a picture's provenance
    sha256: str | None  # of the checkpoint's weights file (names the exact weights); None for live training weights
    trained_on: str | None = None  # the data spec of its training; None where not recorded (an imported model)
    trained_with_flips: bool | None = None  # whether its training flipped images at random; None: not recorded
    # Sampling and exploring run the network in bf16 where the device runs it natively (faster: docs/performance.md;
    # eps within the tolerance tests/test_device.py states); the bound is evaluated in fp32 regardless (it is a
    # reported number).
    inference: Precision = Precision.AUTO
    compiled: CompiledForward | None = None  # the studio's background-compiled forward (engine/compiled.py)
    compile_off: str | None = None  # why there is none, where the studio's load job asked (for the status bar)

    _networks: dict = field(default_factory=dict, repr=False)  # by resolved precision: device.inference_network
    _graphs: dict = field(default_factory=dict, repr=False)  # by resolved precision: device.cuda_graphs_for (CUDA)

    def denoiser(self, precision: Precision | None = None) -> Denoiser:
        """The network as the samplers call it, in `precision` (None: the model's inference precision), its
        weights converted once for that precision; the compiled forward where it is ready and serves the call."""
        precision = resolve_precision(precision or self.inference, self.diffusion.device)
        if precision not in self._networks:
            self._networks[precision] = inference_network(self.model, precision)
            self._graphs[precision] = cuda_graphs_for(self._networks[precision], precision)  # None off CUDA
        return Denoiser(
            self.model,
            precision,
            compiled=self.compiled,
            network=self._networks[precision],
            graphs=self._graphs[precision],
        )

    @property
    def identity(self) -> ModelIdentity:
        """Read at the moment of use: a live model's step moves on as its run trains."""
        return ModelIdentity(run_name(self.source), self.step, self.weights.value, self.sha256)


def run_name(source: str | Path) -> str:
    """The run a model came from: a run directory's own name, or the run of a checkpoint file in its checkpoints/."""
    path = Path(source)
    return path.parent.parent.name if path.parent.name == "checkpoints" else path.name


def find_checkpoint(source: str | Path) -> Path:
    """The checkpoint a path names: a .json/.safetensors file itself, or a run's newest complete one."""
    path = Path(source)
    if path.is_file():
        return path
    if (path / "run.json").exists():
        found, problems = ckpt.latest_checkpoint(Run.open(path).checkpoints_dir)
        if found is None:
            why = f": {'; '.join(problems)}" if problems else ""
            raise ckpt.CheckpointError(f"{path} has no usable checkpoint yet{why}")
        return found.path
    if path.is_dir() and ckpt.list_checkpoints(path):
        found, problems = ckpt.latest_checkpoint(path)
        if found is None:
            raise ckpt.CheckpointError(f"no usable checkpoint in {path}: {'; '.join(problems)}")
        return found.path
    raise ckpt.CheckpointError(f"{path} is neither a checkpoint nor a run directory")


def load_model(
    source: str | Path, weights: Weights = Weights.EMA, device: torch.device | str | None = None
) -> LoadedModel:
    device = pick_device(str(device) if device is not None else None)
    found = ckpt.load_checkpoint(find_checkpoint(source), device)
    try:
        unet_config = from_jsonable(UNetConfig, found.metadata["unet"])
        diffusion_config = from_jsonable(DiffusionConfig, found.metadata["diffusion"])
    except (KeyError, TypeError, ValueError) as e:
        raise ckpt.CheckpointError(f"{found.path.name}: its configuration is unreadable ({e})") from None
    model = UNet(unet_config).to(device).eval().requires_grad_(False)
    state = found.group(weights.value)
    ckpt.check_state_dict(model, state, weights.value)
    model.load_state_dict(state)
    return LoadedModel(
        model,
        GaussianDiffusion(diffusion_config, device),
        unet_config,
        found.step,
        weights,
        str(found.path),
        str(found.metadata["sha256"]),  # checked against the file by load_checkpoint
        training_data(found.metadata),
        training_flips(found.metadata),
    )


def training_data(metadata: dict) -> str | None:
    """The data spec a checkpoint's model was trained on: its run's data, or for an imported model what the
    importer was told (`ddpm import --data`), else None: the data an imported run explores with is only a default."""
    value = metadata.get("trained_on") if "imported" in metadata else metadata.get("data")
    return value if isinstance(value, str) else None


def training_flips(metadata: dict) -> bool | None:
    """Whether a checkpoint's model was trained with random horizontal flips; None where not recorded (imported)."""
    train = metadata.get("train")
    value = train.get("hflip") if isinstance(train, dict) and "imported" not in metadata else None
    return value if isinstance(value, bool) else None


def provenance(loaded: LoadedModel) -> dict[str, str]:
    """What every picture made with this model records of it (PNG text chunks): the run's name, the step, the
    weights and their SHA-256, and the configuration. Never a path: a shared picture must not tell where the
    user keeps their files."""
    return {
        **identity_provenance(loaded.identity),
        "precision": resolve_precision(loaded.inference, loaded.diffusion.device).value,  # the network's, sampling
        "config": json.dumps(to_jsonable(loaded.unet_config), sort_keys=True),
        "diffusion": json.dumps(to_jsonable(loaded.diffusion.config), sort_keys=True),
        "hflip": {True: "on", False: "off", None: "not recorded"}[loaded.trained_with_flips],  # of its training
    }


def identity_provenance(identity: ModelIdentity) -> dict[str, str]:
    """The PNG text chunks that name the model of a picture."""
    return {
        "run": identity.run,
        "step": str(identity.step),
        "weights": identity.weights,
        "checkpoint_sha256": identity.sha256 or "none (live training weights, not saved yet)",
    }
