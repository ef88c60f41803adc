"""The controls that drive a training run: its folder, and Start / Pause-Resume / Stop / Follow, enabled by state.

The Training panel owns what the buttons do; this box only says what may be pressed in each state (idle, running,
pausing, paused, stopping, finished, failed, following) and carries the keyboard shortcuts of the two main ones.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QGridLayout, QGroupBox, QLineEdit, QPushButton, QWidget

from studio.widgets.shortcuts import bind_shortcut

START_KEYS, PAUSE_KEYS = "Ctrl+Return", "Ctrl+P"
BUSY_STATES = ("running", "pausing", "stopping", "paused", "following")


class RunControls(QGroupBox):
    """The run folder (`run_dir_edit`, `choose_dir_button`) and `start_button`, `pause_button`, `stop_button`,
    `follow_button`."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Run folder", parent)
        self.run_dir_edit = QLineEdit()
        self.run_dir_edit.setToolTip(
            "The run folder: run.json, metrics.jsonl, checkpoints/, samples/.\n"
            "A folder that already holds a run is resumed with its own settings."
        )
        self.choose_dir_button = QPushButton("Choose…")
        self.start_button, self.pause_button = QPushButton("Start"), QPushButton("Pause")
        self.stop_button, self.follow_button = QPushButton("Stop"), QPushButton("Follow a run…")
        self.start_button.setToolTip(
            f"Train on the dataset loaded in the Dataset panel (or resume the run folder) ({START_KEYS})"
        )
        self.pause_button.setToolTip(
            f"Pause saves a checkpoint; Resume continues exactly where it stopped ({PAUSE_KEYS})"
        )
        self.stop_button.setToolTip("Stop after this step and save a checkpoint; the next Start begins a new run")
        self.follow_button.setToolTip("Watch a run that the command line or a multi-GPU job is writing")
        grid = QGridLayout(self)
        grid.addWidget(self.run_dir_edit, 0, 0)
        grid.addWidget(self.choose_dir_button, 0, 1)
        for i, button in enumerate((self.start_button, self.pause_button, self.stop_button, self.follow_button)):
            grid.addWidget(button, 1 + i // 2, i % 2)
        self.choose_dir_button.clicked.connect(self._choose_run_dir)

    def bind_shortcuts(self, panel: QWidget) -> None:
        """Start and Pause/Resume from anywhere in `panel` while it is shown (a button's own shortcut would work only
        while the button is enabled, and would not be listed in the shortcuts dialog)."""
        bind_shortcut(panel, START_KEYS, "start training (or resume the run folder)", self.start_button.click)
        bind_shortcut(panel, PAUSE_KEYS, "pause / resume training", self.pause_button.click)

    @property
    def run_dir(self) -> str:
        return self.run_dir_edit.text().strip()

    def set_run_dir(self, path: str) -> None:
        self.run_dir_edit.setText(path)
        self.run_dir_edit.setCursorPosition(0)

    def new_run_dir(self, preset: str) -> None:
        """A fresh folder name under runs/, so that the next Start begins a new run."""
        self.set_run_dir(str(Path("runs") / f"{preset}-{dt.datetime.now():%Y%m%d-%H%M%S}"))

    def _choose_run_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Run folder (a new or an existing run)", self.run_dir_edit.text())
        if path:
            self.run_dir_edit.setText(path)

    def show_state(self, name: str) -> None:
        """Enable what may be pressed in training state `name`; the folder is fixed while a run is busy."""
        busy = name in BUSY_STATES
        self.start_button.setEnabled(not busy)
        self.pause_button.setEnabled(name in ("running", "paused"))
        self.pause_button.setText("Resume" if name == "paused" else "Pause")
        self.stop_button.setEnabled(name in ("running", "paused"))
        self.follow_button.setEnabled(not busy or name == "following")
        self.follow_button.setText("Stop following" if name == "following" else "Follow a run…")
        self.run_dir_edit.setEnabled(not busy)
        self.choose_dir_button.setEnabled(not busy)
