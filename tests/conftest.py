"""Test-session setup: Qt offscreen, one qasync event loop for the whole session, and a tiny trained run.

With no display and no platform, Qt aborts the process, so the platform is set before anything imports Qt.
Drive a coroutine from a test with `run_async(qtbot, coro)`; never call loop.stop() or app.quit() in a test.
"""

import asyncio
import gc
import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests run tiny models: one intra-op thread avoids OpenMP's spin-waits, which make a 2-core machine that is
    busy with anything else many times slower (60 micro steps: 153 s with 2 threads, 2 s with 1)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def user_data_in_tmp(tmp_path, monkeypatch):
    """The studio's per-user folders (new runs, imports) go under the test's tmp_path, never the user's own; and no
    background compile (a minute of two cores per model loaded): tests/test_device.py tests that path."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user-data"))
    monkeypatch.setenv("DDPM_COMPILE", "0")  # on by default where a C++ compiler is


@pytest.fixture(autouse=True)
def no_modal_close_notice(monkeypatch):
    """Closing a window while it trains shows a modal notice, which would wait for a click no test gives; the test of
    that notice switches it back on and answers it."""
    try:
        import studio.main_window
    except ImportError:  # no Qt here: the GUI tests skip themselves
        yield
        return
    monkeypatch.setattr(studio.main_window, "NOTICE_ON_CLOSE_WHILE_TRAINING", False)
    yield


@pytest.fixture(autouse=True)
def collect_garbage_after_each_test():
    """Tear down a test's widgets on the GUI thread now, not whenever the engine thread next triggers the collector."""
    yield
    gc.collect()


MICRO_DATA = "builtin:shapes?size=8&count=64"


@pytest.fixture(scope="session")
def event_loop_qt(qapp):
    """The qasync loop of the session, already running inside Qt's event loop (see docs/contributing.md)."""
    import qasync

    loop = qasync.QEventLoop(qapp, already_running=True)
    asyncio.set_event_loop(loop)
    return loop


def run_async(qtbot, coro, timeout: int = 60_000):
    """Run a coroutine on the qasync loop while Qt processes events; return its result (or raise its error)."""
    task = asyncio.ensure_future(coro)
    qtbot.waitUntil(task.done, timeout=timeout)
    return task.result()


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory):
    """A run directory of the micro preset trained for 6 steps on 8x8 shapes: something to load and explore."""
    import dataclasses

    from engine.config import get_preset
    from engine.runs import Run, RunSpec
    from engine.train import Trainer

    preset = get_preset("micro")
    train = dataclasses.replace(preset.train, batch_size=8, log_every=2, sample_every=1000, checkpoint_every=1000)
    spec = RunSpec(preset.unet, preset.diffusion, train, MICRO_DATA, "micro")
    root = tmp_path_factory.mktemp("runs") / "micro"
    list(Trainer(Run.create(root, spec)).run(6))
    return root


@pytest.fixture
def bridge(qtbot, event_loop_qt, micro_run):
    """A Bridge (with its engine thread) with the micro model loaded; shut down after the test."""
    from studio.bridge import Bridge

    b = Bridge()
    info = run_async(qtbot, b.load_model(str(micro_run)))
    assert info.step == 6
    yield b
    b.shutdown()


@pytest.fixture
def state():
    """A fresh, Qt-free application state for a panel under test."""
    from studio.state import AppState

    return AppState()


@pytest.fixture
def settings_in(tmp_path):
    """QSettings (geometry, the last run) write under tmp_path during a test, never to the user's configuration."""
    from PySide6.QtCore import QSettings, QStandardPaths

    fmt, scope = QSettings.Format.NativeFormat, QSettings.Scope.UserScope
    QSettings.setPath(fmt, scope, str(tmp_path / "settings"))
    yield
    QSettings.setPath(
        fmt, scope, QStandardPaths.writableLocation(QStandardPaths.StandardLocation.GenericConfigLocation)
    )
