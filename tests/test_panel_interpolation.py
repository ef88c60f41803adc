"""The Interpolation panel (Figs. 8-9): live sliders over a progressive, cancellable, cached interpolation job."""

import numpy as np
import pytest

from tests.conftest import run_async

pytest.importorskip("PySide6")


@pytest.fixture
def panel(qtbot, bridge, state):
    from studio.panels.interpolation import InterpolationPanel

    widget = InterpolationPanel(bridge, state)
    qtbot.addWidget(widget)
    return widget


def _sources(qtbot, bridge):
    """Two distinct 8x8 images of the built-in shapes, to set as sources through the panel's public API."""
    run_async(qtbot, bridge.load_dataset("builtin:shapes?size=8&count=64"))
    return run_async(qtbot, bridge.dataset_images([3, 4]))


def _exact_after(qtbot, panel, change, timeout=20_000):
    """Apply `change`, wait for the exact strip, and return the stages the strip went through."""
    stages = []
    panel.strip_shown.connect(stages.append)
    try:
        with qtbot.waitSignal(panel.strip_shown, timeout=timeout, check_params_cb=lambda s: s == "exact"):
            change()
    finally:
        panel.strip_shown.disconnect(stages.append)
    return stages


def _settled_pair(qtbot, bridge, panel, t):
    """Two sources mixed at step t, the exact strip shown; returns the keys of the jobs started from then on."""
    a, b = _sources(qtbot, bridge)
    panel.t_slider.setValue(t)
    panel.set_source("A", a)
    _exact_after(qtbot, panel, lambda: panel.set_source("B", b))
    started = []
    bridge.job_started.connect(lambda job_id, key: started.append(key))
    return started


def test_defaults_on_first_show_fill_the_strip_with_reconstructions_at_the_ends(qtbot, panel, state):
    """On first show the sources are dataset images 0 and 1, t = T/2 and the strip has 9 λ columns from 0 to 1;
    while the preview shows, the status says what the exact chain will cost here."""
    assert panel.t_slider.maximum() == 100 and panel.t_slider.value() == 50
    assert "t = 50 / 100" in panel.t_label.text()
    previews, badges = [], []
    panel.strip_shown.connect(lambda stage: stage != "exact" and previews.append(panel.status_label.text()))
    panel.strip_shown.connect(lambda stage: badges.append(panel.strip_grid.badge))
    stages = _exact_after(qtbot, panel, panel.show)
    assert previews and "the exact chain follows (50 steps, up to" in previews[-1]
    assert badges[0].startswith("preview:") and badges[-1] == "exact: 50-step chain"  # on the picture itself
    assert panel.focus_grid.badge == "exact: 50-step chain"
    assert stages[-1] == "exact" and stages[0] == "direct"  # preview first, the exact chain last
    assert panel.source_a.image is not None and panel.source_b.image is not None
    assert panel.strip_grid.count == 9
    sheet = state.get("interpolation")
    assert sheet["images"].shape == (9, 8, 8, 3)
    assert sheet["metadata"]["lambdas"][0] == 0.0 and sheet["metadata"]["lambdas"][-1] == 1.0
    assert sheet["metadata"]["t"] == 50


def test_at_t0_the_ends_are_the_sources_themselves(qtbot, bridge, panel, state):
    """λ = 0 and λ = 1 are reconstructions of A and B: exact copies when the mixing step is t = 0."""
    a, b = _sources(qtbot, bridge)
    panel.t_slider.setValue(0)
    panel.set_source("A", a, "test A")
    _exact_after(qtbot, panel, lambda: panel.set_source("B", b, "test B"))
    images = state.get("interpolation")["images"]
    np.testing.assert_array_equal(images[0], a)
    np.testing.assert_array_equal(images[-1], b)
    assert not np.array_equal(images[4], a) and not np.array_equal(images[4], b)  # the middle is a mix


def test_moving_the_mixing_slider_twice_quickly_cancels_the_first_job(qtbot, bridge, panel, state):
    """A value the slider has left is never finished: its job is cancelled and only the last value's exact
    strip is shown."""
    a, b = _sources(qtbot, bridge)
    panel.set_source("A", a)
    _exact_after(qtbot, panel, lambda: panel.set_source("B", b))
    cancelled, exact = [], []
    bridge.job_cancelled.connect(lambda job_id, key: cancelled.append(key))
    panel.strip_shown.connect(lambda stage: exact.append(panel.t_slider.value()) if stage == "exact" else None)

    def move_twice():
        panel.t_slider.setValue(90)
        panel.t_slider.setValue(70)

    _exact_after(qtbot, panel, move_twice)
    qtbot.waitUntil(lambda: "interpolate" in cancelled, timeout=5_000)
    assert exact == [70]
    assert state.get("interpolation")["metadata"]["t"] == 70
    assert "t = 70 / 100" in panel.t_label.text()


