"""The whole studio as a user meets it: one window, every panel, the engine on its own thread."""

import dataclasses
import json
import shutil
import warnings

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from engine import checkpoint as ckpt
from engine.images import read_png_metadata
from studio.main_window import PANELS, MainWindow
from tests.conftest import MICRO_DATA, run_async

pytestmark = pytest.mark.usefixtures("settings_in")  # QSettings under tmp_path (conftest)


def _mix_to_exact(qtbot, window, t: int) -> None:
    """Show the Interpolation tab, wait for its strip, drag the mixing step to t and wait for the exact strip."""
    interpolation = window.panels["Interpolation"]
    window.tabs.setCurrentWidget(interpolation)
    qtbot.waitUntil(lambda: interpolation.strip_grid.count > 0, timeout=60_000)
    with qtbot.waitSignal(interpolation.strip_shown, timeout=60_000, check_params_cb=lambda stage: stage == "exact"):
        interpolation.t_slider.setValue(t)


def test_open_train_scrub_mix_and_export(qtbot, bridge, micro_run, tmp_path):
    """Open the main window on a run, train a few steps of a micro model, scrub the trajectory, drag the mixing
    slider, and export a grid: every step answers, and the window closes cleanly (leaving a loadable checkpoint)."""
    window = MainWindow(bridge=bridge, load_defaults=False)
    qtbot.addWidget(window)
    window.show()
    assert [window.tabs.tabText(i) for i in range(window.tabs.count())] == [cls.title for cls in PANELS]
    assert run_async(qtbot, window.open_run(str(micro_run)))
    assert "step 6" in window.model_label.text()
    training = window.panels["Training"]
    assert training.training_state == "following"  # the opened run's curves, samples and checkpoints
    training.follow_button.click()  # "Stop following", to train a run of our own

    dataset = window.panels["Dataset"]
    run_async(qtbot, dataset.load(MICRO_DATA))
    assert window.state.get("dataset").count == 64

    # Train a few steps of a new micro run.
    window.tabs.setCurrentWidget(training)
    training.preset_combo.setCurrentText("micro")
    training.steps_spin.setValue(4)
    training.batch_spin.setValue(8)
    training.sample_every_spin.setValue(2)
    run_dir = tmp_path / "trained"
    training.run_dir_edit.setText(str(run_dir))
    task = training.start()
    qtbot.waitUntil(task.done, timeout=120_000)
    assert training.training_state == "finished"
    assert ckpt.latest_checkpoint(run_dir / "checkpoints")[0].step == 4
    assert window.model_label.text().startswith("exploring micro · step 6 · ")  # training did not switch it
    assert run_async(qtbot, window.open_run(str(run_dir)))  # explore the new run, by choice
    assert window.model_label.text().startswith("exploring trained · step 4 · ")  # its own name, not its parent's

    # Scrub a trajectory of the model that was just trained.
    trajectory = window.panels["Trajectory"]
    window.tabs.setCurrentWidget(trajectory)
    trajectory.n_spin.setValue(2)
    trajectory.generate_button.click()
    qtbot.waitUntil(lambda: window.state.get("trajectory") is not None, timeout=60_000)
    with qtbot.waitSignal(trajectory.frame_shown, timeout=5_000) as shown:
        trajectory.t_slider.setValue(40)
    assert shown.args == [40]

    # Drag the mixing slider: the strip follows, the exact chain arrives.
    _mix_to_exact(qtbot, window, 30)

    # Export a grid with its provenance.
    export = window.panels["Export"]
    window.tabs.setCurrentWidget(export)
    export.count.setValue(4)
    export.steps.setCurrentIndex(3)
    run_async(qtbot, export.generate())
    meta = read_png_metadata(export.export_grid(str(tmp_path / "grid.png")))
    assert meta["step"] == "4" and meta["run"] == "trained" and meta["layout"] == "sample grid"

    window.close()
    assert not bridge._worker.alive


