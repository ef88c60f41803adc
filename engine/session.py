"""What the engine thread keeps between jobs, typed: the explored model, the loaded dataset, the trainer, the stored
trajectories and the cache of finished results. Only the engine thread touches it (engine/worker.py)."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import torch

CACHE_ENTRIES = 64


class ResultCache:
    """The newest CACHE_ENTRIES results by key (least recently used out first)."""

    def __init__(self, entries: int = CACHE_ENTRIES):
        self.entries = entries
        self._items: collections.OrderedDict[tuple, Any] = collections.OrderedDict()

    def get(self, key: tuple) -> Any:
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: tuple, value: Any) -> None:
        self._items[key] = value
        while len(self._items) > self.entries:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class StoredChain:
    """A trajectory's float states, index T - t, growing while its chain runs (forks may hold any of them)."""

    seed: int
    states: list[torch.Tensor]  # [N, C, H, W] each


@dataclass
class EngineSession:
    model: Any = None  # loading.LoadedModel: the model the studio explores (chosen by the user, never by training)
    dataset: Any = None  # data.ImageDataset: the loaded training images
    trainer: Any = None  # train.Trainer: the run being trained, kept between pauses
    trajectories: dict[int, StoredChain] = field(default_factory=dict)  # by job id; one at a time
    cache: ResultCache = field(default_factory=ResultCache)
    # The fastest direct evaluation seen per batch size of the explored model: the first call of a new batch size
    # pays one-time costs (oneDNN sets up its primitives), which must not shorten every settled chain after it.
    evaluation_s: dict[int, float] = field(default_factory=dict)

    def evaluation_time(self, batch: int, measured: float) -> float:
        """`measured` seconds of one evaluation of `batch` images, or the fastest seen before for that batch."""
        best = min(measured, self.evaluation_s.get(batch, measured))
        self.evaluation_s[batch] = best
        return best

    def require_model(self):
        if self.model is None:
            raise RuntimeError("no model is loaded yet: open a run or train one")
        return self.model

    def explore(self, loaded) -> None:
        """A new explored model: results of the old one are gone."""
        self.model = loaded
        self.cache.clear()
        self.trajectories.clear()
        self.evaluation_s.clear()
