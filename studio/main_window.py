"""MainWindow: the panels as tabs, the menus and shortcuts, and a status bar that says what the engine is doing.

On start it loads the built-in dataset and a model: the run given on the command line, else the bundled model, so a
new user can scrub, fork, interpolate and export before training anything. Window geometry, the last run and the
last folder persist between launches (QSettings). Closing the window while training stops it after the current
step and saves a checkpoint first.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QTabWidget,
    QWidget,
)

from .bridge import BUNDLED_RUN, Bridge, EngineError, JobKey, StepLogged, TrainFinished, TrainStarted, run_name
from .panels.dataset import DatasetPanel
from .panels.export import ExportPanel
from .panels.interpolation import InterpolationPanel
from .panels.likelihood import LikelihoodPanel
from .panels.training import TrainingPanel
from .panels.trajectory import TrajectoryPanel
from .state import AppState
from .widgets.run_controls import BUSY_STATES
from .widgets.shortcuts import ShortcutsDialog, bound_shortcuts, key_text

PANELS = (DatasetPanel, TrainingPanel, TrajectoryPanel, InterpolationPanel, LikelihoodPanel, ExportPanel)
JOB_NAMES = {
    JobKey.MODEL: "loading the model",
    JobKey.SAMPLE: "sampling",
    JobKey.TRAJECTORY: "running the reverse chain",
    JobKey.FORK: "forking",
    JobKey.INTERPOLATE: "interpolating",
    JobKey.LIKELIHOOD: "evaluating the bound",
    JobKey.DATASET: "loading the dataset",
    JobKey.DATASET_IMAGES: "reading images",
    JobKey.TRAIN: "training",
    JobKey.HELD_OUT: "reading the held-out images",
    JobKey.TRAINING_COST: "estimating the training cost",
}


NOTICE_ON_CLOSE_WHILE_TRAINING = True  # tests switch the modal notice off (tests/conftest.py)
CLOSE_NOTICE_KEY = "told_close_saves_training"


def ask(box: QMessageBox) -> int:
    """The button a modal message box was answered with (a seam for tests)."""
    return box.exec()


# The status bar's word on the compiled path, by CompiledForward state: (text, tooltip).
COMPILE_LABELS = {
    "compiling": (
        "compiling a faster path…",
        "A low-priority background process is compiling a faster forward for this model with torch.compile (about "
        "a minute the first time; then a few seconds from its cache); the network answers uncompiled meanwhile",
    ),
    "ready": (
        "compiled",
        "Chains, forks and previews run the compiled forward ({detail}); a batch of one, and a batch size the "
        "compiled graph does not cover, run uncompiled",
    ),
    "failed": ("uncompiled", "The compile failed, so the network runs uncompiled: {detail}"),
    "off": (
        "uncompiled",
        "The network runs uncompiled: {detail}. With a C++ compiler (Debian: apt install g++) the studio compiles a "
        "faster forward in the background",
    ),
}


class MainWindow(QMainWindow):
    def __init__(self, run_dir: str | None = None, bridge: Bridge | None = None, load_defaults: bool = True):
        super().__init__()
        self.setWindowTitle("DDPM Studio")
        self.setAcceptDrops(True)  # a run folder, a checkpoint or a diffusers model folder: opened to explore
        self.settings = QSettings("DDPM Studio", "DDPM Studio")
        self.bridge = bridge or Bridge(self)
        self.state = AppState()
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.panels: dict[str, QWidget] = {}
        self.shortcuts_dialog: ShortcutsDialog | None = None  # Help > Keyboard shortcuts, while open
        for cls in PANELS:
            panel = cls(self.bridge, self.state)
            self.panels[cls.title] = panel
            self.tabs.addTab(panel, cls.title)
        self.setCentralWidget(self.tabs)
        # One preset choice: the Dataset panel plans for the preset the Training panel will train; while a run is
        # trained or followed, the Training panel keeps that run's preset and settings.
        dataset_presets = getattr(self.panels["Dataset"], "preset_combo", None)
        if dataset_presets is not None:
            training_presets = self.panels["Training"].preset_combo
            dataset_presets.currentTextChanged.connect(self._on_dataset_preset_changed)
            training_presets.currentTextChanged.connect(dataset_presets.setCurrentText)
        estimate = getattr(self.panels["Dataset"], "estimate_box", None)
        if estimate is not None:  # the estimate plans for the Training tab's step count when the presets agree
            training = self.panels["Training"]
            share = lambda *_: estimate.set_training_steps(
                training.preset_combo.currentText(),  # noqa: E731
                training.steps_spin.value(),
            )
            training.preset_combo.currentTextChanged.connect(share)
            training.steps_spin.valueChanged.connect(share)
            share()
        self._build_menus()
        self._build_status_bar()
        self.bridge.job_failed.connect(self._on_job_failed)
        self.bridge.model_changed.connect(self._on_model_changed)
        self.bridge.compile_changed.connect(self._show_compile)
        self.bridge.train_event.connect(self._on_train_event)
        self.state.observe("status", self.status_message.setText)
        self.resize(1280, 860)
        geometry = self.settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        self.tabs.setCurrentIndex(int(self.settings.value("tab", 2)))
        if load_defaults:
            QTimer.singleShot(0, lambda: asyncio.ensure_future(self.open_initial(run_dir)))

    # ---- startup ----

    async def open_initial(self, run_dir: str | None) -> None:
        """The given run or the bundled model, and the built-in data at the model's size."""
        source = run_dir or (str(BUNDLED_RUN) if (BUNDLED_RUN / "run.json").exists() else None)
        size = "16"
        if source is None:
            self.state.set("status", "no model yet: train one in the Training tab, or open a run (Ctrl+O)")
        elif await self.open_run(source):
            h, w = self.bridge.model.image_size
            size = str(h) if h == w else f"{h}x{w}"
            if self.tabs.currentWidget() is self.panels["Trajectory"]:  # something to scrub at once (it streams in)
                self.panels["Trajectory"].generate_button.click()  # before the data: the status says what is true
        await self.panels["Dataset"].load(f"builtin:shapes?size={size}")

    async def open_run(self, path: str) -> bool:
        try:
            info = await self.bridge.load_model(path)
        except EngineError as e:
            QMessageBox.warning(self, "Cannot open this run", str(e))
            return False
        except asyncio.CancelledError:
            return False
        self.state.set("run_dir", path)
        if Path(path).resolve() != BUNDLED_RUN.resolve():
            self.settings.setValue("last_run", path)
            self._follow_opened_run(path, info)
        return info is not None

    def _follow_opened_run(self, path: str, info) -> None:
        """A run with a metrics log: the Training tab follows it (its curves, samples, checkpoints), unless the
        studio is training a run of its own. `path` is the run folder or one of its checkpoints."""
        training = self.panels["Training"]
        if training.training_state in BUSY_STATES and training.training_state != "following":
            return
        candidates = (Path(path), Path(info.source).parent.parent) if info is not None else (Path(path),)
        run = next((p for p in candidates if (p / "run.json").is_file() and (p / "metrics.jsonl").is_file()), None)
        if run is not None:
            training.follow(str(run))

    # ---- menus and shortcuts ----

    def _action(self, menu, text: str, slot, shortcut: str | QKeySequence | None = None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.setStatusTip(tip)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self._action(
            file_menu,
            "&Open run…",
            self._on_open_run,
            QKeySequence.StandardKey.Open,
            "open a run directory (or a checkpoint) to explore it",
        )
        self._action(
            file_menu, "Open &last run", self._on_open_last_run, "Ctrl+Shift+O", "reopen the run used last time"
        )
        self._action(
            file_menu,
            "Open &bundled model",
            lambda: asyncio.ensure_future(self.open_run(str(BUNDLED_RUN))),
            None,
            "the small model that ships with the studio, trained on the built-in shapes",
        )
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        view_menu = self.menuBar().addMenu("&View")
        for i, cls in enumerate(PANELS):
            self._action(view_menu, cls.title, lambda checked=False, i=i: self.tabs.setCurrentIndex(i), f"Ctrl+{i + 1}")
        help_menu = self.menuBar().addMenu("&Help")
        self._action(
            help_menu,
            "&Keyboard shortcuts",
            self.show_shortcuts,
            QKeySequence.StandardKey.HelpContents,
            "every keyboard shortcut of the window and of each panel",
        )
        self._action(help_menu, "&About DDPM Studio", self._on_about)

    def shortcut_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """[(section, [(keys, what)])]: the menus' shortcuts, then each panel's (read from what is bound)."""
        menus = [
            (key_text(action.shortcut()), f"{menu_action.text()} > {action.text()}".replace("&", ""))
            for menu_action in self.menuBar().actions()
            if menu_action.menu() is not None
            for action in menu_action.menu().actions()
            if not action.shortcut().isEmpty()
        ]
        panels = [
            (f"{title} tab", bound_shortcuts(panel) + list(getattr(panel, "extra_keys", ())))
            for title, panel in self.panels.items()
        ]
        return [("Window", menus), *panels]

    def show_shortcuts(self) -> ShortcutsDialog:
        """Help > Keyboard shortcuts: a dialog listing every shortcut; returns it (it stays open beside the window)."""
        if self.shortcuts_dialog is not None:
            self.shortcuts_dialog.close()
            self.shortcuts_dialog.deleteLater()
        self.shortcuts_dialog = ShortcutsDialog(self.shortcut_sections(), self)
        self.shortcuts_dialog.show()
        return self.shortcuts_dialog

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.status_message = QLabel("")
        self.engine_label = QLabel("engine idle")
        self.engine_label.setToolTip(
            "What the engine thread is doing now (all model work runs there; the window never waits)"
        )
        self.model_label = QLabel("no model")
        self.model_label.setToolTip("The model every tab explores: it changes only when you open another one")
        self.training_label = QLabel("")
        self.training_label.setToolTip(
            "The run being trained; to explore it, open one of its checkpoints (Training tab, or File > Open run)"
        )
        self.training_label.setVisible(False)
        self.compile_label = QLabel("")
        self.compile_label.setVisible(False)
        self.engine_busy = QProgressBar()
        self.engine_busy.setRange(0, 0)
        self.engine_busy.setMaximumWidth(90)
        self.engine_busy.setVisible(False)
        bar.addWidget(self.status_message, 1)
        bar.addPermanentWidget(self.engine_busy)
        bar.addPermanentWidget(self.engine_label)
        bar.addPermanentWidget(self.compile_label)
        bar.addPermanentWidget(self.training_label)
        bar.addPermanentWidget(self.model_label)
        self.bridge.job_started.connect(lambda *_: self._refresh_engine_label())
        self.bridge.job_finished.connect(lambda *_: self._refresh_engine_label())
        self.bridge.job_cancelled.connect(lambda *_: self._refresh_engine_label())
        self.bridge.job_failed.connect(lambda *_: self._refresh_engine_label())

    def _refresh_engine_label(self) -> None:
        busy = sorted({JOB_NAMES.get(k, k) for k in self.bridge.busy})
        self.engine_label.setText("engine: " + ", ".join(busy) if busy else "engine idle")
        self.engine_busy.setVisible(bool(busy))

    # ---- slots ----

    def dragEnterEvent(self, event) -> None:
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        """Outside the Dataset tab (which takes image folders itself), a dropped folder or file opens as a model."""
        event.acceptProposedAction()
        asyncio.ensure_future(self.open_run(event.mimeData().urls()[0].toLocalFile()))

    def _on_open_run(self) -> None:
        start = self.state.get("run_dir") or self.settings.value("last_run", str(Path.cwd()))
        path = QFileDialog.getExistingDirectory(
            self, "Open a run, or a diffusers model folder (imported once)", str(start)
        )
        if path:
            asyncio.ensure_future(self.open_run(path))

    def _on_open_last_run(self) -> None:
        last = self.settings.value("last_run")
        if last:
            asyncio.ensure_future(self.open_run(str(last)))
        else:
            self.state.set("status", "no run has been opened yet")

    def _on_model_changed(self, info) -> None:
        self._show_model(info)

    def _show_compile(self, status) -> None:
        """The explored model's compiled path (engine/compiled.py), as the engine's CompileStatus events say."""
        text, tip = COMPILE_LABELS.get(status.state, ("", ""))
        if status.state == "off" and "C++ compiler" not in status.detail:
            text = ""  # turned off on purpose, or not for this device: nothing to say
        self.compile_label.setText(text)
        self.compile_label.setToolTip(tip.format(detail=status.detail))
        self.compile_label.setVisible(bool(text))

    def _show_model(self, info) -> None:
        h, w = info.image_size
        bundled = Path(info.source).resolve().is_relative_to(BUNDLED_RUN.resolve())
        name = "bundled model" if bundled else run_name(info.source)
        self.model_label.setText(
            f"exploring {name} · step {info.step:,} · {w}x{h}x{info.channels} · T={info.num_timesteps} · "
            f"{info.parameters / 1e6:.2f}M params · {info.weights.upper()}"
        )

    def _on_train_event(self, event) -> None:
        """The status bar names the run in training and its step, beside (never instead of) the explored model."""
        run = self.panels["Training"].run_dir
        match event:
            case TrainStarted():
                self._training_total = event.total_steps
                self._show_training(run, event.step)
            case StepLogged():
                self._show_training(run, event.step)
            case TrainFinished():
                self.training_label.setVisible(False)

    def _show_training(self, run: str | None, step: int) -> None:
        total = getattr(self, "_training_total", 0)
        self.training_label.setText(f"training {run_name(run or '')} · step {step:,} / {total:,}  |")
        self.training_label.setVisible(True)

    def _on_dataset_preset_changed(self, name: str) -> None:
        training = self.panels["Training"]
        if training.training_state not in BUSY_STATES:
            training.preset_combo.setCurrentText(name)

    def _on_job_failed(self, job_id: int, key: str, message: str) -> None:
        self.state.set("status", f"{JOB_NAMES.get(key, key)} failed: {message}")

    def _may_close_while_training(self) -> bool:
        """Say, until the user asks not to be told again, that closing now stops training after this step with a
        checkpoint saved (nothing is lost); False if they would rather keep training."""
        if not NOTICE_ON_CLOSE_WHILE_TRAINING or self.settings.value(CLOSE_NOTICE_KEY, False, type=bool):
            return True
        box = QMessageBox(
            QMessageBox.Icon.Information,
            "Training is running",
            "Closing stops training after the current step and saves a checkpoint: nothing is lost. "
            "Continue the run later from the Training tab (Continue this run).",
            QMessageBox.StandardButton.Ok | QMessageBox.StandardButton.Cancel,
            self,
        )
        box.button(QMessageBox.StandardButton.Ok).setText("Save and close")
        box.button(QMessageBox.StandardButton.Cancel).setText("Keep training")
        quiet = QCheckBox("Do not tell me again", box)
        quiet.setChecked(True)
        box.setCheckBox(quiet)
        if ask(box) != QMessageBox.StandardButton.Ok:
            return False
        if quiet.isChecked():
            self.settings.setValue(CLOSE_NOTICE_KEY, True)
        return True

    def _on_about(self) -> None:
        QMessageBox.about(
            self,
            "DDPM Studio",
            "Train a Denoising Diffusion Probabilistic Model (Ho, Jain & Abbeel 2020) "
            "on your own images and watch it think.",
        )

    def closeEvent(self, event) -> None:
        if self.bridge.training and not self._may_close_while_training():
            event.ignore()
            return
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("tab", self.tabs.currentIndex())
        if self.bridge.training:
            self.state.set("status", "stopping training and saving a checkpoint…")
        self.bridge.shutdown()  # training finishes its step and saves a checkpoint before the thread ends
        super().closeEvent(event)
