"""Checkpoints: tensors in safetensors, everything else in JSON, written atomically; nothing is ever unpickled.

A checkpoint is two files, `step_XXXXXXX.safetensors` (model, EMA and optimiser tensors) and `step_XXXXXXX.json`
(configs, step, optimiser hyper-parameters, data spec and position, the tensor file's SHA-256). It holds no random
number generator state: every step's draws are seeded from (seed, step), so a resumed run needs none (train.py).
The tensor file is written first and the JSON last, each through a temporary file, fsync and rename: the JSON is the
mark of a complete checkpoint, so a process killed at any instant leaves the previous checkpoint loadable. A
checkpoint whose files are missing, truncated, altered or of another format is refused with a message that says which.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from .atomic import atomic_write_bytes
from .untrusted import MAX_WEIGHTS_BYTES, UntrustedFileError, read_bounded, read_record, sibling

FORMAT = "ddpm-studio-checkpoint"
FORMAT_VERSION = 2  # 2: U-Net downsampling pads like TensorFlow's SAME (see unet.Downsample); 1 padded every side
_WHY_NOT = {1: "its U-Net was trained with the old downsampling padding and would draw noise here; train it again"}
_NAME = re.compile(r"^step_(\d{7,})\.json$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path  # the .json file
    step: int
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any]

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under `prefix.` with the prefix removed (e.g. "model" -> a state dict)."""
        head = prefix + "."
        return {k[len(head) :]: v for k, v in self.tensors.items() if k.startswith(head)}


def checkpoint_paths(folder: Path, step: int) -> tuple[Path, Path]:
    stem = f"step_{step:07d}"
    return folder / f"{stem}.safetensors", folder / f"{stem}.json"


def save_checkpoint(
    folder: str | Path, step: int, tensors: dict[str, torch.Tensor], metadata: dict[str, Any], keep: int = 3
) -> Path:
    """Write a checkpoint atomically, then delete all but the newest `keep` complete ones. Returns the .json path."""
    folder = Path(folder)
    weights_path, meta_path = checkpoint_paths(folder, step)
    blob = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    atomic_write_bytes(weights_path, blob)
    record = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "step": step,
        "weights": weights_path.name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        **metadata,
    }
    text = json.dumps(record, indent=1, sort_keys=True).encode("utf-8")
    atomic_write_bytes(meta_path, text)
    if keep > 0:
        _prune(folder, keep)
    return meta_path


def _prune(folder: Path, keep: int) -> None:
    for meta in list_checkpoints(folder)[:-keep]:
        meta.unlink(missing_ok=True)  # the metadata first: a half-pruned checkpoint reads as incomplete
        (folder / meta.name.replace(".json", ".safetensors")).unlink(missing_ok=True)


def list_checkpoints(folder: str | Path) -> list[Path]:
    """The .json files of a checkpoint folder, oldest first (complete or not: see `load_checkpoint`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _NAME.match(p.name)), key=lambda p: int(_NAME.match(p.name).group(1)))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """A checkpoint's JSON, checked for format and version (cheap: no tensors are read)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    try:
        record = read_record(path, FORMAT, "checkpoint")
    except FileNotFoundError:
        raise CheckpointError(f"{path.name}: no such checkpoint (its metadata file is missing)") from None
    except UntrustedFileError as e:
        raise CheckpointError(f"{path.name} {e}") from None  # "step_X.json is not valid JSON (...)"
    if record.get("version") != FORMAT_VERSION:
        why = _WHY_NOT.get(record.get("version"), f"this version reads {FORMAT_VERSION}")
        raise CheckpointError(
            f"{path.name}: checkpoint format version {record.get('version')} is not supported ({why})"
        )
    for key in ("step", "weights", "sha256"):
        if key not in record:
            raise CheckpointError(f"{path.name}: the metadata lacks {key!r}")
    step, digest = record["step"], record["sha256"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{path.name}: the metadata's step {step!r} is not a count of steps")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise CheckpointError(f"{path.name}: the metadata's sha256 {digest!r} is not a SHA-256 digest")
    own = path.with_suffix(".safetensors").name
    if record["weights"] != own:  # a checkpoint names only its own file, in its own folder
        raise CheckpointError(f"{path.name}: the metadata names weights {record['weights']!r}, not its own {own!r}")
    return record


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Load and verify one checkpoint (the .json or the .safetensors path)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    record = read_metadata(path)
    try:
        weights_path = sibling(path.parent, record["weights"])
        blob = read_bounded(weights_path, MAX_WEIGHTS_BYTES)
    except FileNotFoundError:
        raise CheckpointError(f"{path.name}: its weights file {record['weights']} is missing") from None
    except UntrustedFileError as e:
        raise CheckpointError(f"{path.name}: its weights file {e}") from None
    if hashlib.sha256(blob).hexdigest() != record["sha256"]:
        raise CheckpointError(
            f"{weights_path.name}: the weights do not match their checksum (truncated or altered; {len(blob):,} bytes)"
        )
    try:
        # the bytes just verified, not a second read of the file (which could have changed in between)
        tensors = {k: v.to(device) for k, v in load(blob).items()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights_path.name}: not a readable safetensors file ({e})") from None
    return Checkpoint(path, int(record["step"]), tensors, record)


def latest_checkpoint(folder: str | Path, device: torch.device | str = "cpu") -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint that loads and verifies, and the reasons any newer ones were passed over."""
    problems = []
    for meta in reversed(list_checkpoints(folder)):
        try:
            return load_checkpoint(meta, device), problems
        except CheckpointError as e:
            problems.append(str(e))
    return None, problems


def check_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Refuse, with the first differences named, a state dict that does not fit `module` exactly."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if mismatched:
            parts.append(f"wrong shape: {'; '.join(mismatched[:3])}")
        raise CheckpointError(f"the {what} weights do not fit this model's architecture: {', '.join(parts)}")
