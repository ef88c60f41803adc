"""TimestepScrubber: a slider over the diffusion steps t = T..0 with a t readout and play/pause; ChainFrames: the
frames it scrubs, kept in memory as they stream in.

Noise is on the left and data on the right, so dragging right runs the reverse chain forwards in time (Fig. 6 of
Ho et al. 2020 reads the same way). The slider's value *is* t (its appearance is inverted, not its numbers). While a
chain is still being computed only the frames received so far exist: `set_floor(t_min, more_coming)` makes the
slider snap up to the lowest t available, and playing waits there until more frames arrive.

Playing evenly in t spends most of the time on large t, where x_t is noise and the picture barely moves (the last
100 of 1000 steps, where it forms, flash by in 0.3 s). The default pacing spends the time where the prediction x̂0
changes: each frame gets a weight (`ChainFrames.change`, how much x̂0 moved from the step before), and every tick of
the playback covers an equal share of the total weight (`play_path`). A speed choice sets the length.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QEvent, QObject, QSignalBlocker, Qt, QTimer, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QSlider, QWidget

TICK_MS = 40  # 25 frames per second; a long chain skips steps to keep the whole playback short
SPEEDS = {"2.5 s": 2.5, "5 s": 5.0, "10 s": 10.0, "20 s": 20.0}  # about how long playing T -> 0 takes
EVEN, CHANGE = "even in t", "where the picture changes"
FLOOR_WEIGHT = 0.05  # of the mean change: every step gets a little time, even where nothing moves


def play_path(t_start: int, ticks: int, weights: np.ndarray | None = None) -> list[int]:
    """The t values playback shows after t_start, down to 0, one per tick: at most `ticks` of them, each tick
    covering an equal share of the weight of the steps t_start-1..0 (`weights[t]`, None: even in t). A heavy
    stretch is shown step by step; a light one is skipped through in large jumps; every t appears at most once."""
    if t_start <= 0:
        return []
    ts = np.arange(t_start - 1, -1, -1)
    w = np.ones(len(ts)) if weights is None else np.asarray(weights, dtype=float)[ts]
    cumulative = np.cumsum(w)
    targets = np.linspace(0, cumulative[-1], max(1, ticks) + 1)[1:]
    picks = np.unique(np.minimum(np.searchsorted(cumulative, targets - 1e-12 * cumulative[-1]), len(ts) - 1))
    path = [int(t) for t in ts[picks]]
    return path if path[-1] == 0 else [*path, 0]


class ChainFrames:
    """x_t and x^0 of one stored chain for t = T..0, in [T+1, N, H, W, C] uint8 arrays filled as chunks arrive.

    `add` takes the bridge's TrajectoryFrames (t_values [K] descending, x_t and pred_x0 [K, N, H, W, C], `done` frames
    so far of `total`), a chunk or the whole chain. Showing a frame is an index into memory: no engine call.
    """

    def __init__(self):
        self.t_values: np.ndarray | None = None  # [T+1]
        self.x_t: np.ndarray | None = None  # [T+1, N, H, W, C]
        self.pred_x0: np.ndarray | None = None
        self.change: np.ndarray | None = None  # [T+1] indexed by t: mean |x̂0(t) - x̂0(t+1)|, 0 at t = T
        self.received = 0

    def add(self, frames) -> None:
        if self.x_t is None:
            shape = (frames.total, *frames.x_t.shape[1:])
            self.x_t, self.pred_x0 = np.empty(shape, np.uint8), np.empty(shape, np.uint8)
            self.t_values = np.empty(frames.total, np.int64)
            self.change = np.zeros(frames.total)
        start = frames.done - len(frames.t_values)
        self.t_values[start : frames.done] = frames.t_values
        self.x_t[start : frames.done] = frames.x_t
        self.pred_x0[start : frames.done] = frames.pred_x0
        self.received = max(self.received, frames.done)
        # How much x̂0 moved at each new frame (index i is t = T - i), on a subsampled view: cheap for 256x256.
        h = self.pred_x0.shape[2]
        stride = max(1, h // 32)
        first = max(1, start)
        view = self.pred_x0[first - 1 : frames.done, :, ::stride, ::stride].astype(np.int16)
        moved = np.abs(np.diff(view, axis=0)).mean(axis=tuple(range(1, view.ndim)))
        self.change[::-1][first : frames.done] = moved  # self.change[t]; frames are stored from t = T down

    @property
    def num_timesteps(self) -> int:
        return 0 if self.t_values is None else len(self.t_values) - 1

    @property
    def front(self) -> int | None:
        """The lowest t received so far (0 once the chain is complete)."""
        return int(self.t_values[self.received - 1]) if self.received else None

    @property
    def complete(self) -> bool:
        return self.received > 0 and self.received == len(self.t_values)

    def index_of(self, t: int) -> int:
        i = int(self.t_values[0]) - t  # frames run T, T-1, ..., 0
        assert 0 <= i < self.received and self.t_values[i] == t, (t, i, self.received)
        return i

    def pacing_weights(self) -> np.ndarray | None:
        """Weights by t for `play_path` once the chain is complete: the x̂0 change plus a small floor; None before."""
        if not self.complete:
            return None
        return self.change + FLOOR_WEIGHT * max(float(self.change.mean()), 1e-6)

    def frame(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(x_t, x^0) of step t, each [N, H, W, C] uint8."""
        i = self.index_of(t)
        return self.x_t[i], self.pred_x0[i]


