"""Pieces of the Trajectory panel's view: the x_t / x̂0 headings, grids that fill their space, the fork controls
(Fig. 7) and the words for a fork's stages."""

from __future__ import annotations

import math
import random

import numpy as np
from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from studio.bridge import limits, spin_range
from studio.widgets.image_grid import ImageGrid
from studio.widgets.plots import duration

# Rich text: upright DejaVu Sans (the usual Linux fallback) drops the combining hat of x̂; the italic keeps it.
X_T, X0_HAT = "<i>x</i><sub>t</sub>", "<i>x̂</i><sub>0</sub>"
STAGES = {
    "direct": f"direct {X0_HAT} (one network evaluation, Eq. 15; the same for every fork)",
    "settled": "quick preview (a short strided chain)",
    "exact": "exact (the full ancestral chain, Alg. 2)",
}


def stage_badge(stage: str, steps: int) -> str:
    """The note on a progressive view's picture saying which stage it shows: a preview that the exact chain may
    still change (a shape can turn into another), or the exact result."""
    if stage == "direct":
        return "preview: direct x̂0 (1 evaluation)"
    if stage == "settled":
        return f"preview: {steps}-step chain · the exact chain may differ"
    return f"exact: {steps}-step chain" if stage == "exact" else str(stage)


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


def grid_box(resize_watcher: QObject, title: str, tooltip: str) -> tuple[ImageGrid, QGroupBox, QLabel]:
    """A frame with a rich-text heading (QGroupBox titles are plain text) over an ImageGrid, whose resizes
    `resize_watcher` hears (it re-lays the grid's columns)."""
    grid, box, heading = ImageGrid(), QGroupBox(toolTip=tooltip), QLabel(title, textFormat=Qt.TextFormat.RichText)
    grid.installEventFilter(resize_watcher)
    heading.setStyleSheet("font-size: 11pt;")
    layout = QVBoxLayout(box)
    layout.addWidget(heading)
    layout.addWidget(grid, 1)
    return grid, box, heading


class ChainControls(QGroupBox):
    """Chain (Fig. 6): how many images, the seed (or a random one), Generate and Stop."""

    def __init__(self, on_generate, on_stop, max_seed: int):
        super().__init__("Chain (Fig. 6)")
        low, high = spin_range(limits.TRAJECTORY_IMAGES)
        self.n_spin = QSpinBox(minimum=low, maximum=high, value=8, toolTip="How many samples run through the chain")
        self.seed_spin = QSpinBox(
            maximum=max_seed, toolTip="The seed of x_T and of every step's noise: the same seed replays the same chain"
        )
        self.random_seed_button = QPushButton(
            "⚄ Random",
            toolTip="Pick a random seed (then Generate)",
            clicked=lambda: self.seed_spin.setValue(random.randrange(max_seed)),
        )
        self.generate_button = QPushButton(
            "Generate",
            clicked=on_generate,
            toolTip="Run the exact reverse chain (Alg. 2) from x_T and keep every step (Ctrl+G)",
        )
        self.stop_button = QPushButton(
            "Stop",
            enabled=False,
            clicked=on_stop,
            toolTip="Stop the chain; the frames received so far stay scrubbable",
        )
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed_spin, 1)
        seed_row.addWidget(self.random_seed_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button, 1)
        buttons.addWidget(self.stop_button)
        form = QFormLayout(self)
        form.addRow("Images N", self.n_spin)
        form.addRow("Seed", seed_row)
        form.addRow(buttons)


def frame_boxes(resize_watcher: QObject) -> tuple[tuple[ImageGrid, QGroupBox], tuple[ImageGrid, QGroupBox]]:
    """The x_t grid and the x̂0 grid of the scrubbed step, each in its headed frame."""
    xt_grid, xt_box, _ = grid_box(
        resize_watcher, X_T, f"{X_T}: the chain's state at step t, from pure noise (t = T) to the sample (t = 0)"
    )
    pred_grid, pred_box, _ = grid_box(
        resize_watcher,
        f"{X0_HAT} (prediction, Eq. 15)",
        f"{X0_HAT} = ({X_T} − √(1 − ᾱ<sub>t</sub>) ε<sub>θ</sub>({X_T}, t)) / "
        f"√ᾱ<sub>t</sub>: the network's one-shot guess of the final image from {X_T} (Eq. 15)",
    )
    xt_grid.set_placeholder("Press Generate (Ctrl+G) to run a chain; every step is kept so you can scrub it")
    pred_grid.set_placeholder("The network's prediction of the final image from x_t, at every step")
    return (xt_grid, xt_box), (pred_grid, pred_box)


