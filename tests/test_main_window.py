"""The whole studio as a user meets it: one window, every panel, the engine on its own thread."""
import asyncio
from pathlib import Path

from engine import checkpoint as ckpt
from engine.images import read_png_metadata
from studio.main_window import PANELS, MainWindow
from tests.conftest import MICRO_DATA, run_async


def test_open_train_scrub_mix_and_export(qtbot, bridge, micro_run, tmp_path):
    """Open the main window on a run, train a few steps of a micro model, scrub the trajectory, drag the mixing
    slider, and export a grid: every step answers, and the window closes cleanly (leaving a loadable checkpoint)."""
    window = MainWindow(bridge=bridge, load_defaults=False)
    qtbot.addWidget(window)
    window.show()
    assert [window.tabs.tabText(i) for i in range(window.tabs.count())] == [cls.title for cls in PANELS]
    assert run_async(qtbot, window.open_run(str(micro_run)))
    assert "step 6" in window.model_label.text()

    dataset = window.panels["Dataset"]
    run_async(qtbot, dataset.load(MICRO_DATA))
    assert window.state.get("dataset").count == 64

    # Train a few steps of a new micro run.
    training = window.panels["Training"]
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
    interpolation = window.panels["Interpolation"]
    window.tabs.setCurrentWidget(interpolation)
    qtbot.waitUntil(lambda: interpolation.strip_grid.count > 0, timeout=60_000)
    with qtbot.waitSignal(interpolation.strip_shown, timeout=60_000, check_params_cb=lambda stage: stage == "exact"):
        interpolation.t_slider.setValue(30)

    # Export a grid with its provenance.
    export = window.panels["Export"]
    window.tabs.setCurrentWidget(export)
    export.count.setValue(4)
    export.steps.setCurrentIndex(3)
    run_async(qtbot, export.generate())
    meta = read_png_metadata(export.export_grid(str(tmp_path / "grid.png")))
    assert meta["step"] == "4" and meta["layout"] == "sample grid"

    window.close()
    assert not bridge._worker.alive
