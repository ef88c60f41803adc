"""The Trajectory panel: the timestep scrubber (Fig. 6) over a stored chain, play/pause, and forking (Fig. 7)."""

import numpy as np
import pytest
from PySide6.QtCore import Qt

from tests.conftest import run_async

N = 4


@pytest.fixture
def received(bridge, monkeypatch):
    """Every TrajectoryFrames chunk the engine streams to the panel, in order (a spy around `bridge.trajectory`)."""
    chunks, original = [], bridge.trajectory

    def spy(n, seed, on_frames=None):
        def record(frames):
            if hasattr(frames, "t_values"):  # a chunk, not the chain's Progress between chunks
                chunks.append(frames)
            on_frames(frames)

        return original(n, seed, on_frames=record)

    monkeypatch.setattr(bridge, "trajectory", spy)
    return chunks


@pytest.fixture
def panel(qtbot, bridge):
    from studio.panels.trajectory import TrajectoryPanel
    from studio.state import AppState

    p = TrajectoryPanel(bridge, AppState())
    qtbot.addWidget(p)
    p.resize(1100, 750)
    p.n_spin.setValue(N)
    p.seed_spin.setValue(3)
    return p


def generate(qtbot, panel):
    """Generate a chain and wait until it has finished (every frame in, exported to the app state)."""
    qtbot.mouseClick(panel.generate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.chain_complete and panel.state.get("trajectory") is not None, timeout=30_000)


def test_slider_shows_the_received_frame_for_t(qtbot, panel, received):
    """After `t_slider.setValue(t)` the two grids show x_t and x^0 of step t exactly as the engine streamed them,
    and the t label reads "t = t / T"; every frame is stored and exported to the app state with its seed."""
    generate(qtbot, panel)
    assert panel.t == 0  # left alone, the view followed the chain to its samples
    t_values = np.concatenate([c.t_values for c in received])
    x_t = np.concatenate([c.x_t for c in received])
    pred = np.concatenate([c.pred_x0 for c in received])
    T = received[0].total - 1
    assert T == 100 and list(t_values) == list(range(T, -1, -1))
    for t in (T, 63, 37, 1, 0):
        with qtbot.waitSignal(panel.frame_shown, timeout=1000) as shown:
            panel.t_slider.setValue(t)
        assert shown.args == [t] and panel.t == t
        shown_x, shown_pred = panel.current_frame()
        np.testing.assert_array_equal(shown_x, x_t[T - t])
        np.testing.assert_array_equal(shown_pred, pred[T - t])
        assert panel.xt_grid.count == panel.pred_grid.count == N
        assert f"t = {t} / {T}" in panel.scrubber.t_label.text()
    exported = panel.state.get("trajectory")
    assert exported["x_t"].shape == (T + 1, N, 8, 8, x_t.shape[-1])
    np.testing.assert_array_equal(exported["pred_x0"], pred)
    assert exported["metadata"]["seed"] == "3" and exported["metadata"]["n"] == str(N)  # as the PNG will say
    assert exported["metadata"]["step"] == "6" and exported["metadata"]["run"] == "micro"


def test_scrubbing_runs_from_memory_without_engine_jobs(qtbot, panel, bridge):
    """Scrubbing over the whole chain never submits an engine job: frames come from the panel's memory."""
    generate(qtbot, panel)
    started = []
    bridge.job_started.connect(lambda job_id, key: started.append(key))
    busy = bridge.busy
    for t in list(range(100, -1, -7)) + [0, 50, 100]:
        panel.t_slider.setValue(t)
        assert panel.t == t
    qtbot.wait(200)
    assert started == [] and bridge.busy == busy == []


