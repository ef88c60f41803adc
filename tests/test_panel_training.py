"""The Training panel: train a preset on the loaded dataset with start / pause / resume / stop, show the run live
(loss curve, sample grids, checkpoints), say how the settings differ from the paper, and follow a CLI run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt

from tests.conftest import MICRO_DATA, run_async

ROOT = Path(__file__).resolve().parents[1]


def make_panel(qtbot, bridge, dataset=None):
    from studio.panels.training import TrainingPanel
    from studio.state import AppState

    state = AppState()
    if dataset is not None:
        state.set("dataset", dataset)
    panel = TrainingPanel(bridge, state)
    qtbot.addWidget(panel)
    panel.resize(1100, 750)
    return panel


@pytest.fixture
def panel(qtbot, bridge, tmp_path):
    """The panel with the micro preset on the loaded 8x8 shapes, small batches, samples every 2 steps."""
    p = make_panel(qtbot, bridge, run_async(qtbot, bridge.load_dataset(MICRO_DATA)))
    p.preset_combo.setCurrentText("micro")
    p.batch_spin.setValue(4)
    p.sample_every_spin.setValue(2)
    p.checkpoint_every_spin.setValue(1000)
    p.run_dir_edit.setText(str(tmp_path / "run"))
    return p


def wait_state(qtbot, panel, name, timeout=60_000):
    qtbot.waitUntil(lambda: panel.training_state == name, timeout=timeout)


def test_start_then_stop_leaves_a_loadable_checkpoint(qtbot, panel, tmp_path):
    """Start trains in the engine: the loss curve receives points, the EMA and raw grids show samples labelled with
    their step, each new grid on the timeline; Stop ends at a step, saves a checkpoint that engine.checkpoint loads,
    and lists it; the folder stays, so Start reads "Continue this run" (the likely next step, in bold) beside New
    run."""
    from engine.checkpoint import load_checkpoint

    panel.steps_spin.setValue(10_000)
    with qtbot.waitSignal(panel.training_state_changed, timeout=5000, check_params_cb=lambda s: s == "running"):
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert panel.state.get("run_dir") == str(tmp_path / "run")
    assert not panel.start_button.isEnabled() and not panel.preset_combo.isEnabled()
    qtbot.waitUntil(lambda: panel.loss_plot.count >= 2 and panel.ema_grid.count == 4, timeout=60_000)
    assert panel.raw_grid.count == 4 and "step" in panel.ema_title.text()
    steps, losses = panel.loss_plot.series("loss")
    assert np.all(np.diff(steps) > 0) and np.all(losses > 0)
    qtbot.waitUntil(lambda: len(panel.outputs.steps) >= 2, timeout=60_000)
    assert panel.outputs.shown_step() == panel.outputs.steps[-1]  # the newest grid, as it arrives
    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    wait_state(qtbot, panel, "stopped")
    saved = sorted((tmp_path / "run" / "checkpoints").glob("step_*.json"))
    assert saved, "no checkpoint was written"
    checkpoint = load_checkpoint(saved[-1])
    assert 0 < checkpoint.step < 10_000 and checkpoint.step >= steps[-1]
    assert checkpoint.group("ema") and checkpoint.metadata["preset"] == "micro"
    assert panel.checkpoint_list.count() >= 1 and f"step {checkpoint.step:,}" in panel.checkpoint_list.item(0).text()
    assert panel.run_dir_edit.text() == str(tmp_path / "run") and "Continue this run" in panel.status_label.text()
    assert panel.start_button.isEnabled() and panel.start_button.text() == "Continue this run"
    assert "bold" in panel.start_button.styleSheet() and panel.new_run_button.isEnabled()
    assert "bold" not in panel.new_run_button.styleSheet()
    assert "this run's own data" in panel.data_label.text()


def test_pause_then_resume_continues_exactly(qtbot, panel, tmp_path):
    """Pause saves a checkpoint and turns the button into Resume; Resume continues from that step to the end with no
    step logged twice, and the run finishes at exactly the requested step."""
    panel.steps_spin.setValue(15)
    panel.start()
    qtbot.waitUntil(lambda: panel.loss_plot.count >= 1, timeout=60_000)
    qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
    wait_state(qtbot, panel, "paused")
    assert panel.pause_button.text() == "Resume" and panel.stop_button.isEnabled()
    paused_at = max(int(p.stem[5:]) for p in (tmp_path / "run" / "checkpoints").glob("step_*.json"))
    assert 0 < paused_at <= 15
    qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
    wait_state(qtbot, panel, "finished")
    assert "Finished at step 15" in panel.status_label.text()
    assert "bold" in panel.new_run_button.styleSheet() and "bold" not in panel.start_button.styleSheet()
    logged = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged == sorted(set(logged)) and logged[-1] == 15
    assert list(panel.loss_plot.series("loss")[0]) == logged
    assert panel.progress_bar.value() == panel.progress_bar.maximum() == 15


def test_settings_show_what_differs_from_the_paper(qtbot, bridge):
    """The list names each setting that differs from the paper's CIFAR-10 run with both values ("lr 8e-3 (paper
    2e-4)"), and none that matches it (tiny's batch is the paper's 128); setting it back to the paper's value removes
    the line. With a dataset loaded, the image size is the data's."""
    panel = make_panel(qtbot, bridge)
    panel.preset_combo.setCurrentText("tiny")
    lines = [panel.differs_list.item(i).text() for i in range(panel.differs_list.count())]
    assert {
        "lr 8e-3 (paper 2e-4)",
        "lr schedule cosine (paper constant)",
        "res blocks 1 (paper 2)",
        "image size 16×16 (paper 32×32)",
    } <= set(lines)
    assert not any(line.startswith("batch ") for line in lines)
    panel.lr_spin.setValue(2e-4)
    lines = [panel.differs_list.item(i).text() for i in range(panel.differs_list.count())]
    assert not any(line.startswith("lr ") for line in lines if not line.startswith("lr schedule"))
    assert panel.run_spec().train.learning_rate == pytest.approx(2e-4)
    panel.preset_combo.setCurrentText("cifar10")
    assert panel.differs_list.item(0).text() == "nothing: this is the paper's recipe"


