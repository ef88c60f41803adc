"""AppState: the studio's Qt-free application state, which panels read, write and observe.

What one panel produces and another consumes lives here (the loaded model, the dataset preview, the latest
samples, trajectory and interpolation sheet for export), so panels never reach into each other. Observers are
plain callables, called on the GUI thread by whoever sets a value.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FIELDS = {
    "run_dir": None,  # str: the run being trained or explored
    "dataset": None,  # bridge.DataPreview of the loaded dataset
    "dataset_error": None,  # str: why the newest load failed ("SPEC: reason"); None once a load succeeds
    "samples": None,  # Export: the latest sample grid, {"images": [N,H,W,C] uint8, "metadata": {...}}
    "trajectory": None,  # Export: {"t_values": [K], "x_t": [K,N,H,W,C], "pred_x0": [...], "metadata": {...}}
    "interpolation": None,  # Export: {"images": [L,H,W,C], "metadata": {...}}
    "status": "",  # a line for the status bar
}


@dataclass
class AppState:
    values: dict[str, Any] = field(default_factory=lambda: dict(FIELDS))
    _observers: dict[str, list[Callable[[Any], None]]] = field(default_factory=lambda: defaultdict(list))

    def get(self, name: str) -> Any:
        return self.values[name]

    def set(self, name: str, value: Any) -> None:
        if name not in self.values:
            raise KeyError(f"AppState has no field {name!r}")
        self.values[name] = value
        for callback in list(self._observers[name]):
            callback(value)

    def observe(self, name: str, callback: Callable[[Any], None]) -> None:
        if name not in self.values:
            raise KeyError(f"AppState has no field {name!r}")
        self._observers[name].append(callback)
