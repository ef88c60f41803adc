"""ImageGrid: a grid of small images at integer zoom with nearest-neighbour scaling, clickable.

A 32x32 sample is unreadable at 1:1 and blurred by smooth scaling; the grid picks the largest integer zoom at which
all images fit the widget, draws pixels as crisp squares, and can caption and highlight images. A click on an image
selects it (`image_clicked(index)`); a double-click also emits `image_double_clicked(index)`, for "open"/"fork this".
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget


def to_qimage(picture: np.ndarray) -> QImage:
    """[H, W, C] uint8 (C = 1, 3 or 4) -> a QImage that owns its pixels (passes the stride; copies)."""
    picture = np.ascontiguousarray(picture)
    assert picture.ndim == 3 and picture.dtype == np.uint8, (picture.shape, picture.dtype)
    h, w, c = picture.shape
    if c == 1:
        fmt, data = QImage.Format.Format_Grayscale8, picture[:, :, 0].copy()
    elif c == 3:
        fmt, data = QImage.Format.Format_RGB888, picture
    else:
        fmt, data = QImage.Format.Format_RGBA8888, picture
    return QImage(data.data, w, h, data.strides[0], fmt).copy()


class ImageGrid(QWidget):
    """Shows [N, H, W, C] uint8 images in `columns` columns; emits `image_clicked(index)` when an image is pressed
    (and selected) and `image_double_clicked(index)` when it is double-clicked. Clicks between images emit nothing."""

    image_clicked = Signal(int)
    image_double_clicked = Signal(int)

    def __init__(
        self,
        parent: QWidget | None = None,
        columns: int | None = None,
        spacing: int = 4,
        max_zoom: int = 16,
        min_zoom: int = 1,
    ):
        super().__init__(parent)
        self._images: list[QImage] = []
        self._shape = (0, 0)
        self._columns = columns
        self._captions: list[str] = []
        self._selected: int | None = None
        self._spacing, self._max_zoom, self._min_zoom = spacing, max_zoom, min_zoom
        self._placeholder = ""
        self._badge = ""  # a note drawn over the grid's top-left corner: which stage of a view it shows
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(64, 64)
        # A click takes the focus from a spin box elsewhere in the panel, so the panel's bare-key shortcuts (Space,
        # F) reach it; Tab still skips the grid.
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)

    # ---- content ----

    def set_images(
        self, images: np.ndarray | None, captions: list[str] | None = None, columns: int | None = None
    ) -> None:
        if images is None or len(images) == 0:
            self._images, self._shape = [], (0, 0)
        else:
            self._images = [to_qimage(im) for im in images]
            self._shape = images.shape[1:3]
        self._captions = list(captions or [])
        if columns is not None:
            self._columns = columns
        if self._selected is not None and self._selected >= len(self._images):
            self._selected = None
        self.update()

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self.update()

    def set_badge(self, text: str) -> None:
        """A short note drawn over the top-left corner ("quick preview · 25 steps"); "" for none."""
        self._badge = text
        self.update()

    @property
    def badge(self) -> str:
        return self._badge

    @property
    def placeholder(self) -> str:
        """The text drawn while the grid has no images."""
        return self._placeholder

    def set_selected(self, index: int | None) -> None:
        self._selected = index
        self.update()

    @property
    def selected(self) -> int | None:
        return self._selected

    @property
    def count(self) -> int:
        return len(self._images)

    def zoom(self) -> int:
        """The integer zoom the images are drawn at now."""
        return self._layout()[0]

    # ---- geometry ----

    def _grid(self) -> tuple[int, int]:
        n = max(1, len(self._images))
        cols = self._columns or max(1, math.ceil(math.sqrt(n)))
        return cols, math.ceil(n / cols)

    def _caption_height(self) -> int:
        return self.fontMetrics().height() + 2 if self._captions else 0

    def _layout(self) -> tuple[int, int, int]:
        """(zoom, left, top) so that the whole grid fits and is centred."""
        cols, rows = self._grid()
        h, w = self._shape if self._images else (1, 1)
        s, cap = self._spacing, self._caption_height()
        zoom_w = (self.width() - s * (cols + 1)) // max(1, cols * w)
        zoom_h = (self.height() - s * (rows + 1) - cap * rows) // max(1, rows * h)
        zoom = max(self._min_zoom, min(self._max_zoom, zoom_w, zoom_h))
        total_w = cols * w * zoom + s * (cols - 1)
        total_h = rows * (h * zoom + cap) + s * (rows - 1)
        return zoom, max(s, (self.width() - total_w) // 2), max(s, (self.height() - total_h) // 2)

    def cell_rect(self, index: int) -> QRect:
        zoom, left, top = self._layout()
        cols, _ = self._grid()
        h, w = self._shape
        r, c = divmod(index, cols)
        cap = self._caption_height()
        return QRect(
            left + c * (w * zoom + self._spacing), top + r * (h * zoom + cap + self._spacing), w * zoom, h * zoom
        )

    def sizeHint(self) -> QSize:
        cols, rows = self._grid()
        h, w = self._shape if self._images else (32, 32)
        zoom = 4
        return QSize(
            cols * w * zoom + self._spacing * (cols + 1),
            rows * (h * zoom + self._caption_height()) + self._spacing * (rows + 1),
        )

    # ---- painting and input ----

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().color(QPalette.ColorRole.Base))
        if not self._images:
            painter.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self._placeholder)
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)  # nearest neighbour
        for i, image in enumerate(self._images):
            rect = self.cell_rect(i)
            painter.drawImage(rect, image)
            if i < len(self._captions) and self._captions[i]:
                painter.setPen(self.palette().color(QPalette.ColorRole.Text))
                painter.drawText(
                    QRect(
                        rect.left() - self._spacing,
                        rect.bottom() + 1,
                        rect.width() + 2 * self._spacing,
                        self._caption_height(),
                    ),
                    Qt.AlignmentFlag.AlignCenter,
                    self._captions[i],
                )
            if i == self._selected:
                painter.setPen(QPen(QColor("#ff9800"), 3))
                painter.drawRect(rect.adjusted(-2, -2, 1, 1))
        if self._badge:
            metrics = self.fontMetrics()
            box = metrics.boundingRect(self._badge).adjusted(-5, -3, 5, 3)
            box.moveTopLeft(QPoint(2, 2))
            painter.fillRect(box, QColor(0, 0, 0, 170))
            painter.setPen(QColor("white"))
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, self._badge)

    def index_at(self, pos: QPoint) -> int | None:
        for i in range(len(self._images)):
            if self.cell_rect(i).contains(pos):
                return i
        return None

    def mousePressEvent(self, event) -> None:
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        index = self.index_at(event.position().toPoint())
        if index is not None:
            self._selected = index
            self.update()
            self.image_clicked.emit(index)
        super().mousePressEvent(event)

    def mouseDoubleClickEvent(self, event) -> None:
        index = self.index_at(event.position().toPoint())
        if index is not None and event.button() == Qt.MouseButton.LeftButton:
            if index != self._selected:  # a double-click delivered alone (as some test drivers do) still selects
                self._selected = index
                self.update()
                self.image_clicked.emit(index)
            self.image_double_clicked.emit(index)
        super().mouseDoubleClickEvent(event)
