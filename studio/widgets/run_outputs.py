"""What a training run has produced so far: its sample grids on a timeline, and its checkpoints.

Every saved sample grid of a run uses the same noise (the trainer's preview seed), so the grids at successive steps
show the *same* samples as the model learns. `RunOutputs` keeps them all on a timeline the user scrubs (the newest is
shown as it arrives unless the user has scrubbed back), with the EMA and the raw weights on two tabs, each grid as
large as its frame allows at an integer zoom. The Training panel feeds it from the engine's SamplesReady events, or,
for a run written elsewhere, from the files in the run folder: `samples/step_XXXXXXX.png` (EMA grids only) and
`checkpoints/step_XXXXXXX.json` (docs/architecture.md, the run directory). Double-clicking a checkpoint asks for it to
be explored (`CheckpointList.checkpoint_chosen(path)`). The samples/ PNGs are saved zoomed (nearest neighbour, so that
a person opening the file can see them); the studio undoes that zoom and lets the grid pick its own.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSlider,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from studio.bridge import step_files
from studio.widgets.image_grid import ImageGrid

MAX_RAW_KEPT = 200  # raw-weight grids exist only in memory (samples/ holds the EMA's): keep the newest this many


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


def _titled(title: QLabel, grid: ImageGrid) -> QWidget:
    page = QWidget()
    column = QVBoxLayout(page)
    column.setContentsMargins(4, 4, 4, 4)
    column.addWidget(title)
    column.addWidget(grid, 1)
    return page


class RunOutputs(QWidget):
    """The run's sample grids by step: EMA and raw weights on two tabs (`ema_grid`, `raw_grid`), and the timeline
    (`timeline` slider over the saved steps, `timeline_label`)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._ema: dict[int, np.ndarray | Path] = {}  # step -> images [N, H, W, C], or the samples/ PNG to read
        self._raw: dict[int, np.ndarray] = {}
        self._steps: list[int] = []  # the timeline, oldest first
        self._raw_placeholder: str | None = None
        self.ema_grid, self.raw_grid = ImageGrid(max_zoom=16), ImageGrid(max_zoom=16)
        self.ema_title, self.raw_title = QLabel(), QLabel()
        self.ema_title.setToolTip("An exponential moving average of the weights: what sampling uses (paper: 0.9999)")
        self.raw_title.setToolTip("The live weights the optimiser updates, sampled with the same noise")
        self.weights_tabs = QTabWidget()
        self.weights_tabs.addTab(_titled(self.ema_title, self.ema_grid), "EMA weights")
        self.weights_tabs.addTab(_titled(self.raw_title, self.raw_grid), "Raw weights")
        self.timeline = QSlider(Qt.Orientation.Horizontal)
        self.timeline.setToolTip(
            "Every saved grid uses the same noise: scrub to watch the same samples form as the model learns\n"
            "(the newest grid is shown as it arrives while the slider is at the right end)"
        )
        self.timeline.setEnabled(False)
        self.timeline.setMinimumWidth(80)
        self.timeline_label = QLabel("no grids yet")
        timeline_row = QHBoxLayout()
        timeline_row.addWidget(QLabel("Timeline"))
        timeline_row.addWidget(self.timeline, 1)
        timeline_row.addWidget(self.timeline_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.weights_tabs, 1)
        layout.addLayout(timeline_row)
        self.timeline.valueChanged.connect(self._show_index)
        self.clear()

    # ---- content ----

    def clear(self, raw_placeholder: str | None = None) -> None:
        """No grids; `raw_placeholder` says why the raw grid stays empty, if it will."""
        self._ema.clear()
        self._raw.clear()
        self._steps.clear()
        self._raw_placeholder = raw_placeholder
        self._update_timeline(follow=True)
        self._show_index(-1)

    def show_samples(self, step: int, ema: np.ndarray, raw: np.ndarray | None = None) -> None:
        """Sample grids ([N, H, W, C] uint8) of the EMA and (if given) the raw weights at `step`."""
        self._ema[step] = ema
        if raw is not None:
            self._raw[step] = raw
            for old in sorted(self._raw)[:-MAX_RAW_KEPT]:
                del self._raw[old]
        self._add_steps([step])

    def show_run_samples(self, run_dir: Path) -> None:
        """Put every samples/ grid of the run folder on the timeline (read when shown); the newest is shown if the
        timeline is at its end. Called again, it adds only what is new."""
        files = {step: path for step, path in step_files(run_dir / "samples", "png") if step not in self._ema}
        self._ema.update(files)
        self._add_steps(list(files))

    show_newest_sample = show_run_samples  # a followed run: polled every 2 s

    def _add_steps(self, steps: list[int]) -> None:
        if not steps:
            return
        at_end = not self._steps or self.timeline.value() == len(self._steps) - 1
        self._steps = sorted(set(self._steps) | set(steps))
        self._update_timeline(follow=at_end)

    def _update_timeline(self, follow: bool) -> None:
        self.timeline.blockSignals(True)
        self.timeline.setRange(0, max(0, len(self._steps) - 1))
        if follow:
            self.timeline.setValue(len(self._steps) - 1)
        self.timeline.blockSignals(False)
        self.timeline.setEnabled(len(self._steps) > 1)
        self._show_index(self.timeline.value() if self._steps else -1)

    def _show_index(self, index: int) -> None:
        if index < 0 or not self._steps:
            self.timeline_label.setText("no grids yet")
            for grid, title, name in ((self.ema_grid, self.ema_title, "EMA"), (self.raw_grid, self.raw_title, "raw")):
                grid.set_images(None)
                grid.set_placeholder(f"Samples from the {name} weights\nappear here as the model learns.")
                title.setText(f"<b>{name if name == 'EMA' else 'Raw'} weights</b>")
            self._note_raw_placeholder()
            return
        step = self._steps[index]
        self.timeline_label.setText(f"step {step:,} · {index + 1} of {len(self._steps)}")
        ema = self._ema.get(step)
        if isinstance(ema, Path):
            picture = read_png(ema)
            if picture is None:  # still being written: the next poll or scrub shows it
                return
            zoom = nearest_zoom(picture[0])
            ema = self._ema[step] = picture[:, ::zoom, ::zoom]
        self.ema_grid.set_images(ema)
        self.ema_title.setText(f"<b>EMA weights</b> · step {step:,}")
        raw = self._raw.get(step)
        self.raw_grid.set_images(raw)
        self.raw_title.setText(f"<b>Raw weights</b> · step {step:,}")
        if raw is None:
            self.raw_grid.set_placeholder(f"No raw-weight grid of step {step:,}:\nonly grids made in this session.")
            self._note_raw_placeholder()

    def _note_raw_placeholder(self) -> None:
        if self._raw_placeholder:
            self.raw_grid.set_placeholder(self._raw_placeholder)
            self.raw_title.setText("<b>Raw weights</b> · not saved by this run")

    @property
    def steps(self) -> list[int]:
        """The steps on the timeline, oldest first."""
        return list(self._steps)

    def shown_step(self) -> int | None:
        return self._steps[self.timeline.value()] if self._steps else None


class CheckpointList(QListWidget):
    """A run's complete checkpoints, newest first; double-clicking one asks to explore it (`checkpoint_chosen`)."""

    checkpoint_chosen = Signal(str)  # the path of a checkpoint's JSON

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setToolTip("The run's complete checkpoints; double-click one to explore it")
        self.itemActivated.connect(lambda item: self.checkpoint_chosen.emit(item.data(Qt.ItemDataRole.UserRole)))

    def list_checkpoints(self, run_dir: Path) -> None:
        """List the run's checkpoints, newest first (pruned ones disappear)."""
        self.clear()
        for step, path in reversed(step_files(run_dir / "checkpoints", "json")):
            try:
                when = dt.datetime.fromtimestamp(path.stat().st_mtime)
            except OSError:
                continue  # pruned while we looked
            item = QListWidgetItem(f"step {step:,} · {when:%H:%M:%S}")
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            item.setToolTip(f"{path}\nsaved {when:%Y-%m-%d %H:%M:%S}; double-click to explore it")
            self.addItem(item)