def fork_results_box(resize_watcher: QObject) -> tuple[ImageGrid, QGroupBox, QLabel, QLabel]:
    """Forks from x_t (Fig. 7): the grid of the held x_t and its completions, its heading, and the stage line."""
    grid, box, title = grid_box(
        resize_watcher,
        f"Forks from {X_T}",
        f"The held {X_T} (first, framed) and its completions x<sub>0</sub> ~ p(x<sub>0</sub> | {X_T})",
    )
    grid.set_placeholder("Pick an image and a step t, then Fork here: several completions of the same x_t (Fig. 7)")
    stage_label = QLabel("", wordWrap=True, textFormat=Qt.TextFormat.RichText)
    box.layout().addWidget(stage_label)
    return grid, box, title, stage_label


def fork_blocker(
    chain_started: bool, chain_running: bool, t: int | None, front: int, selected: int | None
) -> str | None:
    """Why the picked image cannot be forked at step t (the scrubbed step) now, or None: the chain has reached step
    `front` so far, `selected` is the picked image's index."""
    if not chain_started:
        return (
            "The chain has not computed its first step yet: forking holds an x_t the chain has reached."
            if chain_running
            else "Generate a chain first (Ctrl+G)."
        )
    if t < front:
        return (
            f"Step t = {t} has not been computed yet (the chain is at t = {front}): fork it once the chain gets there."
        )
    if selected is None:
        return f"Click an image in {X_T} or {X0_HAT} to choose which one to fork."
    if t == 0:
        return (
            "At t = 0, x_t is already the finished sample: there is no reverse chain left to fork. "
            "Move the slider towards T (noise)."
        )
    return None


def chain_cost(model, n: int, steps: int | None = None) -> str:
    """What a chain of n images through `steps` network evaluations (None: the whole chain, T + 1 frames) will
    cost here at most, from the model's measured time per image and step: " (1,001 steps, up to 4 min here)";
    only the steps where the time was not measured."""
    steps = getattr(model, "num_timesteps", 0) + 1 if steps is None else steps
    cost = getattr(model, "seconds_per_image_step", None)
    return f" ({steps:,} steps" + (f", up to {duration(cost * n * steps)} here)" if cost else ")")


def time_left(elapsed: float, received: int, total: int) -> str:
    """ ", about 40 s left" from the frames received so far (the first arrives at once: it is x_T), or ""."""
    if received < 3:
        return ""
    return f", about {duration(elapsed / (received - 1) * (total - received))} left"


class StatusLine(QWidget):
    """A view's status: a line of text, and a progress bar while work runs."""

    def __init__(self, text: str = ""):
        super().__init__()
        self.label = QLabel(text, wordWrap=True)
        self.progress = QProgressBar(format="%v / %m", visible=False, maximumWidth=280, minimumWidth=280)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.label, 1)
        row.addWidget(self.progress)

    def show_status(self, text: str, done: int | None = None, total: int | None = None, error: bool = False) -> None:
        """The line; the bar where `total` is given (0: busy, no count yet)."""
        self.label.setText(text)
        self.label.setStyleSheet("color: #c62828;" if error else "")
        self.progress.setVisible(total is not None)
        if total is not None:
            self.progress.setRange(0, total)
            self.progress.setValue(done or 0)


def controls_column(widgets, width: int) -> QWidget:
    """Boxes of controls stacked at the top of a column of a fixed width."""
    column = QWidget()
    column.setFixedWidth(width)
    stack = QVBoxLayout(column)
    stack.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        stack.addWidget(widget)
    stack.addStretch(1)
    return column
