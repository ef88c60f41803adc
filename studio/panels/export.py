"""Export: sample grids, the trajectory as a strip and an animated GIF, the interpolation sheet; copy to clipboard.

Every PNG carries its provenance in text chunks (model, step, weights, sampler, steps, seed, config), so any picture
can be regenerated; `python -m engine` reads the same chunks. Pictures are saved at an integer zoom with
nearest-neighbour scaling, so small samples stay crisp.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, QStandardPaths, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..bridge import (
    Bridge,
    captioned,
    frame_steps,
    grid_shape,
    limits,
    make_grid,
    save_gif,
    save_png,
    spin_range,
    strip_layout,
    to_jsonable,
    trajectory_layout,
    upscale,
)
from ..requests import ViewRequests
from ..state import AppState
from ..widgets.image_grid import ImageGrid, to_qimage
from ..widgets.plots import duration
from ..widgets.shortcuts import bind_shortcut

GENERATE_KEYS, SAVE_KEYS, COPY_KEYS = "Ctrl+Return", "Ctrl+S", "Ctrl+Shift+C"

LAST_FOLDER_KEY = "last_export_folder"
TRAJECTORY_NONE = "no trajectory yet: generate one in the Trajectory tab"
SHEET_NONE = "no interpolation yet: make one in the Interpolation tab"


def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    box.setToolTip(tip)
    return box


class ExportPanel(QWidget):
    title = "Export"
    exported = Signal(str)  # the path written

    def __init__(self, bridge: Bridge, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.bridge, self.state = bridge, state
        self._samples = ViewRequests(  # one sample grid at a time (studio/requests.py)
            on_value=self._on_progress,
            on_done=self._on_sampled,
            on_error=self._on_sampling_failed,
            on_cancelled=self._on_sampling_stopped,
        )
        self._asked: tuple = ()
        self._sample_job = 0  # the engine job of the grid being sampled, for Stop

        # Sample grid
        self.count = _spin(*spin_range(limits.IMAGES), 16, "how many samples in the grid")
        self.columns = _spin(0, spin_range(limits.GRID_COLUMNS)[1], 0, "images per row; auto: as square as possible")
        self.columns.setSpecialValueText("auto")
        self.padding = _spin(0, 16, 2, "pixels between images")
        self.scale = _spin(
            *spin_range(limits.SCALE),
            4,
            "nearest-neighbour zoom of the saved picture: a 32x32 sample is unreadable at 1:1",
        )
        self.seed = _spin(
            *spin_range(limits.SEED), 0, "the random seed: the same seed and settings give the same picture"
        )
        self.steps = QComboBox()
        self.steps.addItems(
            ["exact (all T steps, Alg. 2)", "100 strided steps", "50 strided steps", "20 strided steps"]
        )
        self.steps.setToolTip(
            "the exact ancestral chain of the paper, or a strided chain (Song et al. 2021) that is faster"
        )
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip(f"sample a new grid from the loaded model ({GENERATE_KEYS}; again to stop)")
        self.progress = QProgressBar()  # the sampling chain: step k of its steps
        self.progress.setVisible(False)
        self.save_grid_button = QPushButton("Save PNG…")
        self.save_grid_button.setToolTip(f"save the grid as a PNG with its provenance in text chunks ({SAVE_KEYS})")
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip(f"copy the grid picture to the clipboard ({COPY_KEYS})")
        for keys, what, button in (
            (GENERATE_KEYS, "generate a sample grid", self.generate_button),
            (SAVE_KEYS, "save the sample grid as a PNG…", self.save_grid_button),
            (COPY_KEYS, "copy the sample grid to the clipboard", self.copy_button),
        ):
            bind_shortcut(self, keys, what, button.click)  # click(): nothing happens while the button is disabled
        self.grid = ImageGrid()
        self.grid.set_placeholder("Generate a grid of samples from the loaded model (EMA weights)")
        grid_form = QFormLayout()
        grid_form.addRow("Samples", self.count)
        grid_form.addRow("Columns", self.columns)
        grid_form.addRow("Padding", self.padding)
        grid_form.addRow("Zoom", self.scale)
        grid_form.addRow("Seed", self.seed)
        grid_form.addRow("Sampler", self.steps)
        buttons = QHBoxLayout()
        for b in (self.generate_button, self.save_grid_button, self.copy_button):
            buttons.addWidget(b)
        grid_form.addRow(buttons)
        grid_form.addRow(self.progress)
        grid_box = QGroupBox("Sample grid")
        grid_layout = QHBoxLayout(grid_box)
        grid_layout.addLayout(grid_form, 0)
        self.preview_caption = QLabel()
        self.preview_caption.setWordWrap(True)
        self.preview_caption.setToolTip(
            "the preview fits the grid to this box; Save PNG… and Copy use Zoom and Padding"
        )
        preview = QVBoxLayout()
        preview.addWidget(self.grid, 1)
        preview.addWidget(self.preview_caption, 0)
        grid_layout.addLayout(preview, 1)

        # Trajectory and interpolation
        self.frames = _spin(
            *spin_range(limits.FRAMES), 11, "frames of the trajectory strip, evenly spaced from t = T to 0"
        )
        self.gif_source = QComboBox()
        self.gif_source.addItems(["x_t (the noisy state)", "x̂0 (the prediction, Eq. 15)"])
        self.gif_labels = QCheckBox("label each frame with its t")
        self.gif_labels.setChecked(True)
        self.gif_labels.setToolTip("a band above each GIF frame says which step t it shows")
        self.save_strip_button = QPushButton("Save strip…")
        self.save_gif_button = QPushButton("Save GIF…")
        self.save_sheet_button = QPushButton("Save interpolation sheet…")
        self.trajectory_label = QLabel(TRAJECTORY_NONE)
        self.sheet_label = QLabel(SHEET_NONE)
        other = QFormLayout()
        other.addRow("Trajectory", self.trajectory_label)
        other.addRow("Strip frames", self.frames)
        other.addRow("GIF shows", self.gif_source)
        other.addRow("", self.gif_labels)
        row = QHBoxLayout()
        row.addWidget(self.save_strip_button)
        row.addWidget(self.save_gif_button)
        other.addRow(row)
        other.addRow("Interpolation", self.sheet_label)
        other.addRow(self.save_sheet_button)
        other_box = QGroupBox("Trajectory and interpolation")
        other_box.setLayout(other)

        self.message = QLabel("")
        self.message.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(grid_box, 1)
        layout.addWidget(other_box, 0)
        layout.addWidget(self.message)

        self.generate_button.clicked.connect(self._on_generate_clicked)
        self.save_grid_button.clicked.connect(lambda: self._ask_and(self.export_grid, "samples.png"))
        self.copy_button.clicked.connect(self.copy_grid)
        self.save_strip_button.clicked.connect(lambda: self._ask_and(self.export_strip, "trajectory.png"))
        self.save_gif_button.clicked.connect(lambda: self._ask_and(self.export_gif, "trajectory.gif", "GIF (*.gif)"))
        self.save_sheet_button.clicked.connect(lambda: self._ask_and(self.export_sheet, "interpolation.png"))
        for box in (self.columns, self.padding, self.scale):
            box.valueChanged.connect(self._show_preview_caption)
        state.observe("samples", lambda _: self._show_preview_caption())
        state.observe("trajectory", self._on_trajectory_changed)
        state.observe("interpolation", self._on_interpolation_changed)
        self._refresh_buttons()
        self._show_preview_caption()

    # ---- the sample grid ----

    def saved_grid_size(self) -> tuple[int, int] | None:
        """(width, height) in pixels of the grid PNG that Save PNG… would write now; None without samples."""
        samples = self.state.get("samples")
        if samples is None:
            return None
        n, h, w = samples["images"].shape[:3]
        zoom = self.scale.value()
        _, height, width = grid_shape(n, h, w, self.columns.value() or None, self.padding.value())
        return width * zoom, height * zoom

    def _show_preview_caption(self, *_) -> None:
        size = self.saved_grid_size()
        self.preview_caption.setText(
            f"Preview; the PNG is saved at zoom {self.scale.value()}, padding {self.padding.value()}"
            + (f" ({size[0]:,} × {size[1]:,} px)." if size else ".")
        )

    def _num_steps(self) -> int | None:
        return [None, 100, 50, 20][self.steps.currentIndex()]

    def _on_generate_clicked(self) -> None:
        if self._samples.running:
            self.bridge.cancel_job(self._sample_job)  # only this grid's: a source box may be sampling too
        else:
            asyncio.ensure_future(self.generate())

    async def generate(self) -> None:
        model = self.bridge.model
        if model is None:
            self.message.setText("no model is loaded")
            return
        n, seed, steps = self.count.value(), self.seed.value(), self._num_steps()
        cost = getattr(model, "seconds_per_image_step", None)
        total = steps or model.num_timesteps
        self.message.setText(
            f"sampling {n} images through {total:,} steps"
            + (f", up to {duration(cost * n * total)} here" if cost else "")
            + "…"
        )
        self._asked = (n, seed, steps, model.num_timesteps)
        self._set_sampling(True)
        await self._samples.ask(lambda on_value: self._start_sampling(n, seed, steps, on_value))

    def _start_sampling(self, n: int, seed: int, steps: int | None, on_value) -> asyncio.Future:
        future = self.bridge.sample(n, seed, steps, on_progress=on_value)
        self._sample_job = future.job_id
        return future

    def _set_sampling(self, sampling: bool) -> None:
        self.generate_button.setText("Stop" if sampling else "Generate")
        self.progress.setVisible(sampling)
        if sampling:
            self.progress.setRange(0, 0)  # busy until the first step arrives

    def _on_sampling_failed(self, message: str) -> None:
        self._set_sampling(False)
        self.message.setText(f"sampling failed: {message}")

    def _on_sampling_stopped(self) -> None:
        self._set_sampling(False)
        self.message.setText("sampling stopped; the grid shown is the previous one")

    def _on_sampled(self, result) -> None:
        """A `Samples` from the engine's sample-grid recipe: its provenance is the one `ddpm sample` writes."""
        self._set_sampling(False)
        n, seed, steps, T = self._asked
        self.state.set("samples", {"images": result.images, "metadata": dict(result.metadata)})
        self.grid.set_images(result.images, columns=self.columns.value() or None)
        sampler = "ancestral (Alg. 2)" if steps is None else f"strided, eta=1, {steps} steps"
        self.message.setText(f"{n} samples, seed {seed}, {sampler}")
        self._refresh_buttons()

    def _on_progress(self, value) -> None:
        if hasattr(value, "done") and value.total:
            self.progress.setRange(0, value.total)
            self.progress.setValue(value.done)
            self.progress.setFormat(f"{value.done:,} / {value.total:,} frames (x_T, then one per step)")

    def grid_picture(self) -> np.ndarray:
        samples = self.state.get("samples")
        picture = make_grid(samples["images"], nrow=self.columns.value() or None, padding=self.padding.value())
        return upscale(picture, self.scale.value())

    def export_grid(self, path: str) -> str:
        samples = self.state.get("samples")
        return self._save(path, self.grid_picture(), {**samples["metadata"], "layout": "sample grid"})

    def copy_grid(self) -> None:
        if self.state.get("samples") is not None:
            QGuiApplication.clipboard().setImage(to_qimage(self.grid_picture()))
            self.message.setText("grid copied to the clipboard")

    # ---- trajectory and interpolation ----

    def _strip_frames(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        trajectory = self.state.get("trajectory")
        t_values = np.asarray(trajectory["t_values"])
        T = int(t_values[0])
        if len(t_values) == T + 1:  # the whole chain: the steps `ddpm trajectory --frames K` shows
            picks = np.array([T - t for t in frame_steps(T, self.frames.value())])
        else:  # a chain stopped early: evenly over what it computed
            picks = np.unique(np.linspace(0, len(t_values) - 1, self.frames.value()).round().astype(int))
        return t_values[picks], np.asarray(trajectory[which])[picks]  # [K], [K, N, H, W, C]

    def export_strip(self, path: str) -> str:
        """Fig. 6: per image, a row of x_t and a row of x̂0 at evenly spaced t from T to 0."""
        t_values, xs = self._strip_frames("x_t")
        _, preds = self._strip_frames("pred_x0")
        picture = upscale(
            trajectory_layout(xs, preds, self.padding.value()), self.scale.value()
        )  # as `ddpm trajectory`
        meta = self.state.get("trajectory")["metadata"]
        return self._save(
            path,
            picture,
            {
                **meta,
                "frames": ",".join(str(int(t)) for t in t_values),
                "layout": "per image: a row of x_t, then a row of x0_pred; t from T to 0",
            },
        )

    def export_gif(self, path: str) -> str:
        which = "x_t" if self.gif_source.currentIndex() == 0 else "pred_x0"
        trajectory = self.state.get("trajectory")
        frames = np.asarray(trajectory[which])
        picks = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), 100)).round().astype(int))
        t_values = np.asarray(trajectory["t_values"])
        pictures = [upscale(make_grid(frames[k], padding=self.padding.value()), self.scale.value()) for k in picks]
        if self.gif_labels.isChecked():
            pictures = [captioned(picture, f"t = {int(t_values[k])}") for picture, k in zip(pictures, picks)]
        save_gif(path, pictures, duration_ms=40)
        self.message.setText(f"saved {path}")
        self.exported.emit(path)
        return path

    def export_sheet(self, path: str) -> str:
        sheet = self.state.get("interpolation")
        picture = upscale(strip_layout(sheet["images"], self.padding.value()), self.scale.value())  # Figs. 8-9
        return self._save(path, picture, {**sheet["metadata"], "layout": "lambda from 0 (A) to 1 (B)"})

    # ---- helpers ----

    def _save(self, path: str, picture: np.ndarray, metadata: dict) -> str:
        save_png(path, picture, {k: v if isinstance(v, str) else to_jsonable(v) for k, v in metadata.items()})
        self.message.setText(f"saved {path} ({picture.shape[1]}x{picture.shape[0]}, with its provenance)")
        self.exported.emit(path)
        return path

    def _ask_and(self, export, default_name: str, filter: str = "PNG (*.png)") -> None:
        """Ask where to save (starting in the folder saved to last, else Pictures) and save there."""
        settings = QSettings("DDPM Studio", "DDPM Studio")
        pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
        folder = Path(str(settings.value(LAST_FOLDER_KEY, "") or pictures or Path.home()))
        if not folder.is_dir():
            folder = Path.home()
        path, _ = QFileDialog.getSaveFileName(self, "Export", str(folder / default_name), filter)
        if path:
            try:
                export(path)
            except OSError as e:
                self.message.setText(f"could not save {path}: {e}")
                return
            settings.setValue(LAST_FOLDER_KEY, str(Path(path).parent))

    def _on_trajectory_changed(self, trajectory) -> None:
        if trajectory is not None:
            n = np.asarray(trajectory["x_t"]).shape[1]
            self.trajectory_label.setText(f"{n} images, {len(trajectory['t_values']):,} steps")
        else:  # cleared (a new model): nothing to save until the Trajectory tab generates again
            self.trajectory_label.setText(TRAJECTORY_NONE)
        self._refresh_buttons()

    def _on_interpolation_changed(self, sheet) -> None:
        if sheet is not None:
            self.sheet_label.setText(f"{len(sheet['images'])} images")
        else:
            self.sheet_label.setText(SHEET_NONE)
        self._refresh_buttons()

    def _refresh_buttons(self) -> None:
        has_samples = self.state.get("samples") is not None
        self.save_grid_button.setEnabled(has_samples)
        self.copy_button.setEnabled(has_samples)
        has_trajectory = self.state.get("trajectory") is not None
        self.save_strip_button.setEnabled(has_trajectory)
        self.save_gif_button.setEnabled(has_trajectory)
        self.save_sheet_button.setEnabled(self.state.get("interpolation") is not None)
