"""Every command line a person can type ends in exit status 0, or 2 with one line that says what is wrong: never a
traceback. The cases from the field first, then random values thrown at every option of every command."""

import random
import shutil

import pytest

from engine.__main__ import main
from tests.test_untrusted import trained  # noqa: F401 (the module's fixture: a micro run, T = 100)


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own exits (a bad option, --help)
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        ("sample --n -3", "error: --n must be in 1..1024, got -3"),
        ("sample --steps -5", "error: --steps must be in 1..100 (the model's T), got -5"),
        ("fork --t 5000", "error: --t must be in 1..100 (the model's T), got 5000"),
        ("fork --t -1", "error: --t must be in 1..100 (the model's T), got -1"),
        ("interpolate --a data:0 --b data:1 --t -3", "error: --t must be in 1..100 (the model's T), got -3"),
        ("interpolate --a data:99999999 --b data:1 --t 5", "error: --a must be in 0..31 (the run's train images)"),
        ("interpolate --a data:0 --b data:1 --lambdas 0", "error: --lambdas must be in 2..65, got 0"),
        ("eval --n 0", "error: --n must be in 1..1000000, got 0"),
        ("train --steps -5", "error: --steps must be in 1..1000000000, got -5"),
        ("sample --n 0", "error: --n must be in 1..1024, got 0"),
        ("fork --forks 0", "error: --forks must be in 1..256, got 0"),
        ("sample --eta -2", "error: --eta must be in 0..1, got -2"),
        ("train --ema-decay 5", "error: --ema-decay must be in 0..0.9999999, got 5"),
        ("sample --device quantum", "error: --device must be cpu, cuda, cuda:N or mps, got 'quantum'"),
    ],
)
def test_out_of_range_arguments_get_one_line_and_status_2(trained, tmp_path, capsys, argv, message):  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    command, *rest = argv.split()
    code, err = _run(capsys, [command, "--run", str(run), *rest])
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(
        p.name for p in (trained / "checkpoints").iterdir()
    )  # nothing trained, nothing written


INTS = ["-9223372036854775809", "-1", "0", "99", "100", "101", "5000", "10000000", "1e3", "2.5", "x", ""]
FLOATS = ["-2", "1.5", "nan", "inf", "-inf", "1e-400", "x"]
SOURCES = ["data:-1", "data:99999999", "data:", "x:1", "/dev/null", "/", "nope.png", ""]
# Per option: values that are valid and cheap on the micro model (T = 100, 32 images), then hostile ones.
OPTIONS = {
    "sample": {
        "--n": (["1", "3"], INTS),
        "--steps": (["1", "2", "7"], INTS),
        "--eta": (["0", "0.5", "1"], FLOATS),
        "--nrow": (["1", "2"], INTS),
        "--seed": (["0", "9223372036854775807"], INTS),
        "--scale": (["1", "3"], INTS),
    },
    "trajectory": {"--n": (["1", "2"], INTS), "--frames": (["2", "5"], INTS), "--seed": (["7"], INTS)},
    "fork": {"--t": (["1", "3"], INTS), "--forks": (["1", "2"], INTS), "--n": (["1", "2"], INTS)},
    "interpolate": {
        "--a": (["data:0", "test:1"], SOURCES),
        "--b": (["data:3", "test:0"], SOURCES),
        "--t": (["1", "4"], INTS),
        "--lambdas": (["2", "3"], INTS),
        "--steps": (["1", "2"], INTS),
    },
    "eval": {
        "--n": (["1", "4", "5000"], ["0", "-1", "x", "10000000"]),
        "--seed": (["0", "101"], ["-1", "x", "2.5", "99999999999999999999"]),
        "--split": (["test", "train"], ["x", ""]),
        "--data": (["builtin:shapes?seed=2"], ["/dev/null", "nowhere", "builtin:x", "builtin:shapes?size=-1", ""]),
    },
    "train": {
        "--steps": (["4", "5"], ["-5", "0", "x", "1e12", "2000000000"]),
        "--batch-size": (["4", "8"], ["-1", "0", "70000"]),
        "--lr": (["0.001"], FLOATS + ["0"]),
        "--ema-decay": (["0", "0.9"], FLOATS + ["1"]),
        "--seed": (["3"], INTS),
    },
}
REQUIRED = {
    "sample": ["--steps", "2"],
    "fork": ["--t", "3"],
    "interpolate": ["--a", "data:0", "--b", "data:1", "--t", "3"],
}


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_random_arguments_never_end_in_a_traceback(trained, tmp_path, capsys, command):  # noqa: F811
    """Each option is left out, given a valid value or given a hostile one, at random (a fixed seed per command):
    the outcome is a picture (status 0) or one line (status 2)."""
    rng = random.Random(f"cli-{command}")
    outcomes = []
    for case in range(10):
        run = tmp_path / f"run{case}"
        shutil.copytree(trained, run)
        argv = [command, "--run", str(run)]
        if command not in ("eval", "train"):
            argv += ["--out", str(tmp_path / f"{case}.png")]
        chosen = {}
        for flag, (good, bad) in OPTIONS[command].items():
            roll = rng.random()
            if roll < 0.4:
                chosen[flag] = rng.choice(good)
            elif roll < 0.55:
                chosen[flag] = rng.choice(bad)
        defaults = REQUIRED.get(command, [])
        for flag, value in zip(defaults[::2], defaults[1::2]):
            chosen.setdefault(flag, value)
        argv += [x for item in chosen.items() for x in item]
        code, err = _run(capsys, argv)
        assert "Traceback" not in err, (argv, err)
        assert code == 0 or (code == 2 and err.startswith("error: ") and err.count("\n") == 1), (argv, code, err)
        outcomes.append(code)
    assert 0 in outcomes and 2 in outcomes, outcomes  # both kinds were exercised
