"""What training says and measures: the events `Trainer.run` yields (the CLI prints them, the studio turns them into
signals, the tests assert on them), one step's statistics summed over every process, and the clock that counts the
loop's own time."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TrainStarted:
    step: int
    total_steps: int
    resumed_from: int | None  # the checkpoint's step when resuming
    device: str
    precision: str
    parameters: int
    dataset_size: int
    warnings: tuple[str, ...] = ()
    processes: int = 1  # distributed training: the world size, each process taking batch_size / processes


@dataclass(frozen=True)
class StepLogged:
    step: int
    loss: float  # mean L_simple over the steps since the last log
    loss_by_quartile: tuple[float | None, ...]  # the same by t-quartile (t in [1, T/4], ...); None where no sample fell
    lr: float
    grad_norm: float  # before clipping
    images_per_s: float
    eta_s: float
    elapsed_s: float


@dataclass(frozen=True)
class StepDone:
    """Every optimiser step (cheap: a progress counter, and the point where other work may run)."""

    step: int
    loss: float


@dataclass(frozen=True)
class StepSkipped:
    step: int
    reason: str


@dataclass(frozen=True)
class RolledBack:
    from_step: int
    to_step: int
    reason: str


@dataclass(frozen=True)
class SamplesReady:
    step: int
    ema: np.ndarray  # [N, H, W, C] uint8
    raw: np.ndarray  # [N, H, W, C] uint8, the live weights with the same noise
    path: str


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    path: str


@dataclass(frozen=True)
class TrainFinished:
    step: int
    reason: str  # "done" or "stopped"


TrainEvent = (
    TrainStarted | StepDone | StepLogged | StepSkipped | RolledBack | SamplesReady | CheckpointSaved | TrainFinished
)


class BusyClock:
    """Seconds spent working: runs between `resume` and `pause` only."""

    def __init__(self):
        self._total, self._since = 0.0, None

    def resume(self) -> None:
        self._since = time.perf_counter()

    def pause(self) -> None:
        if self._since is not None:
            self._total += time.perf_counter() - self._since
            self._since = None

    def elapsed(self) -> float:
        running = time.perf_counter() - self._since if self._since is not None else 0.0
        return self._total + running


@dataclass(frozen=True)
class StepStats:
    """One optimiser step, summed over every process: the global batch's losses by t-quartile, and the verdict."""

    loss_sum_by_quartile: torch.Tensor  # [4] float64: sum of L_simple over the examples with t in [q T/4, (q+1) T/4)
    count_by_quartile: torch.Tensor  # [4] float64: how many examples
    grad_norm: float  # before clipping; the same on every process (DDP averaged the gradients)
    problem: str | None  # "non-finite loss" / "non-finite gradient" (the step was not applied), else None

    @property
    def count(self) -> int:
        return int(self.count_by_quartile.sum())

    @property
    def loss(self) -> float:
        return float(self.loss_sum_by_quartile.sum() / max(1.0, float(self.count_by_quartile.sum())))