def test_start_is_off_without_a_dataset_and_the_data_line_names_what_start_uses(qtbot, bridge, micro_run, tmp_path):
    """With no dataset and a new run folder, Start and New run are off and the data line says to load one; a folder
    that holds a run turns Start into Continue this run, on that run's own data; once a dataset loads, the line
    names it (spec, count, shape), and after a failed load it says that Start still uses that one."""
    panel = make_panel(qtbot, bridge)
    panel.run_dir_edit.setText(str(tmp_path / "new"))
    assert not panel.start_button.isEnabled() and not panel.new_run_button.isEnabled()
    assert "No dataset loaded" in panel.data_label.text()
    panel.run_dir = str(tmp_path / "a-run-trained-before")  # the last run trained: idle, it no longer counts
    panel.run_dir_edit.setText(str(micro_run))
    assert panel.start_button.isEnabled() and panel.start_button.text() == "Continue this run"
    assert f"{MICRO_DATA} (this run's own data)".replace("&", "&amp;") in panel.data_label.text()
    panel.run_dir_edit.setText(str(tmp_path / "new"))
    panel.state.set("dataset", run_async(qtbot, bridge.load_dataset("builtin:shapes?size=8&count=40")))
    assert panel.start_button.isEnabled() and panel.start_button.text() == "Start"
    assert panel.data_label.text() == "builtin:shapes?size=8&amp;count=40 · 40 images · 8×8×3"  # rich text
    panel.state.set("dataset_error", "~/nowhere?size=8: no such file or folder")
    assert "The newest load failed (~/nowhere?size=8: no such file or folder): Start uses this one" in (
        panel.data_label.text()
    )


def test_new_runs_go_to_the_runs_folder_which_can_be_changed(qtbot, bridge, tmp_path, monkeypatch, settings_in):
    """A new run's folder is a fresh name in the per-user runs folder ($XDG_DATA_HOME/ddpm-studio/runs), never the
    working directory; choosing another runs folder is remembered and moves the fresh name along."""
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    panel = make_panel(qtbot, bridge)
    panel.preset_combo.setCurrentText("micro")
    first = Path(panel.run_dir_edit.text())
    assert first.parent == tmp_path / "data" / "ddpm-studio" / "runs" and first.name.startswith("micro-")
    assert panel.run_controls.runs_label.text() == str(tmp_path / "data" / "ddpm-studio" / "runs")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args: str(tmp_path / "mine"))
    panel.run_controls.runs_folder_button.click()
    assert Path(panel.run_dir_edit.text()) == tmp_path / "mine" / first.name
    assert make_panel(qtbot, bridge).run_controls.runs_label.text() == str(tmp_path / "mine")  # remembered