def test_scrubber_works_over_frames_received_so_far(qtbot, panel, bridge, monkeypatch):
    """While the chain runs, the slider shows any frame already received and snaps to the newest one (the front)
    for a t not computed yet; with no image picked, Fork stays off."""
    seen, wanted = [], []
    original = bridge.trajectory

    def spy(n, seed, on_frames=None):
        def first_chunk_check(frames):
            on_frames(frames)
            if not seen and len(getattr(frames, "t_values", ())) > 10:  # the first full chunk (x_T comes first)
                front = int(frames.t_values[-1])
                panel.t_slider.setValue(frames.t_values[10])
                wanted.append(int(frames.t_values[10]))
                seen.append((panel.t, panel.current_frame()[0].copy(), frames.x_t[10].copy()))
                panel.t_slider.setValue(0)
                seen.append((panel.t, front, panel.fork_button.isEnabled()))

        return original(n, seed, on_frames=first_chunk_check)

    monkeypatch.setattr(bridge, "trajectory", spy)
    generate(qtbot, panel)
    (t_mid, shown, streamed), (t_low, front, fork_enabled) = seen
    assert t_mid == wanted[0]
    np.testing.assert_array_equal(shown, streamed)
    assert t_low == front > 0 and not fork_enabled
    panel.t_slider.setValue(0)
    assert panel.t == 0  # once finished, every t is there


def test_fork_yields_completions_of_the_held_x_t(qtbot, panel):
    """Clicking an image and "Fork here" at t draws `forks` completions of that image's x_t: the grid shows the held
    x_t (the scrubber's frame) and `forks` images of the same shape; the direct stage is x^0(x_t) for every fork
    (all equal, matching the scrubber's prediction), the exact stage differs between forks. Fork is off at t = 0."""
    generate(qtbot, panel)
    t, index, forks = 40, 2, 5
    panel.t_slider.setValue(t)
    assert not panel.fork_button.isEnabled()  # nothing picked yet
    qtbot.mouseClick(panel.xt_grid, Qt.MouseButton.LeftButton, pos=panel.xt_grid.cell_rect(index).center())
    assert panel.pred_grid.selected == index and panel.fork_button.isEnabled()
    panel.forks_spin.setValue(forks)
    stages = []
    panel.forks_shown.connect(
        lambda stage: stages.append((stage, panel.fork_images()[1].copy(), panel.status_label.text()))
    )
    badges = []
    panel.forks_shown.connect(lambda stage: badges.append(panel.fork_grid.badge))
    frame_x, frame_pred = (a.copy() for a in panel.current_frame())
    with qtbot.waitSignal(panel.forks_shown, timeout=30_000, check_params_cb=lambda s: s == "exact"):
        qtbot.mouseClick(panel.fork_button, Qt.MouseButton.LeftButton)
    assert f"into {forks} completions ({t} steps, up to" in stages[0][2]  # the cost, said up front
    held, completions = panel.fork_images()
    np.testing.assert_array_equal(held, frame_x[index])
    assert completions.shape == (forks, *held.shape)
    assert panel.fork_grid.count == forks + 1 and f"t = {t}" in panel.fork_title.text()
    assert [s for s, *_ in stages] == ["direct", "settled", "exact"]
    assert badges[0].startswith("preview: direct") and badges[1].startswith("preview: 20-step chain")
    assert "may differ" in badges[1] and badges[2] == f"exact: {t}-step chain"  # said on the picture itself
    direct = stages[0][1].astype(int)
    assert (direct == direct[0]).all()  # one held x_t -> one prediction
    assert np.abs(direct[0] - frame_pred[index].astype(int)).max() <= 2
    assert len({c.tobytes() for c in completions}) > 1  # different reverse-chain noise per fork
    panel.t_slider.setValue(0)
    assert not panel.fork_button.isEnabled() and "t = 0" in panel.fork_button.toolTip()


def test_fork_failure_is_shown_not_raised(qtbot, panel, bridge):
    """If the engine no longer holds the chain (another one replaced it), forking reports the engine's message."""
    generate(qtbot, panel)
    run_async(qtbot, bridge.trajectory(1, 0))  # the engine keeps one stored chain: this drops the panel's
    panel.t_slider.setValue(30)
    qtbot.mouseClick(panel.xt_grid, Qt.MouseButton.LeftButton, pos=panel.xt_grid.cell_rect(0).center())
    qtbot.mouseClick(panel.fork_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "no longer in memory" in panel.status_label.text(), timeout=10_000)