def test_keyboard_shortcuts_are_listed_and_work_in_their_tab(qtbot, bridge, micro_run):
    """Help > Keyboard shortcuts lists the main actions with their keys (generate Ctrl+G, play/pause Space, fork F,
    start/pause training, evaluate, export, the menus'); a panel's chord works only while its tab is shown, so the
    same Ctrl+Return starts training in the Training tab and samples a grid in the Export tab."""
    window = MainWindow(bridge=bridge, load_defaults=False)
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitActive(window):
        window.activateWindow()
    assert run_async(qtbot, window.open_run(str(micro_run)))
    help_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    shortcuts_action = next(a for a in help_menu.actions() if "shortcuts" in a.text())
    shortcuts_action.trigger()
    dialog = window.shortcuts_dialog
    assert dialog is not None and dialog.isVisible()
    listed = dialog.entries()
    for keys, what in (
        ("Ctrl+G", "generate a chain"),
        ("Space", "play / pause the chain"),
        ("F", "fork the picked image at the current t"),
        ("Ctrl+Return", "start training (or continue the run folder)"),
        ("Ctrl+P", "pause / resume training"),
        ("Ctrl+Return", "evaluate the bound / stop"),
        ("Ctrl+Return", "generate a sample grid"),
        ("Ctrl+S", "save the sample grid as a PNG…"),
        ("Ctrl+O", "File > Open run…"),
        ("Ctrl+3", "View > Trajectory"),
    ):
        assert (keys, what) in listed
    training, export = window.panels["Training"], window.panels["Export"]
    window.state.set("dataset", run_async(qtbot, bridge.load_dataset(MICRO_DATA)))
    dialog.close()

    window.tabs.setCurrentWidget(training)
    training.follow_button.click()  # opening the run followed it; Start works once following stops
    training.run_dir_edit.setText(str(micro_run.parent / "not-yet-a-run"))
    with warnings.catch_warnings():  # deprecated, but offscreen the closed dialog stays the active window otherwise
        warnings.simplefilter("ignore", DeprecationWarning)
        QApplication.setActiveWindow(window)
    with qtbot.waitSignal(bridge.job_started, timeout=10_000, check_params_cb=lambda job, key: key == "train"):
        qtbot.keyClick(window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)

    training.stop()
    qtbot.waitUntil(lambda: training.training_state == "stopped", timeout=60_000)
    window.tabs.setCurrentWidget(export)
    with qtbot.waitSignal(bridge.job_started, timeout=10_000, check_params_cb=lambda job, key: key == "sample"):
        qtbot.keyClick(window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    window.close()


def test_opening_a_run_follows_it_in_the_training_tab(qtbot, bridge, micro_run, tmp_path):
    """Opening a run that has a metrics log makes the Training tab follow it (its settings and curve, not a prompt to
    load a dataset); the Dataset tab's preset leaves the followed settings alone; a checkpoint newer than the loaded
    model is offered in the status bar, never loaded on its own."""
    import shutil

    run = tmp_path / "opened"
    shutil.copytree(micro_run, run)
    window = MainWindow(bridge=bridge, load_defaults=False)
    qtbot.addWidget(window)
    window.show()
    assert run_async(qtbot, window.open_run(str(run)))
    training, dataset = window.panels["Training"], window.panels["Dataset"]
    assert training.training_state == "following" and training.run_dir == str(run)
    assert "Following" in training.status_label.text() and "Load a dataset" not in training.status_label.text()
    assert training.loss_plot.count > 0 and training.checkpoint_list.count() >= 1
    settings = (training.steps_spin.value(), training.batch_spin.value())
    dataset.preset_combo.setCurrentText("tiny" if dataset.preset_combo.currentText() != "tiny" else "small")
    assert (training.steps_spin.value(), training.batch_spin.value()) == settings

    newest = max((run / "checkpoints").glob("step_*.json"))
    shutil.copy(newest, run / "checkpoints" / "step_0007000.json")  # the CLI saved a newer one
    training.poll_followed_run()
    assert "step 7,000 is available" in window.status_message.text()
    assert "step 6 " in window.model_label.text()  # still the model that was opened
    window.close()


def _set_up_micro_training(qtbot, window, run_dir, steps: int, checkpoint_every: int | None = None):
    """Stop following the opened run, load the micro data and fill the Training tab for a micro run in `run_dir`."""
    training = window.panels["Training"]
    training.follow_button.click()
    run_async(qtbot, window.panels["Dataset"].load(MICRO_DATA))
    training.preset_combo.setCurrentText("micro")
    training.steps_spin.setValue(steps)
    training.batch_spin.setValue(8)
    if checkpoint_every is not None:
        training.checkpoint_every_spin.setValue(checkpoint_every)
        training.sample_every_spin.setValue(1000)
    training.run_dir_edit.setText(str(run_dir))
    return training


def test_starting_a_training_leaves_the_explored_model_and_its_chain_alone(qtbot, bridge, micro_run, tmp_path):
    """Exploring pins a model: a training run started meanwhile does not switch what the tabs explore, nor clear the
    chain being scrubbed; the status bar names both, the explored model and the run in training with its step."""
    window = MainWindow(bridge=bridge, load_defaults=False)
    qtbot.addWidget(window)
    assert run_async(qtbot, window.open_run(str(micro_run)))
    trajectory = window.panels["Trajectory"]
    trajectory.n_spin.setValue(2)
    trajectory.generate_button.click()
    qtbot.waitUntil(lambda: window.state.get("trajectory") is not None, timeout=60_000)
    chain = window.state.get("trajectory")

    training = _set_up_micro_training(qtbot, window, tmp_path / "second", steps=3)
    shown = []
    bridge.train_event.connect(lambda event: shown.append(window.training_label.text()))
    task = training.start()
    qtbot.waitUntil(task.done, timeout=120_000)
    assert training.training_state == "finished"
    assert any(text.startswith("training second · step ") for text in shown)
    assert bridge.model.step == 6 and window.model_label.text().startswith("exploring micro · step 6 · ")
    assert window.state.get("trajectory") is chain and trajectory.xt_grid.count == 2
    assert not window.training_label.isVisible()  # training over


def test_an_export_is_named_by_the_model_that_computed_it(qtbot, bridge, micro_run, tmp_path):
    """The interpolation sheet, the trajectory strip and the sample grid record the model their result carries, even
    when the studio's remembered description of the model says otherwise (it went stale while a run trained)."""
    window = MainWindow(bridge=bridge, load_defaults=False)
    qtbot.addWidget(window)
    window.show()
    assert run_async(qtbot, window.open_run(str(micro_run)))
    stale = dataclasses.replace(bridge.model, step=0, provenance={**bridge.model.provenance, "step": "0"})
    bridge.model = stale  # what the studio remembers no longer says what the engine computes with

    _mix_to_exact(qtbot, window, 20)
    trajectory = window.panels["Trajectory"]
    trajectory.n_spin.setValue(2)
    trajectory.generate_button.click()
    qtbot.waitUntil(lambda: window.state.get("trajectory") is not None, timeout=60_000)
    export = window.panels["Export"]
    export.count.setValue(2)
    export.steps.setCurrentIndex(3)
    run_async(qtbot, export.generate())

    sheet = read_png_metadata(export.export_sheet(str(tmp_path / "sheet.png")))
    strip = read_png_metadata(export.export_strip(str(tmp_path / "strip.png")))
    grid = read_png_metadata(export.export_grid(str(tmp_path / "grid.png")))
    for meta in (sheet, strip, grid):
        assert meta["step"] == "6" and meta["run"] == "micro" and len(meta["checkpoint_sha256"]) == 64


def test_a_damaged_run_is_refused_in_one_line_and_exploring_goes_on(qtbot, bridge, micro_run, tmp_path, monkeypatch):
    """Opening a run whose run.json nests 100,000 deep, or whose only checkpoint names /dev/zero as its weights,
    shows a dialog with one line that says why; the model explored before stays loaded."""
    import json
    import shutil

    import studio.main_window as main_window

    shown = []
    monkeypatch.setattr(main_window.QMessageBox, "warning", lambda parent, title, text: shown.append((title, text)))
    window = MainWindow(bridge=bridge, load_defaults=False)
    qtbot.addWidget(window)
    assert run_async(qtbot, window.open_run(str(micro_run)))

    deep = tmp_path / "deep"
    shutil.copytree(micro_run, deep)
    (deep / "run.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    zero = tmp_path / "zero"
    shutil.copytree(micro_run, zero)
    for meta in ckpt.list_checkpoints(zero / "checkpoints"):
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "weights": "/dev/zero"}))

    assert not run_async(qtbot, window.open_run(str(deep)))
    assert not run_async(qtbot, window.open_run(str(zero)))
    (_, deep_text), (_, zero_text) = shown
    assert "run.json" in deep_text and "nests deeper than 32 levels" in deep_text and "\n" not in deep_text
    assert "'/dev/zero', not its own" in zero_text and "Traceback" not in zero_text
    assert bridge.model.step == 6 and "step 6" in window.model_label.text()  # still exploring the first run


