"""The command line's engine-only commands."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_presets_lists_every_preset_with_its_size(capsys):
    from engine.__main__ import main

    assert main(["presets", "--json"]) == 0
    rows = {r["preset"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) >= {"cifar10", "celebahq256", "small", "tiny", "micro"}
    assert abs(rows["cifar10"]["params_M"] - 35.7) < 0.2
    assert rows["cifar10"]["resolution"] == "32x32x3"


def test_module_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "engine", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "presets" in out.stdout


def test_end_to_end_train_resume_sample_and_export(tmp_path, capsys):
    """train a micro model, resume it, sample, trajectory, fork, interpolate, eval: every picture says how it was
    made."""
    from engine.__main__ import main
    from engine.images import read_png_metadata

    run = str(tmp_path / "run")
    data = "builtin:shapes?count=32"
    assert (
        main(
            [
                "train",
                "--data",
                data,
                "--preset",
                "micro",
                "--steps",
                "4",
                "--batch-size",
                "8",
                "--run",
                run,
                "--schedule",
                "cosine",
                "--ema-decay",
                "0.95",
            ]
        )
        == 0
    )
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["diffusion"]["schedule"] == "cosine" and record["train"]["ema_decay"] == 0.95
    assert main(["train", "--run", run, "--steps", "6"]) == 0  # resumes
    assert "resuming" in capsys.readouterr().err

    out = str(tmp_path / "s.png")
    assert main(["sample", "--run", run, "--n", "4", "--steps", "5", "--seed", "3", "--out", out, "--scale", "2"]) == 0
    meta = read_png_metadata(out)
    assert meta["step"] == "6" and meta["seed"] == "3" and meta["steps"] == "5" and meta["weights"] == "ema"
    assert json.loads(meta["config"])["image_size"] == [8, 8]
    # the picture names the model (run, step, the weights' SHA-256) and never a path of this machine
    weights = sorted((tmp_path / "run" / "checkpoints").glob("*.safetensors"))[-1]
    assert meta["run"] == "run" and meta["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert [k for k, v in meta.items() if str(tmp_path) in v or "/tmp/" in v] == []

    assert (
        main(
            [
                "trajectory",
                "--run",
                run,
                "--n",
                "2",
                "--frames",
                "3",
                "--out",
                str(tmp_path / "t.png"),
                "--gif",
                str(tmp_path / "t.gif"),
            ]
        )
        == 0
    )
    assert read_png_metadata(tmp_path / "t.png")["frames"] == "100,50,0"
    assert (tmp_path / "t.gif").stat().st_size > 0
    assert main(["fork", "--run", run, "--t", "10", "--forks", "2", "--out", str(tmp_path / "f.png")]) == 0
    assert (
        main(
            [
                "interpolate",
                "--run",
                run,
                "--a",
                "data:0",
                "--b",
                "data:1",
                "--t",
                "10",
                "--lambdas",
                "3",
                "--out",
                str(tmp_path / "i.png"),
            ]
        )
        == 0
    )
    assert read_png_metadata(tmp_path / "i.png")["lambdas"] == "[0.0, 0.5, 1.0]"
    capsys.readouterr()
    assert main(["eval", "--run", run, "--n", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 4 and summary["bits_per_dim"] > 0
    assert summary["data"] == "builtin:shapes test split" and summary["warnings"] == []
    assert main(["eval", "--run", run, "--n", "2", "--data", "builtin:shapes?seed=5"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["warnings"] and "warning: the model was trained on builtin:shapes" in err


def test_bad_input_gives_a_message_not_a_traceback(tmp_path, capsys):
    from engine.__main__ import main

    assert main(["sample", "--run", str(tmp_path), "--n", "1"]) == 2
    assert "neither a checkpoint nor a run directory" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "missing")]) == 1