def test_follows_a_run_written_by_the_cli(qtbot, bridge, tmp_path):
    """Following a run directory that `python -m engine train` wrote plots every logged step of its metrics.jsonl,
    lists its checkpoints and shows its settings; while followed, a line is plotted only once it is complete, new
    lines arrive through the 2 s timer, and a new sample grid PNG is shown."""
    run = tmp_path / "cli-run"
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}  # beside this process's engine thread, two would oversubscribe
    subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "train",
            "--data",
            MICRO_DATA,
            "--preset",
            "micro",
            "--steps",
            "10",
            "--batch-size",
            "4",
            "--run",
            str(run),
        ],
        cwd=ROOT,
        env=one_thread,
        check=True,
        capture_output=True,
        timeout=120,
    )
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    panel = make_panel(qtbot, bridge)
    assert panel.follow(str(run))
    assert panel.training_state == "following" and panel.preset_combo.currentText() == "micro"
    assert panel.steps_spin.value() == 10 and panel.batch_spin.value() == 4
    steps, losses = panel.loss_plot.series("loss")
    assert list(steps) == [r["step"] for r in records] and np.allclose(losses, [r["loss"] for r in records])
    assert panel.checkpoint_list.count() == 2  # steps 10 and 0
    assert panel.progress_bar.value() == 10

    line = (
        json.dumps(
            {
                "step": 12,
                "loss": 0.5,
                "loss_q": [1.0, 0.5, 0.3, None],
                "lr": 1e-3,
                "grad_norm": 0.4,
                "img_per_s": 50.0,
                "time": 0.0,
                "elapsed_s": 1.0,
            }
        )
        + "\n"
    )
    with open(run / "metrics.jsonl", "a") as f:
        f.write(line[:20])  # a writer is halfway through this line
    panel.poll_followed_run()
    assert panel.loss_plot.count == len(records)
    with open(run / "metrics.jsonl", "a") as f:
        f.write(line[20:])
    Image.fromarray(np.full((18, 18, 3), 200, np.uint8)).save(run / "samples" / "step_0000012.png")
    qtbot.waitUntil(lambda: panel.loss_plot.count == len(records) + 1, timeout=5000)  # the timer's next poll
    assert panel.ema_grid.count == 1 and "step 12" in panel.ema_title.text()
    assert panel.loss_plot.point_count("q2") == len(records) + 1 and panel.loss_plot.point_count("q3") == len(records)

    panel.follow_button.click()  # "Stop following"
    assert panel.training_state == "idle" and panel.start_button.isEnabled()


def test_follow_refuses_a_folder_that_is_not_a_run(qtbot, bridge, tmp_path):
    """A folder without run.json is refused with a message; the panel stays idle."""
    panel = make_panel(qtbot, bridge)
    assert not panel.follow(str(tmp_path))
    assert panel.training_state == "idle" and "not a run folder" in panel.status_label.text()


def test_skipped_steps_and_rollbacks_show_a_warning(qtbot, bridge):
    """A StepSkipped or RolledBack event from the training loop shows a visible warning line naming the step and why."""
    from engine.train_events import RolledBack, StepSkipped

    panel = make_panel(qtbot, bridge)
    assert not panel.warning_label.isVisibleTo(panel)
    bridge.train_event.emit(StepSkipped(41, "non-finite loss"))
    assert panel.warning_label.isVisibleTo(panel) and "step 41 skipped: non-finite loss" in panel.warning_label.text()
    bridge.train_event.emit(RolledBack(45, 40, "3 non-finite steps in a row"))
    assert "rolled back from step 45 to 40" in panel.warning_label.text()


def test_start_on_a_run_folder_resumes_it(qtbot, bridge, micro_run, tmp_path):
    """Start on a folder that already holds a run (here the 6-step micro run, copied) resumes it with its own
    settings: the curve first shows the run's logged history, then training continues to the requested step."""
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(micro_run, run)
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    panel = make_panel(qtbot, bridge)  # no dataset needed: the run names its own
    panel.run_dir_edit.setText(str(run))
    panel.steps_spin.setValue(8)
    task = panel.start()
    assert list(panel.loss_plot.series("loss")[0]) == logged
    qtbot.waitUntil(task.done, timeout=60_000)
    assert panel.training_state == "finished" and panel.progress_bar.value() == 8
    assert max(int(p.stem[5:]) for p in (run / "checkpoints").glob("step_*.json")) == 8


