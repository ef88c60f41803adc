"""TrajectoryPanel: the timestep scrubber (Fig. 6 of Ho et al. 2020) and forking (Fig. 7).

Generate runs one exact reverse chain of N samples from a seed and keeps every frame: x_t and the network's direct
prediction x^0 (Eq. 15) for t = T..0. The frames stream in while the chain runs and live in this panel's memory, so
scrubbing never asks the engine for anything. Forking holds x_t of one image at the current t and draws several
completions x_0 ~ p(x_0 | x_t), shown progressively (direct -> settled -> exact); any step the chain has already
computed can be forked, while the rest of the chain still runs.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QVBoxLayout,
    QWidget,
)

from studio.bridge import (
    Bridge,
    JobKey,
    Progress,
    Refined,
    TrajectoryFrames,
    limits,
    spin_range,
)
from studio.requests import ViewRequests
from studio.state import AppState
from studio.widgets.chain_view import (
    STAGES,
    X_T,
    ChainControls,
    ForkControls,
    StatusLine,
    chain_cost,
    controls_column,
    fill_grid,
    fork_blocker,
    fork_results_box,
    frame_boxes,
    stage_badge,
    stage_text,
    time_left,
)
from studio.widgets.image_grid import ImageGrid
from studio.widgets.scrubber import ChainFrames, TimestepScrubber
from studio.widgets.shortcuts import bind_shortcut

MAX_SEED = spin_range(limits.SEED)[1]
GENERATE_KEYS, PLAY_KEYS, FORK_KEYS = "Ctrl+G", "Space", "F"


class TrajectoryPanel(QWidget):
    title = "Trajectory"
    # Keys the slider handles itself, listed in Help > Keyboard shortcuts beside the shortcuts bound here.
    # The slider's controls are inverted (t = T at the left): Right, Up and Page Up move towards the data (t falls).
    extra_keys = (
        ("→ / ←", "t - 1 / t + 1: towards the data / the noise (slider focused)"),
        ("↑ / ↓", "the same as → / ← (slider focused)"),
        ("Page Up / Page Down", "a tenth of the chain towards the data / the noise (slider focused)"),
        ("Home / End", "jump to t = T (noise) / t = 0 (the sample)"),
    )
    frame_shown = Signal(int)  # t, whenever the x_t / x^0 grids show a frame
    forks_shown = Signal(str)  # the Refined stage ('direct', 'settled', 'exact') the fork grid shows now

    def __init__(self, bridge: Bridge, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.bridge, self.state = bridge, state
        # Bumped by Generate, forks and model changes: late results of an older job are ignored.
        # One chain and one fork at a time: a newer one supersedes the older (studio/requests.py).
        self._chains = ViewRequests(
            on_value=self._on_frames_received,
            on_done=self._on_chain_done,
            on_error=lambda message: self._on_chain_ended(f"The chain failed: {message}", error=True),
            on_cancelled=lambda: self._on_chain_ended(
                f"Stopped: {self._frames.received} frames kept for scrubbing and forking."
            ),
        )
        self._forks = ViewRequests(
            on_value=self._on_fork_progress, on_done=self._on_fork_done, on_error=self._on_fork_failed
        )
        self._chain_asked, self._started = (0, 0), 0.0  # (n, seed) of the chain in flight, and when it started
        self._fork_asked: tuple[int, int, int] = (0, 0, 0)  # (image index, t, forks) of the fork in flight
        self._shown: dict[ImageGrid, tuple] = {}  # grid -> (images, captions) it shows
        self._clear_frames()
        self._build()
        self._clear_fork()
        bridge.model_changed.connect(self._on_model_changed)
        self.scrubber.reset(getattr(bridge.model, "num_timesteps", 0))
        self._update_fork_button()

    # ---- layout ----

    def _build(self) -> None:
        chain_box = ChainControls(self._on_generate_clicked, lambda: self.bridge.cancel(JobKey.TRAJECTORY), MAX_SEED)
        self.n_spin, self.seed_spin = chain_box.n_spin, chain_box.seed_spin
        self.random_seed_button = chain_box.random_seed_button
        self.generate_button, self.stop_button = chain_box.generate_button, chain_box.stop_button

        self.fork_box_controls = ForkControls(self._on_fork_clicked, FORK_KEYS, MAX_SEED)
        self.forks_spin = self.fork_box_controls.forks_spin
        self.fork_seed_spin = self.fork_box_controls.fork_seed_spin
        self.fork_button = self.fork_box_controls.fork_button

        controls_widget = controls_column((chain_box, self.fork_box_controls), 270)

        self.scrubber = TimestepScrubber()
        self.t_slider, self.play_button = self.scrubber.slider, self.scrubber.play_button
        self.scrubber.t_changed.connect(self._on_t_changed)
        self.scrubber.playing_changed.connect(lambda _: self._update_fork_button())

        (self.xt_grid, xt_box), (self.pred_grid, pred_box) = frame_boxes(self)
        for grid in (self.xt_grid, self.pred_grid):
            grid.image_clicked.connect(self._on_image_clicked)
            grid.image_double_clicked.connect(self._on_image_double_clicked)
        self.fork_grid, self.fork_box, self.fork_title, self.fork_stage_label = fork_results_box(self)
        frames = QHBoxLayout()
        frames.addWidget(xt_box)
        frames.addWidget(pred_box)
        view = QVBoxLayout()
        view.addWidget(self.scrubber)
        view.addLayout(frames, 3)
        view.addWidget(self.fork_box, 2)

        main = QHBoxLayout()
        main.addWidget(controls_widget)
        main.addLayout(view, 1)
        self.status_line = StatusLine("No chain yet: press Generate (Ctrl+G).")
        self.status_label, self.progress = self.status_line.label, self.status_line.progress
        outer = QVBoxLayout(self)
        outer.addLayout(main, 1)
        outer.addWidget(self.status_line)

        bind_shortcut(self, GENERATE_KEYS, "generate a chain", self._on_generate_clicked)
        bind_shortcut(self, PLAY_KEYS, "play / pause the chain", self.scrubber.toggle_play)
        bind_shortcut(self, FORK_KEYS, "fork the picked image at the current t", self._on_fork_clicked)

    # ---- public view of what is shown ----

    @property
    def t(self) -> int | None:
        """The step shown now (None before any frame)."""
        return self._shown_t

    @property
    def trajectory_id(self) -> int | None:
        """The engine's id of the chain shown, from its first frames on (None before): what `bridge.fork` needs."""
        return self._trajectory_id

    @property
    def frames_received(self) -> int:
        return self._frames.received

    @property
    def chain_complete(self) -> bool:
        """Every frame from t = T down to 0 has arrived."""
        return self._frames.complete

    def current_frame(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(x_t, x^0) shown now, each [N, H, W, C] uint8; None before any frame."""
        return None if self._shown_t is None else self._frames.frame(self._shown_t)

    def fork_images(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(held x_t [H, W, C], completions [forks, H, W, C] or None before the first stage); None before any fork."""
        return None if self._fork_held is None else (self._fork_held, self._fork_completions)

    @property
    def fork_stage(self) -> str | None:
        return self._fork_stage

    # ---- generating and receiving frames ----

    def _clear_frames(self) -> None:
        self._frames, self._shown_t, self._trajectory_id, self._metadata = ChainFrames(), None, None, {}

    def _clear_fork(self) -> None:
        """No fork shown; a fork still running is ignored when it ends."""
        self._forks.drop()
        self._fork_held = self._fork_completions = self._fork_stage = None
        self._show(self.fork_grid, None)
        self.fork_grid.set_badge("")
        self.fork_title.setText(f"Forks from {X_T}")
        self.fork_stage_label.setText("")

    async def _generate(self) -> None:
        n, seed, model = self.n_spin.value(), self.seed_spin.value(), self.bridge.model
        self._clear_frames()
        self._clear_fork()
        self._metadata = {"seed": seed, "n": n, **getattr(model, "provenance", {})}
        self.scrubber.reset(getattr(model, "num_timesteps", 0))
        self.stop_button.setEnabled(True)
        self._update_fork_button()
        self._started = time.monotonic()
        self.xt_grid.set_placeholder("Computing the chain: its first frames appear here in a moment…")
        self._set_status(f"Starting a chain of {n} samples from seed {seed}{chain_cost(model, n)}…", 0, 0)
        self._chain_asked = (n, seed)
        await self._chains.ask(lambda on_value: self.bridge.trajectory(n, seed, on_frames=on_value))

    def _on_chain_ended(self, status: str | None = None, error: bool = False) -> None:
        """The chain in flight ended (done, failed or stopped): no more frames will come."""
        self.stop_button.setEnabled(False)
        if self._frames.received:  # playing stops at the last frame
            self.scrubber.set_floor(self._frames.front, more_coming=False)
        self._update_fork_button()
        if status is not None:
            self._set_status(status, error=error)

    def _on_chain_done(self, result: TrajectoryFrames) -> None:
        self._on_chain_ended()
        (n, seed), chain, T = self._chain_asked, self._frames, self._frames.num_timesteps
        # The recipe's provenance, as `ddpm trajectory` writes it: named by the model that computed the chain, not
        # by a remembered copy.
        self._metadata.update(result.metadata, trajectory_id=result.trajectory_id, num_timesteps=T)
        self.state.set(
            "trajectory",
            {
                "t_values": chain.t_values.copy(),
                "x_t": chain.x_t,
                "pred_x0": chain.pred_x0,
                "metadata": dict(self._metadata),
            },
        )
        self._set_status(
            f"Chain done: {n} samples × {T + 1} steps from seed {seed}. Scrub, play (Space) or click "
            "an image to fork it."
        )
        self._update_fork_button()

    def _on_frames_received(self, frames) -> None:
        """Keep a chunk (or the whole chain) and follow the chain's front until the person scrubs elsewhere or forks;
        the chain's Progress between chunks says nothing the frames do not."""
        if not isinstance(frames, TrajectoryFrames):
            return
        chain, first, previous_front = self._frames, self._frames.received == 0, self._frames.front
        chain.add(frames)
        self._trajectory_id = frames.trajectory_id  # the engine stores the chain from its first step on: forkable
        if first:
            self.scrubber.reset(chain.num_timesteps)
        self.scrubber.set_floor(chain.front, not chain.complete)
        if chain.complete:
            self.scrubber.set_pacing_weights(chain.pacing_weights())
        following = self._shown_t == previous_front and not self.scrubber.playing and self._fork_held is None
        if first or following:  # the last chunk too: a finished chain ends on its samples, t = 0
            self.scrubber.set_t(chain.front)
        if first:
            self._focus_scrubber()
        if not chain.complete:
            self._set_status(
                f"Computing the chain: at t = {chain.front} of {chain.num_timesteps} ({chain.received} / "
                f"{frames.total} frames{time_left(time.monotonic() - self._started, chain.received, frames.total)});"
                " scrub or fork what has arrived.",
                chain.received,
                frames.total,
            )
        self._update_fork_button()

    def _focus_scrubber(self) -> None:
        """Give the slider the focus when a chain starts streaming, if the focus is in this panel (typically the
        Images spin box, which would eat Space and F): the panel's bare-key shortcuts then work at once, and the
        arrow keys scrub. A focus elsewhere (another tab, a dialog) is left alone."""
        focus = QApplication.focusWidget()
        if self.isVisible() and (focus is None or self.isAncestorOf(focus)):
            self.t_slider.setFocus(Qt.FocusReason.OtherFocusReason)

    def _on_t_changed(self, t: int) -> None:
        if self._frames.received == 0:
            return
        x_t, pred_x0 = self._frames.frame(t)
        captions = [f"#{j + 1}" for j in range(len(x_t))]
        self._show(self.xt_grid, x_t, captions)
        self._show(self.pred_grid, pred_x0, captions)
        self._shown_t = t
        self._update_fork_button()
        self.frame_shown.emit(t)

    # ---- selecting and forking ----

    def _on_image_clicked(self, index: int) -> None:
        self.xt_grid.set_selected(index)
        self.pred_grid.set_selected(index)
        self._update_fork_button()

    def _show(self, grid: ImageGrid, images: np.ndarray | None, captions: list[str] = ()) -> None:
        self._shown[grid] = (images, list(captions))  # kept to re-layout when the grid is resized
        fill_grid(grid, images, list(captions))

    def _on_image_double_clicked(self, index: int) -> None:
        """Double-clicking an image forks it at the current t (the click before it has picked it)."""
        self._on_image_clicked(index)
        self._on_fork_clicked()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Resize and watched in self._shown:
            fill_grid(watched, *self._shown[watched])
        return super().eventFilter(watched, event)

    def _fork_blocker(self) -> str | None:
        """Why forking is impossible now (for the tooltip), or None."""
        chain_started = self._trajectory_id is not None and self._shown_t is not None
        return fork_blocker(
            chain_started, self.stop_button.isEnabled(), self._shown_t, self._frames.front, self.xt_grid.selected
        )

    def _update_fork_button(self) -> None:
        blocker = self._fork_blocker()
        self.fork_button.setEnabled(blocker is None)
        self.fork_button.setText(
            f"Fork #{self.xt_grid.selected + 1} at t = {self._shown_t}" if blocker is None else "Fork here"
        )
        self.fork_button.setToolTip(
            blocker
            or f"Hold {X_T} of the picked image at t = {self._shown_t} and draw "
            f"completions x<sub>0</sub> ~ p(x<sub>0</sub> | {X_T}) (Fig. 7) ({FORK_KEYS}). "
            "Double-clicking an image does the same."
        )

    def _on_generate_clicked(self) -> None:
        asyncio.ensure_future(self._generate())

    def _on_fork_clicked(self) -> None:
        if self._fork_blocker() is None:
            asyncio.ensure_future(self._fork())

    async def _fork(self) -> None:
        self.scrubber.pause()
        self._clear_fork()
        index, t = self.xt_grid.selected, self._shown_t
        forks, seed = self.forks_spin.value(), self.fork_seed_spin.value()
        self._fork_held = self._frames.frame(t)[0][index].copy()
        self.fork_title.setText(f"Forks from {X_T} at <b>t = {t}</b> · image #{index + 1} · seed {seed}")
        self._show(self.fork_grid, self._fork_held[None], ["held x_t"])
        self.fork_grid.set_badge("")
        self.fork_grid.set_selected(0)
        self.fork_stage_label.setText("Computing the direct prediction…")
        cost = chain_cost(self.bridge.model, forks, t)
        self._set_status(f"Forking image #{index + 1} at t = {t} into {forks} completions{cost}…", 0, 0)
        self._fork_asked, trajectory = (index, t, forks), self._trajectory_id
        await self._forks.ask(lambda on_value: self.bridge.fork(trajectory, index, t, forks, seed, on_refined=on_value))

    def _on_fork_done(self, result) -> None:
        index, t, forks = self._fork_asked
        self._set_status(f"{forks} completions of image #{index + 1} from t = {t} (exact chain of {t} steps).")

    def _on_fork_failed(self, message: str) -> None:
        self.fork_stage_label.setText("Failed.")
        self._set_status(f"Forking failed: {message}", error=True)

    def _on_fork_progress(self, value) -> None:
        if isinstance(value, Progress):
            running = "quick preview" if value.stage == "settled" else value.stage
            self.fork_stage_label.setText(
                f"Stage: {STAGES.get(self._fork_stage, self._fork_stage)} · now running "
                f"the {running} chain: {value.done} / {value.total} steps"
            )
            self._set_status(self.status_label.text(), value.done, value.total)
            return
        if not isinstance(value, Refined):
            return
        self._fork_completions, self._fork_stage = value.images, value.stage
        images = np.concatenate([self._fork_held[None], value.images])
        captions = ["held x_t"] + [str(j + 1) for j in range(len(value.images))]
        self._show(self.fork_grid, images, captions)
        self.fork_grid.set_badge(stage_badge(value.stage, value.total))
        self.fork_stage_label.setText(f"Stage: {stage_text(value)}")
        self.forks_shown.emit(value.stage)

    # ---- model changes and status ----

    def _on_model_changed(self, info) -> None:
        """A new model: the stored chain (and its forks) belong to the old one."""
        had_chain = self._frames.received > 0
        self._chains.drop()
        self._clear_frames()
        self._clear_fork()
        self.scrubber.reset(getattr(info, "num_timesteps", 0))
        for grid in (self.xt_grid, self.pred_grid):
            self._show(grid, None)
        step = getattr(info, "step", None)
        step_text = f"step {step:,}" if isinstance(step, int) else "step ?"
        self.xt_grid.set_placeholder(
            f"A new model is loaded ({step_text}): press Generate (Ctrl+G) for a chain from it"
        )
        self.stop_button.setEnabled(False)
        self._update_fork_button()
        if self.state.get("trajectory") is not None:
            self.state.set("trajectory", None)
        self._set_status(
            "The model changed: the previous chain was cleared."
            if had_chain
            else f"Model loaded ({step_text}): press Generate (Ctrl+G)."
        )

    def _set_status(self, text: str, done: int | None = None, total: int | None = None, error: bool = False) -> None:
        self.status_line.show_status(text, done, total, error)
