"""The Training panel: a preset and its settings (and how they differ from the paper), start / pause / resume / stop,
and the run as it learns: the loss on a log axis (smoothed, and by t-quartile), lr, gradient norm, images/s, ETA,
sample grids from the EMA and the raw weights, and the checkpoints.

Training runs in the engine (`bridge.start_training`); its events arrive through `bridge.train_event`. Pausing stops
the job, which saves a checkpoint; the engine keeps the trainer, so Resume continues exactly where it stopped. The
panel can also *follow* a run that the command line or a multi-GPU job is writing: every 2 s it reads what was
appended to the run's metrics.jsonl and the newest samples/ and checkpoints/ files, with no engine involved.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
import time
import weakref
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QImage, QValidator
from PySide6.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
    QListWidget, QListWidgetItem, QProgressBar, QPushButton, QSpinBox, QSplitter, QVBoxLayout, QWidget,
)

from studio.bridge import PRESETS, EngineError, Precision, RunSpec, to_jsonable
from studio.state import AppState
from studio.widgets.image_grid import ImageGrid
from studio.widgets.plots import MetricsTail, TrainingCurves, short_number

PAPER = PRESETS["cifar10"]  # Ho et al. 2020's CIFAR-10 recipe: every difference is shown against it
FOLLOW_INTERVAL_MS = 2000
_STEP_FILE = re.compile(r"^step_(\d+)\.(json|png)$")
_COMPARED = {  # config group -> (field, how the list names it)
    "unet": (("image_size", "image size"), ("in_channels", "channels"), ("base_channels", "width"),
             ("channel_mults", "channel multipliers"), ("num_res_blocks", "res blocks"),
             ("attention_resolutions", "attention at"), ("dropout", "dropout")),
    "diffusion": (("num_timesteps", "T"), ("schedule", "schedule"), ("beta_start", "β_1"), ("beta_end", "β_T"),
                  ("variance", "σ_t²"), ("loss", "loss")),
    "train": (("batch_size", "batch"), ("learning_rate", "lr"), ("warmup_steps", "warmup"), ("grad_clip", "clip"),
              ("ema_decay", "EMA decay"), ("ema_warmup", "EMA warmup"), ("hflip", "flips"), ("precision", "precision"),
              ("total_steps", "steps")),
}

# The editable TrainConfig fields: (widget attribute, label, field, tooltip). One table builds the form, fills it from
# a preset or a run.json, and reads it back into a TrainConfig.
SETTINGS = (
    ("steps_spin", "Steps", "total_steps", "Train until this step (the paper: 800,000 for CIFAR-10)"),
    ("batch_spin", "Batch size", "batch_size", "Images per optimiser step (the paper: 128)"),
    ("lr_spin", "Learning rate", "learning_rate", "Adam's rate after warmup (the paper: 2e-4); ↑/↓ double and halve it"),
    ("warmup_spin", "Warmup steps", "warmup_steps", "Linear learning-rate warmup (the paper: 5,000 steps)"),
    ("ema_spin", "EMA decay", "ema_decay", "Decay of the moving average of the weights that sampling uses (paper: 0.9999)"),
    ("precision_combo", "Precision", "precision", "fp32, bf16 autocast, or auto: bf16 where the device runs it natively"),
    ("seed_spin", "Seed", "seed", "Seeds the initial weights, the data order and each step's t and ε: a run replays"),
    ("sample_every_spin", "Sample every", "sample_every", "Steps between the EMA and raw sample grids"),
    ("checkpoint_every_spin", "Checkpoint every", "checkpoint_every", "Steps between checkpoints"),
)


def setting_widget(name: str) -> QWidget:
    if name == "precision":
        combo = QComboBox()
        combo.addItems([p.value for p in Precision])
        return combo
    if name in ("learning_rate", "ema_decay"):
        return CompactSpinBox(1e-8, 1.0, geometric=True) if name == "learning_rate" else CompactSpinBox(0, 0.99999, 1e-4)
    spin = QSpinBox()
    spin.setRange(0 if name in ("seed", "warmup_steps") else 1, 2**31 - 1)
    spin.setGroupSeparatorShown(name != "seed")
    return spin


def show_value(value, name: str = "") -> str:
    """Settings as the paper writes them: 1e-3, 800,000, 32×32, on/off (values as `to_jsonable` gives them)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ("×" if name == "image_size" else ", ").join(map(str, value))
    return f"{value:,}" if isinstance(value, int) else short_number(value) if isinstance(value, float) else str(value)