def test_preset_changes_leave_a_followed_run_alone(qtbot, bridge, micro_run):
    """While following a run, a preset change (the Dataset tab's "Plan for preset" sets this combo) does not rewrite
    the followed run's settings; once following stops, presets fill the settings again."""
    panel = make_panel(qtbot, bridge)
    assert panel.follow(str(micro_run))
    settings = (panel.steps_spin.value(), panel.batch_spin.value(), panel.sample_every_spin.value())
    assert not panel.preset_combo.isEnabled()
    panel.preset_combo.setCurrentText("tiny")
    assert (panel.steps_spin.value(), panel.batch_spin.value(), panel.sample_every_spin.value()) == settings
    panel.follow_button.click()  # "Stop following"
    panel.preset_combo.setCurrentText("micro")
    panel.preset_combo.setCurrentText("tiny")
    assert panel.batch_spin.value() != settings[1] or panel.steps_spin.value() != settings[0]


def test_a_zoomed_sample_grid_png_fits_its_frame(qtbot, tmp_path):
    """A run's samples/ PNG is saved zoomed (16 images of 16x16 with padding, x4 = 296x296 pixels): the EMA grid
    undoes the zoom (its 74x74 grid) and draws it whole inside its frame at an integer zoom of its own."""
    from engine.images import make_grid, upscale
    from studio.widgets.run_outputs import RunOutputs

    rng = np.random.default_rng(0)
    grid = make_grid(rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8))
    picture = upscale(grid, 4)
    assert picture.shape == (296, 296, 3)
    (tmp_path / "samples").mkdir()
    Image.fromarray(picture).save(tmp_path / "samples" / "step_0000500.png")
    outputs = RunOutputs()
    qtbot.addWidget(outputs)
    outputs.resize(700, 220)  # a grid frame about 200 pixels high: too small for 296 at 1:1
    outputs.show()
    qtbot.waitExposed(outputs)
    outputs.show_newest_sample(tmp_path)
    ema = outputs.ema_grid
    assert ema.count == 1 and "step 500" in outputs.ema_title.text()
    cell = ema.cell_rect(0)
    assert ema.rect().contains(cell) and cell.width() == cell.height() == grid.shape[0] * ema.zoom()


def test_a_followed_run_says_why_its_raw_grid_is_empty(qtbot, bridge, micro_run):
    """A followed run's samples/ folder holds EMA grids only: the raw pane says so instead of staying a blank box,
    and a run the studio trains drops that note."""
    panel = make_panel(qtbot, bridge)
    assert panel.follow(str(micro_run))
    assert panel.raw_grid.count == 0
    assert "EMA grids only" in panel.raw_grid.placeholder and "not saved" in panel.raw_title.text()
    panel.follow_button.click()  # "Stop following"
    panel._reset_view()
    assert "EMA grids only" not in panel.raw_grid.placeholder and "not saved" not in panel.raw_title.text()


def test_the_loss_legend_names_every_shown_quartile_with_the_runs_T(qtbot, bridge, micro_run):
    """The legend lists the loss, the smoothed loss and each t-quartile curve that is shown (in order), named by the
    t it holds for the run's T, as the toggles are."""
    panel = make_panel(qtbot, bridge)
    curves = panel.curves
    assert curves.loss_plot.legend_names() == ["loss", "smoothed"]
    assert panel.follow(str(micro_run))
    T = json.loads((micro_run / "run.json").read_text())["diffusion"]["num_timesteps"]
    first = f"t ∈ [1, {-(-T // 4):,}]"
    assert curves.quartile_checks[0].text() == first and curves.quartile_checks[3].text().endswith(f", {T:,}]")
    curves.quartile_checks[3].setChecked(True)
    curves.quartile_checks[0].setChecked(True)
    names = curves.loss_plot.legend_names()
    assert names == ["loss", "smoothed", first, curves.quartile_checks[3].text()]
    curves.quartile_checks[3].setChecked(False)
    assert curves.loss_plot.legend_names() == ["loss", "smoothed", first]


