"""The Likelihood panel: bits/dim of held-out images through the variational bound, and the rate-distortion curve.

Evaluate reads the held-out split of the data (the test split of the loaded dataset's spec, else of the model's
own run, else of the built-in shapes) at the model's size, its first N images or all of them, without replacing the
dataset the other panels use, and asks the bridge for the bound (Ho et al. 2020, Eq. 5 with the discretized decoder
of Eq. 13): T network evaluations per image in minibatches, with progress and the time left. The result shows the
total with its standard error, the prior and decoder terms, and Fig. 5: distortion against rate, and both against
the reverse process steps.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import (
    QComboBox,
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

from studio.bridge import JobKey, LikelihoodResult, Progress, limits, spin_range
from studio.requests import ViewRequests
from studio.widgets.plots import duration
from studio.widgets.shortcuts import bind_shortcut

RATE_COLOR, DISTORTION_COLOR = "#1f77b4", "#d62728"
MAX_IMAGES = spin_range(limits.EVAL_IMAGES)[1]  # the job runs in minibatches: memory does not grow with N
EVALUATE_KEYS = "Ctrl+Return"
BPD_TOOLTIP = (
    "Bits per dimension: the negative log-likelihood -log2 p(x0) of an image divided by its H·W·C\n"
    "subpixels, here an upper bound on it. Lower is better; the paper reports ≤ 3.75 on CIFAR-10 test\n"
    "(Table 1). ± is the standard error over the held-out images."
)
BOUND_TOOLTIP = (
    "The variational bound (Eq. 5): L = L_T + Σ L_(t-1) + L_0.\n"
    "L_T, the prior term: KL(q(x_T|x_0) ‖ N(0, I)), close to 0 with the paper's schedule.\n"
    "L_(t-1): KL(q(x_(t-1)|x_t, x_0) ‖ p_θ(x_(t-1)|x_t)), one per reverse step.\n"
    "L_0, the discretized decoder (Eq. 13): -log p_θ(x_0|x_1) on the 256-level pixel grid.\n"
    "Each term is evaluated at one random draw of x_t per image (the seed)."
)
RD_TOOLTIP = (
    "Fig. 5 (Sec. 4.3), the bound read as a lossy code: a receiver holding x_t has been sent\n"
    "L_T + Σ_(s>t) L_(s-1) bits/dim (the rate) and can guess x̂0(x_t) (Eq. 15); the distortion is the\n"
    "RMSE of that guess on the 0-255 scale. Most of the bits go to imperceptible detail."
)


def spec_options(spec: str) -> tuple[str, dict[str, str]]:
    """ "SOURCE?key=value&..." -> (SOURCE, {key: value}), read the way the engine reads a data spec."""
    source, query = spec, ""
    if "?" in spec and not Path(spec).exists():
        source, _, query = spec.rpartition("?")
    return source, dict(item.partition("=")[::2] for item in query.split("&") if item)


def with_options(spec: str, **options) -> str:
    """A data spec text with some `key=value` options replaced (None removes the option)."""
    source, items = spec_options(spec)
    for key, value in options.items():
        items.pop(key, None)
        if value is not None:
            items[key] = str(value)
    return source + ("?" + "&".join(f"{k}={v}" for k, v in items.items()) if items else "")


def _plot(title: str, x_label: str, y_label: str) -> pg.PlotWidget:
    plot = pg.PlotWidget(background=None)
    plot.setTitle(title)
    plot.setLabel("bottom", x_label)
    plot.setLabel("left", y_label)
    plot.showGrid(x=True, y=True, alpha=0.25)
    plot.setMinimumHeight(220)
    plot.setToolTip(RD_TOOLTIP)
    return plot


class LikelihoodPanel(QWidget):
    """Bits/dim on a held-out split and the rate-distortion curve (Fig. 5) of the current model."""

    title = "Likelihood"
    evaluated = Signal(object)  # bridge.LikelihoodResult

    def __init__(self, bridge, state, parent: QWidget | None = None):
        super().__init__(parent)
        self._bridge, self._state = bridge, state
        self._running = False
        self._requests = ViewRequests(  # one evaluation at a time (studio/requests.py)
            on_value=self._on_progress, on_done=self._on_scored, on_error=self._on_failed, on_cancelled=self._on_stopped
        )
        self._scored, self._warnings = "", ()  # what the evaluation in flight scores, and why it may mislead
        self._evaluating = ""  # "Evaluating the bound on N test images", for the status line
        self._bound_started, self._bound_done_at_start = 0.0, 0  # the bound's first progress: time.monotonic(), done
        self.result: LikelihoodResult | None = None

        self.images_spin = QSpinBox()
        self.images_spin.setRange(0, MAX_IMAGES)
        self.images_spin.setSpecialValueText("all")
        self.images_spin.setValue(64)
        self.images_spin.setToolTip(
            "How many held-out images to evaluate: the first ones of the split, or all of it\n"
            "(0). The bound costs T network evaluations per image, run in minibatches:\n"
            "memory stays flat, time grows with the count (the paper: the 10,000 test images)."
        )
        self.split_combo = QComboBox()
        self.split_combo.addItems(["test", "train"])
        self.split_combo.setToolTip(
            "test: images the model never saw (the paper's number); train: its own data,\n"
            "to see over-fitting (the paper: 3.70 train vs 3.75 test). A folder has one split."
        )
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(*spin_range(limits.SEED))
        self.seed_spin.setToolTip("Seed of the x_t drawn for every term of the bound.")
        self.data_label = QLabel()
        self.data_label.setWordWrap(True)
        self.data_label.setToolTip("The data spec the held-out images come from, at the model's size.")
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.setToolTip(f"Compute the bound on the held-out images ({EVALUATE_KEYS}; again to stop).")
        self.evaluate_button.clicked.connect(self._on_evaluate_clicked)
        bind_shortcut(self, EVALUATE_KEYS, "evaluate the bound / stop", self.evaluate_button.click)
        self.progress = QProgressBar()
        self.status_label = QLabel("Not evaluated yet.")
        self.status_label.setWordWrap(True)

        setup = QGroupBox("Held-out data")
        form = QFormLayout(setup)
        form.addRow("images", self.images_spin)
        form.addRow("split", self.split_combo)
        form.addRow("seed", self.seed_spin)
        form.addRow("data", self.data_label)
        form.addRow(self.evaluate_button)
        form.addRow(self.progress)
        form.addRow(self.status_label)

        self.result_label = QLabel("— bits/dim")
        font = QFont(self.result_label.font())
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        self.result_label.setFont(font)
        self.result_label.setToolTip(BPD_TOOLTIP)
        self.scored_label = QLabel()  # what was scored, by which model
        self.scored_label.setWordWrap(True)
        self.warning_label = QLabel()  # why the figure may not be what it seems (other data, resized, ...)
        self.warning_label.setWordWrap(True)
        self.warning_label.setTextFormat(Qt.TextFormat.PlainText)  # paths and specs, never markup
        self.scored_label.setTextFormat(Qt.TextFormat.PlainText)
        self.warning_label.setStyleSheet("color: #b35c00;")
        self.warning_label.setVisible(False)
        self.prior_label, self.kl_label, self.decoder_label = QLabel("—"), QLabel("—"), QLabel("—")
        results = QGroupBox("Negative log-likelihood (upper bound)")
        results.setToolTip(BOUND_TOOLTIP)
        terms = QFormLayout(results)
        terms.addRow(self.result_label)
        terms.addRow(self.scored_label)
        terms.addRow(self.warning_label)
        terms.addRow("prior L_T", self.prior_label)
        terms.addRow("reverse steps Σ L_(t-1)", self.kl_label)
        terms.addRow("decoder L_0 (Eq. 13)", self.decoder_label)
        for label in (self.prior_label, self.kl_label, self.decoder_label):
            label.setToolTip(BOUND_TOOLTIP)
        reading = QLabel(
            "Lower is better: the paper reports ≤ 3.75 bits/dim on CIFAR-10 test (3.70 train). In Fig. 5 "
            "the distortion falls fastest at the smallest rates: the coarse content costs few bits and "
            "most of the rate describes imperceptible detail (Sec. 4.3)."
        )
        reading.setWordWrap(True)
        terms.addRow(reading)

        self.rate_distortion_plot = _plot("Distortion vs rate (Fig. 5)", "rate (bits/dim)", "distortion (RMSE, 0-255)")
        self.rate_distortion_curve = self.rate_distortion_plot.plot([], [], pen=pg.mkPen(RATE_COLOR, width=2))
        self.time_plot = _plot(
            "Rate and distortion vs reverse steps", "reverse process steps (T - t)", "rate (bits/dim)"
        )
        self.rate_curve = self.time_plot.plot([], [], pen=pg.mkPen(RATE_COLOR, width=2), name="rate (bits/dim)")
        self.distortion_curve = self._add_right_axis(self.time_plot, "distortion (RMSE, 0-255)", DISTORTION_COLOR)

        top = QHBoxLayout()
        top.addWidget(setup, 1)
        top.addWidget(results, 1)
        plots = QHBoxLayout()
        plots.addWidget(self.rate_distortion_plot)
        plots.addWidget(self.time_plot)
        layout = QVBoxLayout(self)
        layout.setSpacing(8)
        layout.addLayout(top)
        layout.addLayout(plots, 1)

        self._style_plots()
        self.split_combo.currentTextChanged.connect(lambda _text: self._show_data_spec())
        self.images_spin.valueChanged.connect(lambda _value: self._show_data_spec())
        state.observe("dataset", lambda _preview: self._show_data_spec())
        bridge.model_changed.connect(self._on_model_changed)
        self._on_model_changed(bridge.model)

    # ---- the held-out data ----

    def held_out_spec(self) -> str | None:
        """The spec of the held-out images: the chosen split of the loaded dataset (or the model's run, or the
        built-in shapes), at the model's size and channels, limited to the images needed."""
        info = self._bridge.model
        if info is None:
            return None
        preview = self._state.get("dataset")
        base = preview.spec if preview is not None else info.trained_on or "builtin:shapes"
        h, w = info.image_size
        split, wanted = self.split_combo.currentText(), self.images_spin.value() or None  # None: all
        trained_on = spec_options(base)[1].get("count", "")  # the training split is only this many images
        count = wanted
        if split == "train" and trained_on.isdigit():
            count = min(wanted or int(trained_on), int(trained_on))
        return with_options(base, size=h if h == w else f"{h}x{w}", channels=info.channels, split=split, count=count)

    def _show_data_spec(self) -> None:
        spec = self.held_out_spec()
        self.data_label.setText(spec or "load a model first")

    # ---- evaluation ----

    def _on_model_changed(self, info) -> None:
        self.evaluate_button.setEnabled(info is not None or self._running)
        self._show_data_spec()
        if self.result is not None and info is not None:
            self.status_label.setText(f"The model changed (now step {info.step:,}): evaluate again for its bound.")

    def _on_evaluate_clicked(self) -> None:
        if self._running:
            self._bridge.cancel(JobKey.HELD_OUT)
            self._bridge.cancel(JobKey.LIKELIHOOD)
            return
        if self._bridge.model is not None:
            self._set_running(True)  # at once, so the button says Stop before the job even starts
            asyncio.ensure_future(self._evaluate())

    async def _evaluate(self) -> None:
        spec, trained_on = self.held_out_spec(), self._bridge.model.trained_on
        await self._requests.ask(
            lambda on_value: asyncio.ensure_future(self._read_and_score(spec, trained_on, on_value))
        )

    async def _read_and_score(self, spec: str, trained_on: str | None, on_value):
        """The held-out images, then the bound on them: one request (Stop cancels whichever job runs)."""
        self.status_label.setText(f"Reading {spec} …")
        self.progress.setFormat("reading: %v / %m images")
        held_out = await self._bridge.held_out_images(spec, self.images_spin.value() or None, trained_on, on_value)
        self._scored, self._warnings = held_out.scored, held_out.warnings
        self._show_warnings(held_out.warnings)
        self._evaluating = f"Evaluating the bound on {len(held_out.images):,} images of {held_out.scored}"
        self.status_label.setText(f"{self._evaluating} …")
        self.progress.setRange(0, 0)  # busy until the first term arrives
        self.progress.setFormat("bound: %p%")
        self._bound_started = 0.0
        return await self._bridge.likelihood(held_out.images, self.seed_spin.value(), on_progress=on_value)

    def _show_warnings(self, warnings: tuple[str, ...]) -> None:
        self.warning_label.setText("\n".join(f"⚠ {w[0].upper()}{w[1:]}." for w in warnings))
        self.warning_label.setVisible(bool(warnings))

    def _on_stopped(self) -> None:
        self._set_running(False)
        self.status_label.setText("Stopped.")

    def _on_failed(self, message: str) -> None:
        self._set_running(False)
        self.status_label.setText(f"Evaluation failed: {message}")

    def _on_scored(self, result: LikelihoodResult) -> None:
        self._set_running(False)
        named = result.model.label() if result.model is not None else "model unknown"
        self._show_result(result, self._scored, named)
        self.evaluated.emit(result)

    def _set_running(self, running: bool) -> None:
        self._running = running
        self.evaluate_button.setText("Stop" if running else "Evaluate")
        for control in (self.images_spin, self.split_combo, self.seed_spin):
            control.setEnabled(not running)
        if running:
            self.progress.setRange(0, 0)  # busy until the first progress arrives
        elif self.progress.maximum() == 0:  # stopped before any progress: not busy any more
            self.progress.setRange(0, 1)
            self.progress.setValue(0)

    def _on_progress(self, value) -> None:
        """Reading the images, then the bound's terms: the bar, and for the bound the time left."""
        if not isinstance(value, Progress):
            return
        self.progress.setRange(0, value.total)
        self.progress.setValue(value.done)
        if value.stage != "bound":
            return
        now = time.monotonic()
        if not self._bound_started:
            self._bound_started, self._bound_done_at_start = now, value.done
        elapsed, done = now - self._bound_started, value.done - self._bound_done_at_start
        left = f" · about {duration(elapsed / done * (value.total - value.done))} left" if done and elapsed > 2 else ""
        self.status_label.setText(f"{self._evaluating}: {100 * value.done / value.total:.0f}%{left}")

    def _show_result(self, result: LikelihoodResult, scored: str, model: str) -> None:
        self.result = result
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.setFormat("done")
        spread = f" ± {result.stderr:.2f}" if result.stderr is not None else " (one image: no standard error)"
        self.result_label.setText(f"{result.bits_per_dim:.2f}{spread} bits/dim")
        self.scored_label.setText(f"{result.images:,} images of {scored}\nmodel {model}")
        kl = result.bits_per_dim - result.prior_bpd - result.decoder_bpd
        for label, value in (
            (self.prior_label, result.prior_bpd),
            (self.kl_label, kl),
            (self.decoder_label, result.decoder_bpd),
        ):
            share = 100 * value / result.bits_per_dim if result.bits_per_dim else 0.0
            label.setText(f"{value:.4f} bits/dim ({share:.0f}%)")
        rate, distortion = np.asarray(result.rate), np.asarray(result.distortion)  # [T+1], index t
        T = len(rate) - 1
        reverse_steps = T - np.arange(T + 1)
        self.rate_distortion_curve.setData(rate, distortion)
        self.rate_curve.setData(reverse_steps, rate)
        self.distortion_curve.setData(reverse_steps, distortion)
        self.status_label.setText(f"Done: the bound over T = {T} steps, seed {self.seed_spin.value()}.")

    # ---- plots ----

    def _add_right_axis(self, plot: pg.PlotWidget, label: str, color: str) -> pg.PlotCurveItem:
        """A second curve against the right axis, sharing the x axis (rate and distortion have different units)."""
        item = plot.getPlotItem()
        view = pg.ViewBox()
        item.showAxis("right")
        item.scene().addItem(view)
        item.getAxis("right").linkToView(view)
        item.getAxis("right").setLabel(label, color=color)
        view.setXLink(item)

        def follow() -> None:
            view.setGeometry(item.vb.sceneBoundingRect())
            view.linkedViewChanged(item.vb, view.XAxis)

        item.vb.sigResized.connect(follow)
        curve = pg.PlotCurveItem([], [], pen=pg.mkPen(color, width=2))
        view.addItem(curve)
        legend = item.addLegend(offset=(-60, 10))  # clear of the rate's rise at the last steps
        legend.setLabelTextColor(self.palette().color(QPalette.ColorRole.Text))
        legend.addItem(self.rate_curve, "rate (bits/dim)")
        legend.addItem(curve, "distortion (RMSE)")
        return curve

    def _style_plots(self) -> None:
        """Plots in the window's colours rather than pyqtgraph's black."""
        palette = self.palette()
        base, text = palette.color(QPalette.ColorRole.Base), palette.color(QPalette.ColorRole.Text)
        for plot in (self.rate_distortion_plot, self.time_plot):
            plot.setBackground(base)
            plot.getPlotItem().titleLabel.setText(plot.getPlotItem().titleLabel.text, color=text)
            for side in ("left", "bottom", "right"):
                axis = plot.getAxis(side)
                axis.setPen(text)
                axis.setTextPen(text)
        self.time_plot.setLabel("left", "rate (bits/dim)", color=RATE_COLOR)
        self.time_plot.setLabel("right", "distortion (RMSE, 0-255)", color=DISTORTION_COLOR)
