"""The Export panel: grids, strips, GIFs and sheets written with their provenance."""

import numpy as np
from PIL import Image

from engine.images import read_png_metadata
from studio.panels.export import ExportPanel
from studio.state import AppState
from tests.conftest import run_async


def test_an_exported_grid_exists_and_carries_its_metadata(qtbot, bridge, tmp_path):
    """Generate, then Save: the PNG is the grid at the chosen zoom and its text chunks say how to regenerate it."""
    state = AppState()
    panel = ExportPanel(bridge, state)
    qtbot.addWidget(panel)
    panel.count.setValue(4)
    panel.columns.setValue(2)
    panel.scale.setValue(3)
    panel.seed.setValue(7)
    panel.steps.setCurrentIndex(3)  # 20 strided steps
    run_async(qtbot, panel.generate())
    assert panel.grid.count == 4 and panel.save_grid_button.isEnabled()

    path = panel.export_grid(str(tmp_path / "grid.png"))
    meta = read_png_metadata(path)
    assert meta["seed"] == "7" and meta["steps"] == "20" and meta["step"] == "6" and "strided" in meta["sampler"]
    assert meta["run"] == "micro" and meta["weights"] == "ema" and len(meta["checkpoint_sha256"]) == 64
    assert [k for k, v in meta.items() if "/tmp/" in v] == []  # no path of this machine (pytest runs under /tmp)
    with Image.open(path) as image:
        # 2x2 images of 8 px with 2 px padding, zoomed 3x: (2*8 + 3*2) * 3 = 66
        assert image.size == (66, 66)


def test_trajectory_strip_gif_and_interpolation_sheet(qtbot, bridge, tmp_path):
    state = AppState()
    panel = ExportPanel(bridge, state)
    qtbot.addWidget(panel)
    assert not panel.save_strip_button.isEnabled()
    frames = np.random.default_rng(0).integers(0, 255, (101, 2, 8, 8, 3), dtype=np.uint8)
    state.set(
        "trajectory",
        {
            "t_values": np.arange(100, -1, -1),
            "x_t": frames,
            "pred_x0": frames[::-1],
            "metadata": {"seed": "3", "n": "2"},
        },
    )
    assert panel.save_strip_button.isEnabled()
    panel.frames.setValue(5)
    meta = read_png_metadata(panel.export_strip(str(tmp_path / "strip.png")))
    assert meta["frames"] == "100,75,50,25,0" and meta["seed"] == "3"
    gif = panel.export_gif(str(tmp_path / "t.gif"))
    with Image.open(gif) as image:
        assert image.n_frames > 10
    state.set("interpolation", {"images": frames[0], "metadata": {"t": "50", "lambdas": "[0, 1]"}})
    meta = read_png_metadata(panel.export_sheet(str(tmp_path / "sheet.png")))
    assert meta["t"] == "50"


def test_cleared_trajectory_and_sheet_reset_their_labels(qtbot, bridge):
    """When the trajectory or the interpolation sheet is cleared (a new model), the labels stop describing the old
    one and say what to do, as the greyed-out save buttons do."""
    state = AppState()
    panel = ExportPanel(bridge, state)
    qtbot.addWidget(panel)
    empty_trajectory, empty_sheet = panel.trajectory_label.text(), panel.sheet_label.text()
    frames = np.zeros((1001, 8, 8, 8, 3), np.uint8)
    state.set("trajectory", {"t_values": np.arange(1000, -1, -1), "x_t": frames, "pred_x0": frames, "metadata": {}})
    state.set("interpolation", {"images": frames[0], "metadata": {}})
    assert "8 images, 1,001 steps" in panel.trajectory_label.text() and "8 images" in panel.sheet_label.text()
    state.set("trajectory", None)
    state.set("interpolation", None)
    assert panel.trajectory_label.text() == empty_trajectory and panel.sheet_label.text() == empty_sheet
    assert not panel.save_strip_button.isEnabled() and not panel.save_sheet_button.isEnabled()


