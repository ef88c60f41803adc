"""The Dataset panel: load the built-in data or a folder, show the images as the model sees them, the skipped files
and why, and share the loaded preview through the app state."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent

from tests.conftest import MICRO_DATA
from tests.data_fixtures import write_truncated_png

pytestmark = pytest.mark.usefixtures("settings_in")  # QSettings under tmp_path (conftest)


@pytest.fixture
def panel(qtbot, bridge):
    from studio.panels.dataset import DatasetPanel
    from studio.state import AppState

    p = DatasetPanel(bridge, AppState())
    qtbot.addWidget(p)
    p.resize(1100, 750)
    return p


@pytest.fixture
def bad_folder(tmp_path):
    """Two good PNGs and three files the inspector must skip: truncated, zero bytes, text named .jpg."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(folder / f"good{i}.png")
    write_truncated_png(folder / "cut.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a picture")
    return folder


def load(qtbot, panel, spec):
    with qtbot.waitSignal(panel.dataset_loaded, timeout=30_000) as loaded:
        task = panel.load(spec)
    qtbot.waitUntil(task.done)
    return loaded.args[0]


def test_builtin_shows_64_images_and_shares_the_preview(qtbot, panel):
    """Loading `builtin:shapes?size=8&count=64` shows all 64 images, 8x8 with 3 channels as the model will see them,
    reports no skipped file, and puts the preview in state["dataset"] for the Training panel."""
    preview = load(qtbot, panel, MICRO_DATA)
    assert preview.ok and preview.count == 64 and preview.image_size == (8, 8) and preview.channels == 3
    assert panel.preview_grid.count == 64
    assert panel.skipped_table.rowCount() == 0
    assert panel.state.get("dataset") is preview
    assert "64 images" in panel.summary_label.text() and "8×8" in panel.summary_label.text()
    assert panel.source_combo.currentIndex() == 0  # built-in shapes
    assert (panel.height_spin.value(), panel.width_spin.value(), panel.count_spin.value()) == (8, 8, 64)
    assert "builtin:shapes" in panel.report_text.toPlainText()


def test_bad_folder_lists_every_skipped_file_and_why(qtbot, panel, bad_folder):
    """A folder with a truncated PNG, a zero-byte file and a text file named .jpg beside 2 good PNGs shows the 2
    images and a table of the 3 skipped files with their reasons; the warnings say the dataset is tiny."""
    preview = load(qtbot, panel, f"{bad_folder}?size=16")
    assert preview.count == 2 and panel.preview_grid.count == 2
    assert panel.skipped_table.rowCount() == 3
    rows = {
        Path(panel.skipped_table.item(r, 0).text()).name: panel.skipped_table.item(r, 1).text()
        for r in range(panel.skipped_table.rowCount())
    }
    assert rows["cut.png"].startswith("truncated")
    assert rows["empty.png"].startswith("zero bytes")
    assert rows["notes.jpg"].startswith("not an image")
    assert "only 2 images" in panel.warnings_label.text()
    assert panel.source_combo.currentIndex() == 1 and panel.path_edit.text() == str(bad_folder)
    assert QSettings("DDPM Studio", "DDPM Studio").value("last_folder") == str(bad_folder)


def test_controls_build_the_spec_and_load_button_uses_it(qtbot, panel):
    """The size, channels, fit and limit controls write the engine's data-spec syntax; Load loads exactly that."""
    panel.source_combo.setCurrentIndex(0)
    panel.height_spin.setValue(8)
    panel.width_spin.setValue(12)
    panel.channels_combo.setCurrentText("1")
    panel.fit_combo.setCurrentText("pad")
    panel.count_spin.setValue(16)
    assert panel.spec_text() == "builtin:shapes?size=8x12&channels=1&fit=pad&count=16"
    with qtbot.waitSignal(panel.dataset_loaded, timeout=30_000) as loaded:
        qtbot.mouseClick(panel.load_button, Qt.MouseButton.LeftButton)
    preview = loaded.args[0]
    assert preview.image_size == (8, 12) and preview.channels == 1 and preview.count == 16
    assert panel.preview_grid.count == 16
    qtbot.waitUntil(panel.load_button.isEnabled)


