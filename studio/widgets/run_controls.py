"""The controls that drive a training run: Start (or Continue this run) / New run / Pause-Resume / Stop / Follow,
the run's folder, the data it will train on, and the folder new runs go to.

The Training panel owns what the buttons do; this box says what may be pressed in each state (idle, running,
pausing, paused, stopping, stopped, finished, failed, following), which of Continue and New run is the likely next step
(shown in bold), and carries the keyboard shortcuts of the main buttons. The runs folder is a per-user data folder
(engine.runs.default_runs_folder) unless the user changes it; the choice is remembered in the studio's settings.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from studio.bridge import default_runs_folder
from studio.widgets.shortcuts import bind_shortcut

START_KEYS, PAUSE_KEYS = "Ctrl+Return", "Ctrl+P"
BUSY_STATES = ("running", "pausing", "stopping", "paused", "following")
RUNS_FOLDER_KEY = "runs_folder"


def runs_folder() -> Path:
    """Where new runs go: the folder chosen in the Training tab (remembered), else the per-user default."""
    chosen = QSettings("DDPM Studio", "DDPM Studio").value(RUNS_FOLDER_KEY)
    return Path(str(chosen)) if chosen else default_runs_folder()


def home_relative(path: str | Path) -> str:
    """~/... for a path under the home folder (shorter to read), else the path."""
    path = Path(path)
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


class RunControls(QGroupBox):
    """`start_button` (Start / Continue this run), `new_run_button`, `pause_button`, `stop_button`,
    `follow_button`; the run folder (`run_dir_edit`, `choose_dir_button`), `data_label` and `runs_label` with
    `runs_folder_button`. `run_dir_changed` fires when the folder text changes."""

    run_dir_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Run", parent)
        self.start_button, self.new_run_button = QPushButton("Start"), QPushButton("New run")
        self.pause_button, self.stop_button = QPushButton("Pause"), QPushButton("Stop")
        self.follow_button = QPushButton("Follow a run…")
        self.start_button.setToolTip(
            f"Train on the dataset shown below into the run folder; a folder that holds a run continues it "
            f"with its own settings ({START_KEYS})"
        )
        self.new_run_button.setToolTip("Start a new run in a fresh folder of the runs folder")
        self.pause_button.setToolTip(
            f"Pause saves a checkpoint; Resume continues exactly where it stopped ({PAUSE_KEYS})"
        )
        self.stop_button.setToolTip(
            "Stop after this step and save a checkpoint: continue the run later, or begin a new one"
        )
        self.follow_button.setToolTip("Watch a run that the command line or a multi-GPU job is writing")
        self.run_dir_edit = QLineEdit()
        self.run_dir_edit.setToolTip(
            "The run folder: run.json, metrics.jsonl, checkpoints/, samples/.\n"
            "A folder that already holds a run is continued with its own settings."
        )
        self.choose_dir_button = QPushButton("Choose…")
        self.data_label = QLabel()
        self.data_label.setWordWrap(True)
        self.data_label.setTextFormat(Qt.TextFormat.RichText)  # the panel escapes what it puts in
        self.runs_label = QLabel()
        self.runs_label.setToolTip("New runs are created here; the choice is remembered")
        self.runs_folder_button = QPushButton("Change…")
        self.runs_folder_button.setToolTip("Choose the folder new runs are created in")

        buttons = QHBoxLayout()
        for button in (self.start_button, self.new_run_button, self.pause_button, self.stop_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.follow_button)
        grid = QGridLayout(self)
        grid.addLayout(buttons, 0, 0, 1, 3)
        grid.addWidget(QLabel("Folder"), 1, 0)
        grid.addWidget(self.run_dir_edit, 1, 1)
        grid.addWidget(self.choose_dir_button, 1, 2)
        grid.addWidget(QLabel("Data"), 2, 0)
        grid.addWidget(self.data_label, 2, 1, 1, 2)
        grid.addWidget(QLabel("New runs"), 3, 0)
        grid.addWidget(self.runs_label, 3, 1)
        grid.addWidget(self.runs_folder_button, 3, 2)
        grid.setColumnStretch(1, 1)
        self.choose_dir_button.clicked.connect(self._choose_run_dir)
        self.runs_folder_button.clicked.connect(self._choose_runs_folder)
        self.run_dir_edit.textChanged.connect(lambda text: self.run_dir_changed.emit(text.strip()))
        self._show_runs_folder()

    def bind_shortcuts(self, panel: QWidget) -> None:
        """Start and Pause/Resume from anywhere in `panel` while it is shown (a button's own shortcut would work only
        while the button is enabled, and would not be listed in the shortcuts dialog)."""
        bind_shortcut(panel, START_KEYS, "start training (or continue the run folder)", self.start_button.click)
        bind_shortcut(panel, PAUSE_KEYS, "pause / resume training", self.pause_button.click)

    # ---- the run folder ----

    @property
    def run_dir(self) -> str:
        return self.run_dir_edit.text().strip()

    @property
    def resumable(self) -> bool:
        """The folder holds a run: Start continues it."""
        return bool(self.run_dir) and (Path(self.run_dir) / "run.json").is_file()

    def set_run_dir(self, path: str) -> None:
        self.run_dir_edit.setText(path)
        self.run_dir_edit.setCursorPosition(0)

    def new_run_dir(self, preset: str) -> None:
        """A fresh folder in the runs folder, so that Start begins a new run."""
        self.set_run_dir(str(runs_folder() / f"{preset}-{dt.datetime.now():%Y%m%d-%H%M%S}"))

    def _choose_run_dir(self) -> None:
        start = self.run_dir if self.run_dir and Path(self.run_dir).exists() else str(runs_folder())
        path = QFileDialog.getExistingDirectory(self, "Run folder (a new or an existing run)", start)
        if path:
            self.set_run_dir(path)

    def _choose_runs_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for new runs", str(runs_folder()))
        if path:
            old = runs_folder()
            QSettings("DDPM Studio", "DDPM Studio").setValue(RUNS_FOLDER_KEY, path)
            self._show_runs_folder()
            if not self.resumable and Path(self.run_dir).parent == old:  # a fresh name: move it along
                self.set_run_dir(str(Path(path) / Path(self.run_dir).name))

    def _show_runs_folder(self) -> None:
        folder = runs_folder()
        self.runs_label.setText(home_relative(folder))
        self.runs_label.setToolTip(f"New runs are created in {folder}; the choice is remembered")

    # ---- state ----

    def show_state(self, name: str, has_data: bool) -> None:
        """Enable what may be pressed in training state `name` (`has_data`: a dataset is loaded) and stress the likely
        next step: Continue after a stop or pause, New run once a run has finished."""
        busy, resumable = name in BUSY_STATES, self.resumable
        self.start_button.setText("Continue this run" if resumable else "Start")
        self.start_button.setEnabled(not busy and (resumable or has_data))
        self.new_run_button.setEnabled(not busy and has_data)
        self.pause_button.setEnabled(name in ("running", "paused"))
        self.pause_button.setText("Resume" if name == "paused" else "Pause")
        self.stop_button.setEnabled(name in ("running", "paused"))
        self.follow_button.setEnabled(not busy or name == "following")
        self.follow_button.setText("Stop following" if name == "following" else "Follow a run…")
        self.run_dir_edit.setEnabled(not busy)
        self.choose_dir_button.setEnabled(not busy)
        new_run_next = name == "finished" and resumable
        for button, stressed in ((self.start_button, not new_run_next), (self.new_run_button, new_run_next)):
            button.setStyleSheet("font-weight: bold;" if stressed and button.isEnabled() else "")
