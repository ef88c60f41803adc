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
import datetime as dt
import html
import time
import weakref
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from studio.bridge import (
    PRESETS,
    CheckpointSaved,
    EngineError,
    MetricsFollower,
    RolledBack,
    RunSpec,
    SamplesReady,
    StepDone,
    StepLogged,
    StepSkipped,
    TrainFinished,
    TrainStarted,
    read_run_record,
    run_name,
    to_jsonable,
)
from studio.panels.training_follow import RunFollowing, run_timesteps
from studio.state import AppState
from studio.widgets.plots import TrainingCurves
from studio.widgets.run_controls import BUSY_STATES, RunControls
from studio.widgets.run_outputs import CheckpointList, RunOutputs
from studio.widgets.train_settings import SETTINGS, PaperDifferences, TrainSettingsForm

IDLE_PROMPT = (
    "Press Start (Ctrl+Return) to train the preset on the data named above, or Follow a run… written elsewhere."
)


class StepProgressBar(QProgressBar):
    """ "step 5,330 / 10,000": QProgressBar's own %v / %m formats have no thousands separators."""

    def text(self) -> str:
        if self.value() < self.minimum():  # reset: nothing to show yet
            return ""
        return f"step {self.value():,} / {self.maximum():,}"


class TrainingPanel(RunFollowing, QWidget):
    """Train a preset on the loaded dataset, or follow a run written elsewhere. `training_state_changed` says which
    state it is in: idle, running, pausing, paused, stopping, stopped, finished, failed or following."""

    title = "Training"
    training_state_changed = Signal(str)

    def __init__(self, bridge, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.bridge, self.state = bridge, state
        self.training_state = "idle"
        self.run_dir = ""  # the run being trained or followed
        self._total_steps = self._batch_size = 0
        self._progress_shown_at = 0.0
        self._init_following()

        # ---- settings ----
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setToolTip("A model and recipe: the paper's (cifar10, celebahq256) or ours, sized for a CPU")
        self.preset_label = QLabel()
        self.preset_label.setWordWrap(True)
        self.settings_form = TrainSettingsForm()
        for attribute, *_ in SETTINGS:  # steps_spin, batch_spin, ...: the panel's public editors
            setattr(self, attribute, getattr(self.settings_form, attribute))
        self.settings_form.settings_changed.connect(self._show_differences)
        self.differs_list = PaperDifferences()
        self.run_controls = RunControls()
        self.run_dir_edit, self.choose_dir_button = self.run_controls.run_dir_edit, self.run_controls.choose_dir_button
        self.start_button, self.new_run_button = self.run_controls.start_button, self.run_controls.new_run_button
        self.pause_button, self.stop_button = self.run_controls.pause_button, self.run_controls.stop_button
        self.follow_button, self.data_label = self.run_controls.follow_button, self.run_controls.data_label
        self.run_controls.bind_shortcuts(self)
        preset_box, differs_box = QGroupBox("Preset"), QGroupBox("Differs from the paper (CIFAR-10)")
        for box, widgets in ((preset_box, (self.preset_combo, self.preset_label)), (differs_box, (self.differs_list,))):
            box_layout = QVBoxLayout(box)
            for widget in widgets:
                box_layout.addWidget(widget)
        controls = QWidget()
        left = QVBoxLayout(controls)
        left.setContentsMargins(0, 0, 0, 0)
        for widget, stretch in ((preset_box, 0), (self.settings_form, 0), (differs_box, 1)):
            left.addWidget(widget, stretch)
        # In a short window the settings scroll rather than squash their editors until the text is clipped.
        controls_scroll = QScrollArea()
        controls_scroll.setWidget(controls)
        controls_scroll.setWidgetResizable(True)
        controls_scroll.setFrameShape(QFrame.Shape.NoFrame)
        controls_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        controls_scroll.setMinimumWidth(260)
        controls_scroll.setMaximumWidth(340)

        # ---- the run, live ----
        self.status_label = QLabel(IDLE_PROMPT)
        self.status_label.setWordWrap(True)
        self.progress_bar = StepProgressBar()
        self.warning_label = QLabel()
        self.warning_label.setStyleSheet("color: #c62828;")
        self.warning_label.setVisible(False)
        self.curves = TrainingCurves()
        self.loss_plot = self.curves.loss_plot
        self.outputs = RunOutputs()
        self.ema_grid, self.raw_grid = self.outputs.ema_grid, self.outputs.raw_grid
        self.ema_title, self.raw_title = self.outputs.ema_title, self.outputs.raw_title
        self.checkpoint_list = CheckpointList()
        checkpoints = QWidget()
        checkpoints_column = QVBoxLayout(checkpoints)
        checkpoints_column.setContentsMargins(0, 0, 0, 0)
        checkpoints_column.addWidget(QLabel("<b>Checkpoints</b> (double-click one to explore it)"))
        checkpoints_column.addWidget(self.checkpoint_list, 1)
        curves_and_checkpoints = QSplitter(Qt.Orientation.Vertical)
        curves_and_checkpoints.addWidget(self.curves)
        curves_and_checkpoints.addWidget(checkpoints)
        curves_and_checkpoints.setSizes([500, 120])
        live = QSplitter(Qt.Orientation.Horizontal)  # the curves beside the samples, each as tall as the window allows
        live.addWidget(curves_and_checkpoints)
        live.addWidget(self.outputs)
        live.setSizes([520, 480])
        live.setStretchFactor(0, 1)
        live.setStretchFactor(1, 1)
        right = QVBoxLayout()
        for widget, stretch in (
            (self.run_controls, 0),
            (self.status_label, 0),
            (self.progress_bar, 0),
            (self.warning_label, 0),
            (live, 1),
        ):
            right.addWidget(widget, stretch)
        layout = QHBoxLayout(self)
        layout.setSpacing(12)
        layout.addWidget(controls_scroll)
        layout.addLayout(right, 1)

        self.preset_combo.currentTextChanged.connect(self._on_preset_changed)
        self.start_button.clicked.connect(self.start)
        self.new_run_button.clicked.connect(self.new_run)
        self.pause_button.clicked.connect(self._on_pause_clicked)
        self.stop_button.clicked.connect(self.stop)
        self.follow_button.clicked.connect(self._on_follow_clicked)
        self.checkpoint_list.checkpoint_chosen.connect(self._on_checkpoint_chosen)
        self.run_controls.run_dir_changed.connect(lambda _text: self._refresh_controls())
        self.bridge.train_event.connect(self._on_train_event)
        # AppState keeps its observers for good: a weak reference, so that no panel <-> state cycle is left for the
        # garbage collector, which may run on the engine thread and must not destroy widgets there.
        panel = weakref.ref(self)
        self.state.observe("dataset", lambda _: panel() is not None and panel()._on_dataset_changed())
        self.state.observe("dataset_error", lambda _: panel() is not None and panel()._refresh_controls())
        self.preset_combo.setCurrentText("tiny")
        self._on_preset_changed("tiny")
        self._reset_view()
        self._set_state("idle")

    # ---- settings ----

    def _on_dataset_changed(self) -> None:
        self._show_differences()
        self._refresh_controls()

    def _refresh_controls(self) -> None:
        """The buttons for the state, the folder and the data; the data line names what Start will train on."""
        self.run_controls.show_state(self.training_state, self.state.get("dataset") is not None)
        self.data_label.setText(self._data_text())

    def _data_text(self) -> str:
        run_dir, dataset, failed = self.run_controls.run_dir, self.state.get("dataset"), self.state.get("dataset_error")
        if self.training_state in BUSY_STATES or self.run_controls.resumable:
            try:
                whose = "the followed run's" if self.training_state == "following" else "this run's own data"
                folder = self.run_dir if self.training_state in BUSY_STATES else run_dir
                return f"{html.escape(str(read_run_record(Path(folder))['data']))} ({whose})"
            except (ValueError, KeyError, TypeError):
                pass
        if dataset is None:
            return "<span style='color:#c62828'>No dataset loaded: load one in the Dataset tab.</span>" + (
                f" The newest load failed ({html.escape(failed)})." if failed else ""
            )
        h, w = dataset.image_size
        text = html.escape(f"{dataset.spec} · {dataset.count:,} images · {h}×{w}×{dataset.channels}")
        if failed:
            text += (
                f"<br><span style='color:#b35c00'>⚠ The newest load failed ({html.escape(failed)}): "
                "Start uses this one.</span>"
            )
        return text

    def _on_preset_changed(self, name: str) -> None:
        if self.training_state in BUSY_STATES:
            return  # the settings describe the run being trained or followed; the combo is disabled meanwhile
        preset = PRESETS[name]
        self.preset_label.setText(preset.description)
        self._show_train_config(to_jsonable(preset.train))
        self.curves.set_timesteps(preset.diffusion.num_timesteps)
        self._new_run_dir()

    def _show_train_config(self, train: dict, run: bool = False) -> None:
        """Fill the settings from a TrainConfig in JSON form (a preset's, or a `run`'s run.json)."""
        self.settings_form.show_train(train, run)
        self._show_differences()

    def _new_run_dir(self) -> None:
        self.run_controls.new_run_dir(self.preset_combo.currentText())

    def run_spec(self) -> RunSpec:
        """A new run's spec as `ddpm train` builds it (RunSpec.for_data): the chosen preset with the loaded dataset's
        shape and the panel's settings. Raises ValueError when the size does not halve evenly through the U-Net."""
        preset, data = PRESETS[self.preset_combo.currentText()], self.state.get("dataset")
        shape = (data.channels, data.image_size) if data else (preset.unet.in_channels, preset.unet.image_size)
        return RunSpec.for_data(preset, data.spec if data else "", *shape, self.settings_form.values())

    def _show_differences(self, *_, record: dict | None = None) -> None:
        if self.training_state == "following" and record is None:
            return  # the list shows the followed run's own settings
        try:
            self.differs_list.show_configs(
                record or {k: v for k, v in self.run_spec().to_json().items() if k in ("unet", "diffusion", "train")}
            )
        except ValueError as e:
            self.differs_list.show_lines([f"⚠ {e}"])

    # ---- start, pause, resume, stop ----

    def _set_state(self, name: str) -> None:
        self.training_state = name
        self._refresh_controls()
        for widget in (self.preset_combo, self.settings_form):
            widget.setEnabled(name not in BUSY_STATES)
        self.training_state_changed.emit(name)

    def _error(self, message: str) -> None:
        self.status_label.setText(f"<span style='color:#c62828'>{message}</span>")

    def new_run(self) -> asyncio.Future | None:
        """Start a new run of the preset on the loaded dataset, in a fresh folder of the runs folder."""
        self._new_run_dir()
        return self.start()

    def start(self) -> asyncio.Future | None:
        """Train the preset on the loaded dataset into the run folder (or continue the run the folder holds);
        returns the task that awaits the training job, None if it could not start."""
        run_dir = self.run_controls.run_dir
        resuming = self.run_controls.resumable
        dataset = self.state.get("dataset")
        if not run_dir or (dataset is None and not resuming):
            return self._error(
                "Choose a run folder first." if not run_dir else "Load a dataset in the Dataset panel first."
            )
        spec = None  # resuming: the run keeps its own settings
        if not resuming:
            try:
                spec = self.run_spec()
            except ValueError as e:
                return self._error(f"The dataset's images do not fit this preset's U-Net: {e}")
        self._reset_view()
        self.run_dir, self._total_steps, self._batch_size = run_dir, self.steps_spin.value(), self.batch_spin.value()
        if resuming:  # show the run's history; the trainer drops any steps after its newest checkpoint
            self.curves.set_timesteps(run_timesteps(Path(run_dir)))
            self.curves.show_records(
                MetricsFollower(Path(run_dir) / "metrics.jsonl").read()[0], self._total_steps, self._batch_size
            )
            self.outputs.show_run_samples(Path(run_dir))
        self.state.set("run_dir", run_dir)
        self.status_label.setText(("Continuing " if resuming else "Starting ") + f"{run_dir} …")
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
        self._set_state({"pausing": "paused", "stopping": "stopped"}.get(self.training_state, "finished"))
        self.checkpoint_list.list_checkpoints(Path(self.run_dir))

    def _on_pause_clicked(self) -> None:
        if self.training_state == "paused":
            self._launch(None)  # the engine still holds the trainer: this continues exactly
        elif self.training_state == "running":
            self.bridge.stop_training()
            self._set_state("pausing")
            self.status_label.setText("Pausing after this step (saving a checkpoint) …")

    def stop(self) -> None:
        """Stop training (a checkpoint is saved); the folder stays, so Continue this run picks it up again and New
        run begins another."""
        if self.training_state == "running":
            self.bridge.stop_training()
            self._set_state("stopping")
        elif self.training_state == "paused":
            self._set_state("stopped")

    def _reset_view(self, raw_placeholder: str | None = None) -> None:
        self.curves.clear()
        self.outputs.clear(raw_placeholder)
        self.checkpoint_list.clear()
        self.warning_label.setVisible(False)

    # ---- events of the engine's training loop ----

    def _on_train_event(self, event) -> None:
        match event:
            case TrainStarted():
                self._total_steps = event.total_steps
                self.progress_bar.setRange(0, event.total_steps)
                self.progress_bar.setValue(event.step)
                resumed = f", resumed from step {event.resumed_from:,}" if event.resumed_from is not None else ""
                self.status_label.setText(
                    f"Training {event.parameters / 1e6:.2f}M parameters on {event.device} "
                    f"({event.precision}), {event.dataset_size:,} images{resumed}."
                )
            case StepDone():  # every optimiser step: at most 10 repaints a second
                if time.monotonic() - self._progress_shown_at > 0.1:
                    self._progress_shown_at = time.monotonic()
                    self.progress_bar.setValue(event.step)
            case StepLogged():
                self.curves.show_logged(
                    event.step,
                    event.loss,
                    event.loss_by_quartile,
                    event.lr,
                    event.grad_norm,
                    event.images_per_s,
                    event.eta_s,
                )
            case SamplesReady():
                self.outputs.show_samples(event.step, event.ema, event.raw)
            case CheckpointSaved():
                self.checkpoint_list.list_checkpoints(Path(event.path).parent.parent)
            case StepSkipped() | RolledBack():
                text = (
                    f"step {event.step:,} skipped: {event.reason}"
                    if isinstance(event, StepSkipped)
                    else f"rolled back from step {event.from_step:,} to {event.to_step:,}: {event.reason}"
                )
                self.warning_label.setText(f"⚠ {dt.datetime.now():%H:%M:%S} {text}")
                self.warning_label.setVisible(True)
            case TrainFinished():
                self.progress_bar.setValue(event.step)
                self.status_label.setText(
                    f"Finished at step {event.step:,}: {self.run_dir}. Raise Steps and Continue this run to train "
                    "it further, or begin a New run."
                    if event.reason == "done"
                    else f"Paused at step {event.step:,}; checkpoint saved."
                    if self.training_state == "pausing"
                    else f"Stopped at step {event.step:,}; checkpoint saved. Continue this run, or begin a New run."
                )

    def _on_checkpoint_chosen(self, path: str) -> None:
        asyncio.ensure_future(self._explore(path))

    async def _explore(self, path: str) -> None:
        try:
            info = await self.bridge.load_model(path)
        except asyncio.CancelledError:
            return
        except EngineError as e:
            return self._error(f"Could not load {path}: {e}")
        self.status_label.setText(f"Loaded step {info.step:,} of {run_name(path)} to explore.")