def test_estimate_follows_the_preset_and_the_image_size(qtbot, panel):
    """The training estimate comes from the engine's count of the planned U-Net (parameters, FLOPs, activations): it
    names the preset's steps and parameters and says it is an estimate; a preset sets the default size (16x16 for
    tiny, 32x32 for cifar10); a larger model or a larger image needs more time and memory; a size the U-Net cannot
    halve evenly is explained instead. The engine counts only once the panel is shown."""
    from engine.report import training_cost
    from studio.bridge import PRESETS
    from studio.widgets.training_estimate import training_estimate

    def shown_after(change):
        with qtbot.waitSignal(panel.estimate_shown, timeout=30_000) as shown:
            change()
        return shown.args[0]

    assert panel.estimate_label.text() == ""  # nothing is counted for a hidden panel
    panel.show()
    qtbot.waitUntil(lambda: "steps" in panel.estimate_label.text(), timeout=30_000)
    assert (panel.height_spin.value(), panel.width_spin.value()) == (16, 16)  # tiny, the default
    text = panel.estimate_label.text()
    assert "2,000 steps" in text and "1.11M parameters" in text and "estimate" in text
    tiny_s, tiny_bytes = shown_after(lambda: panel.height_spin.setValue(32))
    assert "32×16×3" in panel.estimate_label.text()
    tiny_large_s, tiny_large_bytes = shown_after(lambda: panel.width_spin.setValue(32))
    assert tiny_large_s > 1.5 * tiny_s and tiny_large_bytes > tiny_bytes
    paper_s, paper_bytes = shown_after(lambda: panel.preset_combo.setCurrentText("cifar10"))
    assert (panel.height_spin.value(), panel.width_spin.value()) == (32, 32)
    assert "800,000 steps" in panel.estimate_label.text() and "35.75M parameters" in panel.estimate_label.text()
    assert paper_s > 100 * tiny_large_s and paper_bytes > 4 * tiny_large_bytes  # both batch 128

    panel.preset_combo.setCurrentText("tiny")
    panel.height_spin.setValue(18)  # tiny halves twice: 18 is not divisible by 4
    assert "cannot train" in panel.estimate_label.text() and "divisible by 4" in panel.estimate_label.text()

    seconds, _ = training_estimate(training_cost(PRESETS["tiny"].unet), PRESETS["tiny"].train)
    assert 60 < seconds < 3600  # 2,000 steps of tiny: minutes on a 2-core CPU, as measured (docs/performance.md)


def drag_event(cls, mime):
    for position in (QPointF(10, 10), QPoint(10, 10)):  # PySide6 6.12 takes a QPointF, earlier versions a QPoint
        try:
            return cls(
                position, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
            )
        except TypeError:
            continue
    raise TypeError(f"cannot build a {cls.__name__}")


def test_dropping_a_folder_loads_it(qtbot, panel, bad_folder):
    """Dragging a folder over the panel is accepted; dropping it selects it as the source and loads it.
    (Offscreen Qt delivers no synthetic drag events, so the test calls the widget's event handlers.)"""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(bad_folder))])
    enter, drop = drag_event(QDragEnterEvent, mime), drag_event(QDropEvent, mime)
    panel.dragEnterEvent(enter)
    assert enter.isAccepted()
    with qtbot.waitSignal(panel.dataset_loaded, timeout=30_000) as loaded:
        panel.dropEvent(drop)
    assert loaded.args[0].count == 2 and panel.preview_grid.count == 2
    assert panel.source_combo.currentIndex() == 1


def test_unusable_source_shows_the_reason(qtbot, panel, tmp_path):
    """A missing folder is reported in the panel (no images, the reason in the report), never a crash, and the app
    state keeps no dataset."""
    with qtbot.waitSignal(panel.dataset_loaded, timeout=30_000) as loaded:
        task = panel.load(f"{tmp_path / 'nowhere'}?size=8")
    qtbot.waitUntil(task.done)
    assert not loaded.args[0].ok
    assert panel.preview_grid.count == 0 and panel.state.get("dataset") is None
    assert "no such file or folder" in panel.report_text.toPlainText()
    assert "not yet decoded" not in panel.report_text.toPlainText()  # nothing was read: no counts, no sizes
    assert panel.summary_label.text() == f"<b>Nothing loaded</b>: {tmp_path / 'nowhere'}: no such file or folder"
    assert "no such file or folder" in panel.state.get("dataset_error")


