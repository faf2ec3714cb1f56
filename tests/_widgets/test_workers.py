"""The worker host with real napari workers: progress, results, cancel, errors, lifetime."""

from __future__ import annotations

import threading
import time

import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager
from qtpy.QtWidgets import QWidget

from napari_active_sam._widgets.workers import LatestRequest, WorkerHost
from napari_active_sam.core.errors import ActiveSamError, ImageError
from napari_active_sam.core.progress import Progress

WAIT = 30_000  # ms


@pytest.fixture
def gate():
    """A gate a job waits at between steps; opened at teardown so no thread is left."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def waiting():
    """Set by a gated job once it waits at the gate: its worker is inside the generator."""
    return threading.Event()


def counting_job(steps: int):
    for step in range(steps):
        yield Progress(step + 1, steps, f"step {step + 1}")
    return "counted"


def gated_job(gate: threading.Event, waiting: threading.Event, reached: list[int]):
    """Records each step it starts; after each, waits at ``gate``."""
    for step in range(5):
        reached.append(step)
        yield Progress(step + 1, 5)
        waiting.set()
        gate.wait()
    return "all"


def failing_job(error: Exception):
    raise error


def test_progress_and_result_reach_their_callbacks(qtbot):
    host = WorkerHost()
    steps, results, finished = [], [], []
    host.start(counting_job, 3, progress=steps.append, returned=results.append,
               finished=lambda: finished.append(True))  # fmt: skip
    qtbot.waitUntil(lambda: bool(finished), timeout=WAIT)
    assert [(s.done, s.total, s.message) for s in steps] == [(1, 3, "step 1"), (2, 3, "step 2"),
                                                             (3, 3, "step 3")]  # fmt: skip
    assert steps[-1].fraction == 1.0
    assert results == ["counted"] and not host.running


def test_cancel_stops_a_generator_between_steps(qtbot, gate, waiting):
    host = WorkerHost()
    reached, steps, results, aborted = [], [], [], []
    worker = host.start(gated_job, gate, waiting, reached, progress=steps.append,
                        returned=results.append, aborted=lambda: aborted.append(True))  # fmt: skip
    qtbot.waitUntil(waiting.is_set, timeout=WAIT)
    host.cancel(worker)
    gate.set()
    qtbot.waitUntil(lambda: not host.running, timeout=WAIT)
    # The step under way when cancel came runs to its yield; no later step starts.
    assert reached == [0, 1]
    assert results == [] and aborted == [True]  # a cancelled job returns nothing, says so
    with pytest.raises(TypeError, match="cannot be cancelled"):
        host.start(failing_job, ImageError("x"), aborted=lambda: None)  # not a generator


def test_cancellable_jobs_make_the_host_busy_until_cancelled(qtbot, gate, waiting):
    busy = []
    host = WorkerHost(busy=busy.append)
    plain = host.start(counting_job, 1)
    assert busy == []  # a job the Cancel button does not stop leaves the host idle
    first = host.start(gated_job, gate, waiting, [], cancellable=True)
    second = host.start(gated_job, gate, waiting, [], cancellable=True)
    assert busy == [True, True] and host.cancellable == {first, second}
    host.cancel(first)
    assert busy[-1] is True  # the second still runs
    host.cancel_all()
    assert busy[-1] is False and not host.cancellable
    gate.set()
    qtbot.waitUntil(lambda: not host.running, timeout=WAIT)
    assert plain not in host.running


def test_a_users_error_is_shown_in_status_and_as_a_notification(qtbot):
    status, errors, finished = [], [], []
    host = WorkerHost(status=status.append)
    before = len(notification_manager.records)
    host.start(failing_job, ImageError("The image is empty: open another one."),
               finished=lambda: finished.append(True))  # fmt: skip
    qtbot.waitUntil(lambda: bool(finished), timeout=WAIT)
    assert status == ["error: The image is empty: open another one."]
    shown = notification_manager.records[before:]
    assert [(n.message, n.severity) for n in shown] == [
        ("The image is empty: open another one.", NotificationSeverity.ERROR)
    ]
    host.start(failing_job, ImageError("again"), errored=errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=WAIT)
    assert isinstance(errors[0], ActiveSamError)  # a job's own errored callback wins
    assert len(status) == 1


def test_any_other_error_is_raised_again_as_the_bug_it_is(qtbot):
    status = []
    host = WorkerHost(status=status.append)
    with pytest.raises(ZeroDivisionError):
        host.report(ZeroDivisionError("division by zero"))
    with qtbot.captureExceptions() as raised:
        host.start(failing_job, KeyError("slice"))
        qtbot.waitUntil(lambda: bool(raised), timeout=WAIT)
    assert isinstance(raised[0][1], KeyError)
    assert status == ["error: division by zero", "error: 'slice'"]


def test_callbacks_are_skipped_once_the_dock_is_destroyed(qtbot, gate, waiting):
    dock = QWidget()
    host = WorkerHost()
    dock.destroyed.connect(host.close)
    reached, steps, results, finished = [], [], [], []
    worker = host.start(
        gated_job, gate, waiting, reached, progress=steps.append, returned=results.append,
        finished=lambda: finished.append(True),
    )  # fmt: skip
    qtbot.waitUntil(lambda: waiting.is_set() and bool(steps), timeout=WAIT)
    seen = len(steps)

    def open_when_asked_to_quit():  # the job goes on only once the host has closed
        end = time.monotonic() + 10
        while not worker.abort_requested and time.monotonic() < end:
            time.sleep(0.01)
        gate.set()

    threading.Thread(target=open_when_asked_to_quit).start()
    with qtbot.waitSignal(dock.destroyed, timeout=WAIT):
        dock.deleteLater()
    assert host.closed and worker.abort_requested  # the running job was asked to quit
    qtbot.waitUntil(lambda: not host.running, timeout=WAIT)
    assert reached == [0, 1]  # the job made one more step after the dock went, then stopped
    assert len(steps) == seen and results == [] and finished == []  # ... and nobody heard it
    assert host.start(counting_job, 1) is None  # nothing starts for a dock that is gone


def test_latest_request_runs_once_more_with_the_newest_state(qtbot):
    state = {"value": 0}
    ran: list[int] = []

    def start(finished):
        return host.start(ran.append, state["value"], finished=finished)

    host = WorkerHost()
    latest = LatestRequest(start)
    latest.request()
    assert latest.running
    for value in (1, 2, 3):  # while the first job runs
        state["value"] = value
        latest.request()
    qtbot.waitUntil(lambda: not latest.running, timeout=WAIT)
    assert ran == [0, 3]  # the requests in between coalesced into one, with the newest state


def test_closing_waits_until_running_jobs_have_stopped(qtbot, waiting):
    """A script that closes its viewer and ends must not leave a job signalling into
    deleted Qt objects: closing returns once every job has stopped."""
    finished: list[str] = []

    def slow_decode():
        waiting.set()
        time.sleep(0.5)
        finished.append("decode")

    started = threading.Event()

    def encoding():
        started.set()
        while True:
            yield Progress(0, 0, "encoding")
            time.sleep(0.01)

    host = WorkerHost()
    decoding = host.start(slow_decode)
    encoder = host.start(encoding, cancellable=True)
    assert waiting.wait(5) and started.wait(5)
    host.cancel(encoder)  # a Cancel just before the dock goes: closing still sees it end
    host.close()
    # The function ran to its end and the generator stopped at its next step before
    # closing returned.
    assert finished == ["decode"] and not decoding.is_running and not encoder.is_running
