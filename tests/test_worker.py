"""The engine thread: priorities, supersession, cancellation, errors, and the bridge's futures."""

import threading
import time

import pytest

from engine.worker import EngineWorker, JobCancelled, JobFailed, JobFinished, JobProgress, JobStarted, Priority
from tests.conftest import run_async


def _collect():
    events, lock = [], threading.Lock()

    def emit(e):
        with lock:
            events.append(e)

    return events, emit


def _wait(predicate, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError("timed out")


def test_interactive_jobs_run_between_training_steps():
    """A training job yields between steps; an interactive job submitted meanwhile runs before the next step."""
    events, emit = _collect()
    worker = EngineWorker(emit)
    order = []
    gate = threading.Event()

    def training(ctx):
        for step in range(200):
            order.append(("train", step))
            if step == 2:
                gate.set()
            time.sleep(0.002)
            yield None
            if ctx.cancelled.is_set():
                return "stopped"
        return "done"

    def interactive(ctx):
        order.append(("interactive", None))
        return 42

    train_id = worker.submit("train", training, Priority.TRAINING, graceful=True)
    gate.wait(5)
    quick_id = worker.submit("scrub", interactive, Priority.INTERACTIVE)
    _wait(lambda: any(isinstance(e, JobFinished) and e.job_id == quick_id for e in events))
    train_steps_before = order.index(("interactive", None))
    worker.cancel(train_id)
    _wait(lambda: any(isinstance(e, JobFinished) and e.job_id == train_id for e in events))
    worker.shutdown()
    finished = {e.job_id: e.result for e in events if isinstance(e, JobFinished)}
    assert finished[quick_id] == 42
    assert finished[train_id] == "stopped"  # graceful: it saw the flag and ended its own way
    assert train_steps_before < 200 and order[train_steps_before - 1][0] == "train"


def test_a_new_job_of_the_same_key_supersedes_the_old():
    """The slider's old value is cancelled at its next yield and never finishes; the new value does."""
    events, emit = _collect()
    worker = EngineWorker(emit)
    started = threading.Event()

    def slow(value):
        def job(ctx):
            started.set()
            for _ in range(1000):
                time.sleep(0.001)
                yield None
            return value

        return job

    first = worker.submit("mix", slow(1), Priority.INTERACTIVE)
    started.wait(5)
    second = worker.submit("mix", lambda ctx: 2, Priority.INTERACTIVE)
    _wait(lambda: any(isinstance(e, JobFinished) and e.job_id == second for e in events))
    worker.shutdown()
    assert any(isinstance(e, JobCancelled) and e.job_id == first for e in events)
    assert not any(isinstance(e, JobFinished) and e.job_id == first for e in events)


def test_an_exception_becomes_an_error_event_and_the_thread_lives_on():
    events, emit = _collect()
    worker = EngineWorker(emit)

    def broken(ctx):
        yield 1
        raise ValueError("the image is 7x7 but the model wants 8x8")

    bad = worker.submit("a", broken)
    good = worker.submit("b", lambda ctx: "fine")
    _wait(lambda: any(isinstance(e, JobFinished) and e.job_id == good for e in events))
    worker.shutdown()
    failed = [e for e in events if isinstance(e, JobFailed)]
    assert failed and failed[0].job_id == bad and "7x7" in failed[0].message and "Traceback" in failed[0].details
    assert any(isinstance(e, JobProgress) and e.value == 1 for e in events)
    assert sum(isinstance(e, JobStarted) for e in events) == 2


def test_bridge_sample_resolves_with_uint8_images(qtbot, bridge):
    """`await bridge.sample(...)` returns images as uint8 numpy arrays, never tensors."""
    result = run_async(qtbot, bridge.sample(n=3, seed=0, num_steps=5))
    assert result.images.shape == (3, 8, 8, 3) and result.images.dtype.name == "uint8"
    again = run_async(qtbot, bridge.sample(n=3, seed=0, num_steps=5))
    assert (again.images == result.images).all()  # the seed replays the picture


def test_bridge_reports_failures_as_engine_errors(qtbot, bridge):
    from studio.bridge import EngineError

    with pytest.raises(EngineError, match="no longer in memory"):
        run_async(qtbot, bridge.fork(trajectory_id=999, index=0, t=5, forks=2, seed=0))


def test_the_bridge_drops_the_progress_of_a_superseded_job(qtbot, bridge):
    """Once a newer job of the same key is asked for, nothing more of the older one reaches its caller, not even
    progress the engine had already sent."""
    seen = []

    def slow(ctx):
        for i in range(100):
            time.sleep(0.005)
            yield i
        return "old"

    def quick(ctx):
        yield "new progress"
        return "new"

    bridge.submit("view", slow, Priority.INTERACTIVE, on_progress=lambda v: seen.append(("old", v)))
    qtbot.waitUntil(lambda: len(seen) >= 3, timeout=10_000)
    asked_at = len(seen)
    newer = bridge.submit("view", quick, Priority.INTERACTIVE, on_progress=lambda v: seen.append(("new", v)))

    async def wait():
        return await newer

    assert run_async(qtbot, wait()) == "new"
    qtbot.wait(50)
    assert [who for who, _ in seen[asked_at:]] == ["new"]


def test_a_plain_job_reports_progress_and_stops_at_its_next_report_once_cancelled():
    """A blocking (non-generator) job sends progress through ctx.report, under its own key; cancelling it makes
    the next report raise, so the job ends as cancelled instead of running to the end."""
    events, emit = _collect()
    worker = EngineWorker(emit)
    reported = threading.Event()
    finished_loops = []

    def blocking(ctx):
        for i in range(1000):
            ctx.report(i)
            reported.set()
            time.sleep(0.005)
        finished_loops.append(True)
        return "done"

    job_id = worker.submit("dataset", blocking)
    reported.wait(5)
    worker.cancel(job_id)
    _wait(lambda: any(isinstance(e, JobCancelled) and e.job_id == job_id for e in events))
    worker.shutdown()
    progress = [e for e in events if isinstance(e, JobProgress)]
    assert progress and all(e.key == "dataset" and e.job_id == job_id for e in progress)
    assert [e.value for e in progress] == list(range(len(progress))) and len(progress) < 1000
    assert not finished_loops and not any(isinstance(e, JobFinished) for e in events)