def test_a_failed_load_keeps_the_dataset_before_it_and_says_so(qtbot, panel, tmp_path):
    """After a good load, a failed one leaves that dataset in place (training and the panels keep using it), says
    which one in the status line, and records the failure for the Training tab; the next good load clears it."""
    good = load(qtbot, panel, MICRO_DATA)
    load(qtbot, panel, f"{tmp_path / 'nowhere'}?size=8")
    assert panel.state.get("dataset") is good
    assert f"Training still uses {good.spec}" in panel.status_label.text()
    assert panel.state.get("dataset_error").startswith(f"{tmp_path / 'nowhere'}?size=8: ")
    load(qtbot, panel, MICRO_DATA)
    assert panel.state.get("dataset_error") is None


def test_choosing_a_folder_loads_it_with_progress_and_counts_ignored_files(qtbot, panel, tmp_path, monkeypatch):
    """Picking a folder in the dialog loads it at once (no Load press), with the engine's progress in a bar while it
    reads; files that are not images (5 .txt notes) are counted in Skipped files, one row per kind."""
    from PySide6.QtWidgets import QFileDialog

    folder = tmp_path / "cats"
    folder.mkdir()
    for i in range(300):
        Image.fromarray(np.full((10, 10, 3), i % 256, np.uint8)).save(folder / f"{i}.png")
    for i in range(5):
        (folder / f"note{i}.txt").write_text("not an image")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args: str(folder))
    formats = []
    panel.progress.valueChanged.connect(lambda _value: formats.append(panel.progress.format()))
    panel.source_combo.setCurrentIndex(1)  # Folder…
    with qtbot.waitSignal(panel.dataset_loaded, timeout=30_000) as loaded:
        qtbot.mouseClick(panel.browse_button, Qt.MouseButton.LeftButton)
    assert loaded.args[0].count == 300 and panel.state.get("dataset") is loaded.args[0]
    assert any(f.startswith("reading headers") for f in formats) and any(f.startswith("decoding") for f in formats)
    assert formats[-1] == "decoding 300 / 300" and panel.progress.isHidden()
    assert panel.details_tabs.tabText(0) == "Skipped files (5)"
    assert (panel.skipped_table.item(0, 0).text(), panel.skipped_table.item(0, 1).text()) == (
        "5 *.txt files",
        "ignored: not an image type",
    )
    assert "5 other files ignored" in panel.summary_label.text()


def test_estimate_uses_the_training_tabs_steps_for_the_same_preset(qtbot, panel):
    """The estimate says whose step count it assumes: the Training tab's while that tab shows the same preset (a
    followed run's 10,000 steps, say), else the preset's own."""
    panel.show()
    qtbot.waitUntil(lambda: "2,000 steps (the preset's)" in panel.estimate_label.text(), timeout=30_000)
    with qtbot.waitSignal(panel.estimate_shown, timeout=30_000) as preset_steps:
        panel.estimate_box.set_training_steps("tiny", 2000)  # the same count: the same estimate
    panel.estimate_box.set_training_steps("tiny", 10_000)
    qtbot.waitUntil(lambda: "10,000 steps (the Training tab's)" in panel.estimate_label.text(), timeout=30_000)
    with qtbot.waitSignal(panel.estimate_shown, timeout=30_000) as more_steps:
        panel.estimate_box.set_training_steps("tiny", 20_000)
    assert more_steps.args[0][0] > 1.9 * preset_steps.args[0][0]
    panel.estimate_box.set_training_steps("micro", 10_000)  # another preset's steps do not apply
    qtbot.waitUntil(lambda: "2,000 steps (the preset's)" in panel.estimate_label.text(), timeout=30_000)
