"""ViewRequests, without a window: supersession, stage order, progress, cancel and errors. (The session's asyncio
loop is the studio's qasync loop, so these run on it too, through qtbot; no widget is made.)"""

from dataclasses import dataclass

import pytest

from studio.requests import ViewRequests


@dataclass
class Stage:  # the shape of a progressive stage (engine.refine.Refined)
    stage: str
    images: object = None


@pytest.fixture
def loop(event_loop_qt):
    return event_loop_qt


@pytest.fixture
def finish(qtbot):
    def wait(*tasks):
        qtbot.waitUntil(lambda: all(task.done() for task in tasks), timeout=5_000)

    return wait


class Recorder:
    def __init__(self):
        self.events = []
        self.requests = ViewRequests(
            on_value=lambda v: self.events.append(("value", v.stage if hasattr(v, "stage") else v)),
            on_done=lambda r: self.events.append(("done", r.stage if hasattr(r, "stage") else r)),
            on_error=lambda m: self.events.append(("error", m)),
            on_cancelled=lambda: self.events.append(("cancelled",)),
        )


def _job(loop):
    """A fake engine job: returns (start, the progress callback once started, the future)."""
    box = {}

    def start(on_value):
        box["on_value"] = on_value
        box["future"] = loop.create_future()
        return box["future"]

    return start, box


def test_stages_arrive_in_order_and_the_result_ends_the_request(loop, finish):
    r = Recorder()
    start, job = _job(loop)
    task = r.requests.ask(start)
    assert r.requests.running
    job["on_value"](Stage("direct"))
    job["on_value"]("progress 10/25")
    job["on_value"](Stage("settled"))
    job["future"].set_result(Stage("exact"))
    finish(task)
    assert r.events == [
        ("value", "direct"),
        ("value", "progress 10/25"),
        ("value", "settled"),
        ("value", "exact"),
        ("done", "exact"),
    ]
    assert r.requests.stages == ["direct", "settled", "exact"] and not r.requests.running
    assert r.requests.elapsed >= 0


def test_a_newer_request_silences_the_older_one(loop, finish):
    """Late progress, stages and the result of a superseded request are never shown; its cancellation is quiet."""
    r = Recorder()
    start_old, old = _job(loop)
    old_task = r.requests.ask(start_old)
    start_new, new = _job(loop)
    new_task = r.requests.ask(start_new)
    old["on_value"](Stage("direct"))  # arrives after it was superseded
    old["future"].cancel()  # the bridge cancels a superseded job
    new["on_value"](Stage("direct"))
    new["future"].set_result(Stage("exact"))
    finish(old_task, new_task)
    assert r.events == [("value", "direct"), ("value", "exact"), ("done", "exact")]


def test_cancel_and_error_end_the_current_request_once(loop, finish):
    r = Recorder()
    start, job = _job(loop)
    task = r.requests.ask(start)
    job["future"].cancel()
    finish(task)
    start, job = _job(loop)
    task = r.requests.ask(start)
    job["future"].set_exception(RuntimeError("no model is loaded yet"))
    finish(task)
    assert r.events == [("cancelled",), ("error", "no model is loaded yet")] and not r.requests.running


def test_drop_ignores_what_is_in_flight(loop, finish):
    r = Recorder()
    start, job = _job(loop)
    task = r.requests.ask(start)
    r.requests.drop()  # e.g. the model changed
    job["on_value"](Stage("direct"))
    job["future"].set_result(Stage("exact"))
    finish(task)
    assert r.events == [] and not r.requests.running
