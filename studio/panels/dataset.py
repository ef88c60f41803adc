"""The Dataset panel: choose the training images, see them as the model will, and what training them will cost.

A source (the built-in shapes, a folder, a CIFAR-10 or MNIST file; by dialog or drag and drop) plus the shape every
image is brought to (size, channels, crop or pad) make a data spec such as "~/cats?size=32&fit=pad", the same text the
CLI's --data takes. Loading it runs the engine's inspector: the panel shows the first 64 images after crop/resize,
the report with every skipped file and why, and a rough estimate of the time and memory training will need (from
the engine's count of the planned U-Net's parameters, FLOPs and activations at the chosen size and channels).
The loaded preview goes to `state["dataset"]`, where the Training panel picks it up.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from studio.bridge import (
    IMAGE_SUFFIXES,
    PRESETS,
    DataPreview,
    DataSpec,
    EngineError,
    FitMode,
    UNetConfig,
    read_data_spec,
    source_kind,
)
from studio.state import AppState
from studio.widgets.data_report import DataReportView
from studio.widgets.training_estimate import TrainingEstimateBox

BUILTIN, FOLDER, CIFAR10, MNIST = range(4)
SOURCE_LABELS = ("Built-in shapes", "Folder…", "CIFAR-10 file…", "MNIST file…")


class DatasetPanel(QWidget):
    """Pick and inspect the training data; `dataset_loaded(DataPreview)` after every load (usable or not)."""

    title = "Dataset"
    dataset_loaded = Signal(object)

    def __init__(self, bridge, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.bridge, self.state = bridge, state
        self.preview: DataPreview | None = None
        self._task: asyncio.Future | None = None
        self.setAcceptDrops(True)

        # ---- source ----
        self.source_combo = QComboBox()
        self.source_combo.addItems(SOURCE_LABELS)
        self.source_combo.setToolTip(
            "Where the training images come from. A folder is searched recursively for\n"
            "PNG, JPEG, WebP, BMP, TIFF and GIF. You can also drop a folder or file here."
        )
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("a folder, cifar-10-python.tar.gz or train-images-idx3-ubyte.gz")
        self.browse_button = QPushButton("Browse…")
        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit, 1)
        path_row.addWidget(self.browse_button)
        self.count_spin = QSpinBox()
        self.count_spin.setRange(0, 10_000_000)
        self.count_spin.setSpecialValueText("all")
        self.count_spin.setToolTip("Use only the first N images (built-in shapes: generate N); 'all' uses every one.")
        source_box = QGroupBox("Source")
        form = QFormLayout(source_box)
        form.addRow("Images", self.source_combo)
        form.addRow("Path", path_row)
        form.addRow("Limit", self.count_spin)

        # ---- shape ----
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setCurrentText("tiny")
        self.preset_combo.setToolTip("The preset you plan to train: sets the default image size and the estimate.")
        self.height_spin, self.width_spin = QSpinBox(), QSpinBox()
        for spin, name in ((self.height_spin, "height"), (self.width_spin, "width")):
            spin.setRange(4, 1024)
            spin.setSuffix(" px")
            spin.setToolTip(f"Every image is resized to this {name}; the U-Net needs it divisible by 2 per level.")
        size_row = QHBoxLayout()
        size_row.addWidget(self.height_spin)
        size_row.addWidget(QLabel("×"))
        size_row.addWidget(self.width_spin)
        self.channels_combo = QComboBox()
        self.channels_combo.addItems(["auto", "1", "3", "4"])
        self.channels_combo.setToolTip(
            "auto: 1 if every image is grayscale, else 3 (RGB). 4 keeps transparency;\n"
            "otherwise transparent pixels are composited on white."
        )
        self.fit_combo = QComboBox()
        self.fit_combo.addItems(["crop", "pad"])
        self.fit_combo.setToolTip(
            "crop: scale the shorter side to fit and cut out the centre (the paper's preprocessing)\n"
            "pad: scale the longer side to fit and pad the rest with black"
        )
        shape_box = QGroupBox("As the model sees it")
        form = QFormLayout(shape_box)
        form.addRow("Plan for preset", self.preset_combo)
        form.addRow("Size (H × W)", size_row)
        form.addRow("Channels", self.channels_combo)
        form.addRow("Fit", self.fit_combo)

        self.spec_label = QLabel()
        self.spec_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.spec_label.setToolTip("The data spec: the same text `python -m engine train --data` accepts.")
        self.load_button = QPushButton("Load")
        self.load_button.setDefault(True)
        self.load_button.setToolTip("Inspect and load the images (Enter)")
        self.estimate_box = TrainingEstimateBox(bridge)
        self.estimate_label, self.estimate_shown = self.estimate_box.label, self.estimate_box.estimate_shown

        controls = QWidget()
        left = QVBoxLayout(controls)
        left.setContentsMargins(0, 0, 0, 0)
        left.addWidget(source_box)
        left.addWidget(shape_box)
        left.addWidget(self.spec_label)
        left.addWidget(self.load_button)
        left.addWidget(self.estimate_box)
        left.addStretch(1)

        # ---- what was loaded ----
        self.report = DataReportView()
        self.summary_label, self.warnings_label = self.report.summary_label, self.report.warnings_label
        self.preview_grid, self.skipped_table = self.report.preview_grid, self.report.skipped_table
        self.report_text, self.details_tabs = self.report.report_text, self.report.details_tabs
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.progress = QProgressBar()  # reading headers, decoding: while a load runs
        self.progress.setVisible(False)

        right_widget = QWidget()
        right = QVBoxLayout(right_widget)
        right.setContentsMargins(0, 0, 0, 0)
        right.addWidget(self.report, 1)
        right.addWidget(self.progress)
        right.addWidget(self.status_label)

        layout = QHBoxLayout(self)
        layout.setSpacing(12)
        layout.addWidget(controls, 0)
        layout.addWidget(right_widget, 1)
        controls.setMaximumWidth(360)

        self.source_combo.activated.connect(self._on_source_activated)
        self.source_combo.currentIndexChanged.connect(self._on_source_changed)
        self.browse_button.clicked.connect(self._browse)
        self.preset_combo.currentTextChanged.connect(self._on_preset_changed)
        self.load_button.clicked.connect(lambda: self.load(self.spec_text()))
        self.path_edit.returnPressed.connect(lambda: self.load(self.spec_text()))
        for signal in (
            self.height_spin.valueChanged,
            self.width_spin.valueChanged,
            self.count_spin.valueChanged,
            self.channels_combo.currentIndexChanged,
            self.fit_combo.currentIndexChanged,
            self.path_edit.textChanged,
        ):
            signal.connect(self._refresh_spec)
        self._on_preset_changed(self.preset_combo.currentText())
        self._on_source_changed(BUILTIN)

    # ---- the spec ----

    def spec_text(self) -> str:
        """The data spec the controls describe, as the engine writes it (the size always named)."""
        source = "builtin:shapes" if self.source_combo.currentIndex() == BUILTIN else self.path_edit.text().strip()
        channels = self.channels_combo.currentText()
        spec = DataSpec(
            source,
            (self.height_spin.value(), self.width_spin.value()),
            None if channels == "auto" else int(channels),
            FitMode(self.fit_combo.currentText()),
            count=self.count_spin.value() or None,
        )
        return spec.to_text(size=True)

    def _refresh_spec(self, *_) -> None:
        self.spec_label.setText(f"spec: <code>{self.spec_text()}</code>")
        self._show_estimate()

    def planned_unet(self) -> UNetConfig:
        """The planned preset's U-Net at the chosen size and channels ('auto': the loaded data's, else RGB).
        Raises ValueError when the size does not halve evenly through its levels."""
        channels = self.channels_combo.currentText()
        if channels == "auto":
            channels = self.preview.channels if self.preview is not None and self.preview.ok else 3
        return dataclasses.replace(
            PRESETS[self.preset_combo.currentText()].unet,
            in_channels=int(channels),
            image_size=(self.height_spin.value(), self.width_spin.value()),
        )

    def _show_estimate(self) -> None:
        name, data_bytes = self.preset_combo.currentText(), self.preview.memory_bytes if self.preview is not None else 0
        try:
            self.estimate_box.plan(name, self.planned_unet(), data_bytes)
        except ValueError as e:
            self.estimate_box.plan(
                name,
                None,
                problem=f"⚠ The {name} U-Net cannot train on {self.height_spin.value()}"
                f"×{self.width_spin.value()} images: {e}.",
            )

    def _on_preset_changed(self, name: str) -> None:
        height, width = PRESETS[name].unet.image_size
        self.height_spin.setValue(height)
        self.width_spin.setValue(width)
        self._refresh_spec()

    def _on_source_changed(self, index: int) -> None:
        builtin = index == BUILTIN
        self.path_edit.setEnabled(not builtin)
        self.browse_button.setEnabled(not builtin)
        self._refresh_spec()

    def _on_source_activated(self, index: int) -> None:
        """Choosing "Folder…" and the like from the list opens the dialog straight away."""
        if index != BUILTIN and not self.path_edit.text():
            self._browse()

    def _browse(self) -> None:
        settings = QSettings("DDPM Studio", "DDPM Studio")
        start = str(settings.value("last_folder", str(Path.home())))
        index = self.source_combo.currentIndex()
        if index == FOLDER:
            path = QFileDialog.getExistingDirectory(self, "Choose a folder of images", start)
        else:
            filters = (
                "CIFAR-10 (*.tar.gz *_batch* data_batch_*);;All files (*)"
                if index == CIFAR10
                else "MNIST images (*idx3-ubyte *idx3-ubyte.gz);;All files (*)"
            )
            path, _ = QFileDialog.getOpenFileName(self, SOURCE_LABELS[index].rstrip("…"), start, filters)
        if path:  # chosen: load it at once (the shape controls apply)
            self.path_edit.setText(path)
            self._remember(path)
            self.load(self.spec_text())

    @staticmethod
    def _remember(path: str) -> None:
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        QSettings("DDPM Studio", "DDPM Studio").setValue("last_folder", str(folder))

    # ---- drag and drop ----

    def dragEnterEvent(self, event) -> None:
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        path = Path(event.mimeData().urls()[0].toLocalFile())
        event.acceptProposedAction()
        self.load(str(path))

    def _show_source(self, source: str) -> None:
        """Set the source controls to match a spec's source (a path or builtin:...), of the kind the engine reads
        it as."""
        kind = source_kind(source)
        if kind == "builtin:shapes":
            self.source_combo.setCurrentIndex(BUILTIN)
            return
        self.source_combo.setCurrentIndex({"cifar10": CIFAR10, "idx": MNIST}.get(kind, FOLDER))
        self.path_edit.setText(source)
        if Path(source).exists():
            self._remember(source)

    def _show_options(self, spec) -> None:
        """Set the shape controls from a parsed spec (a missing option took the engine's default)."""
        self.height_spin.setValue(spec.image_size[0])
        self.width_spin.setValue(spec.image_size[1])
        self.channels_combo.setCurrentText(str(spec.channels or "auto"))
        self.fit_combo.setCurrentText(spec.fit.value)
        self.count_spin.setValue(spec.count or 0)

    # ---- loading ----

    def load(self, spec_text: str) -> asyncio.Future:
        """Inspect and load `spec_text` ("SOURCE?size=HxW&channels=3&fit=crop", or a bare path, which takes the
        size, channels and fit of the controls). Returns the scheduled task."""
        try:
            spec = read_data_spec(spec_text)
        except ValueError as e:
            self._failed(spec_text, str(e))
            self._task = asyncio.ensure_future(asyncio.sleep(0))
            return self._task
        source = spec.source
        if source.lower().endswith(IMAGE_SUFFIXES) and Path(source).is_file():
            source = str(Path(source).parent)  # a dropped image: train on its folder
        self._show_source(source)
        if "?" in spec_text and not Path(spec_text).exists():  # the text names its options: they apply as given
            self._show_options(spec)
        else:  # a bare source takes the controls' size, channels and fit
            spec_text = self.spec_text()
        self.spec_label.setText(f"spec: <code>{spec_text}</code>")
        self._task = asyncio.ensure_future(self._load(spec_text))
        return self._task

    async def _load(self, spec_text: str) -> None:
        self.status_label.setStyleSheet("")
        self.status_label.setText(f"Inspecting {spec_text} …")
        self.progress.setRange(0, 0)  # busy until the first count arrives
        self.progress.setVisible(True)
        task = asyncio.current_task()
        try:
            preview = await self.bridge.load_dataset(spec_text, on_progress=self._on_progress)
        except asyncio.CancelledError:
            if self._task is task:  # not our own newer load but another panel's (a source box's built-in data)
                self.progress.setVisible(False)
                self.status_label.setText(f"Loading {spec_text} was interrupted by another load: press Load again.")
            return
        except EngineError as e:
            self.progress.setVisible(False)
            self._failed(spec_text, str(e))
            return
        self.progress.setVisible(False)
        self._show_preview(preview)
        if preview.ok:
            self.state.set("dataset", preview)
            self.state.set("dataset_error", None)
            self.status_label.setText(f"Loaded {preview.spec}: ready to train (Training panel).")
        else:
            self._failed(spec_text, preview.error or "no usable images: see the report below")
        self.dataset_loaded.emit(preview)

    def _failed(self, spec_text: str, why: str) -> None:
        """Say why nothing was loaded; the dataset loaded before stays the one training and the panels use."""
        self.status_label.setStyleSheet("color: #c62828;")
        kept = self.state.get("dataset")
        self.status_label.setText(
            f"Could not load {spec_text}: {why}." + (f" Training still uses {kept.spec}." if kept is not None else "")
        )
        self.state.set("dataset_error", f"{spec_text}: {why}")

    def _on_progress(self, value) -> None:
        """LoadProgress from the engine: "reading headers 1,024 / 5,000", "decoding ..."."""
        stage, done, total = getattr(value, "stage", ""), getattr(value, "done", 0), getattr(value, "total", 0)
        if total:
            self.progress.setFormat(f"{stage} {done:,} / {total:,}")
            self.progress.setRange(0, total)
            self.progress.setValue(done)

    def _show_preview(self, preview: DataPreview) -> None:
        self.preview = preview
        self.report.show_preview(preview)
        self._show_estimate()
