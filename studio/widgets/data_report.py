"""What a dataset load found, as the Dataset panel shows it: the first images as the model will see them, a
summary line, the inspector's warnings, every skipped or ignored file with why, and the inspector's full report."""

from __future__ import annotations

import html
import math

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from studio.bridge import human_bytes
from studio.widgets.image_grid import ImageGrid

PREVIEW_COUNT = 64


def ignored_row(kind: str, count: int) -> tuple[str, str]:
    """A row of the Skipped files table for files the inspector passed over unread: ("5 *.txt files", why)."""
    if kind == "hidden folder":
        return f"{count:,} hidden folder{'s' * (count != 1)}", "ignored: hidden"
    files = f"*{kind} file" if kind.startswith(".") else f"file {kind}"
    return f"{count:,} {files}{'s' * (count != 1)}", "ignored: not an image type"


class DataReportView(QWidget):
    """The results half of the Dataset panel; `show_preview(DataPreview)` after every load."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.summary_label = QLabel("No dataset loaded yet.")
        self.summary_label.setWordWrap(True)
        self.warnings_label = QLabel()
        self.warnings_label.setWordWrap(True)
        self.warnings_label.setStyleSheet("color: #b26a00;")
        self.preview_grid = ImageGrid(columns=8, max_zoom=8)
        self.preview_grid.set_placeholder(
            "Choose a source and press Load:\nthe first 64 images appear here "
            "as the model will see them (after crop/resize)."
        )
        self.preview_grid.setToolTip("The first images after crop/resize, at integer zoom: exactly what training sees.")
        self.skipped_table = QTableWidget(0, 2)
        self.skipped_table.setHorizontalHeaderLabels(["File", "Why it was skipped"])
        self.skipped_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.skipped_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.skipped_table.verticalHeader().setVisible(False)
        self.skipped_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.report_text = QPlainTextEdit()
        self.report_text.setReadOnly(True)
        self.report_text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.details_tabs = QTabWidget()
        self.details_tabs.addTab(self.skipped_table, "Skipped files")
        self.details_tabs.addTab(self.report_text, "Inspector report")
        results = QSplitter(Qt.Orientation.Vertical)
        results.addWidget(self.preview_grid)
        results.addWidget(self.details_tabs)
        results.setStretchFactor(0, 3)
        results.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.warnings_label)
        layout.addWidget(results, 1)

    def show_preview(self, preview) -> None:
        """A DataPreview: its first images, the summary, the warnings, the skipped files and the report."""
        shown = preview.images[:PREVIEW_COUNT]
        self.preview_grid.set_images(shown, columns=min(8, max(1, math.ceil(math.sqrt(len(shown))))))
        if not len(shown):
            self.preview_grid.set_placeholder("No usable images.")
        height, width = preview.image_size
        channels = {1: "grayscale", 3: "RGB", 4: "RGBA"}.get(preview.channels, f"{preview.channels} channels")
        ignored = sum(count for _, count in preview.ignored)
        passed_over = len(preview.skipped) + ignored
        if preview.error and not preview.count:
            self.summary_label.setText(f"<b>Nothing loaded</b>: {html.escape(preview.error)}")
        else:
            self.summary_label.setText(
                f"<b>{preview.count:,} images</b> · {width}×{height} px · {preview.channels} channels ({channels}) · "
                f"{human_bytes(preview.memory_bytes)} as uint8 · {len(preview.skipped):,} skipped"
                + (f", {ignored:,} other files ignored" if ignored else "")
                + (f" · showing the first {len(shown)}" if preview.count > len(shown) else "")
            )
        # The inspector's text is written for the CLI, where the skipped files are printed above the warnings.
        self.warnings_label.setText(
            "\n".join(f"⚠ {w.replace('(listed above)', '(see Skipped files)')}" for w in preview.warnings)
        )
        self.warnings_label.setVisible(bool(preview.warnings))
        rows = list(preview.skipped) + [ignored_row(kind, count) for kind, count in preview.ignored]
        self.skipped_table.setRowCount(len(rows))
        for row, (path, reason) in enumerate(rows):
            item = QTableWidgetItem(path)
            item.setToolTip(path)
            self.skipped_table.setItem(row, 0, item)
            self.skipped_table.setItem(row, 1, QTableWidgetItem(reason))
        self.details_tabs.setTabText(0, f"Skipped files ({passed_over:,})")
        self.report_text.setPlainText(preview.report_text)
        self.details_tabs.setCurrentIndex(0 if rows else 1)
