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
    their step; Stop ends at a step, saves a checkpoint that engine.checkpoint loads, and lists it."""
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
    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    wait_state(qtbot, panel, "finished")
    saved = sorted((tmp_path / "run" / "checkpoints").glob("step_*.json"))
    assert saved, "no checkpoint was written"
    checkpoint = load_checkpoint(saved[-1])
    assert 0 < checkpoint.step < 10_000 and checkpoint.step >= steps[-1]
    assert checkpoint.group("ema") and checkpoint.metadata["preset"] == "micro"
    assert panel.checkpoint_list.count() >= 1 and f"step {checkpoint.step:,}" in panel.checkpoint_list.item(0).text()
    assert panel.start_button.isEnabled() and panel.run_dir_edit.text() != str(tmp_path / "run")  # a new run next


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
    assert panel.configs()[2].learning_rate == pytest.approx(2e-4)
    panel.preset_combo.setCurrentText("cifar10")
    assert panel.differs_list.item(0).text() == "nothing: this is the paper's recipe"


def test_start_without_a_dataset_explains_what_to_do(qtbot, bridge, tmp_path):
    """Start with no dataset and a new run folder does not train; the status line says to load a dataset."""
    panel = make_panel(qtbot, bridge)
    panel.run_dir_edit.setText(str(tmp_path / "new"))
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert panel.training_state == "idle" and "Load a dataset" in panel.status_label.text()


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
    from engine.train import RolledBack, StepSkipped

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
    assert curves.loss_plot.legend_names() == ["loss", "smoothed (0.9)"]
    assert panel.follow(str(micro_run))
    T = json.loads((micro_run / "run.json").read_text())["diffusion"]["num_timesteps"]
    first = f"t ∈ [1, {-(-T // 4):,}]"
    assert curves.quartile_checks[0].text() == first and curves.quartile_checks[3].text().endswith(f", {T:,}]")
    curves.quartile_checks[3].setChecked(True)
    curves.quartile_checks[0].setChecked(True)
    names = curves.loss_plot.legend_names()
    assert names == ["loss", "smoothed (0.9)", first, curves.quartile_checks[3].text()]
    curves.quartile_checks[3].setChecked(False)
    assert curves.loss_plot.legend_names() == ["loss", "smoothed (0.9)", first]


def test_quartile_names_split_t_as_the_engine_does():
    """The engine puts 0-based t in quartile 4t // T; the names give the 1-based t each quartile holds."""
    from studio.widgets.plots import QUARTILE_NAMES, quartile_names

    assert quartile_names(1000) == ("t ∈ [1, 250]", "t ∈ [251, 500]", "t ∈ [501, 750]", "t ∈ [751, 1,000]")
    T = 10
    for q, name in enumerate(quartile_names(T)):
        held = [t0 + 1 for t0 in range(T) if 4 * t0 // T == q]
        assert name == f"t ∈ [{held[0]}, {held[-1]}]"
    assert quartile_names(None) == QUARTILE_NAMES