def test_quartile_names_split_t_as_the_engine_does():
    """The engine puts 0-based t in quartile 4t // T; the names give the 1-based t each quartile holds."""
    from studio.widgets.plots import QUARTILE_NAMES, quartile_names

    assert quartile_names(1000) == ("t ∈ [1, 250]", "t ∈ [251, 500]", "t ∈ [501, 750]", "t ∈ [751, 1,000]")
    T = 10
    for q, name in enumerate(quartile_names(T)):
        held = [t0 + 1 for t0 in range(T) if 4 * t0 // T == q]
        assert name == f"t ∈ [{held[0]}, {held[-1]}]"
    assert quartile_names(None) == QUARTILE_NAMES


def test_the_smoothed_loss_follows_a_falling_loss_and_its_weight_is_a_slider(qtbot):
    """The smoothed curve is a debiased EMA of log L (TensorBoard's, on the log axis): for a loss falling from 1 to
    0.04 over the first 10 logged points and flat after, one point later it is within 1.5x of the raw value (the
    former EMA of L with weight 0.9 showed 5x there, 4x two points later); its first point is the first loss; the
    slider re-smooths the whole curve (0: the raw loss); one point gets axes a decade around it rather than
    pyqtgraph's empty span."""
    from studio.widgets.plots import TrainingCurves, debiased_ema

    curves = TrainingCurves()
    qtbot.addWidget(curves)
    plot = curves.loss_plot
    plot.add_point(10, 0.5)
    (x0, x1), (y0, y1) = plot.getPlotItem().vb.viewRange()
    assert x0 <= 10 <= x1 and y0 < np.log10(0.5) < y1 and y1 - y0 <= 1.5  # log10 on a log axis
    plot.clear_data()
    losses = np.concatenate([np.geomspace(1.0, 0.04, 10), np.full(20, 0.04)])
    for step, loss in enumerate(losses, start=1):
        plot.add_point(step * 10, float(loss))
    _, smoothed = plot.series("smoothed")
    assert smoothed[0] == pytest.approx(1.0) and smoothed[10] < 1.5 * 0.04 and smoothed[-1] < 1.01 * 0.04
    assert debiased_ema(losses, 0.9, log=False)[10] > 5 * 0.04  # what the old smoothing showed
    np.testing.assert_allclose(smoothed, debiased_ema(losses, curves.loss_plot.smoothing), rtol=1e-9)
    curves.smoothing_slider.setValue(0)
    np.testing.assert_allclose(plot.series("smoothed")[1], losses, rtol=1e-9)
    curves.smoothing_slider.setValue(95)
    assert curves.smoothing_label.text() == "0.95" and plot.smoothing == pytest.approx(0.95)
    np.testing.assert_allclose(plot.series("smoothed")[1], debiased_ema(losses, 0.95), rtol=1e-9)
    plot.add_point(1010, 0.04)  # a new point continues from the recomputed curve
    np.testing.assert_allclose(plot.series("smoothed")[1][-1], debiased_ema([*losses, 0.04], 0.95)[-1], rtol=1e-9)


def test_the_sample_timeline_scrubs_every_saved_grid_and_keeps_a_scrubbed_back_view(qtbot, tmp_path):
    """A run's samples/ grids (the same noise at every step) go on the timeline: it shows the newest, scrubbing to
    the first shows that step's grid, and a grid arriving while scrubbed back is added without moving the view;
    at the end of the timeline a new grid is shown as it arrives. Raw grids exist only for this session's steps."""
    from engine.images import make_grid
    from studio.widgets.run_outputs import RunOutputs

    (tmp_path / "samples").mkdir()
    grids = {}
    for step in (100, 200, 300):
        images = np.full((4, 8, 8, 3), step // 2, np.uint8)
        grids[step] = images
        Image.fromarray(make_grid(images, nrow=2)).save(tmp_path / "samples" / f"step_{step:07d}.png")
    outputs = RunOutputs()
    qtbot.addWidget(outputs)
    outputs.resize(600, 500)
    outputs.show_run_samples(tmp_path)
    assert outputs.steps == [100, 200, 300] and outputs.shown_step() == 300
    assert outputs.timeline.isEnabled() and outputs.timeline_label.text() == "step 300 · 3 of 3"
    outputs.timeline.setValue(0)
    assert outputs.shown_step() == 100 and "step 100" in outputs.ema_title.text() and outputs.ema_grid.count == 1
    assert "No raw-weight grid of step 100" in outputs.raw_grid.placeholder
    live = np.full((4, 8, 8, 3), 7, np.uint8)
    outputs.show_samples(400, live, live)
    assert outputs.steps[-1] == 400 and outputs.shown_step() == 100  # scrubbed back: the view stays
    outputs.timeline.setValue(outputs.timeline.maximum())
    assert outputs.ema_grid.count == 4 and outputs.raw_grid.count == 4 and "step 400" in outputs.raw_title.text()
    outputs.show_samples(500, live, live)
    assert outputs.shown_step() == 500  # at the end: follows the newest
