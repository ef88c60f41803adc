"""Random horizontal flips fit the data: on for CIFAR-10 and the built-in shapes (a mirror image is as valid), off for
a folder of the user's or MNIST (a mirrored digit or letter is not), settable everywhere (`--hflip/--no-hflip`, the
Training tab's Flips), recorded in run.json and in every picture's provenance, and said by the inspector."""

import json

import numpy as np
import pytest
from PIL import Image

from engine.__main__ import main
from engine.config import get_preset
from engine.data import SourceKind, flips_by_default, flips_for, inspect_data, parse_data_spec
from engine.images import read_png_metadata
from engine.runs import RunSpec
from tests.conftest import run_async
from tests.data_fixtures import write_idx


def _digits(folder, count=12):
    """A folder of small non-symmetric pictures (an 'L' in a corner): what a mirror image would spoil."""
    folder.mkdir()
    for i in range(count):
        image = np.zeros((8, 8), np.uint8)
        image[1:7, 1 + i % 2] = 255
        image[6, 1:6] = 255
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    return folder


def test_the_default_follows_the_kind_of_data_and_an_explicit_choice_wins(tmp_path):
    assert flips_by_default(SourceKind.SHAPES) and flips_by_default(SourceKind.CIFAR10)
    assert not flips_by_default(SourceKind.FOLDER) and not flips_by_default(SourceKind.IDX)
    assert not flips_by_default(None)  # unknown: no mirror images nobody asked for
    folder = str(_digits(tmp_path / "digits"))
    tiny = get_preset("tiny")
    assert get_preset("cifar10").train.hflip  # the paper's recipe keeps its flips
    assert RunSpec.for_data(tiny, "builtin:shapes", 3, (16, 16)).train.hflip
    assert not RunSpec.for_data(tiny, f"{folder}?size=8", 1, (8, 8)).train.hflip
    assert RunSpec.for_data(tiny, f"{folder}?size=8", 1, (8, 8), {"hflip": True}).train.hflip
    assert not RunSpec.for_data(tiny, "builtin:shapes", 3, (16, 16), {"hflip": False}).train.hflip
    idx = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 8, 8), np.uint8))
    assert not flips_for(str(idx)) and not flips_for(str(tmp_path / "nowhere"))


def test_the_inspector_says_which_and_how_to_change_it(tmp_path):
    folder = _digits(tmp_path / "digits")
    report = inspect_data(parse_data_spec(f"{folder}?size=8")).format()
    assert "random horizontal flips: off by default for an image folder" in report and "--hflip" in report
    shapes = inspect_data(parse_data_spec("builtin:shapes?size=8&count=8")).format()
    assert "random horizontal flips: on by default for the built-in shapes" in shapes and "--no-hflip" in shapes


def test_the_command_line_records_the_choice_in_the_run_and_in_every_picture(tmp_path, capsys):
    """`ddpm train` on a folder trains without flips and says why; --hflip turns them on; run.json, the periodic
    sample grids and every explored picture record it."""
    folder = _digits(tmp_path / "digits")
    base = ["--data", f"{folder}?size=8", "--preset", "micro", "--steps", "2", "--batch-size", "4"]
    assert main(["train", *base, "--run", str(tmp_path / "plain")]) == 0
    assert "random horizontal flips: off by default for an image folder" in capsys.readouterr().err
    assert json.loads((tmp_path / "plain" / "run.json").read_text())["train"]["hflip"] is False
    assert main(["train", *base, "--hflip", "--run", str(tmp_path / "flipped")]) == 0
    assert "random horizontal flips: on (as asked)" in capsys.readouterr().err
    assert json.loads((tmp_path / "flipped" / "run.json").read_text())["train"]["hflip"] is True
    out = tmp_path / "s.png"
    for run, said in (("plain", "off"), ("flipped", "on")):
        assert main(["sample", "--run", str(tmp_path / run), "--n", "1", "--steps", "2", "--out", str(out)]) == 0
        assert read_png_metadata(out)["hflip"] == said
    assert main(["train", "--run", str(tmp_path / "plain"), "--steps", "3", "--hflip"]) == 0  # a resumed run keeps it
    assert "--hflip/--no-hflip ignored" in capsys.readouterr().err
    assert json.loads((tmp_path / "plain" / "run.json").read_text())["train"]["hflip"] is False


@pytest.mark.parametrize("choice, expected", [("by the data", False), ("on", True), ("off", False)])
def test_the_training_tab_shows_and_sets_the_flips(qtbot, bridge, tmp_path, choice, expected):
    """The Training tab's Flips: "by the data" gives a folder no flips (and the differences from the paper say so);
    on and off are the user's. The spec Start would train is what the form shows."""
    from tests.test_panel_training import make_panel

    folder = _digits(tmp_path / "digits")
    panel = make_panel(qtbot, bridge, run_async(qtbot, bridge.load_dataset(f"{folder}?size=8")))
    panel.preset_combo.setCurrentText("micro")
    assert panel.flips_combo.currentText() == "by the data"
    panel.flips_combo.setCurrentText(choice)
    assert panel.run_spec().train.hflip is expected
    lines = [panel.differs_list.item(i).text() for i in range(panel.differs_list.count())]
    assert ("flips off (paper on)" in lines) is (not expected)
