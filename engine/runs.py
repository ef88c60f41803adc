"""The run directory, shared by the studio, the command line and multi-GPU jobs (docs/architecture.md).

    runs/NAME/run.json                     every config, the data spec, versions, created_at
    runs/NAME/metrics.jsonl                one JSON object per logged step
    runs/NAME/checkpoints/step_XXXXXXX.*   safetensors + JSON (see checkpoint.py); the newest complete one wins
    runs/NAME/samples/step_XXXXXXX.png     periodic sample grids

Everything is readable while a trainer writes it: run.json is written once, atomically; metrics lines are appended
whole and flushed, and a reader ignores a last line that is not finished yet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_write_bytes
from .config import DiffusionConfig, Preset, TrainConfig, UNetConfig, from_jsonable, to_jsonable
from .untrusted import MAX_JSON_BYTES, UntrustedFileError, parse_json, read_record

RUN_FORMAT = "ddpm-studio-run"
RUN_VERSION = 1


class RunError(ValueError):
    """A folder that is not a usable run; the message says why."""


def user_data_folder() -> Path:
    """The per-user folder the studio keeps its runs and imports in: $XDG_DATA_HOME/ddpm-studio
    (~/.local/share/ddpm-studio by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ddpm-studio"


def default_runs_folder() -> Path:
    """Where the studio puts new runs unless the user chose another folder: user_data_folder()/runs."""
    return user_data_folder() / "runs"


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ddpm-studio")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def software_versions() -> dict[str, str]:
    import numpy
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "ddpm_studio": package_version(),
    }


