"""One source of the Interpolation panel (A or B): its image, where it came from, and the three ways to pick one
(a dataset image, a generated sample, a file); and `fit_image`, which brings any picture to the model's size."""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QGroupBox, QLabel, QPushButton, QSpinBox, QWidget

from studio.widgets.image_grid import ImageGrid


def fit_image(picture: Image.Image, size: tuple[int, int], channels: int) -> np.ndarray:
    """Any Pillow image -> [H, W, C] uint8 at `size` (height, width): scale the shorter side, cut out the centre."""
    has_alpha = "A" in picture.getbands() or "transparency" in picture.info
    picture = picture.convert("RGBA" if has_alpha else "RGB")
    if has_alpha and channels != 4:  # like the data loader: transparency becomes white
        white = Image.new("RGBA", picture.size, (255, 255, 255, 255))
        picture = Image.alpha_composite(white, picture).convert("RGB")
    picture = picture.convert({1: "L", 3: "RGB", 4: "RGBA"}[channels])
    h, w = size
    scale = max(h / picture.height, w / picture.width)
    new_w, new_h = max(w, round(picture.width * scale)), max(h, round(picture.height * scale))
    picture = picture.resize((new_w, new_h), Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST)
    left, top = (new_w - w) // 2, (new_h - h) // 2
    array = np.asarray(picture.crop((left, top, left + w, top + h)), dtype=np.uint8)
    return np.ascontiguousarray(array[:, :, None] if array.ndim == 2 else array)


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
