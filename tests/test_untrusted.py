"""Files written by someone else: a damaged or hostile checkpoint or run.json gives one clear line, is never followed
outside its folder or read without bound, and a run still opens at its last good checkpoint."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from engine import checkpoint as ckpt
from engine.config import get_preset
from engine.runs import Run, RunError, RunSpec
from engine.train import Trainer
from engine.untrusted import UntrustedFileError, parse_json, read_bounded, sibling

DATA = "builtin:shapes?size=8&count=32"
DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A micro run with two complete checkpoints: step 0 and step 3."""
    preset = get_preset("micro")
    train = dataclasses.replace(preset.train, batch_size=8, log_every=1, sample_every=1000, checkpoint_every=1000)
    root = tmp_path_factory.mktemp("runs") / "r"
    list(Trainer(Run.create(root, RunSpec(preset.unet, preset.diffusion, train, DATA, "micro"))).run(3))
    return root


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _newest(run: Path) -> tuple[Path, dict]:
    meta = ckpt.list_checkpoints(run / "checkpoints")[-1]
    return meta, json.loads(meta.read_text())


def _rewrite(meta: Path, **changes) -> None:
    record = json.loads(meta.read_text())
    meta.write_text(json.dumps({**record, **changes}))


def _cli(capsys, *argv: str) -> tuple[int, str]:
    from engine.__main__ import main

    code = main(list(argv))
    return code, capsys.readouterr().err


def test_deeply_nested_metadata_falls_back_to_the_previous_checkpoint(run):
    meta, _ = _newest(run)
    meta.write_bytes(DEEP)
    found, problems = ckpt.latest_checkpoint(run / "checkpoints")
    assert found is not None and found.step == 0
    assert len(problems) == 1 and "step_0000003.json" in problems[0] and "nests deeper" in problems[0]


def test_a_weights_name_outside_the_folder_is_refused_even_when_its_checksum_matches(run, tmp_path):
    meta, record = _newest(run)
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(meta.with_suffix(".safetensors"), outside)  # the same bytes: only confinement can refuse it
    _rewrite(meta, weights="../../elsewhere.safetensors")
    found, problems = ckpt.latest_checkpoint(run / "checkpoints")
    assert found.step == 0 and "'../../elsewhere.safetensors', not its own 'step_0000003.safetensors'" in problems[0]


@pytest.mark.parametrize("name", ["/dev/zero", "step_0000000.safetensors", "", None, 7])
def test_the_metadata_names_only_its_own_weights_file(run, name):
    meta, _ = _newest(run)
    _rewrite(meta, weights=name)
    found, problems = ckpt.latest_checkpoint(run / "checkpoints")
    assert found.step == 0 and "not its own 'step_0000003.safetensors'" in problems[0]


def test_a_weights_file_that_is_a_device_or_leads_outside_is_refused(run, tmp_path):
    meta, _ = _newest(run)
    weights = meta.with_suffix(".safetensors")
    weights.unlink()
    weights.symlink_to("/dev/zero")  # read to the end, this would never end
    found, problems = ckpt.latest_checkpoint(run / "checkpoints")
    assert found.step == 0 and "leads outside its folder" in problems[0]

    weights.unlink()
    os.mkfifo(weights)  # inside the folder, but opening it would wait for a writer forever
    found, problems = ckpt.latest_checkpoint(run / "checkpoints")
    assert found.step == 0 and "is not a regular file" in problems[0]

    outside = tmp_path / "outside.safetensors"
    shutil.copy(run / "checkpoints" / "step_0000000.safetensors", outside)
    weights.unlink()
    weights.symlink_to(outside)
    found, problems = ckpt.latest_checkpoint(run / "checkpoints")
    assert found.step == 0 and "leads outside its folder" in problems[0]


@pytest.mark.parametrize(
    "changes, why",
    [({"step": -4}, "is not a count of steps"), ({"step": "3"}, "is not a count"), ({"sha256": "00"}, "SHA-256")],
)
def test_malformed_metadata_fields_are_named(run, changes, why):
    meta, _ = _newest(run)
    _rewrite(meta, **changes)
    found, problems = ckpt.latest_checkpoint(run / "checkpoints")
    assert found.step == 0 and why in problems[0]


def test_a_deeply_nested_run_json_is_one_line_from_the_cli(run, capsys):
    (run / "run.json").write_bytes(DEEP)
    with pytest.raises(RunError, match="nests deeper than 32 levels"):
        Run.open(run)
    code, err = _cli(capsys, "sample", "--run", str(run), "--n", "1", "--steps", "2", "--out", str(run / "s.png"))
    assert code == 2 and err.count("\n") == 1 and "run.json" in err and "nests deeper" in err, err


def test_a_run_json_that_is_a_device_or_huge_is_refused(run):
    (run / "run.json").unlink()
    (run / "run.json").symlink_to("/dev/zero")
    with pytest.raises(RunError, match="not a regular file"):
        Run.open(run)
    (run / "run.json").unlink()
    with open(run / "run.json", "wb") as f:
        f.truncate(64 * 2**20)  # sparse: 64 MiB of zeros, costs no disk
    with pytest.raises(RunError, match="more than the"):
        Run.open(run)


def test_metrics_lines_that_are_damaged_deep_or_endless_are_skipped(run):
    good = Run.open(run).read_all_metrics()
    assert [r["step"] for r in good] == [1, 2, 3]
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(DEEP + b"\n" + b'{"step": "x"}\n' + b"not json\n" + b"[1]\n")
    assert Run.open(run).read_all_metrics() == good
    os.mkfifo(run / "fifo")  # never opened: reading a FIFO would block
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(run / "fifo")
    assert Run.open(run).read_metrics() == ([], 0)


def test_the_readers_bounds(tmp_path):
    (tmp_path / "a.json").write_text('{"a": [1, {"b": 2}]}')
    assert parse_json((tmp_path / "a.json").read_bytes()) == {"a": [1, {"b": 2}]}
    with pytest.raises(UntrustedFileError, match="deeper than 2"):
        parse_json(b"[[[1]]]", max_depth=2)
    with pytest.raises(UntrustedFileError, match="UTF-8"):
        parse_json(b"\xff\xfe")
    with pytest.raises(UntrustedFileError, match="more than the 4 "):
        read_bounded(tmp_path / "a.json", 4)
    for name in ("..", "a/b", "/etc/passwd", "", "x\0y"):
        with pytest.raises(UntrustedFileError, match="not a file name"):
            sibling(tmp_path, name)
    assert sibling(tmp_path, "a.json") == tmp_path / "a.json"