def test_play_reaches_t_zero(qtbot, panel):
    """Play (the button or Space) animates t from the current value down to 0 in a few seconds, then pauses;
    on the slider the Right arrow steps towards the data (t - 1), Home jumps to T."""
    generate(qtbot, panel)
    panel.show()
    qtbot.waitExposed(panel)
    panel.t_slider.setFocus()
    qtbot.keyClick(panel.t_slider, Qt.Key.Key_Home)
    qtbot.keyClick(panel.t_slider, Qt.Key.Key_Right)
    assert panel.t == 99
    shown = []
    panel.frame_shown.connect(shown.append)
    qtbot.mouseClick(panel.play_button, Qt.MouseButton.LeftButton)
    assert panel.play_button.isChecked()
    qtbot.waitUntil(lambda: panel.t == 0, timeout=6_000)
    qtbot.waitUntil(lambda: not panel.play_button.isChecked(), timeout=1_000)
    assert shown == sorted(shown, reverse=True) and len(shown) > 10 and shown[-1] == 0
    panel.activateWindow()
    qtbot.keyClick(panel.t_slider, Qt.Key.Key_Space)  # at the end, play starts again from T
    assert panel.play_button.isChecked() and panel.t == 100
    qtbot.keyClick(panel.t_slider, Qt.Key.Key_Space)
    assert not panel.play_button.isChecked()


def test_model_change_clears_the_trajectory(qtbot, panel, bridge, micro_run):
    """Loading a model clears the stored chain, the grids and the exported trajectory: they belong to the old model."""
    generate(qtbot, panel)
    assert panel.state.get("trajectory") is not None
    with qtbot.waitSignal(bridge.model_changed, timeout=30_000):
        bridge.load_model(str(micro_run))
    assert panel.state.get("trajectory") is None
    assert panel.current_frame() is None and panel.xt_grid.count == 0 and panel.trajectory_id is None
    assert not panel.t_slider.isEnabled() and not panel.fork_button.isEnabled()


def test_fork_works_as_soon_as_the_frame_is_computed(qtbot, panel, bridge, monkeypatch):
    """Fork does not wait for the chain to finish: while frames stream in, picking an image at the front t enables
    Fork, and the completions hold exactly the streamed x_t of that step; the chain then still finishes. Before the
    chain has computed any step, Fork is off and its tooltip says why."""
    before_first_frame, at_fork = [], []
    bridge.job_started.connect(
        lambda job, key: (
            key == "trajectory"
            and before_first_frame.append((panel.fork_button.isEnabled(), panel.fork_button.toolTip()))
        )
    )
    original = bridge.trajectory

    def spy(n, seed, on_frames=None):
        def fork_from_the_first_chunk(frames):
            on_frames(frames)
            if not at_fork and len(getattr(frames, "t_values", ())) > 10:  # the first full chunk: far from done
                t = panel.t
                qtbot.mouseClick(panel.xt_grid, Qt.MouseButton.LeftButton, pos=panel.xt_grid.cell_rect(1).center())
                at_fork.append((t, panel.chain_complete, panel.fork_button.isEnabled(), frames.x_t[-1, 1].copy()))
                qtbot.mouseClick(panel.fork_button, Qt.MouseButton.LeftButton)

        return original(n, seed, on_frames=fork_from_the_first_chunk)

    monkeypatch.setattr(bridge, "trajectory", spy)
    panel.forks_spin.setValue(3)
    with qtbot.waitSignal(panel.forks_shown, timeout=60_000, check_params_cb=lambda stage: stage == "exact"):
        qtbot.mouseClick(panel.generate_button, Qt.MouseButton.LeftButton)
    ((enabled, tooltip),) = before_first_frame
    assert not enabled and "not computed its first step" in tooltip
    ((t, complete, fork_enabled, streamed_x_t),) = at_fork
    assert 0 < t < 100 and not complete and fork_enabled
    held, completions = panel.fork_images()
    np.testing.assert_array_equal(held, streamed_x_t)
    assert completions.shape == (3, *held.shape) and f"t = {t}" in panel.fork_title.text()
    qtbot.waitUntil(lambda: panel.chain_complete, timeout=60_000)


