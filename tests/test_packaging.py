"""The package as `pip install .` makes it: a wheel with both commands and the bundled model, which an installed
copy finds in site-packages (not in a source checkout)."""

import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = "engine/assets/bundled"  # in the wheel; assets/bundled in a checkout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the files a clone has (no build/ or egg-info of the checkout's own)."""
    pytest.importorskip("setuptools")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for package in ("engine", "studio", "assets"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", out, src],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("ddpm_studio-*.whl")
    return built


def test_the_wheel_holds_both_commands_and_the_bundled_model(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = z.read(entry_points).decode()
        weights = sorted(n for n in names if n.startswith(f"{BUNDLED}/checkpoints/") and n.endswith(".safetensors"))
        assert weights, "no bundled checkpoint in the wheel"
        packed = hashlib.sha256(z.read(weights[-1])).hexdigest()
    assert "ddpm = engine.__main__:main" in scripts and "ddpm-studio = studio.app:run" in scripts
    assert {f"{BUNDLED}/run.json", weights[-1].replace(".safetensors", ".json")} <= names
    checkout = ROOT / "assets" / Path(weights[-1]).relative_to("engine/assets")
    assert packed == hashlib.sha256(checkout.read_bytes()).hexdigest()
    inits = {str(p.relative_to(ROOT)) for top in ("engine", "studio") for p in (ROOT / top).rglob("__init__.py")}
    assert len(inits) >= 5 and inits <= names, f"packages pyproject.toml does not list: {sorted(inits - names)}"
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_an_installed_copy_opens_its_bundled_model(wheel, tmp_path):
    """Unpacked as pip would into site-packages and run from elsewhere, the engine loads the model it carries."""
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    probe = (
        "import sys, engine.loading as L; m = L.load_model(L.BUNDLED_RUN); "
        "print(L.BUNDLED_RUN.relative_to(sys.argv[1]), m.step, L.provenance(m)['run'])"
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", probe, str(site)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [f"{BUNDLED}", "5000", "bundled"]