def test_an_export_made_while_a_run_trains_records_the_step_it_was_computed_at(qtbot, bridge, micro_run, tmp_path):
    """While a run trains, the user opens one of its checkpoints and exports a sample grid: the picture names that
    checkpoint's step (and run), not the step the training has reached since, nor the model explored before."""
    window = MainWindow(bridge=bridge, load_defaults=False)
    qtbot.addWidget(window)
    assert run_async(qtbot, window.open_run(str(micro_run)))
    run_dir = tmp_path / "live"
    training = _set_up_micro_training(qtbot, window, run_dir, steps=400, checkpoint_every=25)
    task = training.start()
    first = run_dir / "checkpoints" / "step_0000025.json"
    qtbot.waitUntil(first.exists, timeout=60_000)
    # The run keeps its newest three checkpoints: take this one as a user would copy it, before it is pruned.
    kept = tmp_path / "kept" / "live" / "checkpoints"
    kept.mkdir(parents=True)
    for suffix in (".safetensors", ".json"):
        shutil.copy(first.with_suffix(suffix), kept / first.with_suffix(suffix).name)
    checkpoint = kept / first.name
    assert run_async(qtbot, window.open_run(str(checkpoint)))  # explore the run as it was at step 25
    export = window.panels["Export"]
    export.count.setValue(2)
    export.steps.setCurrentIndex(3)
    run_async(qtbot, export.generate())
    meta = read_png_metadata(export.export_grid(str(tmp_path / "grid.png")))
    training.stop()
    qtbot.waitUntil(task.done, timeout=60_000)
    newest = ckpt.latest_checkpoint(run_dir / "checkpoints")[0].step
    assert newest > 25  # the run went on meanwhile
    assert meta["run"] == "live" and meta["step"] == "25"
    assert meta["checkpoint_sha256"] == json.loads(checkpoint.read_text())["sha256"]


