"""The command line's engine-only commands."""
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
    out = subprocess.run([sys.executable, "-m", "engine", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "presets" in out.stdout
