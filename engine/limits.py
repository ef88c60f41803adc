"""The valid range of every number a person gives the engine: one source for the command line's checks and the
studio's forms. A value out of range is refused up front with one line that names the setting, the value and the
range (`--t must be in 1..1000 (the model's T), got 5000`), before any work is done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class LimitError(ValueError):
    """A value outside its range; the message is the one line to show."""


@dataclass(frozen=True)
class Limit:
    """A closed range [low, high]; `high=None` means it depends on the model (given at check time)."""

    low: float
    high: float | None
    integer: bool = True
    why: str = ""  # what bounds it, said after the range: "(the model's T)"

    def check(self, name: str, value: float | None, high: float | None = None, why: str = "") -> float | None:
        """`value` if it is inside; None passes (the default). Raises LimitError naming `name` otherwise."""
        if value is None:
            return None
        top = self.high if high is None else high
        assert top is not None, f"{name}: this limit needs the model's bound"
        inside = (not self.integer or float(value).is_integer()) and math.isfinite(value) and self.low <= value <= top
        if not inside:
            reason = why or self.why
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            raise LimitError(f"{name} must be in {self.describe(top)}{f' ({reason})' if reason else ''}, got {shown}")
        return value

    def describe(self, high: float | None = None) -> str:
        top = self.high if high is None else high
        fmt = (lambda v: f"{int(v)}") if self.integer else (lambda v: f"{v:.10g}")
        return f"{fmt(self.low)}..{fmt(top)}"


# ---- exploring a model ----
IMAGES = Limit(1, 1024)  # samples, chains, held states: one batch on the device
FORKS = Limit(1, 256)  # completions of one held x_t
TIMESTEP = Limit(1, None, why="the model's T")  # a step t of the reverse chain: fork, interpolation's mixing step
REVERSE_STEPS = Limit(1, None, why="the model's T")  # strided chains: how many network evaluations
TRAJECTORY_IMAGES = Limit(1, 64)  # chains whose every shown frame is kept in memory
FRAMES = Limit(2, 101)  # trajectory frames shown from T to 0 (and at most T + 1)
LAMBDAS = Limit(2, 65)  # interpolation: values of lambda from 0 to 1
ETA = Limit(0.0, 1.0, integer=False)  # 0: deterministic DDIM; 1: DDPM-like
SCALE = Limit(1, 64)  # nearest-neighbour zoom of a saved picture
GRID_COLUMNS = Limit(1, 1024)
SEED = Limit(0, 2**63 - 1)
EVAL_IMAGES = Limit(1, 1_000_000)
QUALITY_IMAGES = Limit(2, 100_000)  # FID/KID: samples drawn, and reference images read
FORWARD_BATCH = Limit(1, 4096)  # `presets --time`
IMAGE_SIDE = Limit(8, 1024)  # an imported model's image size

# ---- training ----
TRAIN_STEPS = Limit(1, 1_000_000_000)
BATCH_SIZE = Limit(1, 65_536)
LEARNING_RATE = Limit(1e-12, 1.0, integer=False)
EMA_DECAY = Limit(0.0, 0.999_999_9, integer=False)  # 1 would never move the average