def test_a_diffusers_model_folder_opens_to_explore(qtbot, bridge, tmp_path, monkeypatch):
    """File > Open (or a drop, or `./studio.sh PATH`) on a diffusers pipeline folder imports it once into the
    studio's imports folder and explores it; opening it again reuses that run."""
    from engine import convert
    from engine.config import PRESETS
    from engine.unet import UNet

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    model = UNet(PRESETS["micro"].unet)
    convert.write_diffusers(tmp_path / "ddpm-micro", model.config, PRESETS["micro"].diffusion, model.state_dict(), "")
    window = MainWindow(bridge=bridge, load_defaults=False)
    qtbot.addWidget(window)
    assert run_async(qtbot, window.open_run(str(tmp_path / "ddpm-micro")))
    imported = list((tmp_path / "data" / "ddpm-studio" / "imports").iterdir())
    assert len(imported) == 1 and imported[0].name.startswith("ddpm-micro-")
    assert window.model_label.text().startswith(f"exploring {imported[0].name} · step 0 · 8x8x3")
    assert run_async(qtbot, window.open_run(str(tmp_path / "ddpm-micro" / "unet")))  # again: the same run
    assert len(list(imported[0].parent.iterdir())) == 1


def test_closing_while_training_says_a_checkpoint_is_saved_until_told_not_to(
    qtbot, bridge, micro_run, monkeypatch, settings_in
):
    """Closing the window while it trains first says that training stops after this step with a checkpoint saved;
    Keep training leaves the window open and training on; Save and close (with "do not tell me again", checked by
    default) closes, and the next time it just closes."""
    from PySide6.QtWidgets import QMessageBox

    import studio.main_window as main_window

    monkeypatch.setattr(main_window, "NOTICE_ON_CLOSE_WHILE_TRAINING", True)
    answers, shown = [QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Ok], []

    def answer(box):
        shown.append((box.text(), box.checkBox().isChecked()))
        return answers.pop(0)

    monkeypatch.setattr(main_window, "ask", answer)
    window = MainWindow(bridge=bridge, load_defaults=False)
    qtbot.addWidget(window)
    monkeypatch.setattr(bridge, "_train_job", 1)  # as if a run were training
    assert not window.close() and len(shown) == 1  # Keep training
    assert "saves a checkpoint" in shown[0][0] and shown[0][1]
    assert window._may_close_while_training() and len(shown) == 2  # Save and close, do not tell again
    assert window._may_close_while_training() and len(shown) == 2  # told once: no notice now


