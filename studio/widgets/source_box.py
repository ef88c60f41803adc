"""One source of the Interpolation panel (A or B): its image, where it came from, and the three ways to pick one
(a dataset image, a generated sample, a file), each brought to the model's size by the engine's own rule."""

from __future__ import annotations

import asyncio

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QGridLayout, QGroupBox, QLabel, QPushButton, QSpinBox, QWidget

from studio.bridge import EngineError, Samples, fit_source_image, image_file_filter
from studio.widgets.image_grid import ImageGrid


def ranged(control, tooltip: str, minimum: int, maximum: int, value: int):
    """A slider or spin box with its range, starting value and tooltip."""
    control.setRange(minimum, maximum)
    control.setValue(value)
    control.setToolTip(tooltip)
    return control


class SourceBox(QGroupBox):
    """One source (A or B): its image and where it came from, with the three ways to pick one."""

    def __init__(self, name: str, parent: QWidget | None = None):
        super().__init__(f"Source {name}", parent)
        self.name = name
        self.image: np.ndarray | None = None  # [H, W, C] uint8
        self.version = 0  # bumped on every new image, so a request knows which sources it used
        self.grid = ImageGrid(max_zoom=12)
        self.grid.setMinimumSize(110, 110)
        self.grid.set_placeholder("no image yet")
        self.origin_label = QLabel("—")
        self.index_spin = ranged(
            QSpinBox(), "The dataset index for 'From dataset', the seed for 'Generate'.", 0, 999_999, 0
        )
        self.dataset_button = QPushButton("From dataset")
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("A new sample from this seed (strided chain of 50 steps).")
        self.file_button = QPushButton("Open file…")
        layout = QGridLayout(self)
        for widget, row, column, span in (
            (self.grid, 0, 0, 2),
            (QLabel("index / seed"), 2, 0, 1),
            (self.index_spin, 2, 1, 1),
            (self.dataset_button, 3, 0, 1),
            (self.generate_button, 3, 1, 1),
            (self.file_button, 4, 0, 2),
        ):
            layout.addWidget(widget, row, column, 1, span)
        layout.addWidget(self.origin_label, 1, 0, 1, 2, Qt.AlignmentFlag.AlignHCenter)
        layout.setRowStretch(0, 1)

    def set_image(self, image: np.ndarray | None, origin: str = "—") -> None:
        self.image = None if image is None else np.ascontiguousarray(image)
        self.version += 1
        self.grid.set_images(None if image is None else self.image[None])
        self.origin_label.setText(origin)


class SourceLoader:
    """Fills sources from the loaded dataset (the built-in shapes at the model's size when none is loaded), from a
    generated sample, or from a file. `set_source(which, image, origin)` shows an image, `load_file(which, path)`
    decodes a file, `say(text)` reports on the panel's status line."""

    def __init__(self, bridge, state, set_source, load_file, say, parent: QWidget | None = None):
        self._bridge, self._state, self._parent = bridge, state, parent
        self._set_source, self._load_file, self._say = set_source, load_file, say
        self._defaults_loading = False

    def connect(self, box: SourceBox) -> None:
        box.dataset_button.clicked.connect(lambda _=False: asyncio.ensure_future(self.from_dataset(box)))
        box.generate_button.clicked.connect(lambda _=False: asyncio.ensure_future(self.generate(box)))
        box.file_button.clicked.connect(lambda _=False: self.open_file(box))

    def fill_defaults(self, boxes: tuple[SourceBox, ...], then) -> None:
        """Dataset images at the boxes' indices for the empty ones, one after the other (a second request of the
        dataset's images would supersede the first); `then()` when done. At most one such pass at a time."""
        if not self._defaults_loading:
            self._defaults_loading = True
            asyncio.ensure_future(self._fill_defaults(boxes, then))

    async def _fill_defaults(self, boxes, then) -> None:
        try:
            for box in boxes:
                if box.image is None:
                    await self.from_dataset(box)
        finally:
            self._defaults_loading = False
        then()

    async def from_dataset(self, box: SourceBox) -> None:
        index = box.index_spin.value()
        await self._fill(box, self._dataset_image(index), f"dataset #{index}")

    async def generate(self, box: SourceBox) -> None:
        seed = box.index_spin.value()
        self._say(f"Generating source {box.name} (seed {seed}, 50 strided steps)…")
        await self._fill(box, self._bridge.sample(n=1, seed=seed, num_steps=50), f"sample, seed {seed}")

    def open_file(self, box: SourceBox) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self._parent,
            f"Open source {box.name}",
            "",
            image_file_filter(),
        )
        if path:
            self._load_file(box.name, path)

    async def _dataset_image(self, index: int) -> np.ndarray:
        """Image `index` of the loaded dataset at the model's size."""
        info = self._bridge.model
        await self._ensure_dataset(info)
        image = (await self._bridge.dataset_images([index]))[0]
        if image.shape != (*info.image_size, info.channels):  # a dataset of another shape than the model's
            image = fit_source_image(image, tuple(info.image_size), info.channels)
        return image

    async def _ensure_dataset(self, info) -> None:
        """A dataset to take sources from. Our load of the built-in shapes may be superseded by another panel's
        dataset load (the Dataset tab loads one at start-up too): then wait for that one instead of giving up,
        which once left Source A empty until "From dataset" was clicked."""
        while self._state.get("dataset") is None:
            try:
                await self._load_builtin(info)
                return
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we ourselves are being cancelled
                for _ in range(600):  # superseded: the newer load sets the dataset (give it up to 2 minutes)
                    if self._state.get("dataset") is not None:
                        return
                    await asyncio.sleep(0.2)

    async def _load_builtin(self, info) -> None:
        self._say("No dataset loaded: loading the built-in shapes at the model's size…")
        h, w = info.image_size
        spec = f"builtin:shapes?size={h if h == w else f'{h}x{w}'}" + (
            "" if info.channels == 3 else f"&channels={info.channels}"
        )
        self._state.set("dataset", await self._bridge.load_dataset(spec))

    async def _fill(self, box: SourceBox, image, origin: str) -> None:
        """Await a source image (or a sample grid of one) and show it; a superseded or failed request leaves it be."""
        try:
            image = await image
        except asyncio.CancelledError:
            return
        except EngineError as e:
            self._say(f"Source {box.name}: {e}")
            return
        self._set_source(box.name, image.images[0] if isinstance(image, Samples) else image, origin)