def test_the_preview_caption_gives_the_saved_zoom_padding_and_size(qtbot, bridge, tmp_path):
    """The preview fits its box, so a caption under it says how the PNG is saved (zoom, padding, pixels), following
    the spin boxes; the size it names is the saved file's."""
    state = AppState()
    panel = ExportPanel(bridge, state)
    qtbot.addWidget(panel)
    assert "zoom 4, padding 2." in panel.preview_caption.text()  # no samples yet: no size
    panel.count.setValue(4)
    panel.columns.setValue(2)
    panel.steps.setCurrentIndex(3)
    run_async(qtbot, panel.generate())
    panel.scale.setValue(3)
    assert "zoom 3, padding 2 (66 × 66 px)" in panel.preview_caption.text()
    panel.padding.setValue(0)
    panel.columns.setValue(4)
    assert "zoom 3, padding 0 (96 × 24 px)" in panel.preview_caption.text()
    with Image.open(panel.export_grid(str(tmp_path / "grid.png"))) as image:
        assert image.size == panel.saved_grid_size() == (96, 24)


def test_generating_shows_progress_and_a_second_press_stops_it(qtbot, bridge):
    """While a grid samples, the button reads Stop and a bar counts the chain's frames (x_T, then one per step);
    pressing it again stops the job, the bar goes and the previous grid (none here) stays. "Columns" at 0 reads
    "auto"."""
    state = AppState()
    panel = ExportPanel(bridge, state)
    qtbot.addWidget(panel)
    assert panel.columns.value() == 0 and panel.columns.text() == "auto"
    panel.count.setValue(1024)
    panel.steps.setCurrentIndex(0)  # the exact chain: T = 100 steps of 1,024 images
    panel.generate_button.click()
    qtbot.waitUntil(lambda: panel.progress.maximum() == 101 and 0 < panel.progress.value(), timeout=30_000)
    assert panel.generate_button.text() == "Stop" and panel.progress.isVisibleTo(panel)
    assert panel.progress.format().endswith("frames (x_T, then one per step)")
    with qtbot.waitSignal(bridge.job_cancelled, timeout=10_000):
        panel.generate_button.click()
    qtbot.waitUntil(lambda: panel.generate_button.text() == "Generate", timeout=5_000)
    assert panel.progress.isHidden() and "stopped" in panel.message.text() and panel.grid.count == 0


def test_the_save_dialog_opens_where_the_last_export_went(qtbot, bridge, tmp_path, monkeypatch, settings_in):
    """The first Save dialog opens in the Pictures folder (or home), never the working directory; after a save, the
    next one opens in the folder saved to."""
    from PySide6.QtWidgets import QFileDialog

    state = AppState()
    state.set("interpolation", {"images": np.zeros((3, 8, 8, 3), np.uint8), "metadata": {}})
    panel = ExportPanel(bridge, state)
    qtbot.addWidget(panel)
    offered = []

    def dialog(parent, caption, start, filter):
        offered.append(start)
        return str(tmp_path / "mine" / "sheet.png"), filter

    (tmp_path / "mine").mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", dialog)
    monkeypatch.chdir(tmp_path)
    panel.save_sheet_button.click()
    assert (tmp_path / "mine" / "sheet.png").is_file()
    panel.save_sheet_button.click()
    assert not offered[0].startswith(str(tmp_path)) and offered[0].endswith("interpolation.png")
    assert offered[1] == str(tmp_path / "mine" / "interpolation.png")


def test_gif_frames_say_which_t_they_show(qtbot, bridge, tmp_path):
    """With "label each frame with its t" (on by default) every GIF frame has a band above the picture with its t;
    without it, the frames are the pictures alone."""
    state = AppState()
    panel = ExportPanel(bridge, state)
    qtbot.addWidget(panel)
    frames = np.full((11, 1, 8, 8, 3), 128, np.uint8)
    state.set("trajectory", {"t_values": np.arange(10, -1, -1), "x_t": frames, "pred_x0": frames, "metadata": {}})
    panel.scale.setValue(4)
    panel.padding.setValue(0)
    with Image.open(panel.export_gif(str(tmp_path / "labelled.gif"))) as labelled:
        size, first = labelled.size, np.asarray(labelled.convert("RGB"))
    assert size[0] == 32 and size[1] > 32  # the band sits above the 32x32 picture
    band = first[: size[1] - 32]
    assert (band < 100).any() and (band == 255).any()  # dark text on white
    panel.gif_labels.setChecked(False)
    with Image.open(panel.export_gif(str(tmp_path / "plain.gif"))) as plain:
        assert plain.size == (32, 32)