def paper_differences(configs: dict[str, dict]) -> list[str]:
    """"lr 1e-3 (paper 2e-4)" for each compared setting of {"unet": ..., "diffusion": ..., "train": ...} (JSON form,
    as run.json stores them) that differs from the paper's CIFAR-10 run."""
    lines = []
    for group, fields in _COMPARED.items():
        paper = to_jsonable(getattr(PAPER, group))
        for name, label in fields:
            ours = configs.get(group, {}).get(name, paper[name])
            if ours != paper[name]:
                lines.append(f"{label} {show_value(ours, name)} (paper {show_value(paper[name], name)})")
    return lines


def steps_in(folder: Path, suffix: str) -> list[tuple[int, Path]]:
    """[(step, path)] of the folder's step_XXXXXXX.<suffix> files, oldest first."""
    return sorted((int(m.group(1)), p) for p in folder.glob(f"step_*.{suffix}") if (m := _STEP_FILE.match(p.name)))


def read_png(path: Path) -> np.ndarray | None:
    """A PNG as [1, H, W, 3] uint8 (for ImageGrid), or None if it cannot be read yet."""
    image = QImage(str(path))
    if image.isNull():
        return None
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    h, w, stride = image.height(), image.width(), image.bytesPerLine()
    rows = np.frombuffer(image.constBits(), np.uint8, count=h * stride).reshape(h, stride)
    return rows[:, : w * 3].reshape(1, h, w, 3).copy()


class CompactSpinBox(QDoubleSpinBox):
    """Shows 2e-4 and 0.999 (no trailing zeros); with `geometric`, the arrows halve and double (learning rates)."""

    def __init__(self, low: float, high: float, step: float = 0.0, geometric: bool = False):
        self.geometric = geometric
        super().__init__()
        self.setDecimals(10)
        self.setRange(low, high)
        self.setSingleStep(step)

    def textFromValue(self, value: float) -> str:
        return short_number(float(value)) if self.geometric else f"{value:.6g}"

    def valueFromText(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int):
        try:
            ok = self.minimum() <= float(text) <= self.maximum()
        except ValueError:
            ok = False
        return QValidator.State.Acceptable if ok else QValidator.State.Intermediate, text, pos

    def stepBy(self, steps: int) -> None:
        self.setValue(self.value() * 2.0 ** steps) if self.geometric else super().stepBy(steps)


