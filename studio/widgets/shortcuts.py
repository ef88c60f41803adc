"""Keyboard shortcuts: one way for panels to bind them, and the dialog that lists every one (Help > Keyboard shortcuts).

A panel binds its shortcuts with `bind_shortcut(panel, keys, what, slot)`; the description travels with the QShortcut
(its whatsThis), so the dialog lists exactly what is bound, never a copy that could drift. A chord with a modifier
(Ctrl+G) works from anywhere in the window while its panel is the tab shown; a bare key (Space, F) only while the
focus is inside the panel, so that it never steals a key from a text field or a button elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)


def bind_shortcut(parent: QWidget, keys: str | QKeySequence, what: str, slot: Callable[[], object]) -> QShortcut:
    """A shortcut that calls `slot` while `parent` is shown; `what` describes it in the shortcuts dialog."""
    sequence = QKeySequence(keys)
    shortcut = QShortcut(sequence, parent)
    bare_key = sequence.count() == 1 and sequence[0].keyboardModifiers() == Qt.KeyboardModifier.NoModifier
    context = Qt.ShortcutContext
    shortcut.setContext(context.WidgetWithChildrenShortcut if bare_key else context.WindowShortcut)
    shortcut.setWhatsThis(what)
    shortcut.activated.connect(slot)
    return shortcut


def key_text(keys: str | QKeySequence) -> str:
    """How this platform writes a key sequence (Ctrl+G; ⌘G on a Mac)."""
    return QKeySequence(keys).toString(QKeySequence.SequenceFormat.NativeText)


def bound_shortcuts(widget: QWidget) -> list[tuple[str, str]]:
    """[(keys, what)] of every shortcut bound with `bind_shortcut` inside `widget`."""
    return [(key_text(s.key()), s.whatsThis()) for s in widget.findChildren(QShortcut) if s.whatsThis()]


class ShortcutsDialog(QDialog):
    """A two-column table, keys and what they do, in sections (the menus, then each panel)."""

    def __init__(self, sections: Iterable[tuple[str, list[tuple[str, str]]]], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        rows: list[tuple[str, str | None]] = []
        for title, entries in sections:
            if entries:
                rows.append((title, None))
                rows += entries
        self.table = QTableWidget(len(rows), 2)
        self.table.setHorizontalHeaderLabels(["Keys", "Action"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for row, (keys, what) in enumerate(rows):
            if what is None:  # a section heading across both columns
                item = QTableWidgetItem(keys)
                font = item.font()
                font.setBold(True)
                item.setFont(font)
                self.table.setItem(row, 0, item)
                self.table.setSpan(row, 0, 1, 2)
            else:
                self.table.setItem(row, 0, QTableWidgetItem(keys))
                self.table.setItem(row, 1, QTableWidgetItem(what))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(520, 560)

    def entries(self) -> list[tuple[str, str]]:
        """[(keys, what)] of every listed shortcut (section headings left out)."""
        return [
            (self.table.item(r, 0).text(), self.table.item(r, 1).text())
            for r in range(self.table.rowCount())
            if self.table.item(r, 1) is not None
        ]
