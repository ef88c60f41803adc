"""What a training run has produced so far: sample grids from the EMA and the raw weights, and its checkpoints.

The Training panel feeds it from the engine's SamplesReady events, or, for a run written elsewhere, from the files in
the run folder: `samples/step_XXXXXXX.png` and `checkpoints/step_XXXXXXX.json` (docs/architecture.md, the run
directory).
Double-clicking a checkpoint asks for it to be explored (`checkpoint_chosen(path)`). The samples/ PNGs are saved
zoomed (nearest neighbour, so that a person opening the file can see them); the studio undoes that zoom and lets the
grid pick its own, so a followed run's grid fits its frame like a live one.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QGridLayout, QLabel, QListWidget, QListWidgetItem, QWidget

from studio.bridge import step_files
from studio.widgets.image_grid import ImageGrid


def read_png(path: Path) -> np.ndarray | None:
    """A PNG as [1, H, W, 3] uint8 (for ImageGrid), or None if it cannot be read yet."""
    image = QImage(str(path))
    if image.isNull():
        return None
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    h, w, stride = image.height(), image.width(), image.bytesPerLine()
    rows = np.frombuffer(image.constBits(), np.uint8, count=h * stride).reshape(h, stride)
    return rows[:, : w * 3].reshape(1, h, w, 3).copy()


def nearest_zoom(picture: np.ndarray, largest: int = 32) -> int:
    """The largest integer f <= `largest` such that [H, W, C] `picture` is a nearest-neighbour f-times upscale (every
    f x f block one colour); 1 if none. Undoing it loses nothing."""
    h, w = picture.shape[:2]
    for f in range(min(largest, math.gcd(h, w)), 1, -1):
        if h % f == 0 and w % f == 0:
            small = picture[::f, ::f]
            if np.array_equal(picture, small.repeat(f, axis=0).repeat(f, axis=1)):
                return f
    return 1


class RunOutputs(QWidget):
    """The EMA and raw sample grids side by side, and the run's checkpoints, newest first."""

    checkpoint_chosen = Signal(str)  # the path of a checkpoint's JSON, double-clicked to explore it

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._shown_sample = ""  # the newest samples/ PNG shown while following a run
        self.ema_grid, self.raw_grid = ImageGrid(max_zoom=16), ImageGrid(max_zoom=16)
        self.ema_title, self.raw_title = QLabel(), QLabel()
        self.ema_title.setToolTip("An exponential moving average of the weights: what sampling uses (paper: 0.9999)")
        self.raw_title.setToolTip("The live weights the optimiser updates, sampled with the same noise")
        self.checkpoint_list = QListWidget()
        self.checkpoint_list.setToolTip("The run's complete checkpoints; double-click one to explore it")
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        for column, (title, widget) in enumerate(
            (
                (self.ema_title, self.ema_grid),
                (self.raw_title, self.raw_grid),
                (QLabel("<b>Checkpoints</b>"), self.checkpoint_list),
            )
        ):
            grid.addWidget(title, 0, column)
            grid.addWidget(widget, 1, column)
            grid.setColumnStretch(column, 3 if column < 2 else 2)
        self.checkpoint_list.itemActivated.connect(
            lambda item: self.checkpoint_chosen.emit(item.data(Qt.ItemDataRole.UserRole))
        )
        self.clear()

    def clear(self, raw_placeholder: str | None = None) -> None:
        """No samples and no checkpoints; `raw_placeholder` says why the raw grid stays empty, if it will."""
        self._shown_sample = ""
        self.checkpoint_list.clear()
        for grid, title, name in ((self.ema_grid, self.ema_title, "EMA"), (self.raw_grid, self.raw_title, "Raw")):
            grid.set_images(None)
            grid.set_placeholder(
                f"Samples from the {name if name == 'EMA' else 'raw'} weights\nappear here as the model learns."
            )
            title.setText(f"<b>{name} weights</b>")
        if raw_placeholder:
            self.raw_grid.set_placeholder(raw_placeholder)
            self.raw_title.setText("<b>Raw weights</b> · not saved by this run")

    def show_samples(self, step: int, ema: np.ndarray, raw: np.ndarray | None = None) -> None:
        """Sample grids ([N, H, W, C] uint8) of the EMA and (if given) the raw weights at `step`."""
        self.ema_grid.set_images(ema)
        self.ema_title.setText(f"<b>EMA weights</b> · step {step:,}")
        if raw is not None:
            self.raw_grid.set_images(raw)
            self.raw_title.setText(f"<b>Raw weights</b> · step {step:,}")

    def show_newest_sample(self, run_dir: Path) -> None:
        """Show the run's newest samples/ grid (the EMA weights') if it is new and complete."""
        samples = step_files(run_dir / "samples", "png")
        if samples and samples[-1][1].name != self._shown_sample:
            step, path = samples[-1]
            picture = read_png(path)
            if picture is not None:  # else it is still being written: the next poll shows it
                self._shown_sample = path.name
                zoom = nearest_zoom(picture[0])
                self.show_samples(step, picture[:, ::zoom, ::zoom])

    def list_checkpoints(self, run_dir: Path) -> None:
        """List the run's checkpoints, newest first (pruned ones disappear)."""
        self.checkpoint_list.clear()
        for step, path in reversed(step_files(run_dir / "checkpoints", "json")):
            try:
                when = dt.datetime.fromtimestamp(path.stat().st_mtime)
            except OSError:
                continue  # pruned while we looked
            item = QListWidgetItem(f"step {step:,} · {when:%H:%M:%S}")
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            item.setToolTip(f"{path}\nsaved {when:%Y-%m-%d %H:%M:%S}; double-click to explore it")
            self.checkpoint_list.addItem(item)
