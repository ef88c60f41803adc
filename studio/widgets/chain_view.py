"""Pieces of the Trajectory panel's view: the x_t / x̂0 headings, grids that fill their space, the fork controls
(Fig. 7) and the words for a fork's stages."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QFormLayout, QGroupBox, QLabel, QPushButton, QSpinBox

from studio.bridge import limits, spin_range
from studio.widgets.image_grid import ImageGrid

# Rich text: upright DejaVu Sans (the usual Linux fallback) drops the combining hat of x̂; the italic keeps it.
X_T, X0_HAT = "<i>x</i><sub>t</sub>", "<i>x̂</i><sub>0</sub>"
STAGES = {
    "direct": f"direct {X0_HAT} (one network evaluation, Eq. 15; the same for every fork)",
    "settled": "quick preview (a short strided chain)",
    "exact": "exact (the full ancestral chain, Alg. 2)",
}


def stage_text(value) -> str:
    """A fork's stage and what the engine plans next (the exact chain draws its own completions, not refinements
    of the quick preview's)."""
    shown = STAGES.get(value.stage, str(value.stage))
    if value.stage == "settled":
        shown = f"quick preview (a strided chain of {value.total} steps)"
    if value.next_stage == "settled":
        return f"{shown} · next: a quick preview ({value.next_total} steps), then the exact chain"
    if value.next_stage == "exact":
        return f"{shown} · the exact chain of {value.next_total} steps follows: new completions, not refinements"
    return shown


def fill_grid(grid: ImageGrid, images: np.ndarray | None, captions: list[str], spacing: int = 4) -> None:
    """Show [N, H, W, C] images in the column count that draws them largest in the grid's size (ties: fewer gaps)."""
    if images is None:
        grid.set_images(None)
        return
    n, h, w = images.shape[:3]
    caption = grid.fontMetrics().height() + 2

    def zoom(c: int) -> tuple[int, int]:
        r = math.ceil(n / c)
        fit = min((grid.width() - spacing * (c + 1)) // (c * w), (grid.height() - (spacing + caption) * r) // (r * h))
        return fit, n - c * r

    grid.set_images(images, captions, max(range(1, n + 1), key=zoom))


class ForkControls(QGroupBox):
    """Fork (Fig. 7): how many completions, their seed, and the button; `on_fork` is called when it is pressed."""

    def __init__(self, on_fork, keys: str, max_seed: int):
        super().__init__("Fork (Fig. 7)")
        low, high = spin_range(limits.FORKS)
        tip = "How many completions x_0 ~ p(x_0 | x_t) to draw from the held x_t"
        self.forks_spin = QSpinBox(minimum=low, maximum=high, value=8, toolTip=tip)
        self.fork_seed_spin = QSpinBox(maximum=max_seed, toolTip="The seed of the completions' reverse-chain noise")
        self.fork_button = QPushButton("Fork here", clicked=on_fork)
        hint = QLabel(
            f"Click an image in {X_T} or {X0_HAT} to pick it, then fork ({keys}, or double-click it). "
            "The completions share what the chain has decided by step t: a large t keeps only the coarse "
            "layout. Any step already computed can be forked while the chain runs.",
            wordWrap=True,
        )
        hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)  # secondary text
        form = QFormLayout(self)
        form.addRow("Forks", self.forks_spin)
        form.addRow("Fork seed", self.fork_seed_spin)
        form.addRow(self.fork_button)
        form.addRow(hint)