def test_the_first_launch_streams_a_chain_and_says_so(qtbot, event_loop_qt, settings_in):
    """Started with no run on the Trajectory tab, the studio opens the bundled model and generates a chain straight
    away: from the moment the chain starts, the tab says it is computing (never "press Generate"), and the built-in
    data loads meanwhile."""
    from studio.bridge import Bridge

    bridge = Bridge()
    window = MainWindow(bridge=bridge)
    qtbot.addWidget(window)
    trajectory = window.panels["Trajectory"]
    assert window.tabs.currentWidget() is trajectory
    said = []
    bridge.job_started.connect(lambda job, key: key == "trajectory" and said.append(trajectory.status_label.text()))
    qtbot.waitUntil(lambda: trajectory._frames.received > 0, timeout=60_000)
    assert said and "Starting a chain" in said[0] and "press Generate" not in trajectory.status_label.text()
    assert "press Generate" not in trajectory.xt_grid.placeholder
    qtbot.waitUntil(lambda: window.state.get("dataset") is not None, timeout=60_000)
    trajectory.stop_button.click()
    window.close()
    assert not bridge._worker.alive


def test_the_status_bar_says_when_the_compiled_path_is_building_and_ready(qtbot, bridge, micro_run, monkeypatch):
    """Opening a model starts its background compile where a C++ compiler is (engine/compiled.py): the status bar
    says "compiling a faster path…" until it is ready, then "compiled"; without a compiler it says "uncompiled" and
    how to get one; turned off (DDPM_COMPILE=0) it says nothing. (The compiling process and torch's loader are
    stand-ins; the first waits.)"""
    import threading

    release = threading.Event()

    def compile_in_child(spec, path, cancelled=None):
        release.wait(30)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"compiled")

    monkeypatch.setattr("engine.compiled.compile_in_child", compile_in_child)
    monkeypatch.setattr("engine.compiled._load", lambda path: lambda wrapper, x, t: wrapper(x, t))
    monkeypatch.setenv("DDPM_COMPILE", "1")
    monkeypatch.setattr("engine.compiled.shutil.which", lambda name: "/usr/bin/g++")
    window = MainWindow(bridge=bridge, load_defaults=False)
    qtbot.addWidget(window)
    assert run_async(qtbot, window.open_run(str(micro_run)))
    assert window.compile_label.text() == "compiling a faster path…" and window.compile_label.isVisibleTo(window)
    assert "uncompiled meanwhile" in window.compile_label.toolTip()
    release.set()
    qtbot.waitUntil(lambda: window.compile_label.text() == "compiled", timeout=10_000)
    assert "(compiled in " in window.compile_label.toolTip()
    assert run_async(qtbot, window.open_run(str(micro_run)))  # the next time: from the cache
    qtbot.waitUntil(lambda: "(loaded from the cache in " in window.compile_label.toolTip(), timeout=10_000)

    monkeypatch.setattr("engine.compiled.shutil.which", lambda name: None)
    assert run_async(qtbot, window.open_run(str(micro_run)))
    assert window.compile_label.text() == "uncompiled" and "apt install g++" in window.compile_label.toolTip()
    monkeypatch.setenv("DDPM_COMPILE", "0")
    assert run_async(qtbot, window.open_run(str(micro_run)))
    assert not window.compile_label.isVisibleTo(window)