def test_image_grid_double_click_emits_the_image_index(qtbot):
    """ImageGrid: a double-click on an image emits `image_double_clicked(index)` (and selects it); a click emits
    `image_clicked(index)`; neither fires between images."""
    from studio.widgets.image_grid import ImageGrid

    grid = ImageGrid(columns=2)
    qtbot.addWidget(grid)
    grid.resize(200, 200)
    grid.set_images(np.zeros((4, 8, 8, 3), np.uint8))
    clicked, double_clicked = [], []
    grid.image_clicked.connect(clicked.append)
    grid.image_double_clicked.connect(double_clicked.append)
    qtbot.mouseClick(grid, Qt.MouseButton.LeftButton, pos=grid.cell_rect(1).center())
    assert clicked == [1] and double_clicked == [] and grid.selected == 1
    qtbot.mouseDClick(grid, Qt.MouseButton.LeftButton, pos=grid.cell_rect(2).center())
    assert double_clicked == [2] and grid.selected == 2 and clicked[-1] == 2
    qtbot.mouseDClick(grid, Qt.MouseButton.LeftButton, pos=grid.rect().topLeft())  # the margin, not an image
    assert double_clicked == [2]


def test_double_clicking_an_image_forks_it(qtbot, panel):
    """Double-clicking an image in x_t picks it and forks it at the current t."""
    generate(qtbot, panel)
    panel.t_slider.setValue(30)
    with qtbot.waitSignal(panel.forks_shown, timeout=30_000, check_params_cb=lambda stage: stage == "exact"):
        qtbot.mouseDClick(panel.xt_grid, Qt.MouseButton.LeftButton, pos=panel.xt_grid.cell_rect(3).center())
    held, completions = panel.fork_images()
    np.testing.assert_array_equal(held, panel.current_frame()[0][3])
    assert panel.xt_grid.selected == 3 and "t = 30" in panel.fork_title.text()


def test_fork_key_forks_the_picked_image(qtbot, panel):
    """F forks the picked image at the current t while the focus is in the panel; the Fork button's tooltip says so."""
    generate(qtbot, panel)
    panel.show()
    with qtbot.waitActive(panel):
        panel.activateWindow()
    panel.t_slider.setValue(20)
    qtbot.mouseClick(panel.xt_grid, Qt.MouseButton.LeftButton, pos=panel.xt_grid.cell_rect(0).center())
    assert "(F)" in panel.fork_button.toolTip()
    panel.t_slider.setFocus()
    with qtbot.waitSignal(panel.forks_shown, timeout=30_000, check_params_cb=lambda stage: stage == "exact"):
        qtbot.keyClick(panel.t_slider, Qt.Key.Key_F)
    assert "t = 20" in panel.fork_title.text()


def test_space_and_f_work_after_generating_from_the_spin_box(qtbot, panel):
    """With the focus in the Images spin box (the default: it eats printable keys), Generate (Ctrl+G) moves the focus
    to the scrubber when the first frames arrive, so Space toggles play; clicking an image takes the focus from a
    spin box, so F then forks the picked image."""
    from PySide6.QtWidgets import QApplication

    panel.show()
    with qtbot.waitActive(panel):
        panel.activateWindow()
    panel.n_spin.setFocus()
    qtbot.waitUntil(
        lambda: (
            QApplication.focusWidget() is not None
            and panel.n_spin.isAncestorOf(QApplication.focusWidget())
            or QApplication.focusWidget() is panel.n_spin
        ),
        timeout=1_000,
    )
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_G, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: panel.chain_complete and panel.state.get("trajectory") is not None, timeout=30_000)
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Space)
    assert panel.play_button.isChecked()
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Space)
    assert not panel.play_button.isChecked()

    panel.t_slider.setValue(25)
    panel.forks_spin.setFocus()  # a spin box holds the focus again until an image is clicked
    qtbot.mouseClick(panel.xt_grid, Qt.MouseButton.LeftButton, pos=panel.xt_grid.cell_rect(1).center())
    assert QApplication.focusWidget() is panel.xt_grid
    with qtbot.waitSignal(panel.forks_shown, timeout=30_000, check_params_cb=lambda stage: stage == "exact"):
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_F)
    assert "t = 25" in panel.fork_title.text() and "image #2" in panel.fork_title.text()