class TrainingPanel(QWidget):
    """Train a preset on the loaded dataset, or follow a run written elsewhere. `training_state_changed` says which
    state it is in: idle, running, pausing, paused, stopping, finished, failed or following."""

    title = "Training"
    training_state_changed = Signal(str)

    def __init__(self, bridge, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.bridge, self.state = bridge, state
        self.training_state = "idle"
        self.run_dir = ""  # the run being trained or followed
        self._total_steps = self._batch_size = 0
        self._tail: MetricsTail | None = None  # while following
        self._shown_sample = ""
        self._progress_shown_at = 0.0
        self.follow_timer = QTimer(self)
        self.follow_timer.setInterval(FOLLOW_INTERVAL_MS)
        self.follow_timer.timeout.connect(self.poll_followed_run)

        # ---- settings ----
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setToolTip("A model and recipe: the paper's (cifar10, celebahq256) or ours, sized for a CPU")
        self.preset_label = QLabel()
        self.preset_label.setWordWrap(True)
        settings_box = QGroupBox("Settings")
        form = QFormLayout(settings_box)
        self._setting_widgets = {}
        for attribute, label, name, tip in SETTINGS:
            widget = setting_widget(name)
            widget.setToolTip(tip)
            form.addRow(label, widget)
            setattr(self, attribute, widget)
            self._setting_widgets[name] = widget
            (widget.currentIndexChanged if name == "precision" else widget.valueChanged).connect(self._show_differences)
        self.differs_list = QListWidget()
        self.differs_list.setWordWrap(True)
        self.differs_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.differs_list.setToolTip("Settings that differ from Ho et al. 2020's CIFAR-10 run (Sec. 4, Appendix B)")
        self.run_dir_edit = QLineEdit()
        self.run_dir_edit.setToolTip("The run folder: run.json, metrics.jsonl, checkpoints/, samples/.\n"
                                     "A folder that already holds a run is resumed with its own settings.")
        self.choose_dir_button = QPushButton("Choose…")
        self.start_button, self.pause_button = QPushButton("Start"), QPushButton("Pause")
        self.stop_button, self.follow_button = QPushButton("Stop"), QPushButton("Follow a run…")
        self.start_button.setToolTip("Train on the dataset loaded in the Dataset panel (or resume the run folder)")
        self.pause_button.setToolTip("Pause saves a checkpoint; Resume continues exactly where it stopped")
        self.stop_button.setToolTip("Stop after this step and save a checkpoint; the next Start begins a new run")
        self.follow_button.setToolTip("Watch a run that the command line or a multi-GPU job is writing")
        run_box = QGroupBox("Run folder")
        run_grid = QGridLayout(run_box)
        run_grid.addWidget(self.run_dir_edit, 0, 0)
        run_grid.addWidget(self.choose_dir_button, 0, 1)
        for i, button in enumerate((self.start_button, self.pause_button, self.stop_button, self.follow_button)):
            run_grid.addWidget(button, 1 + i // 2, i % 2)
        preset_box, differs_box = QGroupBox("Preset"), QGroupBox("Differs from the paper (CIFAR-10)")
        for box, widgets in ((preset_box, (self.preset_combo, self.preset_label)), (differs_box, (self.differs_list,))):
            box_layout = QVBoxLayout(box)
            for widget in widgets:
                box_layout.addWidget(widget)
        controls = QWidget()
        controls.setMaximumWidth(340)
        left = QVBoxLayout(controls)
        left.setContentsMargins(0, 0, 0, 0)
        for widget, stretch in ((preset_box, 0), (settings_box, 0), (differs_box, 1), (run_box, 0)):
            left.addWidget(widget, stretch)
        self._settings = (self.preset_combo, *self._setting_widgets.values(), self.run_dir_edit, self.choose_dir_button)

        # ---- the run, live ----
        self.status_label = QLabel("Load a dataset in the Dataset panel, then press Start.")
        self.status_label.setWordWrap(True)
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("step %v / %m")
        self.warning_label = QLabel()
        self.warning_label.setStyleSheet("color: #c62828;")
        self.warning_label.setVisible(False)
        self.curves = TrainingCurves()
        self.loss_plot = self.curves.loss_plot
        self.ema_grid, self.raw_grid = ImageGrid(max_zoom=16), ImageGrid(max_zoom=16)
        self.ema_title, self.raw_title = QLabel(), QLabel()
        self.ema_title.setToolTip("An exponential moving average of the weights: what sampling uses (paper: 0.9999)")
        self.raw_title.setToolTip("The live weights the optimiser updates, sampled with the same noise")
        self.checkpoint_list = QListWidget()
        self.checkpoint_list.setToolTip("The run's complete checkpoints; double-click one to explore it")
        bottom = QWidget()
        grids = QGridLayout(bottom)
        grids.setContentsMargins(0, 0, 0, 0)
        for column, (title, widget) in enumerate(((self.ema_title, self.ema_grid), (self.raw_title, self.raw_grid),
                                                  (QLabel("<b>Checkpoints</b>"), self.checkpoint_list))):
            grids.addWidget(title, 0, column)
            grids.addWidget(widget, 1, column)
            grids.setColumnStretch(column, 3 if column < 2 else 2)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.curves)
        splitter.addWidget(bottom)
        splitter.setSizes([400, 250])
        right = QVBoxLayout()
        for widget, stretch in ((self.status_label, 0), (self.progress_bar, 0), (self.warning_label, 0), (splitter, 1)):
            right.addWidget(widget, stretch)
        layout = QHBoxLayout(self)
        layout.setSpacing(12)
        layout.addWidget(controls)
        layout.addLayout(right, 1)

        self.preset_combo.currentTextChanged.connect(self._on_preset_changed)
        self.choose_dir_button.clicked.connect(self._choose_run_dir)
        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self._on_pause_clicked)
        self.stop_button.clicked.connect(self.stop)
        self.follow_button.clicked.connect(self._on_follow_clicked)
        self.checkpoint_list.itemActivated.connect(self._on_checkpoint_activated)
        self.bridge.train_event.connect(self._on_train_event)
        # AppState keeps its observers for good: a weak reference, so that no panel <-> state cycle is left for the
        # garbage collector, which may run on the engine thread and must not destroy widgets there.
        panel = weakref.ref(self)
        self.state.observe("dataset", lambda _: panel() is not None and panel()._show_differences())
        self.preset_combo.setCurrentText("tiny")
        self._on_preset_changed("tiny")
        self._reset_view()
        self._set_state("idle")

    # ---- settings ----

    def _on_preset_changed(self, name: str) -> None:
        preset = PRESETS[name]
        self.preset_label.setText(preset.description)
        self._show_train_config(to_jsonable(preset.train))
        self._new_run_dir()

    def _show_train_config(self, train: dict) -> None:
        """Fill the settings from a TrainConfig in JSON form (a preset's, or a run.json's)."""
        for name, widget in self._setting_widgets.items():
            widget.setCurrentText(train[name]) if name == "precision" else widget.setValue(train[name])
        self._show_differences()

    def _new_run_dir(self) -> None:
        self.run_dir_edit.setText(str(Path("runs") / f"{self.preset_combo.currentText()}-{dt.datetime.now():%Y%m%d-%H%M%S}"))
        self.run_dir_edit.setCursorPosition(0)

    def configs(self):
        """(unet, diffusion, train) of the chosen preset with the panel's settings and the loaded dataset's shape.
        Raises ValueError when the dataset's size does not halve evenly through the U-Net's levels."""
        preset = PRESETS[self.preset_combo.currentText()]
        dataset = self.state.get("dataset")
        unet = preset.unet
        if dataset is not None:
            unet = dataclasses.replace(unet, in_channels=dataset.channels, image_size=tuple(dataset.image_size))
        changes = {name: Precision(widget.currentText()) if name == "precision" else widget.value()
                   for name, widget in self._setting_widgets.items()}
        return unet, preset.diffusion, dataclasses.replace(preset.train, **changes)

    def _show_differences(self, *_, record: dict | None = None) -> None:
        if self.training_state == "following" and record is None:
            return  # the list shows the followed run's own settings
        try:
            lines = paper_differences(record or dict(zip(("unet", "diffusion", "train"), map(to_jsonable, self.configs()))))
        except ValueError as e:
            lines = [f"⚠ {e}"]
        self.differs_list.clear()
        self.differs_list.addItems(lines or ["nothing: this is the paper's recipe"])

    def _choose_run_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Run folder (a new or an existing run)", self.run_dir_edit.text())
        if path:
            self.run_dir_edit.setText(path)

    # ---- start, pause, resume, stop ----

    def _set_state(self, name: str) -> None:
        self.training_state = name
        busy = name in ("running", "pausing", "stopping", "paused", "following")
        self.start_button.setEnabled(not busy)
        self.pause_button.setEnabled(name in ("running", "paused"))
        self.pause_button.setText("Resume" if name == "paused" else "Pause")
        self.stop_button.setEnabled(name in ("running", "paused"))
        self.follow_button.setEnabled(not busy or name == "following")
        self.follow_button.setText("Stop following" if name == "following" else "Follow a run…")
        for widget in self._settings:
            widget.setEnabled(not busy)
        self.training_state_changed.emit(name)

    def _error(self, message: str) -> None:
        self.status_label.setText(f"<span style='color:#c62828'>{message}</span>")

    def start(self) -> asyncio.Future | None:
        """Train the preset on the loaded dataset into the run folder (or resume the run the folder holds);
        returns the task that awaits the training job, None if it could not start."""
        run_dir = self.run_dir_edit.text().strip()
        resuming = bool(run_dir) and (Path(run_dir) / "run.json").exists()
        dataset = self.state.get("dataset")
        if not run_dir or (dataset is None and not resuming):
            return self._error("Choose a run folder first." if not run_dir else
                               "Load a dataset in the Dataset panel first.")
        spec = None  # resuming: the run keeps its own settings
        if not resuming:
            try:
                spec = RunSpec(*self.configs(), dataset.spec, self.preset_combo.currentText())
            except ValueError as e:
                return self._error(f"The dataset's images do not fit this preset's U-Net: {e}")
        self._reset_view()
        self.run_dir, self._total_steps, self._batch_size = run_dir, self.steps_spin.value(), self.batch_spin.value()
        if resuming:  # show the run's history; the trainer drops any steps after its newest checkpoint
            self.curves.show_records(MetricsTail(Path(run_dir) / "metrics.jsonl").read()[0], self._total_steps,
                                     self._batch_size)
        self.state.set("run_dir", run_dir)
        self.status_label.setText(("Resuming " if resuming else "Starting ") + f"{run_dir} …")
        return self._launch(spec)

    def _launch(self, spec) -> asyncio.Future:
        future = self.bridge.start_training(self.run_dir, spec, self._total_steps)
        self._set_state("running")
        return asyncio.ensure_future(self._await_training(future))

    async def _await_training(self, future: asyncio.Future) -> None:
        try:
            await future
        except asyncio.CancelledError:
            return
        except EngineError as e:
            self._error(f"Training failed: {e}")
            self._set_state("failed")
            return
        self._set_state("paused" if self.training_state == "pausing" else "finished")
        self._refresh_checkpoints(Path(self.run_dir))

    def _on_pause_clicked(self) -> None:
        if self.training_state == "paused":
            self._launch(None)  # the engine still holds the trainer: this continues exactly
        elif self.training_state == "running":
            self.bridge.stop_training()
            self._set_state("pausing")
            self.status_label.setText("Pausing after this step (saving a checkpoint) …")

    def stop(self) -> None:
        """Stop training (a checkpoint is saved) and mark the run finished; the next Start begins a new run."""
        if self.training_state == "running":
            self.bridge.stop_training()
            self._set_state("stopping")
        elif self.training_state == "paused":
            self._set_state("finished")
        self._new_run_dir()

    def _reset_view(self) -> None:
        self.curves.clear()
        self.checkpoint_list.clear()
        self.warning_label.setVisible(False)
        for grid, title, name in ((self.ema_grid, self.ema_title, "EMA"), (self.raw_grid, self.raw_title, "raw")):
            grid.set_images(None)
            grid.set_placeholder(f"Samples from the {name} weights\nappear here as the model learns.")
            title.setText(f"<b>{name.capitalize() if name == 'raw' else name} weights</b>")

    # ---- events of the engine's training loop ----

    def _on_train_event(self, event) -> None:
        kind = type(event).__name__
        if kind == "TrainStarted":
            self._total_steps = event.total_steps
            self.progress_bar.setRange(0, event.total_steps)
            self.progress_bar.setValue(event.step)
            resumed = f", resumed from step {event.resumed_from:,}" if event.resumed_from is not None else ""
            self.status_label.setText(f"Training {event.parameters / 1e6:.2f}M parameters on {event.device} "
                                      f"({event.precision}), {event.dataset_size:,} images{resumed}.")
        elif kind == "StepDone":  # every optimiser step: at most 10 repaints a second
            if time.monotonic() - self._progress_shown_at > 0.1:
                self._progress_shown_at = time.monotonic()
                self.progress_bar.setValue(event.step)
        elif kind == "StepLogged":
            self.curves.show_logged(event.step, event.loss, event.loss_by_quartile, event.lr, event.grad_norm,
                                    event.images_per_s, event.eta_s)
        elif kind == "SamplesReady":
            self.ema_grid.set_images(event.ema)
            self.raw_grid.set_images(event.raw)
            self.ema_title.setText(f"<b>EMA weights</b> · step {event.step:,}")
            self.raw_title.setText(f"<b>Raw weights</b> · step {event.step:,}")
        elif kind == "CheckpointSaved":
            self._refresh_checkpoints(Path(event.path).parent.parent)
        elif kind in ("StepSkipped", "RolledBack"):
            text = (f"step {event.step:,} skipped: {event.reason}" if kind == "StepSkipped" else
                    f"rolled back from step {event.from_step:,} to {event.to_step:,}: {event.reason}")
            self.warning_label.setText(f"⚠ {dt.datetime.now():%H:%M:%S} {text}")
            self.warning_label.setVisible(True)
        elif kind == "TrainFinished":
            self.progress_bar.setValue(event.step)
            self.status_label.setText(
                f"Finished at step {event.step:,}: {self.run_dir}" if event.reason == "done" else
                f"{'Paused' if self.training_state == 'pausing' else 'Stopped'} at step {event.step:,}; checkpoint saved.")

    def _refresh_checkpoints(self, run_dir: Path) -> None:
        """List the run's checkpoints, newest first (pruned ones disappear)."""
        self.checkpoint_list.clear()
        for step, path in reversed(steps_in(run_dir / "checkpoints", "json")):
            try:
                when = dt.datetime.fromtimestamp(path.stat().st_mtime)
            except OSError:
                continue  # pruned while we looked
            item = QListWidgetItem(f"step {step:,} · {when:%H:%M:%S}")
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            item.setToolTip(f"{path}\nsaved {when:%Y-%m-%d %H:%M:%S}; double-click to explore it")
            self.checkpoint_list.addItem(item)

    def _on_checkpoint_activated(self, item: QListWidgetItem) -> None:
        asyncio.ensure_future(self._explore(item.data(Qt.ItemDataRole.UserRole)))

    async def _explore(self, path: str) -> None:
        try:
            info = await self.bridge.load_model(path)
        except asyncio.CancelledError:
            return
        except EngineError as e:
            return self._error(f"Could not load {path}: {e}")
        self.status_label.setText(f"Loaded step {info.step:,} of {Path(path).parent.parent.name} to explore.")

    # ---- following a run written by the CLI or a multi-GPU job ----

    def _on_follow_clicked(self) -> None:
        if self.training_state == "following":
            return self.stop_following()
        path = QFileDialog.getExistingDirectory(self, "Follow a run folder", str(Path("runs").resolve()))
        if path:
            self.follow(path)

    def follow(self, run_dir: str) -> bool:
        """Show `run_dir`'s settings and watch its metrics, samples and checkpoints every 2 s; False if the folder
        is not a run."""
        root = Path(run_dir)
        try:
            record = json.loads((root / "run.json").read_text(encoding="utf-8"))
            total, batch = int(record["train"]["total_steps"]), int(record["train"]["batch_size"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            self._error(f"{run_dir} is not a run folder: {e}")
            return False
        if record.get("preset") in PRESETS:
            self.preset_combo.setCurrentText(record["preset"])
        self._set_state("following")
        self._show_train_config(record["train"])
        self._show_differences(record=record)
        self.run_dir_edit.setText(str(root))
        self.run_dir_edit.setCursorPosition(0)
        self._reset_view()
        self.raw_grid.set_placeholder("Samples from the raw weights are shown\nonly while the studio trains the run.")
        self.run_dir, self._total_steps, self._batch_size = str(root), total, batch
        self._tail, self._shown_sample = MetricsTail(root / "metrics.jsonl"), ""
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(0)
        self.status_label.setText(f"Following {root} (preset {record.get('preset') or 'custom'}, "
                                  f"data {record.get('data')}); refreshed every {FOLLOW_INTERVAL_MS // 1000} s.")
        self.state.set("run_dir", str(root))
        self.poll_followed_run()
        self.follow_timer.start()
        return True

    def stop_following(self) -> None:
        if self.training_state == "following":
            self.follow_timer.stop()
            self._tail = None
            self._set_state("idle")
            self._show_differences()

    def poll_followed_run(self) -> None:
        """Show what the followed run wrote since the last poll: metrics, the newest sample grid, checkpoints."""
        if self._tail is None:
            return
        records, restarted = self._tail.read()
        if restarted:
            self.curves.clear()
        step = self.curves.show_records(records, self._total_steps, self._batch_size)
        if step is not None:
            self.progress_bar.setValue(min(step, self._total_steps))
        root = Path(self.run_dir)
        samples = steps_in(root / "samples", "png")
        if samples and samples[-1][1].name != self._shown_sample:
            step, path = samples[-1]
            picture = read_png(path)
            if picture is not None:  # else it is still being written: the next poll shows it
                self._shown_sample = path.name
                self.ema_grid.set_images(picture)
                self.ema_title.setText(f"<b>EMA weights</b> · step {step:,}")
        self._refresh_checkpoints(root)