class TimestepScrubber(QWidget):
    """Emits `t_changed(t)` whenever the shown step changes (by dragging, keys, `set_t` or playback)."""

    t_changed = Signal(int)
    playing_changed = Signal(bool)

    def __init__(self, parent: QWidget | None = None, play_seconds: float = 2.5):
        super().__init__(parent)
        self._num_timesteps = 0
        self._floor: int | None = None  # the lowest t with a frame; None: nothing to show
        self._more_coming = False
        self._play_seconds = play_seconds
        self._weights: np.ndarray | None = None  # by t, for pacing; None: even in t
        self._path: list[int] = []  # the t values playback shows next

        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setInvertedAppearance(True)  # value t: T at the left (noise), 0 at the right (data)
        self.slider.setInvertedControls(True)  # so that the Right arrow moves right, towards the data
        self.slider.installEventFilter(self)  # Home/End: the chain's start (T) and end (0), not min/max
        self.slider.setRange(0, 0)
        self.slider.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.slider.setToolTip(
            "The step t of the reverse chain. Left: t = T, pure Gaussian noise x_T. Right: t = 0, "
            "the finished sample x_0. Arrow keys step by one, Page Up/Down by a tenth, Home/End "
            "jump to T/0."
        )
        self.slider.setAccessibleName("timestep t")
        self.slider.valueChanged.connect(self._on_value_changed)

        self.play_button = QPushButton("▶ Play")
        self.play_button.setCheckable(True)
        self.play_button.setToolTip("Play the chain from the current t down to t = 0 (Space)")
        self.play_button.toggled.connect(self._on_play_toggled)
        self.speed_combo = QComboBox()
        self.speed_combo.addItems(list(SPEEDS))
        self.speed_combo.setCurrentText(next((k for k, v in SPEEDS.items() if v == play_seconds), "2.5 s"))
        self.speed_combo.setToolTip("About how long playing from t = T to 0 takes")
        self.speed_combo.currentTextChanged.connect(self._on_speed_changed)
        self.pacing_combo = QComboBox()
        self.pacing_combo.addItems([CHANGE, EVEN])
        self.pacing_combo.setToolTip(
            f"{CHANGE}: spend the playing time where the prediction x̂0 changes most (the small t, where\n"
            f"the picture forms), skipping quickly through the noise; {EVEN}: the same time for every step"
        )
        self.pacing_combo.currentTextChanged.connect(lambda _text: self._replan())

        self.t_label = QLabel("t = – / –")
        self.t_label.setToolTip("The step shown: x_t has been denoised from x_T for T - t steps (Alg. 2).")
        font = self.t_label.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.25)
        self.t_label.setFont(font)
        self.t_label.setMinimumWidth(self.t_label.fontMetrics().horizontalAdvance("t = 0000 / 0000  "))
        self.t_label.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)

        self.noise_label = QLabel("T · noise")
        self.noise_label.setToolTip("t = T: x_T ~ N(0, I), where every sample starts")
        data_label = QLabel("0 · data")
        data_label.setToolTip("t = 0: the sample x_0")

        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(8)
        row.addWidget(self.play_button)
        row.addWidget(self.speed_combo)
        row.addWidget(self.pacing_combo)
        row.addWidget(self.noise_label)
        row.addWidget(self.slider, 1)
        row.addWidget(data_label)
        row.addWidget(self.t_label)

        self._timer = QTimer(self)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._on_timer_timeout)
        self.reset()

    # ---- what can be shown ----

    @property
    def t(self) -> int:
        return self.slider.value()

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def playing(self) -> bool:
        return self._timer.isActive()

    def set_pacing_weights(self, weights: np.ndarray | None) -> None:
        """Weights by t (how much happens at each step) for the default pacing; None: even in t."""
        self._weights = weights
        self._replan()

    def _replan(self) -> None:
        if self.playing:
            self._path = self._plan(self.t)

    def _plan(self, t: int) -> list[int]:
        ticks = max(1, round(self._play_seconds * 1000 / TICK_MS * t / max(1, self._num_timesteps)))
        weights = self._weights if self.pacing_combo.currentText() == CHANGE else None
        return play_path(t, ticks, weights)

    def _on_speed_changed(self, text: str) -> None:
        self._play_seconds = SPEEDS[text]
        self._replan()

    def reset(self, num_timesteps: int = 0) -> None:
        """No frames yet: the slider is disabled (and playback stopped) until `set_floor`."""
        self.pause()
        self._weights = None
        self._num_timesteps, self._floor, self._more_coming = num_timesteps, None, False
        with QSignalBlocker(self.slider):
            self.slider.setRange(0, num_timesteps)
            self.slider.setValue(num_timesteps)
        self.slider.setPageStep(max(1, num_timesteps // 10))
        self.noise_label.setText(f"T = {num_timesteps} · noise" if num_timesteps else "T · noise")
        self.t_label.setText(f"t = – / {num_timesteps}" if num_timesteps else "t = – / –")
        self.slider.setEnabled(False)
        self.play_button.setEnabled(False)

    def set_floor(self, t_min: int, more_coming: bool) -> None:
        """Frames exist for t = T..t_min; `more_coming` while the chain is still running towards 0."""
        self._floor, self._more_coming = t_min, more_coming
        self.slider.setEnabled(True)
        self.play_button.setEnabled(True)
        if self.t < t_min:
            self.set_t(t_min)

    def set_t(self, t: int) -> None:
        """Show step t (snapped into the frames available); emits `t_changed` even if t is the current value."""
        if self.slider.value() == t:
            self._on_value_changed(t)
        else:
            self.slider.setValue(t)

    def _on_value_changed(self, t: int) -> None:
        if self._floor is None:
            return
        if t < self._floor:  # not computed yet: stay at the front of the chain
            self.slider.setValue(self._floor)
            return
        self.t_label.setText(f"t = {t} / {self._num_timesteps}")
        self.t_changed.emit(t)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            watched is self.slider
            and event.type() == QEvent.Type.KeyPress
            and event.key() in (Qt.Key.Key_Home, Qt.Key.Key_End)
        ):
            self.set_t(self._num_timesteps if event.key() == Qt.Key.Key_Home else 0)
            return True
        return super().eventFilter(watched, event)

    # ---- playback ----

    def toggle_play(self) -> None:
        if self.play_button.isEnabled():
            self.play_button.toggle()

    def play(self) -> None:
        if self.play_button.isEnabled():
            self.play_button.setChecked(True)

    def pause(self) -> None:
        self.play_button.setChecked(False)

    def _on_play_toggled(self, checked: bool) -> None:
        if checked == self._timer.isActive():
            return
        if checked:
            if self._floor is not None and self.t <= self._floor and not self._more_coming:
                self.set_t(self._num_timesteps)  # at the end: play again from the noise
            self._path = self._plan(self.t)
            self._timer.start()
        else:
            self._timer.stop()
        self.play_button.setText("▮▮ Pause" if checked else "▶ Play")
        self.playing_changed.emit(checked)

    def _on_timer_timeout(self) -> None:
        if self._floor is None:
            self.pause()
            return
        if self.t <= self._floor and not self._more_coming or not self._path:
            self.pause()
            return
        if self._path[0] < self._floor:
            if not self._more_coming:  # a chain that stopped before t = 0: end on its last frame
                self.set_t(self._floor)
                self.pause()
            return  # else not computed yet: wait at the front for the next frames
        self.set_t(self._path.pop(0))
        if self.t == 0:
            self.pause()