@dataclass(frozen=True)
class RunSpec:
    """What a run trains: the three configs, the data it learns from, and the preset it started as."""

    unet: UNetConfig
    diffusion: DiffusionConfig
    train: TrainConfig
    data: str  # a data spec string (engine.data.parse_data_spec), e.g. "builtin:shapes"
    preset: str = ""

    @classmethod
    def from_preset(cls, preset: Preset, data: str) -> RunSpec:
        return cls(preset.unet, preset.diffusion, preset.train, data, preset.name)

    @classmethod
    def for_data(
        cls,
        preset: Preset,
        data: str,
        channels: int,
        image_size: tuple[int, int],
        train: dict[str, Any] | None = None,
        diffusion: dict[str, Any] | None = None,
    ) -> RunSpec:
        """A new run's configs: the preset, with the data's channels and size and the user's changes (fields of
        TrainConfig and DiffusionConfig). Random horizontal flips, unless the changes say, follow the data
        (engine.data.flips_by_default: off for a folder of the user's, on for CIFAR-10 and the built-in shapes).
        The one place the command line and the studio build a new run from; a size the U-Net's levels cannot halve
        evenly raises ValueError."""
        from .data import flips_for

        train = {"hflip": flips_for(data), **(train or {})} if data else dict(train or {})
        unet = dataclasses.replace(preset.unet, in_channels=channels, image_size=tuple(image_size))
        return cls(
            unet,
            dataclasses.replace(preset.diffusion, **(diffusion or {})),
            dataclasses.replace(preset.train, **train),
            data,
            preset.name,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "data": self.data,
            "unet": to_jsonable(self.unet),
            "diffusion": to_jsonable(self.diffusion),
            "train": to_jsonable(self.train),
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> RunSpec:
        try:
            return cls(
                from_jsonable(UNetConfig, record["unet"]),
                from_jsonable(DiffusionConfig, record["diffusion"]),
                from_jsonable(TrainConfig, record["train"]),
                str(record["data"]),
                str(record.get("preset", "")),
            )
        except KeyError as e:
            raise RunError(f"the run's configuration lacks {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise RunError(f"the run's configuration is invalid: {e}") from None


def read_run_record(root: str | Path) -> dict[str, Any]:
    """A run directory's run.json as written (bounded, format and version checked); RunError says what is wrong."""
    path = Path(root) / "run.json"
    try:
        record = read_record(path, RUN_FORMAT, "run")
    except FileNotFoundError:
        raise RunError(f"{root} is not a run directory (no run.json)") from None
    except UntrustedFileError as e:
        raise RunError(f"{path} {e}") from None  # ".../run.json nests deeper than 32 levels"
    if record.get("version") != RUN_VERSION:
        raise RunError(f"{path}: run format version {record.get('version')} is not supported")
    return record


def read_metric_lines(path: Path, offset: int = 0, limit: int = MAX_JSON_BYTES) -> tuple[list[dict[str, Any]], int]:
    """The whole lines of a metrics.jsonl from byte `offset` (at most `limit` bytes), as records with an integer
    step, and the offset after them. A last line without its newline is still being written and waits; a damaged
    line is skipped, as is one longer than `limit`; a FIFO or a device is not read at all."""
    try:
        if not os.path.isfile(path):
            return [], offset
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        return [], offset
    records, consumed = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            if consumed == 0 and len(data) == limit:
                consumed = len(line)  # one line longer than the limit: damaged, skip it
            break  # a line still being written
        consumed += len(line)
        try:
            record = parse_json(line)
        except UntrustedFileError:
            continue  # a damaged line (e.g. a crash mid-write in an older run) is skipped, not fatal
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records, offset + consumed


_STEP_FILE = re.compile(r"^step_(\d+)\.(json|png|safetensors)$")


def step_files(folder: str | Path, suffix: str) -> list[tuple[int, Path]]:
    """[(step, path)] of a run folder's step_XXXXXXX.<suffix> files (checkpoints/, samples/), oldest first."""
    folder = Path(folder)
    found = ((m, p) for p in folder.glob(f"step_*.{suffix}") if (m := _STEP_FILE.match(p.name)))
    return sorted((int(m.group(1)), p) for m, p in found)


class MetricsFollower:
    """Follows the growing metrics.jsonl of a run another process trains: each `read()` returns the records
    appended since the last one, and whether the file was rewritten (a resumed run drops the steps it replays), in
    which case the records start over from the beginning."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        try:
            restarted = os.stat(self.path).st_size < self.offset
        except FileNotFoundError:
            return [], False
        if restarted:
            self.offset = 0
        records, self.offset = read_metric_lines(self.path, self.offset)
        return [r for r in records if "loss" in r], restarted


class Run:
    """One run directory. `Run.create` makes a new one; `Run.open` reads an existing one."""

    def __init__(self, root: Path, spec: RunSpec, record: dict[str, Any]):
        self.root = root
        self.spec = spec
        self.record = record

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @classmethod
    def create(cls, root: str | Path, spec: RunSpec, extra: dict[str, Any] | None = None) -> Run:
        root = Path(root)
        if (root / "run.json").exists():
            raise RunError(f"{root} already holds a run; open it to resume, or choose another folder")
        record = {
            "format": RUN_FORMAT,
            "version": RUN_VERSION,
            "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "versions": software_versions(),
            **spec.to_json(),
            **(extra or {}),  # e.g. `imported`: where the weights of an imported model came from
        }
        atomic_write_bytes(root / "run.json", json.dumps(record, indent=2).encode("utf-8"))
        (root / "checkpoints").mkdir(exist_ok=True)
        (root / "samples").mkdir(exist_ok=True)
        return cls(root, spec, record)

    @classmethod
    def open(cls, root: str | Path) -> Run:
        record = read_run_record(root)
        return cls(Path(root), RunSpec.from_json(record), record)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the run for writing: a second writer of the same run (another process, or a second trainer here)
        is refused with RunError instead of interleaving checkpoints. An advisory lock on `run.lock`, released when
        the block ends or the process dies."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            yield
            return
        with open(self.root / "run.lock", "a+") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunError(f"{self.root} is being trained by another process; stop that one first") from None
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def record_plan_change(self, step: int, old_total: int, new_total: int) -> None:
        """Rewrite run.json (atomically) with the new total and a line of history saying when and why it changed."""
        record = dict(self.record)
        record["train"] = {**record["train"], "total_steps": new_total}
        history = record.get("history")
        record["history"] = [
            *(history if isinstance(history, list) else []),
            {
                "at_step": step,
                "total_steps": [old_total, new_total],
                "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "note": "planned length changed; a cosine learning-rate decay is re-planned to end at the new total",
            },
        ]
        atomic_write_bytes(self.root / "run.json", json.dumps(record, indent=2).encode("utf-8"))
        self.record = record

    def append_metrics(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()

    def read_metrics(self, offset: int = 0, limit: int = MAX_JSON_BYTES) -> tuple[list[dict[str, Any]], int]:
        """Records appended since byte `offset` (at most `limit` bytes of them), and the offset to pass next time:
        call again until it stops moving to read a long file; a live run is followed the same way."""
        return read_metric_lines(self.metrics_path, offset, limit)

    def read_all_metrics(self) -> list[dict[str, Any]]:
        """Every record of the metrics file, read in bounded slices."""
        records, offset = [], 0
        while True:
            more, after = self.read_metrics(offset)
            records += more
            if after == offset:
                return records
            offset = after

    def truncate_metrics_after(self, step: int) -> None:
        """Drop records logged after `step` (a resume from an older checkpoint replays those steps)."""
        records = self.read_all_metrics()
        kept = [r for r in records if r["step"] <= step]
        if len(kept) != len(records):
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
            atomic_write_bytes(self.metrics_path, text.encode("utf-8"))