def test_generate_says_what_the_chain_will_cost_before_it_runs(qtbot, panel, bridge):
    """The model's time per image and step is measured when it loads; Generate's first status line turns it into
    the chain's cost here (the paper's 256x256 models take minutes per chain on a CPU: say so up front)."""
    assert bridge.model.seconds_per_image_step is not None and bridge.model.seconds_per_image_step > 0
    shown = []
    bridge.job_started.connect(lambda job, key: key == "trajectory" and shown.append(panel.status_label.text()))
    panel.n_spin.setValue(2)
    panel.generate_button.click()
    qtbot.waitUntil(lambda: bool(shown), timeout=10_000)
    assert "Starting a chain of 2 samples" in shown[0] and "101 steps, up to" in shown[0] and "here" in shown[0]


def test_playing_spends_its_time_where_the_prediction_changes(qtbot):
    """Pacing: a chain whose x̂0 changes only over its last 10 of 100 steps is played (by default) showing each of
    those steps and skipping through the rest, within the ticks the speed allows; even pacing shows every tenth
    step. Every path runs down to t = 0, never repeats or climbs, and a slower speed shows more frames."""
    from studio.widgets.scrubber import EVEN, ChainFrames, TimestepScrubber, play_path

    class Frames:  # what the bridge sends: t from T down, x_t and x̂0 [K, N, H, W, C]
        def __init__(self, pred):
            self.t_values, self.done, self.total = np.arange(100, -1, -1), 101, 101
            self.x_t, self.pred_x0 = np.zeros_like(pred), pred

    pred = np.zeros((101, 1, 4, 4, 3), np.uint8)
    pred[91:] = (np.arange(1, 11) * 20)[:, None, None, None, None]  # t = 9..0 change, by 20 each step
    chain = ChainFrames()
    chain.add(Frames(pred))
    assert (
        chain.change[9] == 20
        and chain.change[0] == 20
        and chain.change[10] == 0
        and chain.change[50] == 0
        and chain.change[100] == 0
    )
    weights = chain.pacing_weights()
    paced, even = play_path(100, 25, weights), play_path(100, 25)
    assert [t for t in paced if t < 10] == list(range(9, -1, -1))  # every step where the picture forms
    assert even == list(range(96, -1, -4)) and len([t for t in even if t < 10]) == 3
    for path in (paced, even, play_path(100, 250, weights)):
        assert path[-1] == 0 and path == sorted(set(path), reverse=True)
    assert len(play_path(100, 250, weights)) > len(paced)

    scrubber = TimestepScrubber()
    qtbot.addWidget(scrubber)
    scrubber.reset(100)
    scrubber.set_floor(0, more_coming=False)
    scrubber.set_pacing_weights(weights)
    assert scrubber.pacing_combo.currentText() != EVEN and scrubber.speed_combo.currentText() == "2.5 s"
    shown = []
    scrubber.t_changed.connect(shown.append)
    scrubber.set_t(100)
    scrubber.play()
    qtbot.waitUntil(lambda: not scrubber.playing, timeout=10_000)
    assert shown[-1] == 0 and [t for t in shown if t < 10] == list(range(9, -1, -1))


def test_playing_a_chain_stopped_early_ends_on_its_last_frame(qtbot):
    """A chain stopped at t = 403 has no frames below it: Play from T runs down to 403 and pauses there, rather than
    waiting for frames that will never come (the button back to Play)."""
    from studio.widgets.scrubber import TimestepScrubber

    scrubber = TimestepScrubber()
    qtbot.addWidget(scrubber)
    scrubber.reset(1000)
    scrubber.set_floor(403, more_coming=False)
    scrubber.set_t(1000)
    scrubber.play()
    qtbot.waitUntil(lambda: not scrubber.playing, timeout=10_000)
    assert scrubber.t == 403 and scrubber.play_button.text() == "▶ Play"
