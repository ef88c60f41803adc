"""The Likelihood panel: bits/dim of held-out images through the bound and the rate-distortion curve (Fig. 5)."""

import math

import numpy as np
import pytest

from tests.conftest import run_async

pytest.importorskip("PySide6")
from PySide6.QtCore import Qt  # noqa: E402

LEFT = Qt.MouseButton.LeftButton


@pytest.fixture
def panel(qtbot, bridge, state):
    from studio.panels.likelihood import LikelihoodPanel

    widget = LikelihoodPanel(bridge, state)
    qtbot.addWidget(widget)
    return widget


def test_evaluating_the_micro_model_shows_finite_positive_bits_per_dim_and_the_curve(qtbot, bridge, panel):
    """Evaluate gives a finite positive bits/dim in the label (with the split, count and step) and a
    rate-distortion curve of T + 1 points, rate falling and distortion rising with t."""
    from studio.bridge import LikelihoodResult

    panel.images_spin.setValue(16)
    assert "split=test" in panel.data_label.text() and "size=8" in panel.data_label.text()
    with qtbot.waitSignal(panel.evaluated, timeout=30_000) as blocker:
        qtbot.mouseClick(panel.evaluate_button, LEFT)
    result = blocker.args[0]
    assert isinstance(result, LikelihoodResult)
    assert math.isfinite(result.bits_per_dim) and result.bits_per_dim > 0
    assert result.images == 16
    assert f"{result.bits_per_dim:.2f}" in panel.result_label.text()
    assert "bits/dim" in panel.result_label.text()
    assert "16 images of builtin:shapes test split" in panel.scored_label.text()
    assert "step 6" in panel.scored_label.text()
    assert panel.warning_label.isHidden()  # the model's own data, its test split, at its size: nothing to warn of
    T = bridge.model.num_timesteps
    rate_x, distortion_y = panel.rate_distortion_curve.getData()
    assert len(rate_x) == len(distortion_y) == T + 1 == len(result.rate)
    assert len(panel.rate_curve.getData()[0]) == len(panel.distortion_curve.getData()[0]) == T + 1
    assert result.rate[0] == pytest.approx(result.bits_per_dim, rel=1e-4)  # at t = 0 everything was received
    assert result.distortion[0] == 0 and np.all(np.diff(result.rate) <= 1e-6)
    assert panel.evaluate_button.text() == "Evaluate"


def test_the_held_out_split_follows_the_loaded_dataset_and_leaves_it_loaded(qtbot, bridge, state, panel):
    """The held-out images are the chosen split of the loaded dataset's spec (train: at most the images the
    model trained on); evaluating reads them without replacing the dataset the engine holds for the other panels."""
    preview = run_async(qtbot, bridge.load_dataset("builtin:shapes?size=8&count=40"))
    first = run_async(qtbot, bridge.dataset_images([0, 1]))
    state.set("dataset", preview)
    panel.images_spin.setValue(64)
    assert "split=test" in panel.data_label.text() and "count=64" in panel.data_label.text()
    panel.split_combo.setCurrentText("train")
    assert "split=train" in panel.data_label.text() and "count=40" in panel.data_label.text()
    panel.split_combo.setCurrentText("test")
    started = []
    bridge.job_started.connect(lambda job, key: started.append(key))
    with qtbot.waitSignal(panel.evaluated, timeout=30_000) as blocker:
        qtbot.mouseClick(panel.evaluate_button, LEFT)
    assert blocker.args[0].images == 64
    assert started == ["held-out", "likelihood"]  # no dataset job: nothing is reloaded
    np.testing.assert_array_equal(run_async(qtbot, bridge.dataset_images([0, 1])), first)


def test_scoring_other_data_names_it_and_warns_beside_the_figure(qtbot, bridge, state, panel, tmp_path):
    """Scoring a plain folder of 12x12 grayscale pictures with the 8x8 colour model trained on shapes: the
    headline names the folder (all of it, as a folder has no held-out split) and the model, and the warnings say
    that these are not its training data, were resized and are grayscale; they clear on the next clean result."""
    from PIL import Image

    folder = tmp_path / "sketches"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.full((12, 12), 50 * i, np.uint8), "L").save(folder / f"{i}.png")
    state.set("dataset", run_async(qtbot, bridge.load_dataset(f"{folder}?size=12")))
    with qtbot.waitSignal(panel.evaluated, timeout=30_000):
        qtbot.mouseClick(panel.evaluate_button, LEFT)
    assert "5 images of the folder sketches (all of it: a folder has no held-out split)" in panel.scored_label.text()
    assert "model micro · step 6" in panel.scored_label.text()
    warnings = panel.warning_label.text()
    assert panel.warning_label.isVisibleTo(panel) and warnings.count("⚠") == 3
    assert "trained on builtin:shapes" in warnings and "12x12" in warnings and "grayscale" in warnings

    state.set("dataset", None)  # back to the model's own data: its test split
    with qtbot.waitSignal(panel.evaluated, timeout=30_000):
        qtbot.mouseClick(panel.evaluate_button, LEFT)
    assert "builtin:shapes test split" in panel.scored_label.text() and panel.warning_label.isHidden()


def test_the_count_has_no_small_cap_and_all_reads_the_whole_split(qtbot, bridge, panel):
    """N goes past the old cap of 1024, and 'all' (0) asks for the whole held-out split: the spec has no count, all
    its images go to the bound, and the bound's progress (minibatch by minibatch) and share done reach the panel."""
    panel.images_spin.setValue(5000)
    assert panel.images_spin.value() == 5000 and "count=5000" in panel.data_label.text()
    panel.images_spin.setValue(0)
    assert panel.images_spin.text() == "all" and "count=" not in panel.data_label.text()
    assert "split=test" in panel.data_label.text()
    qtbot.mouseClick(panel.evaluate_button, LEFT)
    # The built-in shapes' test split holds 1,000 images: 4 minibatches of 256, each through T = 100 steps.
    qtbot.waitUntil(lambda: panel.progress.maximum() == 4 * 100 and panel.progress.value() > 0, timeout=60_000)
    assert "Evaluating the bound on 1,000 images of builtin:shapes test split" in panel.status_label.text()
    assert "%" in panel.status_label.text()
    with qtbot.waitSignal(bridge.job_cancelled, timeout=10_000):
        qtbot.mouseClick(panel.evaluate_button, LEFT)  # Stop: no need to wait for all of it
    qtbot.waitUntil(lambda: panel.evaluate_button.text() == "Evaluate", timeout=5_000)


def test_evaluate_again_stops_the_evaluation(qtbot, bridge, panel):
    """While evaluating, the button reads Stop; clicking it cancels the job and the panel says it stopped."""
    panel.images_spin.setValue(500)
    with qtbot.waitSignal(bridge.job_started, timeout=30_000, check_params_cb=lambda job, key: key == "likelihood"):
        qtbot.mouseClick(panel.evaluate_button, LEFT)
        assert panel.evaluate_button.text() == "Stop"
    with qtbot.waitSignal(bridge.job_cancelled, timeout=10_000):
        qtbot.mouseClick(panel.evaluate_button, LEFT)
    qtbot.waitUntil(lambda: panel.evaluate_button.text() == "Evaluate", timeout=5_000)
    assert "Stopped" in panel.status_label.text()
    assert panel.result_label.text().startswith("—")
