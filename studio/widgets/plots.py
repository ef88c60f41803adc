"""Live plots (pyqtgraph): series that grow one point at a time, and the training-loss plot built on them.

`LivePlot` keeps each named series as growing arrays and redraws the changed curves in batches, so a plot of tens of
thousands of logged steps stays responsive (pyqtgraph clips to the view and downsamples). `LossPlot` is the one the
Training panel shows: the raw L_simple per logged step (faint), its exponentially smoothed curve (bold), and the loss
by t-quartile (t in [1, T/4], ..., [3T/4, T]), which shows that the small-t terms are the hard ones
(Ho et al. 2020, Sec. 3.4).
`TrainingCurves` adds the quartile toggles and a line of the latest values; it is fed by the engine's StepLogged
events or, for a run written elsewhere, by the records `engine.runs.MetricsFollower` reads (through the bridge).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

QUARTILE_COLORS = ("#d62728", "#ff7f0e", "#2ca02c", "#9467bd")  # t small (hard) -> t large (easy)
QUARTILE_NAMES = ("t ∈ [1, T/4]", "t ∈ (T/4, T/2]", "t ∈ (T/2, 3T/4]", "t ∈ (3T/4, T]")


def quartile_names(num_timesteps: int | None = None) -> tuple[str, ...]:
    """The t-quartiles' names: symbolic without T; with T, the (1-based) t each holds, as the engine splits them
    (0-based t into quartile 4t // T): T = 1000 gives "t ∈ [1, 250]", ..., "t ∈ [751, 1000]"."""
    if not num_timesteps or num_timesteps < 4:
        return QUARTILE_NAMES
    edges = [-(-q * num_timesteps // 4) for q in range(5)]  # ceil(q T / 4): the first 0-based t of each quartile
    return tuple(f"t ∈ [{edges[q] + 1:,}, {edges[q + 1]:,}]" for q in range(4))


def short_number(value: float) -> str:
    """2e-4 rather than 0.0002, as the paper writes learning rates; other numbers to 4 significant digits."""
    if value != 0 and abs(value) < 1e-2:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:.4g}"


def duration(seconds: float) -> str:
    """45 s, 13 min, 2.5 h, 3.1 days."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 48 * 3600 else f"{seconds / 86400:.1f} days"


class LogAxis(pg.AxisItem):
    """A log-scaled axis that, across more than a decade, labels only 1, 2 and 5 times a power of ten (pyqtgraph
    labels every minor tick, which crowds such an axis into an unreadable column)."""

    def logTickStrings(self, values, scale, spacing):
        low, high = self.range  # log10 of the visible range
        if high - low <= 1:
            return super().logTickStrings(values, scale, spacing)
        labels = []
        for value in 10 ** np.asarray(values, dtype=float) * scale:
            mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
            labels.append(f"{value:.6g}" if round(mantissa, 6) in (1.0, 2.0, 5.0) else "")
        return labels


@dataclass
class _Series:
    curve: pg.PlotDataItem
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    stale: bool = False  # points added since the curve was last drawn


class LivePlot(pg.PlotWidget):
    """A plot of named series that grow one point at a time; optional log-scaled y axis.

    Points are drawn in batches: `append` only records them, and a short timer redraws each changed, visible curve
    once. Reading a long metrics file or a burst of events then costs one redraw, not one per point.
    """

    REDRAW_MS = 50

    def __init__(self, parent: QWidget | None = None, y_label: str = "", x_label: str = "step", log_y: bool = False):
        super().__init__(parent, background="w", axisItems={"left": LogAxis("left")} if log_y else None)
        self._series: dict[str, _Series] = {}
        self._log_y = log_y
        item = self.getPlotItem()
        item.showGrid(x=True, y=True, alpha=0.25)
        item.setLabel("bottom", x_label)
        item.setLabel("left", y_label)
        item.setLogMode(x=False, y=log_y)
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        self.legend = item.addLegend(offset=(-10, 10), labelTextSize="8pt")
        self.setMinimumHeight(160)
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.setInterval(self.REDRAW_MS)
        self._redraw_timer.timeout.connect(self.redraw)

    def add_series(
        self, name: str, color: str, width: float = 1.5, alpha: int = 255, visible: bool = True, label: str | None = ""
    ) -> None:
        """A new, empty series; `label` names it in the legend ("": its name; None: not in the legend)."""
        rgba = pg.mkColor(color)
        rgba.setAlpha(alpha)
        pen = pg.mkPen(rgba, width=width)
        curve = self.getPlotItem().plot([], [], pen=pen, name=(label or name) if label is not None else None)
        curve.setVisible(visible)
        self._series[name] = _Series(curve)

    def append(self, name: str, x: float, y: float | None) -> bool:
        """Add one point; a missing, non-finite (or, on a log axis, non-positive) y is dropped. True if added."""
        if not self._usable(y):
            return False
        series = self._series[name]
        series.xs.append(float(x))
        series.ys.append(float(y))
        self._mark_stale(series)
        return True

    def extend(self, name: str, xs: Iterable[float], ys: Iterable[float | None]) -> None:
        for x, y in zip(xs, ys):
            self.append(name, x, y)

    def _mark_stale(self, series: _Series) -> None:
        series.stale = True
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    def redraw(self) -> None:
        """Draw the visible series that changed (hidden ones wait until they are shown)."""
        for series in self._series.values():
            if series.stale and series.curve.isVisible():
                series.curve.setData(np.asarray(series.xs), np.asarray(series.ys))
                series.stale = False

    def _usable(self, y: float | None) -> bool:
        return y is not None and math.isfinite(y) and (y > 0 or not self._log_y)

    def set_series_visible(self, name: str, visible: bool) -> None:
        series = self._series[name]
        series.curve.setVisible(visible)
        if visible and series.stale:
            self._mark_stale(series)

    def series_visible(self, name: str) -> bool:
        return self._series[name].curve.isVisible()

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The points of a series so far: (x [N], y [N])."""
        s = self._series[name]
        return np.asarray(s.xs), np.asarray(s.ys)

    def point_count(self, name: str) -> int:
        return len(self._series[name].xs)

    def clear_data(self) -> None:
        for s in self._series.values():
            s.xs.clear()
            s.ys.clear()
            s.stale = False
            s.curve.setData([], [])


def debiased_ema(values: Sequence[float], weight: float, log: bool = True) -> np.ndarray:
    """The exponential moving average of `values` with `weight` on the past, divided by the weight the average
    has gathered so far (TensorBoard's smoothing), so that the first points are not pulled towards zero; taken of
    log(value) when `log`, so that on a log axis the curve follows a loss falling by decades without lagging."""
    ys = np.log(np.asarray(values, dtype=float)) if log else np.asarray(values, dtype=float)
    out, total, gathered = np.empty_like(ys), 0.0, 0.0
    for i, y in enumerate(ys):
        total = weight * total + (1 - weight) * y
        gathered = weight * gathered + (1 - weight)
        out[i] = total / gathered if gathered else y
    return np.exp(out) if log else out


class LossPlot(LivePlot):
    """The training loss on a log axis: raw per logged step, smoothed, and per t-quartile (toggled)."""

    DEFAULT_SMOOTHING = 0.6  # TensorBoard's default weight

    def __init__(self, parent: QWidget | None = None, smoothing: float = DEFAULT_SMOOTHING):
        super().__init__(parent, y_label="L_simple (log scale)", log_y=True)
        self.smoothing = smoothing  # weight of the past in the running average, as TensorBoard's slider
        self._smooth_sum = 0.0
        self._smooth_weight = 0.0
        self.add_series("loss", "#1f77b4", width=1, alpha=120, label="loss")
        self.add_series("smoothed", "#1f77b4", width=2.5, label="smoothed")
        self.quartile_names = QUARTILE_NAMES
        for q, color in enumerate(QUARTILE_COLORS):
            self.add_series(f"q{q}", color, width=1.5, visible=False, label=None)  # in the legend while shown
        self.setToolTip(
            "L_simple = ‖ε − ε_θ(x_t, t)‖² (Ho et al. 2020, Eq. 14), averaged over each logging window.\n"
            "The quartile curves split it by the sampled timestep t: small t (little noise) is hardest."
        )

    def add_point(self, step: int, loss: float, by_quartile: Sequence[float | None] = ()) -> None:
        """One logged step: the window's mean loss and its mean per t-quartile (None where no t fell)."""
        if not self.append("loss", step, loss):
            return
        self.append("smoothed", step, self._smoothed(loss))
        for q, value in enumerate(list(by_quartile)[:4]):
            self.append(f"q{q}", step, value)
        if self.count == 1:  # pyqtgraph's auto range around a single point spans nothing useful: a decade around it
            self.setXRange(0, max(1.0, 2.0 * step), padding=0)
            self.setYRange(math.log10(loss) - 0.5, math.log10(loss) + 0.5, padding=0)
        elif self.count == 2:
            self.enableAutoRange()

    def set_smoothing(self, weight: float) -> None:
        """Smooth with another weight (0: none, towards 1: more); the whole curve is recomputed."""
        self.smoothing = min(max(float(weight), 0.0), 0.999)
        xs, ys = self.series("loss")
        series = self._series["smoothed"]
        self._smooth_sum = self._smooth_weight = 0.0
        series.xs, series.ys = list(xs), [self._smoothed(float(y)) for y in ys]  # the running sums carry on
        self._mark_stale(series)

    def _smoothed(self, loss: float) -> float:
        """debiased_ema, one point at a time (of log L: the axis is logarithmic)."""
        self._smooth_sum = self.smoothing * self._smooth_sum + (1 - self.smoothing) * math.log(loss)
        self._smooth_weight = self.smoothing * self._smooth_weight + (1 - self.smoothing)
        return math.exp(self._smooth_sum / self._smooth_weight) if self._smooth_weight else loss

    def set_quartile_visible(self, quartile: int, visible: bool) -> None:
        self.set_series_visible(f"q{quartile}", visible)
        self._list_quartiles()

    def set_timesteps(self, num_timesteps: int | None) -> None:
        """Name the quartiles by the t they hold for this T (None: symbolically)."""
        self.quartile_names = quartile_names(num_timesteps)
        self._list_quartiles()

    def _list_quartiles(self) -> None:
        """The legend names the shown quartile curves, in order, after the loss curves (pyqtgraph would list a
        hidden curve too, with a click-to-show eye the checkboxes would not know about)."""
        for q in range(4):
            self.legend.removeItem(self._series[f"q{q}"].curve)
        for q, name in enumerate(self.quartile_names):
            if self.series_visible(f"q{q}"):
                self.legend.addItem(self._series[f"q{q}"].curve, name)

    def legend_names(self) -> list[str]:
        """The legend's entries, top to bottom."""
        return [label.text for _, label in self.legend.items]

    @property
    def count(self) -> int:
        """Logged steps plotted so far."""
        return self.point_count("loss")

    def clear_data(self) -> None:
        super().clear_data()
        self._smooth_sum = self._smooth_weight = 0.0


class TrainingCurves(QWidget):
    """The loss plot with its t-quartile toggles, under a line of the latest loss, lr, grad norm, images/s and ETA."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.loss_plot = LossPlot()
        self.smoothing_slider = QSlider(Qt.Orientation.Horizontal)
        self.smoothing_slider.setRange(0, 99)
        self.smoothing_slider.setValue(round(100 * self.loss_plot.smoothing))
        self.smoothing_slider.setMinimumWidth(70)
        self.smoothing_slider.setMaximumWidth(140)
        self.smoothing_slider.setToolTip(
            "The weight of the past in the smoothed curve (TensorBoard's slider): 0 shows the raw loss,\n"
            "0.99 a long average. It is debiased (the first points are not pulled towards zero) and taken\n"
            "of log L, so that it follows the loss on the log axis."
        )
        self.smoothing_label = QLabel()
        self.smoothing_slider.valueChanged.connect(self._on_smoothing_changed)
        self._on_smoothing_changed(self.smoothing_slider.value())
        self.stat_labels = {name: QLabel("–") for name in ("loss", "lr", "grad norm", "images/s", "ETA")}
        self.stat_labels["grad norm"].setToolTip("The global gradient norm before clipping (the paper clips it at 1)")
        self.stat_labels["ETA"].setToolTip("Time to the last step at the current images/s")
        stats = QHBoxLayout()
        for name, label in self.stat_labels.items():
            stats.addWidget(QLabel(f"<b>{name}</b>"))
            stats.addWidget(label)
            stats.addSpacing(12)
        stats.addStretch(1)
        self.quartile_checks: list[QCheckBox] = []
        quartiles = QHBoxLayout()
        quartiles.addWidget(QLabel("Loss by t:"))
        for q, (color, name) in enumerate(zip(QUARTILE_COLORS, QUARTILE_NAMES)):
            check = QCheckBox(name)
            check.setStyleSheet(f"color: {color};")
            check.setToolTip("The loss of the examples whose sampled t fell in this quarter of [1, T]")
            check.toggled.connect(lambda on, q=q: self.loss_plot.set_quartile_visible(q, on))
            self.quartile_checks.append(check)
            quartiles.addWidget(check)
        quartiles.addStretch(1)
        smoothing = QHBoxLayout()  # a row of its own: beside the others it would make the plot's column too wide
        smoothing.addStretch(1)
        smoothing.addWidget(QLabel("Smoothing"))
        smoothing.addWidget(self.smoothing_slider)
        smoothing.addWidget(self.smoothing_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(stats)
        layout.addWidget(self.loss_plot, 1)
        layout.addLayout(quartiles)
        layout.addLayout(smoothing)

    def _on_smoothing_changed(self, value: int) -> None:
        self.smoothing_label.setText(f"{value / 100:.2f}")
        self.loss_plot.set_smoothing(value / 100)

    def set_timesteps(self, num_timesteps: int | None) -> None:
        """Name the t-quartiles (toggles and legend) by the t they hold for the run's T (None: symbolically)."""
        self.loss_plot.set_timesteps(num_timesteps)
        for check, name in zip(self.quartile_checks, self.loss_plot.quartile_names):
            check.setText(name)

    def show_logged(
        self,
        step: int,
        loss: float,
        by_quartile: Sequence[float | None],
        lr: float,
        grad_norm: float,
        images_per_s: float,
        eta_s: float,
    ) -> None:
        """One logged step (StepLogged, or a line of metrics.jsonl): a point on the curves and the latest values."""
        self.loss_plot.add_point(step, loss, by_quartile)
        self._show_values(loss, lr, grad_norm, images_per_s, eta_s)

    def _show_values(self, loss: float, lr: float, grad_norm: float, images_per_s: float, eta_s: float) -> None:
        for name, text in (
            ("loss", f"{loss:.4f}"),
            ("lr", short_number(lr)),
            ("grad norm", f"{grad_norm:.3g}"),
            ("images/s", f"{images_per_s:.1f}"),
            ("ETA", duration(eta_s)),
        ):
            self.stat_labels[name].setText(text)

    def show_records(self, records: Sequence[dict[str, Any]], total_steps: int, batch_size: int) -> int | None:
        """Lines of a run's metrics.jsonl (engine/train.py writes them): every one on the curves, the last one's values
        in the labels. Returns the last step, None if there were no records; a damaged record is skipped."""
        step = None
        for record in records:
            try:
                step, loss = int(record["step"]), float(record["loss"])
                self.loss_plot.add_point(step, loss, record.get("loss_q") or ())
                latest = (
                    loss,
                    float(record.get("lr", 0.0)),
                    float(record.get("grad_norm", 0.0)),
                    float(record.get("img_per_s", 0.0)),
                )
            except (KeyError, TypeError, ValueError):
                continue
        if step is not None:
            loss, lr, grad_norm, rate = latest
            eta = (total_steps - step) * batch_size / rate if rate > 0 else 0.0
            self._show_values(loss, lr, grad_norm, rate, eta)
        return step

    def clear(self) -> None:
        self.loss_plot.clear_data()
        for label in self.stat_labels.values():
            label.setText("–")
