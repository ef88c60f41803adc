"""Progressive refinement (docs/architecture.md): how a view that needs a reverse chain from step t stays live.

Each request yields, in order, each replacing the last on screen:
1. DIRECT: the prediction x^0(x_t) from one network evaluation (Ho et al. 2020, Eq. 15);
2. SETTLED: a strided chain of 5-100 steps, sized from the measured cost of one evaluation to take ~0.8 s;
3. EXACT: the ancestral chain of all t steps (Alg. 2).
Every stage carries the model that computed it and the plan of the stage that follows (its name and length), so a
view never guesses. Exact results are cached by the caller's key, so returning to a value seen before is instant.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .images import to_uint8
from .loading import LoadedModel, ModelIdentity
from .progress import Stage, drain
from .sampling import SampleStep
from .session import EngineSession

# The strided chain shown while the exact one runs: at most this many steps (more steps share more of the exact
# chain's noise draws and land closer to it; docs/performance.md has the distances) ...
SETTLED_STEPS = 100
SETTLED_MIN_STEPS = 5  # ... and at least this many,
SETTLED_BUDGET_S = 0.8  # sized so that it takes about this long (docs/architecture.md: settled within about a second)


@dataclass(frozen=True)
class Refined:
    """One stage of a progressive view."""

    stage: Stage
    images: np.ndarray  # [N, H, W, C] uint8
    done: int  # reverse steps finished in this stage
    total: int
    model: ModelIdentity | None = None  # which model computed it
    next_stage: Stage | None = None  # the stage that follows (None: this is the last) ...
    next_total: int = 0  # ... and how many reverse steps it runs


def settled_steps_for(seconds_per_step: float) -> int:
    """How many strided steps the settled stage takes: as many as fit SETTLED_BUDGET_S at the measured cost of one
    network evaluation, between SETTLED_MIN_STEPS and SETTLED_STEPS (a GPU, or a small model, gets all 100)."""
    fits = int(SETTLED_BUDGET_S / max(seconds_per_step, 1e-6))
    return max(SETTLED_MIN_STEPS, min(SETTLED_STEPS, fits))


Chain = Callable[[torch.Tensor, int, torch.Generator, int | None], Iterator[SampleStep]]


def refine(
    session: EngineSession,
    loaded: LoadedModel,
    x_t: torch.Tensor,
    t: int,
    seed: int,
    chain: Chain,
    cache_key: tuple,
    exact: bool = True,
) -> Generator[Any, None, Refined]:
    """Yield the DIRECT and SETTLED stages of `x_t` [N, C, H, W] at step t, return the EXACT one (or, with
    `exact=False`, the SETTLED one). `chain(x_t, t, generator, num_steps)` runs the view's reverse chain: every
    stage draws its noise from `seed`, so the stages converge on the same picture."""
    cached = session.cache.get(cache_key)
    if cached is not None:
        return cached
    model = loaded.identity
    if t == 0:
        done = Refined(Stage.EXACT, to_uint8(x_t), 0, 0, model)
        session.cache.put(cache_key, done)
        return done
    d = loaded.diffusion
    index = d.step_indices(t, x_t.shape[0])
    started = time.perf_counter()
    pred = d.predict_x0_from_eps(x_t, index, loaded.denoiser()(x_t, index)).clamp(-1, 1)  # Eq. 15
    # timed before the yield (other jobs may run); at most half the exact chain's steps, or it previews nothing
    seconds = session.evaluation_time(x_t.shape[0], time.perf_counter() - started)
    settled_steps = min(settled_steps_for(seconds), t // 2)
    settles = settled_steps >= SETTLED_MIN_STEPS
    if settles:
        yield Refined(Stage.DIRECT, to_uint8(pred), 1, 1, model, Stage.SETTLED, settled_steps)
        g = torch.Generator().manual_seed(seed)
        last = yield from drain(chain(x_t, t, g, settled_steps), Stage.SETTLED, settled_steps)
        settled = Refined(Stage.SETTLED, to_uint8(last.x_t), settled_steps, settled_steps, model)
        if not exact:
            return settled
        yield Refined(Stage.SETTLED, settled.images, settled_steps, settled_steps, model, Stage.EXACT, t)
    else:
        yield Refined(Stage.DIRECT, to_uint8(pred), 1, 1, model, Stage.EXACT, t)
    last = yield from drain(chain(x_t, t, torch.Generator().manual_seed(seed), None), Stage.EXACT, t)
    result = Refined(Stage.EXACT, to_uint8(last.x_t), t, t, model)
    session.cache.put(cache_key, result)
    return result
