"""The ranges of engine/limits.py: what they accept and refuse, how they say it, and that the studio's forms offer
exactly the ranges the command line checks (one source of truth)."""

import math

import pytest

from engine import limits as L


@pytest.mark.parametrize("value", [1, 7, 1024])
def test_a_value_inside_passes_through(value):
    assert L.IMAGES.check("--n", value) == value


@pytest.mark.parametrize("value", [0, -3, 1025, 2.5, math.nan, math.inf, -math.inf])
def test_a_value_outside_is_one_line_naming_setting_range_and_value(value):
    with pytest.raises(L.LimitError) as e:
        L.IMAGES.check("--n", value)
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    assert str(e.value) == f"--n must be in 1..1024, got {shown}"


def test_a_model_bound_limit_takes_the_bound_and_says_why():
    assert L.TIMESTEP.check("--t", 1000, high=1000) == 1000
    with pytest.raises(L.LimitError, match=r"^--t must be in 1..1000 \(the model's T\), got 5000$"):
        L.TIMESTEP.check("--t", 5000, high=1000)
    assert L.TIMESTEP.check("--t", None, high=10) is None  # not given: the default applies


def test_float_limits_show_their_exact_ends():
    with pytest.raises(L.LimitError, match=r"^--ema-decay must be in 0..0.9999999, got 1$"):
        L.EMA_DECAY.check("--ema-decay", 1.0)
    assert L.ETA.check("--eta", 0.5) == 0.5


def test_the_studio_forms_offer_the_engines_ranges(qtbot, bridge):
    """Each form's spin box spans what the engine accepts (capped at what a QSpinBox holds)."""
    from studio.panels.export import ExportPanel
    from studio.panels.trajectory import TrajectoryPanel
    from studio.state import AppState
    from studio.widgets.train_settings import TrainSettingsForm

    cap = 2**31 - 1
    trajectory = TrajectoryPanel(bridge, AppState())
    export = ExportPanel(bridge, AppState())
    form = TrainSettingsForm()
    for widget in (trajectory, export, form):
        qtbot.addWidget(widget)
    spans = {
        "trajectory N": (trajectory.n_spin, L.TRAJECTORY_IMAGES),
        "forks": (trajectory.forks_spin, L.FORKS),
        "trajectory seed": (trajectory.seed_spin, L.SEED),
        "export count": (export.count, L.IMAGES),
        "export scale": (export.scale, L.SCALE),
        "export frames": (export.frames, L.FRAMES),
        "steps": (form.steps_spin, L.TRAIN_STEPS),
        "batch": (form.batch_spin, L.BATCH_SIZE),
        "seed": (form.seed_spin, L.SEED),
        "lr": (form.lr_spin, L.LEARNING_RATE),
        "ema": (form.ema_spin, L.EMA_DECAY),
    }
    for what, (spin, limit) in spans.items():
        assert (spin.minimum(), spin.maximum()) == pytest.approx((limit.low, min(limit.high, cap))), what