def test_a_value_seen_before_comes_back_from_the_cache(qtbot, bridge, panel, state):
    """Returning to a mixing step seen before shows its exact strip at once, with no preview stages."""
    a, b = _sources(qtbot, bridge)
    panel.t_slider.setValue(60)
    panel.set_source("A", a)
    first = _exact_after(qtbot, panel, lambda: panel.set_source("B", b))
    assert first[0] == "direct" and first[-1] == "exact"
    shown_first = state.get("interpolation")["images"].copy()
    _exact_after(qtbot, panel, lambda: panel.t_slider.setValue(40))
    again = _exact_after(qtbot, panel, lambda: panel.t_slider.setValue(60), timeout=2_000)
    assert again == ["exact"]
    np.testing.assert_array_equal(state.get("interpolation")["images"], shown_first)
    assert "cache" in panel.status_label.text()


def test_lambda_off_the_strip_gets_its_own_image_and_on_the_strip_needs_no_job(qtbot, bridge, panel):
    """λ on a strip column only highlights it; λ between columns is interpolated too and shown large."""
    started = _settled_pair(qtbot, bridge, panel, 20)
    panel.lambda_slider.setValue(5)  # λ = 0.25, the third of 9 columns
    assert panel.strip_grid.selected == 2
    qtbot.wait(100)
    assert "interpolate" not in started
    panel.lambda_slider.setValue(1)  # λ = 0.05: between columns
    qtbot.waitUntil(lambda: "λ = 0.05" in panel.lambda_label.text() and "interpolate" in started, timeout=5_000)
    assert panel.strip_grid.selected == 0
    assert panel.strip_grid.count == 9  # the extra λ is not a strip column


def test_a_file_source_is_decoded_at_the_models_size(qtbot, tmp_path, panel):
    """'Open file…' decodes any image with Pillow to the model's size and channels (shorter side, centre crop)."""
    from PIL import Image

    path = tmp_path / "wide.png"
    Image.new("RGBA", (40, 20), (255, 0, 0, 128)).save(path)
    panel.load_source_file("A", str(path))
    assert panel.source_a.image.shape == (8, 8, 3) and panel.source_a.image.dtype == np.uint8
    assert "wide.png" in panel.source_a.origin_label.text()


def test_the_source_buttons_take_a_dataset_image_or_a_new_sample(qtbot, bridge, state, panel):
    """'From dataset' takes the image at the index spin's value, 'Generate' a sample from that seed; the state
    learns of the dataset the panel had to load."""
    from PySide6.QtCore import Qt

    panel.source_a.index_spin.setValue(5)
    qtbot.mouseClick(panel.source_a.dataset_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.source_a.origin_label.text() == "dataset #5", timeout=20_000)
    assert state.get("dataset") is not None and state.get("dataset").image_size == (8, 8)
    expected = run_async(qtbot, bridge.dataset_images([5]))[0]
    np.testing.assert_array_equal(panel.source_a.image, expected)
    panel.source_b.index_spin.setValue(3)
    qtbot.mouseClick(panel.source_b.generate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "seed 3" in panel.source_b.origin_label.text(), timeout=20_000)
    assert panel.source_b.image.shape == (8, 8, 3)


def test_a_model_change_while_hidden_waits_for_the_next_show(qtbot, bridge, panel, micro_run):
    """A new model while the tab is hidden submits no interpolation (an exact chain costs seconds of CPU); the strip
    is marked out of date and recomputed, to the exact stage, when the tab is shown again."""
    started = _settled_pair(qtbot, bridge, panel, 10)
    with qtbot.waitSignal(bridge.model_changed, timeout=30_000):
        bridge.load_model(str(micro_run))
    qtbot.wait(200)
    assert "interpolate" not in started and "shown" in panel.status_label.text()
    stages = _exact_after(qtbot, panel, panel.show)
    assert "interpolate" in started and stages[-1] == "exact"


def test_sources_fill_even_when_another_panels_dataset_load_supersedes_ours(qtbot, bridge, panel, state):
    """At start-up the Dataset tab loads a dataset while this panel, with none yet, loads the built-in shapes for
    its sources; the later load supersedes the earlier. Whichever wins, both sources fill (once Source A stayed empty
    until "From dataset" was clicked)."""
    import time

    assert state.get("dataset") is None
    bridge.submit("busy", lambda ctx: time.sleep(1.0))  # the engine is busy: our load waits in the queue ...
    panel.show()  # ... when the panel asks for the built-in shapes (its defaults need a dataset)
    qtbot.waitUntil(lambda: "loading the built-in shapes" in panel.status_label.text(), timeout=5_000)
    other = bridge.load_dataset("builtin:shapes?size=8&count=32")  # the Dataset tab's own load supersedes ours

    async def dataset_tab():
        state.set("dataset", await other)

    run_async(qtbot, dataset_tab())
    qtbot.waitUntil(lambda: panel.source_a.image is not None and panel.source_b.image is not None, timeout=30_000)
